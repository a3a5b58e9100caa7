"""The failure budget: a Tune ``Stopper`` that ends the search once too many trials failed.

A trial that raises (e.g. ``NonFiniteLossError``) or ends with a non-finite optimizing metric is
FAILED in MLflow and the search goes on. ``search.max_failures``: None (default) = no limit; N =
stop the search once more than N trials have failed; :func:`dlops.search.tune.run_search` then
raises :class:`~dlops.errors.TooManyFailuresError`.
"""

from __future__ import annotations

from typing import Any, Optional


class FailureBudget:
    """Whether more than ``max_failures`` trials failed (``max_failures`` None: never).

    It reads the failure count of the MLflow callback (which counts FAILED trial runs, those of
    a run before a resume included).
    """

    def __init__(self, callback: Any, max_failures: Optional[int]) -> None:
        self.callback = callback
        self.max_failures = max_failures

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    @property
    def exceeded(self) -> bool:
        return self.max_failures is not None and self.callback.n_failed > self.max_failures

    def stop_all(self) -> bool:
        if self.exceeded and self.callback.stopping_reason is None:
            self.callback.stopping_reason = (
                f"{self.callback.n_failed} trials failed, more than search.max_failures={self.max_failures}")
        return self.exceeded


_LIVE_BUDGETS: dict[str, FailureBudget] = {}  # search id -> this driver's budget (see budget_stopper)


def budget_stopper(key: str) -> Any:
    """A Tune ``Stopper`` that asks the :class:`FailureBudget` registered under ``key`` (the
    search id) in ``_LIVE_BUDGETS``; with none registered it never stops.

    Tune pickles the stopper into every experiment checkpoint (once a second) and, on
    ``Tuner.restore``, puts the unpickled copy in place of the one it was given. So the stopper
    pickles as its key alone: a checkpoint does not pickle the MLflow callback (whose pickling
    waits for the writer thread, stalling Tune's loop), and after a resume the restored stopper
    finds this session's budget and callback, not a stale copy whose failure count never moves.
    """
    from ray.tune.stopper import Stopper

    class _Budget(Stopper):
        def __call__(self, trial_id: str, result: dict) -> bool:
            budget = _LIVE_BUDGETS.get(key)
            return budget(trial_id, result) if budget is not None else False

        def stop_all(self) -> bool:
            budget = _LIVE_BUDGETS.get(key)
            return budget.stop_all() if budget is not None else False

        def __reduce__(self) -> tuple:
            return (budget_stopper, (key,))

    return _Budget()
