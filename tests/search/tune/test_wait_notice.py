"""WaitNotice: one console line while trials wait for resources with none running, again every
``every_s`` while it lasts, nothing at a stage barrier or while trials run. Real Ray Tune
``Trial`` objects (``stub=True``) and a step clock."""

from __future__ import annotations


def _trials(*statuses: str) -> list:
    from ray.tune.experiment import Trial

    out = []
    for i, st in enumerate(statuses):
        t = Trial("noop", config={"x": i}, trial_id=f"t{i}", stub=True)
        t.set_status(st)
        out.append(t)
    return out


def _notice(autoscaler: bool = True):
    from dlops.search.tune.progress import WaitNotice

    now = [0.0]
    lines: list[str] = []
    n = WaitNotice(lines.append, "cpu=1, gpu=1", autoscaler, after_s=60, every_s=300, clock=lambda: now[0])
    return n, lines, now


def test_pending_with_none_running_is_announced_after_a_minute_then_every_five():
    n, lines, now = _notice()
    waiting = _trials("PENDING", "PENDING", "TERMINATED")
    for t in range(0, 1000, 10):  # a Tune step every 10 s
        now[0] = float(t)
        n.on_step_end(0, waiting)
    # at 60 s, 360 s, 660 s and 960 s
    assert len(lines) == 4, lines
    assert "2 trial(s) pending and none running for 60 s" in lines[0]
    assert "cpu=1, gpu=1" in lines[0] and "autoscaler" in lines[0]


def test_running_trials_or_a_barrier_are_no_wait():
    n, lines, now = _notice(autoscaler=False)
    for t in range(0, 1000, 10):
        now[0] = float(t)
        n.on_step_end(0, _trials("PENDING", "RUNNING"))  # a trial runs: the others queue, no wait
        n.on_step_end(0, _trials("TERMINATED", "TERMINATED"))  # a stage barrier: nothing pending
    assert lines == []
    # the wait clock restarts after a trial ran: 59 s of waiting says nothing yet
    for t in range(1000, 1060):
        now[0] = float(t)
        n.on_step_end(0, _trials("PENDING"))
    assert lines == []
    now[0] = 1060.0
    n.on_step_end(0, _trials("PENDING"))
    assert len(lines) == 1 and "no room" in lines[0]


def test_a_growing_trial_list_is_read_past_its_ended_trials_and_a_new_list_from_the_start():
    """Tune passes its own trial list, which only grows; the ended prefix is skipped (a step stays
    cheap at 10,000 trials) without changing what is announced."""
    n, lines, now = _notice()
    trials = _trials(*["TERMINATED"] * 50, "RUNNING")
    n.on_step_end(0, trials)
    assert n._prefix._ended == 50
    trials[50].set_status("TERMINATED")
    trials += _trials("PENDING", "PENDING")
    for t in range(0, 70, 10):
        now[0] = float(t)
        n.on_step_end(0, trials)
    assert n._prefix._ended == 51 and len(lines) == 1 and "2 trial(s) pending" in lines[0]
    # another list (a new Tune run): read from its start, its running trial means no wait
    n.on_step_end(0, _trials("RUNNING", *["PENDING"] * 60))
    assert n._since is None and n._prefix._ended == 0
