"""What a reporter plugin receives and returns (no torch, ray or mlflow imports).

A reporter is any object with ``report(context: ReportContext) -> Report``; plugins provide
reporters by name through the ``dlops_reporters`` hook. The pipeline (driver process) logs a
report's metrics and artifacts to MLflow; reporters only compute and write files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

#: split names, in the order of the practice (train -> train-dev -> dev -> test)
SPLITS = ("train", "train_dev", "dev", "test")


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
        """Top-1 error as a fraction in [0, 1] (single-label)."""
        if len(self.y_true) == 0:
            return float("nan")
        return float(np.mean(np.argmax(self.y_prob, axis=1) != self.y_true))


@dataclass
class ReportContext:
    """Everything a reporter may use.

    Attributes:
        errors: ``{"human": h, "train": ..., "train_dev": ..., "dev": ..., "test": ...}``, each a
            fraction in [0, 1] (not percent); a missing split is absent or NaN.
        predictions: ``{split: SplitPredictions}`` where available.
        class_names: index -> class name.
        history: per-epoch metrics, ``[{"epoch": 1, "train/error": ..., ...}, ...]``.
        out_dir: where the reporter writes its artifacts.
        title: a label for headings (e.g. the model URI or trial id).
        trials: for search-level reports, one dict per trial (params and final metrics).
        split: the split that split-specific reporters (error analysis) look at.
    """

    errors: Mapping[str, float]
    out_dir: Path
    predictions: Mapping[str, SplitPredictions] = field(default_factory=dict)
    class_names: Sequence[str] = ()
    history: Sequence[Mapping[str, float]] = ()
    title: str = ""
    trials: Sequence[Mapping[str, Any]] = ()
    split: str = "dev"


@dataclass
class Report:
    """A reporter's output.

    Attributes:
        metrics: MLflow metric name -> value (e.g. ``bias_variance/avoidable_bias``).
        artifacts: paths of files written under ``context.out_dir`` (Markdown, PNG, CSV).
        markdown: the report as Markdown (also written as an artifact).
        summary: one line for the console.
    """

    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: list[Path] = field(default_factory=list)
    markdown: str = ""
    summary: str = ""
