"""Error-analysis reporter: what the dev-set mistakes are, and what fixing each cause can win.

Source: Andrew Ng, *Structuring Machine Learning Projects* (deeplearning.ai), "Carrying out error
analysis": look at the misclassified dev examples, tag each with its causes (several per example
allowed), and count the share of the mistakes each tag covers. That share is the *ceiling* on
the improvement from fixing the cause: with dev error e and a tag on a share s of the mistakes,
fixing that cause entirely lowers the error by at most s * e.

Artifacts (under ``context.out_dir``): ``confusion_matrix.csv`` and ``confusion_matrix.png``
(rows: true class, columns: predicted class, counts), ``top_losses.png`` (the highest-loss dev
images, when images are given), ``error_tags.csv`` (when tags are given) and
``error_analysis.md``. Metrics: ``error_analysis/error``, ``error_analysis/n_errors``,
``error_analysis/tag_share/<tag>`` (fraction of the mistakes) and
``error_analysis/tag_ceiling/<tag>`` (fraction points of dev error: share * error), each with
its Wilson 95% interval (``error_analysis/tag_share_ci_low/<tag>``, ``..._ci_high/<tag>``, and
the same for ``tag_ceiling``; Wilson 1927).
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dlops import hookimpl
from dlops.reporting import SCOPE_MODEL, Report, ReportContext, SplitPredictions
from dlops.reporting.stats import Interval, wilson

_METRIC_SAFE = re.compile(r"[^0-9A-Za-z_\-. ]")


def metric_key(tag: str) -> str:
    """A tag as part of an MLflow metric name (characters other than ``[0-9A-Za-z_-. ]`` -> ``_``)."""
    return _METRIC_SAFE.sub("_", str(tag)).strip() or "_"


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts of (true, predicted) pairs.

    Args:
        y_true: (N,) int class indices in [0, n_classes).
        y_pred: (N,) int class indices in [0, n_classes).
        n_classes: C.

    Returns:
        (C, C) int64 matrix, rows true class, columns predicted class.

    Raises:
        ValueError: shapes differ or an index is outside [0, C).
    """
    t = np.asarray(y_true).astype(np.int64).ravel()
    p = np.asarray(y_pred).astype(np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred must have the same shape, got {t.shape} and {p.shape}")
    for name, a in (("y_true", t), ("y_pred", p)):
        if a.size and (a.min() < 0 or a.max() >= n_classes):
            raise ValueError(f"{name} has class indices outside [0, {n_classes})")
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def most_confused(cm: np.ndarray, k: int = 5) -> list[tuple[int, int, int]]:
    """The ``k`` largest off-diagonal cells: ``[(true, predicted, count), ...]``, count > 0, largest first
    (ties: lower true index, then lower predicted index)."""
    c = np.asarray(cm)
    pairs = [(int(i), int(j), int(c[i, j])) for i in range(c.shape[0]) for j in range(c.shape[1])
             if i != j and c[i, j] > 0]
    pairs.sort(key=lambda x: (-x[2], x[0], x[1]))
    return pairs[:k]


@dataclass(frozen=True)
class TagShare:
    """One tag's share of the mistakes.

    Attributes:
        tag: the tag.
        count: misclassified examples carrying it.
        share: count / number of misclassified examples (fraction of the mistakes).
        ceiling: count / number of examples (fraction points of error that fixing it can win at most).
        n_wrong, n: the misclassified examples and all examples of the split.
    """

    tag: str
    count: int
    share: float
    ceiling: float
    n_wrong: int = 0
    n: int = 0

    @property
    def share_ci(self) -> Interval:
        """Wilson 95% interval of :attr:`share` (``count`` of ``n_wrong``; Wilson 1927)."""
        return wilson(self.count, self.n_wrong)

    @property
    def ceiling_ci(self) -> Interval:
        """Wilson 95% interval of :attr:`ceiling` (``count`` of ``n``; Wilson 1927)."""
        return wilson(self.count, self.n)


def tag_shares(wrong: np.ndarray, tags: Sequence[Sequence[str]]) -> list[TagShare]:
    """Per-tag share of the misclassified examples (several tags per example allowed; shares may
    sum to more than 1). Tags on correctly classified examples are ignored.

    Args:
        wrong: (N,) bool, True where the example is misclassified.
        tags: N tag lists (a bare string counts as one tag).

    Returns:
        One :class:`TagShare` per tag seen on a mistake, largest share first.

    Raises:
        ValueError: ``len(tags) != N``.
    """
    w = np.asarray(wrong, dtype=bool).ravel()
    if len(tags) != w.size:
        raise ValueError(f"tags must have one list per example: {len(tags)} lists for {w.size} examples")
    n, n_wrong = w.size, int(w.sum())
    counts: dict[str, int] = {}
    for is_wrong, ts in zip(w, tags):
        if not is_wrong or ts is None:
            continue
        for t in {ts} if isinstance(ts, str) else set(ts):
            counts[str(t)] = counts.get(str(t), 0) + 1
    out = [TagShare(t, c, c / n_wrong if n_wrong else 0.0, c / n if n else 0.0, n_wrong, n) for t, c in counts.items()]
    out.sort(key=lambda s: (-s.count, s.tag))
    return out


def _canvas(width: float, height: float) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.canvas


def plot_confusion(cm: np.ndarray, class_names: Sequence[str], path: Path) -> Path:
    """Write the confusion matrix as a PNG heat map with counts; returns ``path``."""
    c = cm.shape[0]
    side = min(max(4.0, 0.5 * c + 2.0), 20.0)
    fig, _ = _canvas(side, side)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(cm, cmap="Blues", interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(c), labels=list(class_names), rotation=90 if c > 10 else 0)
    ax.set_yticks(range(c), labels=list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix (dev)")
    if c <= 30:
        vmax = cm.max() if cm.size else 0
        for i in range(c):
            for j in range(c):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if cm[i, j] > vmax / 2 else "black")
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_top_losses(images: np.ndarray, idx: Sequence[int], labels: Sequence[str], path: Path) -> Path:
    """Write a grid of images ``images[idx]`` ((N, H, W, C) uint8) titled with ``labels``; returns ``path``."""
    k = len(idx)
    cols = min(4, max(k, 1))
    rows = max(1, math.ceil(k / cols))
    fig, _ = _canvas(2.4 * cols, 2.6 * rows)
    for n, (i, lab) in enumerate(zip(idx, labels)):
        ax = fig.add_subplot(rows, cols, n + 1)
        img = np.asarray(images[i])
        if img.ndim == 3 and img.shape[2] == 1:
            ax.imshow(img[:, :, 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            ax.imshow(img, interpolation="nearest")
        ax.set_title(lab, fontsize=8)
        ax.axis("off")
    fig.suptitle("highest-loss dev examples: true -> predicted (p of predicted), loss")
    fig.tight_layout()
    fig.savefig(path)
    return path


class ErrorAnalysisReporter:
    """Reporter ``error_analysis`` (see the module docstring for its metrics and artifacts).

    Args:
        split: the split analysed (the practice: dev).
        top_k_pairs: how many most-confused pairs to list.
        top_k_losses: how many highest-loss images in the grid.
    """

    name = "error_analysis"
    scopes = (SCOPE_MODEL,)  # it needs a model's predictions

    def __init__(self, split: str = "dev", top_k_pairs: int = 5, top_k_losses: int = 16) -> None:
        self.split = split
        self.top_k_pairs = top_k_pairs
        self.top_k_losses = top_k_losses

    def report(self, context: ReportContext) -> Report:
        """Analyse ``context.predictions[self.split]`` (single-label).

        Raises:
            ValueError: predictions with inconsistent shapes, or tags of the wrong length.
        """
        out = Path(context.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        split = context.split or self.split  # `dlops report ... --split test` chooses the split
        pred: SplitPredictions | None = context.predictions.get(split)
        title = f"# Error analysis ({split}){(' — ' + context.title) if context.title else ''}"
        if pred is None or len(pred.y_true) == 0:
            md = f"{title}\n\nNo {split} predictions: nothing to analyse.\n"
            path = out / "error_analysis.md"
            path.write_text(md)
            return Report(artifacts=[path], markdown=md, summary=f"no {split} predictions")
        y_true = np.asarray(pred.y_true)
        prob = np.asarray(pred.y_prob, dtype=np.float64)
        if y_true.ndim != 1:
            md = f"{title}\n\nMulti-label predictions: confusion analysis applies to single-label tasks only.\n"
            path = out / "error_analysis.md"
            path.write_text(md)
            return Report(artifacts=[path], markdown=md, summary="multi-label: not analysed")
        if prob.ndim != 2 or prob.shape[0] != y_true.shape[0]:
            raise ValueError(f"y_prob must be (N, C) with N = {y_true.shape[0]}, got shape {prob.shape}")
        n, c = prob.shape
        names = list(context.class_names) if len(context.class_names) == c else [str(i) for i in range(c)]
        y = y_true.astype(np.int64)
        y_hat = prob.argmax(axis=1)
        wrong = y_hat != y
        n_wrong = int(wrong.sum())
        error = n_wrong / n
        cm = confusion_matrix(y, y_hat, c)
        artifacts: list[Path] = []

        cm_csv = out / "confusion_matrix.csv"
        with cm_csv.open("w", newline="") as f:
            wr = csv.writer(f)
            wr.writerow(["true \\ predicted", *names])
            for i in range(c):
                wr.writerow([names[i], *cm[i].tolist()])
        artifacts += [cm_csv, plot_confusion(cm, names, out / "confusion_matrix.png")]

        metrics: dict[str, float] = {"error_analysis/error": error, "error_analysis/n_errors": float(n_wrong)}
        lines = [title, "", f"{split} error: {100 * error:.2f}% ({n_wrong} of {n} examples)", ""]

        pairs = most_confused(cm, self.top_k_pairs)
        lines += ["## Most-confused pairs", ""]
        if pairs:
            lines += ["| true | predicted | count | share of mistakes |", "|---|---|---|---|"]
            lines += [f"| {names[i]} | {names[j]} | {k} | {100 * k / n_wrong:.1f}% |" for i, j, k in pairs]
        else:
            lines.append("No mistakes.")
        lines.append("")

        if pred.images is not None and n_wrong:
            images = np.asarray(pred.images)
            if images.shape[0] != n:
                raise ValueError(f"images must have N = {n} rows, got {images.shape[0]}")
            loss = -np.log(np.clip(prob[np.arange(n), y], 1e-12, 1.0))
            order = np.argsort(-loss, kind="stable")[: min(self.top_k_losses, n)]
            labels = [f"{names[y[i]]} -> {names[y_hat[i]]} ({prob[i, y_hat[i]]:.2f}), {loss[i]:.2f}" for i in order]
            artifacts.append(plot_top_losses(images, order.tolist(), labels, out / "top_losses.png"))
            lines += ["Highest-loss examples: `top_losses.png`.", ""]

        if pred.tags is not None:
            shares = tag_shares(wrong, pred.tags)
            tags_csv = out / "error_tags.csv"
            with tags_csv.open("w", newline="") as f:
                wr = csv.writer(f)
                wr.writerow(["tag", "count", "share_of_mistakes", "share_ci_low", "share_ci_high",
                             "ceiling_error_points", "ceiling_ci_low", "ceiling_ci_high"])
                for s in shares:
                    sc, cc = s.share_ci, s.ceiling_ci
                    wr.writerow([s.tag, s.count, f"{s.share:.6f}", f"{sc.low:.6f}", f"{sc.high:.6f}",
                                 f"{s.ceiling:.6f}", f"{cc.low:.6f}", f"{cc.high:.6f}"])
            artifacts.append(tags_csv)
            lines += ["## Tagged mistakes (ceiling on what fixing each cause can win)", ""]
            if shares:
                lines += ["| tag | mistakes | share of mistakes | 95% interval | ceiling (error points) | 95% interval |",
                          "|---|---|---|---|---|---|"]
                for s in shares:
                    sc, cc = s.share_ci, s.ceiling_ci
                    lines.append(f"| {s.tag} | {s.count} / {s.n_wrong} | {100 * s.share:.1f}% | "
                                 f"[{100 * sc.low:.1f}, {100 * sc.high:.1f}] % | {100 * s.ceiling:.2f} | "
                                 f"[{100 * cc.low:.2f}, {100 * cc.high:.2f}] |")
                    key = metric_key(s.tag)
                    metrics[f"error_analysis/tag_share/{key}"] = s.share
                    metrics[f"error_analysis/tag_ceiling/{key}"] = s.ceiling
                    metrics[f"error_analysis/tag_share_ci_low/{key}"] = sc.low
                    metrics[f"error_analysis/tag_share_ci_high/{key}"] = sc.high
                    metrics[f"error_analysis/tag_ceiling_ci_low/{key}"] = cc.low
                    metrics[f"error_analysis/tag_ceiling_ci_high/{key}"] = cc.high
                lines += ["", "An example may carry several tags, so shares can sum to more than 100%. Intervals: "
                          "Wilson (1927) score intervals, 95%."]
            else:
                lines.append("No tags on the mistakes.")
            lines.append("")

        md = "\n".join(lines) + "\n"
        path = out / "error_analysis.md"
        path.write_text(md)
        artifacts.insert(0, path)
        if pairs:
            i, j, k = pairs[0]
            summary = f"{split} error {100 * error:.2f}%; most confused: {names[i]} -> {names[j]} ({k})"
        else:
            summary = f"{split} error {100 * error:.2f}%; no mistakes"
        return Report(metrics=metrics, artifacts=artifacts, markdown=md, summary=summary)


@hookimpl
def dlops_reporters() -> dict[str, object]:
    return {"error_analysis": ErrorAnalysisReporter()}
