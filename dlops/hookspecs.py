"""Every dlops hook specification, in one module (pluggy).

Provider hooks return a mapping ``name -> object``; the plugin manager merges them into
registries keyed by name (see :mod:`dlops.plugins`). Lifecycle hooks run in the driver
process, where the MLflow client lives, and come in triads (``before_*``/``after_*``/``on_*_error``)
in the manner of Kedro's hooks.
"""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT_NAME = "dlops"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def dlops_augment_policies() -> dict[str, Any]:
    """Augmentation policies this plugin provides.

    Returns:
        ``{name: factory}`` where ``factory(magnitude: float, image_size: int | None, train: bool)``
        (magnitude in [0, 1]; image_size in pixels, None to keep the input size) returns a
        callable mapping an HxWxC uint8 numpy image to an H'xW'xC uint8 image. Optionally the
        callable has ``describe(shape) -> dict`` (JSON-serialisable, logged to MLflow), as
        :class:`dlops_plugins.augment.common.Policy` does. Checked on load: factories must be callable.
    """


@hookspec
def dlops_reporters() -> dict[str, Any]:
    """Reporters this plugin provides.

    Returns:
        ``{name: reporter}`` where ``reporter.report(context) -> dlops.reports.Report``
        (``context`` is a :class:`dlops.reports.ReportContext`). Checked on load: ``report`` must
        be callable.
    """


@hookspec
def dlops_ensemble_servers() -> dict[str, Any]:
    """Ensemble builders/servers this plugin provides.

    Returns:
        ``{name: builder}``; see :mod:`dlops_plugins.ensemble`.
    """


@hookspec
def dlops_before_search(config: Any, parent_run_id: str) -> None:
    """Called in the driver before the first trial of a search starts."""


@hookspec
def dlops_after_search(config: Any, parent_run_id: str, best: Any) -> None:
    """Called in the driver after the last trial of a search has ended."""


@hookspec
def dlops_on_search_error(config: Any, parent_run_id: str, error: BaseException) -> None:
    """Called in the driver when a search ends with an exception (Ctrl-C included)."""
