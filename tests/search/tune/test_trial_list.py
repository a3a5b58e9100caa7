"""The live part of Tune's trial list: EndedPrefix and the FIFO choice past the ended trials
agree with Ray Tune's own FIFOScheduler on real Tune ``Trial`` objects (``stub=True``), whatever
order the trials end in; a KeepActors scheduler pickles without Tune's trials."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

STATUSES = ("PENDING", "RUNNING", "PAUSED", "TERMINATED", "ERROR")


def _trial(i: int, status: str):
    from ray.tune.experiment import Trial

    t = Trial("noop", config={"x": i}, trial_id=f"t{i}", stub=True)
    t.set_status(status)
    return t


# steps of a session: ("add", status) appends a trial; ("set", i, status) changes trial i (an
# ended trial stays ended: TERMINATED is final in a session)
_steps = st.lists(st.one_of(st.tuples(st.just("add"), st.sampled_from(STATUSES)),
                            st.tuples(st.just("set"), st.integers(0, 40), st.sampled_from(STATUSES))),
                  min_size=1, max_size=60)


@settings(max_examples=150, deadline=None)
@given(_steps)
def test_keep_actors_choose_like_tunes_fifo_on_a_growing_list(steps):
    from ray.tune.schedulers import FIFOScheduler

    from dlops.search.tune._private import KeepActorsASHA, KeepActorsFIFO

    trials: list = []
    controller = SimpleNamespace(get_trials=lambda: trials)
    ours, asha, fifo = KeepActorsFIFO(), KeepActorsASHA(metric="m", mode="min"), FIFOScheduler()
    for step in steps:
        if step[0] == "add":
            trials.append(_trial(len(trials), step[1]))
        elif trials:
            t = trials[step[1] % len(trials)]
            if t.status != "TERMINATED":
                t.set_status(step[2])
        want = fifo.choose_trial_to_run(controller)
        assert ours.choose_trial_to_run(controller) is want
        assert asha.choose_trial_to_run(controller) is want


def test_ended_prefix_resumes_on_the_same_list_and_restarts_on_another():
    from dlops.search.tune.trial_list import EndedPrefix, first_pending_or_paused

    p = EndedPrefix()
    trials = [_trial(0, "TERMINATED"), _trial(1, "TERMINATED"), _trial(2, "RUNNING"), _trial(3, "PAUSED")]
    assert p.start(trials) == 2
    assert first_pending_or_paused(trials, 2) is trials[3]
    trials[2].set_status("TERMINATED")
    trials.append(_trial(4, "PENDING"))
    assert p.start(trials) == 3 and first_pending_or_paused(trials, 3) is trials[4]
    other = [_trial(0, "PENDING")]  # a restored controller's new list
    assert p.start(other) == 0
    assert first_pending_or_paused([_trial(0, "TERMINATED"), _trial(1, "RUNNING")]) is None


def test_a_keep_actors_scheduler_pickles_without_tunes_trials():
    from dlops.search.tune._private import KeepActorsFIFO

    trials = [_trial(0, "TERMINATED"), _trial(1, "PENDING")]
    s = KeepActorsFIFO()
    assert s.choose_trial_to_run(SimpleNamespace(get_trials=lambda: trials)) is trials[1]
    assert b"t0" not in pickle.dumps(s)  # the tuner.pkl Tune writes holds no trial
    copy = pickle.loads(pickle.dumps(s))
    assert copy.choose_trial_to_run(SimpleNamespace(get_trials=lambda: trials)) is trials[1]
