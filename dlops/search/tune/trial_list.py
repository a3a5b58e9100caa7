"""Where the live part of Tune's trial list starts.

Tune hands its hooks the controller's own list of trials (``TuneController.get_trials()``, the
``trials`` argument of a callback's ``on_step_end``). The list only grows, in the order trials
were added, and a ``TERMINATED`` trial stays so for the rest of the session. A hook that runs at
every step and looks for pending or running trials therefore needs to look only past the
leading run of ended trials: O(trials not ended) per step instead of O(all trials). In a
10,000-trial run (py-spy on the driver, late in the run) dlops's wait notice scanning every trial
was 18% of Tune's loop, and Tune's FIFO choice of the next trial to run 30% once that was gone
(``bench/README.md``, search_overhead).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence


class EndedPrefix:
    """Tracks the leading run of ``TERMINATED`` trials of one growing trial list.

    :meth:`start` returns the index of the first trial that is not ``TERMINATED``. It resumes
    from the last answer when it is given the same list object again (and the list has not
    shrunk), and starts from 0 for any other list (a restored controller's new one). Not
    pickled: a copy starts from 0.
    """

    def __init__(self) -> None:
        self._ended = 0  # trials[:_ended] are TERMINATED
        self._seen: Optional[Sequence[Any]] = None  # the list they are in

    def start(self, trials: Sequence[Any]) -> int:
        """Index (0 <= i <= len(trials)) of the first trial whose ``status`` is not ``TERMINATED``."""
        i = self._ended if trials is self._seen and self._ended <= len(trials) else 0
        self._seen = trials
        while i < len(trials) and trials[i].status == "TERMINATED":
            i += 1
        self._ended = i
        return i

    def __getstate__(self) -> dict[str, Any]:
        return {"_ended": 0, "_seen": None}  # never pickle Tune's trials with a scheduler


def first_pending_or_paused(trials: Sequence[Any], start: int = 0) -> Any:
    """The first ``PENDING`` trial of ``trials[start:]``, else the first ``PAUSED`` one, else None.

    This is Tune's ``FIFOScheduler.choose_trial_to_run`` (Ray 2.x) over the live part of the list;
    over the whole list the two agree whenever ``trials[:start]`` are ended
    (``tests/search/tune/test_trial_list.py`` compares them)."""
    paused = None
    for i in range(start, len(trials)):
        status = trials[i].status
        if status == "PENDING":
            return trials[i]
        if paused is None and status == "PAUSED":
            paused = trials[i]
    return paused
