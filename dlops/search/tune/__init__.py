"""The staged search on Ray Tune: the Searcher, the Tuner runtime, and Ray Tune's private parts.

* :mod:`~dlops.search.tune.runtime`: :func:`run_search` (one ``Tuner`` for every stage),
  :class:`SearchRequest`, :class:`SearchOutcome`;
* :mod:`~dlops.search.tune.searcher`: :class:`~dlops.search.tune.searcher.StagedSearcher`, the
  Tune ``Searcher`` around the pure :class:`~dlops.search.plan.StagedPlan`;
* :mod:`~dlops.search.tune.budget`: the failure budget (a Tune ``Stopper``);
* :mod:`~dlops.search.tune.progress`: the waiting-for-resources notice (a Tune ``Callback``);
* :mod:`~dlops.search.tune._private`: every use of Ray Tune internals, version-tested.

Importing this package imports no Ray (the runtime imports it when a search runs).
"""

from __future__ import annotations

from dlops.search.tune.runtime import SearchOutcome, SearchRequest, run_search

__all__ = ["SearchOutcome", "SearchRequest", "run_search"]
