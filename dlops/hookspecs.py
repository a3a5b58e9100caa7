"""Every dlops hook specification, in one module (pluggy).

Provider hooks return a mapping ``name -> object``; the plugin manager calls each plugin's
implementation through pluggy and merges them into registries keyed by name (see
:mod:`dlops.plugins`). Lifecycle hooks run in the driver process, where the MLflow client lives,
and come in triads (``before_*`` / ``after_*`` / ``on_*_error``) in the manner of Kedro's hooks:
the error hook gets the before-hook's arguments plus the error. An exception raised by a
lifecycle hook fails the job (as in Kedro); one raised by an error hook is ignored, so that it
cannot hide the original error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import pluggy

if TYPE_CHECKING:  # no runtime import: `dlops --help` and `dlops plugins list` stay light
    from dlops.config import ProjectConfig
    from dlops.job.context import JobContext
    from dlops.search.plan import TrialOutcome

PROJECT_NAME = "dlops"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# -- providers ---------------------------------------------------------------------------------


@hookspec
def dlops_augment_policies() -> dict[str, Any]:
    """Augmentation policies this plugin provides.

    Returns:
        ``{name: factory}`` where ``factory(magnitude: float, image_size: int | None, train: bool)``
        (magnitude in [0, 1]; image_size in pixels, None to keep the input size) returns a
        callable mapping an HxWxC uint8 numpy image to an H'xW'xC uint8 image. Optionally the
        callable has ``describe(shape) -> dict`` (JSON-serialisable, logged to MLflow), as
        :class:`dlops.data.policy.Policy` does. Checked on load: factories must be callable.
    """


@hookspec
def dlops_reporters() -> dict[str, Any]:
    """Reporters this plugin provides.

    Returns:
        ``{name: reporter}`` where ``reporter.report(context) -> dlops.reporting.Report``
        (``context`` is a :class:`dlops.reporting.ReportContext`) and ``reporter.scopes`` (optional,
        default ``("model",)``) says where it runs: ``trial``, ``search``, ``model``. Checked on
        load: ``report`` must be callable and the scopes known.
    """


@hookspec
def dlops_ensemble_methods() -> dict[str, Any]:
    """Ensemble methods this plugin provides: how member outputs are combined.

    Returns:
        ``{name: method}`` where ``method.combine(probs) -> (N, K)`` maps the members' (M, N, K)
        probabilities (M members, N examples, K classes or labels) to the ensemble's (N, K). The
        project chooses one with ``ensemble.method`` (default ``average``); the registered
        ensemble (:mod:`dlops.ensemble`) and ``dlops serve`` look it up here by that name.
        Checked on load: ``combine`` must be callable.
    """


# -- lifecycle: every phase of the main job ----------------------------------------------------


@hookspec
def dlops_before_phase(phase: str, context: JobContext) -> None:
    """Called in the driver before phase ``phase`` (``setup``, ``pretrain``, ``search``, ``register``, ``report``,
    ``ensemble``: :data:`dlops.job.phases.PHASES`) of ``dlops run``.

    Args:
        phase: the phase's name.
        context: the job's :class:`~dlops.job.context.JobContext` (config, data, MLflow client,
            run ids, what earlier phases produced).
    """


@hookspec
def dlops_after_phase(phase: str, context: JobContext) -> None:
    """Called in the driver after phase ``phase`` ended without an error; same arguments as
    :func:`dlops_before_phase`."""


@hookspec
def dlops_on_phase_error(phase: str, context: JobContext, error: BaseException) -> None:
    """Called in the driver when phase ``phase`` raised ``error`` (Ctrl-C included), before the
    job's open runs are ended; the arguments of :func:`dlops_before_phase` plus the error."""


# -- lifecycle: the search ---------------------------------------------------------------------


@hookspec
def dlops_before_search(config: ProjectConfig, parent_run_id: str) -> None:
    """Called in the driver before the first trial of a search starts (``parent_run_id``: the
    search's MLflow run)."""


@hookspec
def dlops_after_search(config: ProjectConfig, parent_run_id: str, best: Optional[TrialOutcome]) -> None:
    """Called in the driver after the last trial of a search has ended; ``best`` is the best
    feasible trial (None when no trial met the constraints with a finite metric)."""


@hookspec
def dlops_on_search_error(config: ProjectConfig, parent_run_id: str, error: BaseException) -> None:
    """Called in the driver when a search ends with an exception (Ctrl-C included)."""
