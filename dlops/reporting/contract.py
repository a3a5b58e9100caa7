"""What a reporter plugin receives and returns, and where it runs (no torch, ray or mlflow imports).

A reporter is any object with ``report(context: ReportContext) -> Report``; plugins provide
reporters by name through the ``dlops_reporters`` hook. A reporter declares the scopes it runs
in with a class attribute ``scopes`` (default ``("model",)``):

* ``trial``: once per finished trial of a search, with that trial's final errors and history;
  logged to the trial's run.
* ``search``: once per search, with every trial in ``context.trials``; logged to the search's
  parent run.
* ``model``: for the registered model, with its predictions on every split; logged to the
  parent run and the model's run (and by ``dlops report``).

``context.scope`` says which one a call is. The driver (:mod:`dlops.reporting.runner`) logs a
report's metrics and artifacts to MLflow; reporters only compute and write files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from dlops.errors import PluginError

#: split names, in the order of the practice (train -> train-dev -> dev -> test)
SPLITS = ("train", "train_dev", "dev", "test")

SCOPE_TRIAL = "trial"
SCOPE_SEARCH = "search"
SCOPE_MODEL = "model"
#: every scope a reporter may declare, in the order the main job runs them
SCOPES = (SCOPE_TRIAL, SCOPE_SEARCH, SCOPE_MODEL)
#: the scopes of a reporter that declares none
DEFAULT_SCOPES = (SCOPE_MODEL,)


@dataclass
class SplitPredictions:
    """A model's predictions on one split.

    Attributes:
        y_true: (N,) int class indices (single-label) or (N, L) float {0,1,NaN} (multi-label).
        y_prob: (N, C) class probabilities (rows sum to 1) or (N, L) per-label sigmoid outputs.
        images: optional (N, H, W, C) uint8 images, for grids of examples.
        tags: optional per-example tag lists (error analysis), e.g. ``[["blurry"], [], ...]``.
        ids: optional per-example ids (file paths or dataset indices).
    """

    y_true: np.ndarray
    y_prob: np.ndarray
    images: np.ndarray | None = None
    tags: Sequence[Sequence[str]] | None = None
    ids: Sequence[Any] | None = None

    @property
    def error(self) -> float:
        """Top-1 error as a fraction in [0, 1] (single-label); NaN for an empty split."""
        if len(self.y_true) == 0:
            return float("nan")
        return float(np.mean(np.argmax(self.y_prob, axis=1) != self.y_true))


@dataclass
class TrainContext:
    """What a reporter that trains needs (the ``data_curve`` reporter), given in the ``model``
    scope of the main job.

    Attributes:
        config: the chosen (best) trial's hyperparameters.
        data: the task's splits (:class:`dlops.data.sources.TaskData`): ``train`` is the
            training pool, ``dev`` the set the curve is scored on.
        spec: the base model spec (:func:`dlops.models.transfer.build_model`).
        source_state: the source network's state dict (transfer), or None.
        freeze: the freeze policy of the project.
        seed: the project's seed.
        default_epochs: epochs of a trial whose config has none.
        task: ``classification`` or ``multilabel``.
        weights: the project's ``model.weights`` (None: trained from scratch).
        policy, magnitude: the augmentation policy and magnitude of the project.
    """

    config: Mapping[str, Any]
    data: Any
    spec: Mapping[str, Any]
    source_state: Any = None
    freeze: str = "none"
    seed: int = 0
    default_epochs: int = 1
    task: str = "classification"
    weights: str | None = None
    policy: str = "none"
    magnitude: float = 0.0


@dataclass
class ReportContext:
    """Everything a reporter may use.

    Attributes:
        errors: ``{"human": h, "train": ..., "train_dev": ..., "dev": ..., "test": ...}``, each a
            fraction in [0, 1] (not percent); a missing split is absent or NaN. In the
            ``search`` scope only ``"human"``.
        out_dir: where the reporter writes its artifacts.
        predictions: ``{split: SplitPredictions}`` where available (``model`` scope).
        class_names: index -> class (label) name.
        history: per-epoch metrics, ``[{"epoch": 1, "train/error": ..., ...}, ...]``.
        title: a label for headings (e.g. the model URI or trial id).
        trials: one dict per trial of the search, ``{"trial_id", "run_id", "params", "metrics"}``
            (final metrics, errors as fractions; empty ``metrics`` for a failed trial); given in
            the ``search`` scope, and in the ``model`` scope of the main job.
        split: the split that split-specific reporters (error analysis) look at.
        scope: the scope of this call, one of :data:`SCOPES`.
        counts: examples per split (``{"train": 150, "dev": 348, ...}``), for the intervals of
            the errors; given in every scope of the main job (:meth:`split_counts` falls back to
            the predictions).
        train_context: what a reporter that trains needs (``data_curve``): a
            :class:`TrainContext`, or None (not given: such a reporter says so).
    """

    errors: Mapping[str, float]
    out_dir: Path
    predictions: Mapping[str, SplitPredictions] = field(default_factory=dict)
    class_names: Sequence[str] = ()
    history: Sequence[Mapping[str, float]] = ()
    title: str = ""
    trials: Sequence[Mapping[str, Any]] = ()
    split: str = "dev"
    scope: str = SCOPE_MODEL
    counts: Mapping[str, int] = field(default_factory=dict)
    train_context: Any = None

    def split_counts(self) -> dict[str, int]:
        """Examples per split: :attr:`counts`, else the length of each split's predictions."""
        out = {k: int(v) for k, v in self.counts.items()}
        for k, p in self.predictions.items():
            out.setdefault(k, len(p.y_true))
        return out


@dataclass
class Report:
    """A reporter's output.

    Attributes:
        metrics: MLflow metric name -> value (``<reporter>/<name>``, e.g. a gap of bias/variance); non-finite
            values are not logged.
        artifacts: paths of files written under ``context.out_dir`` (Markdown, PNG, CSV), logged
            under ``reports/`` by their file names.
        markdown: the report as Markdown (also written as an artifact where the reporter does).
        summary: one line for the console.
    """

    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: list[Path] = field(default_factory=list)
    markdown: str = ""
    summary: str = ""


def reporter_scopes(reporter: Any, name: str | None = None) -> tuple[str, ...]:
    """The scopes a reporter declares (its ``scopes`` attribute), checked.

    Args:
        reporter: a reporter object.
        name: its registered name, for the message (default: its ``name`` attribute or type).

    Returns:
        The declared scopes as a tuple, in declaration order; :data:`DEFAULT_SCOPES` when the
        reporter declares none.

    Raises:
        dlops.errors.PluginError: ``scopes`` is not a non-empty sequence of names of
            :data:`SCOPES` (the message names the reporter and the bad scope).
    """
    label = name or getattr(reporter, "name", None) or type(reporter).__name__
    declared = getattr(reporter, "scopes", None)
    if declared is None:
        return DEFAULT_SCOPES
    if isinstance(declared, (str, bytes)) or not isinstance(declared, (tuple, list, set, frozenset)):
        raise PluginError(f"reporter {label!r}: scopes must be a tuple of scope names from {list(SCOPES)}, "
                          f"got {declared!r}")
    out: list[str] = []
    for s in declared:
        if s not in SCOPES:
            raise PluginError(f"reporter {label!r}: unknown scope {s!r}; use some of {list(SCOPES)}")
        if s not in out:
            out.append(s)
    if not out:
        raise PluginError(f"reporter {label!r}: scopes is empty; declare some of {list(SCOPES)}")
    return tuple(out)
