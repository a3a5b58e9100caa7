"""A console notice while trials wait for resources that the cluster does not have.

With ``ray.autoscaler: true`` the resource check before the first trial is skipped (the
autoscaler is expected to add nodes), and Tune then waits, silently, for as long as it takes.
Without it, the same wait happens when nodes are lost during a search. :class:`WaitNotice`
prints one line when trials have been pending with none running for ``after_s`` seconds, and
again every ``every_s`` seconds while it lasts. A stage barrier (nothing pending, the stage's
last trials running) and the first actors starting (seconds) are not waits.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

from ray.tune import Callback

from dlops.search.tune.trial_list import EndedPrefix


class WaitNotice(Callback):
    """Tune callback: one console line per ``every_s`` s while trials wait for resources.

    Args:
        out: ``print``-like function for the line.
        resources: what one trial asks for, as shown (e.g. ``"cpu=1, gpu=1"``).
        autoscaler: whether the project says an autoscaler adds nodes (``ray.autoscaler``).
        after_s: seconds with trials pending and none running before the first line (s).
        every_s: seconds between lines while the wait lasts (s).
        clock: monotonic clock in seconds (``time.monotonic``).
    """

    def __init__(self, out: Callable[[str], None], resources: str, autoscaler: bool, after_s: float = 60.0,
                 every_s: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.out, self.resources, self.autoscaler = out, resources, autoscaler
        self.after_s, self.every_s, self.clock = float(after_s), float(every_s), clock
        self._since: Optional[float] = None  # when trials started waiting with none running
        self._last: Optional[float] = None  # when the last line was printed
        self.notices = 0
        self._prefix = EndedPrefix()  # the ended trials at the head of Tune's list: not looked at again

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        # O(trials not ended) per step, not O(all trials): a scan of 10,000 trials at every
        # step was 18% of the driver's loop
        live = trials[self._prefix.start(trials):]
        pending = sum(1 for t in live if t.status == "PENDING")
        if not pending or any(t.status == "RUNNING" for t in live):
            self._since = self._last = None
            return
        now = self.clock()
        if self._since is None:
            self._since = now
        waited = now - self._since
        if waited < self.after_s or (self._last is not None and now - self._last < self.every_s):
            return
        self._last = now
        self.notices += 1
        why = ("ray.autoscaler is true: waiting for the autoscaler to add nodes" if self.autoscaler else
               "the cluster has no room for one trial now (a node lost?)")
        self.out(f"  waiting for resources: {pending} trial(s) pending and none running for {waited:.0f} s; "
                 f"each asks {self.resources}; {why} (Ctrl-C stops; dlops run --resume continues)")
