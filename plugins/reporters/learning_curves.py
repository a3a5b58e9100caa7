"""Learning-curves reporter: train, train-dev and dev error per epoch, and a table of all trials.

The three curves separate the goals of orthogonalization (Ng, *Structuring Machine Learning
Projects*): the train curve against human-level error shows avoidable bias, the gap from train to
train-dev shows variance, the gap from train-dev to dev shows data mismatch.

Artifacts: ``learning_curves.png`` (from ``context.history``: metrics ``train/error``,
``train_dev/error``, ``dev/error`` per ``epoch``, as fractions; the human-level error from
``context.errors["human"]`` as a dashed line) and ``trials.csv`` (from ``context.trials``: one row
per trial, its params and final metrics; nested ``{"params": {...}, "metrics": {...}}`` dicts
are flattened to ``params.<name>`` / ``metrics.<name>`` columns, as in ``mlflow.search_runs``).
Metrics: ``learning_curves/best_epoch`` and ``learning_curves/best_dev_error`` (epoch of the
lowest dev error) and ``learning_curves/n_trials``.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from dlops import hookimpl
from dlops.reporting import SCOPE_MODEL, SCOPE_SEARCH, SCOPE_TRIAL, Report, ReportContext

CURVES = (("train/error", "train"), ("train_dev/error", "train-dev"), ("dev/error", "dev"))


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return float("nan")
    return v


def curves(history: Sequence[Mapping[str, Any]]) -> dict[str, tuple[list[float], list[float]]]:
    """Per-metric (epochs, values) from a history, skipping missing or NaN points.

    Args:
        history: ``[{"epoch": 1, "train/error": 0.2, ...}, ...]`` (an entry without ``epoch``
            takes its 1-based position).

    Returns:
        ``{metric: (epochs, values)}`` for the metrics of :data:`CURVES` that have a point.
    """
    out: dict[str, tuple[list[float], list[float]]] = {}
    for pos, row in enumerate(history, start=1):
        ep = _num(row.get("epoch", pos))
        for key, _ in CURVES:
            v = _num(row.get(key))
            if not math.isnan(v):
                xs, ys = out.setdefault(key, ([], []))
                xs.append(ep)
                ys.append(v)
    return out


def plot_learning_curves(history: Sequence[Mapping[str, Any]], path: Path, human: float | None = None,
                         title: str = "") -> Path:
    """Write the curves as a PNG (error in percent against epoch); returns ``path``.

    Raises:
        ValueError: the history has none of the error metrics.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data = curves(history)
    if not data:
        raise ValueError(f"history has none of {[k for k, _ in CURVES]}")
    fig = Figure(figsize=(6.4, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for key, label in CURVES:
        if key in data:
            xs, ys = data[key]
            ax.plot(xs, [100 * y for y in ys], marker="o", markersize=3, label=label)
    if human is not None and not math.isnan(human):
        ax.axhline(100 * human, linestyle="--", color="gray", label="human-level")
    ax.set_xlabel("epoch")
    ax.set_ylabel("error (%)")
    ax.set_title(f"learning curves{(' — ' + title) if title else ''}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return path


def flatten_trial(trial: Mapping[str, Any]) -> dict[str, Any]:
    """One trial dict as flat columns: nested mappings become ``<key>.<name>`` columns."""
    flat: dict[str, Any] = {}
    for k, v in trial.items():
        if isinstance(v, Mapping):
            for k2, v2 in v.items():
                flat[f"{k}.{k2}"] = v2
        else:
            flat[str(k)] = v
    return flat


def write_trials_csv(trials: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Write one row per trial; columns are the union of the trials' keys in first-seen order
    (a trial without a column leaves it empty). Returns ``path``."""
    rows = [flatten_trial(t) for t in trials]
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, restval="")
        w.writeheader()
        for r in rows:
            w.writerow(r)
    return path


class LearningCurvesReporter:
    """Reporter ``learning_curves`` (see the module docstring for its metrics and artifacts), in
    every scope; in the ``search`` scope only ``trials.csv`` and ``learning_curves/n_trials``."""

    name = "learning_curves"
    scopes = (SCOPE_TRIAL, SCOPE_SEARCH, SCOPE_MODEL)

    def report(self, context: ReportContext) -> Report:
        """The report of ``context`` in its scope.

        Raises:
            ValueError: as :func:`plot_learning_curves` (not for a history without error metrics).
        """
        if context.scope == SCOPE_SEARCH:
            return self._search(context)
        out = Path(context.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        artifacts: list[Path] = []
        metrics: dict[str, float] = {}
        lines = [f"# Learning curves{(' — ' + context.title) if context.title else ''}", ""]
        data = curves(context.history)
        if data:
            human = context.errors.get("human")
            artifacts.append(plot_learning_curves(context.history, out / "learning_curves.png",
                                                  None if human is None else float(human), context.title))
            lines += ["![learning curves](learning_curves.png)", ""]
            if "dev/error" in data:
                xs, ys = data["dev/error"]
                i = min(range(len(ys)), key=lambda j: (ys[j], xs[j]))
                metrics["learning_curves/best_epoch"] = xs[i]
                metrics["learning_curves/best_dev_error"] = ys[i]
                lines += [f"Lowest dev error {100 * ys[i]:.2f}% at epoch {xs[i]:g} of {xs[-1]:g}.", ""]
        else:
            lines += ["No per-epoch error metrics in the history.", ""]
        if context.trials:
            artifacts.append(write_trials_csv(context.trials, out / "trials.csv"))
            metrics["learning_curves/n_trials"] = float(len(context.trials))
            lines += [f"{len(context.trials)} trials: `trials.csv`.", ""]
        md = "\n".join(lines)
        path = out / "learning_curves.md"
        path.write_text(md)
        artifacts.insert(0, path)
        summary = (f"best dev error {100 * metrics['learning_curves/best_dev_error']:.2f}% at epoch "
                   f"{metrics['learning_curves/best_epoch']:g}" if "learning_curves/best_epoch" in metrics
                   else "no dev curve")
        return Report(metrics=metrics, artifacts=artifacts, markdown=md, summary=summary)

    def _search(self, context: ReportContext) -> Report:
        if not context.trials:
            return Report(summary="no trials")
        out = Path(context.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = write_trials_csv(context.trials, out / "trials.csv")
        n = len(context.trials)
        return Report(metrics={"learning_curves/n_trials": float(n)}, artifacts=[path],
                      markdown=f"{n} trials: `trials.csv`.\n", summary=f"{n} trials: trials.csv")


@hookimpl
def dlops_reporters() -> dict[str, object]:
    return {"learning_curves": LearningCurvesReporter()}
