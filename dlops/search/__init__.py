"""Coarse-to-fine staged search: the search-space DSL, the zoom and the plan (pure: numpy only).

What users import::

    from dlops.search import Param, Constraint, ZoomRule, Stage, StagedPlan, select_top

* :mod:`~dlops.search.space`: :class:`Param` (a hyperparameter and its sampling scale),
  :class:`Box`, :class:`Constraint` (a satisficing metric), :class:`TrialOutcome`,
  :func:`select_top`;
* :mod:`~dlops.search.zoom`: :class:`ZoomRule`, :func:`zoom` (the next stage's box);
* :mod:`~dlops.search.plan`: :class:`Stage`, :class:`StagedPlan`, :func:`run_plan` (drive a plan
  with a plain Python objective).

Running a plan on Ray Tune is :mod:`dlops.search.tune` (``run_search``); the resource check
(:mod:`~dlops.search.resources`) and the MLflow side of ``--resume`` (:mod:`~dlops.search.resume`)
import Ray and MLflow only when called. Importing this package imports neither Ray nor MLflow.
"""

from __future__ import annotations

from dlops.search.plan import Stage, StagedPlan, run_plan
from dlops.search.space import Box, Constraint, Param, TrialOutcome, select_top
from dlops.search.zoom import ZoomRule, zoom

__all__ = ["Box", "Constraint", "Param", "Stage", "StagedPlan", "TrialOutcome", "ZoomRule", "run_plan",
           "select_top", "zoom"]
