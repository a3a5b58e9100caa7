"""Bias/variance reporter: the gaps between human-level, train, train-dev, dev and test error.

Source: Andrew Ng, *Structuring Machine Learning Projects* (deeplearning.ai) and *Machine Learning
Yearning*, chapters on bias and variance against human-level performance (a proxy for Bayes
error) and on data mismatch with a train-dev set:

    avoidable bias      = train error     - human-level error
    variance            = train-dev error - train error
    data mismatch       = dev error       - train-dev error
    overfitting to dev  = test error      - dev error

All errors are fractions in [0, 1]; the gaps are in the same unit (fraction points).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from dlops import hookimpl
from dlops.reporting import SCOPE_MODEL, SCOPE_SEARCH, SCOPE_TRIAL, Report, ReportContext

GAPS = ("avoidable_bias", "variance", "data_mismatch", "overfitting_to_dev")

#: one goal at a time (orthogonalization): the knobs that act on each gap
KNOBS: dict[str, tuple[str, ...]] = {
    "avoidable_bias": (
        "train a bigger network (more hidden units or layers)",
        "train longer or with a better optimizer (momentum, RMSprop, Adam)",
        "search the architecture and the hyperparameters",
    ),
    "variance": (
        "get more training data",
        "regularise: L2 weight decay, dropout",
        "augment the training data",
        "search the architecture and the hyperparameters",
    ),
    "data_mismatch": (
        "analyse the dev errors to understand how training and dev data differ",
        "make the training data more like dev: collect or synthesise similar data",
    ),
    "overfitting_to_dev": ("get a bigger dev set",),
}

GOALS = {
    "avoidable_bias": "fit the training set",
    "variance": "generalise to the train-dev set",
    "data_mismatch": "fit the dev distribution",
    "overfitting_to_dev": "generalise from dev to test",
}


@dataclass(frozen=True)
class BiasVariance:
    """The four gaps (fractions; NaN where a split is missing) and the largest one."""

    human: float
    train: float
    train_dev: float
    dev: float
    test: float
    avoidable_bias: float
    variance: float
    data_mismatch: float
    overfitting_to_dev: float
    largest: str | None
    better_than_human: bool

    def gaps(self) -> dict[str, float]:
        return {g: getattr(self, g) for g in GAPS}


def _f(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def bias_variance(
    human: float,
    train: float,
    train_dev: float | None = None,
    dev: float | None = None,
    test: float | None = None,
) -> BiasVariance:
    """Compute the gaps of the practice (see the module docstring).

    Args:
        human: human-level error (Bayes-error proxy), fraction in [0, 1].
        train, train_dev, dev, test: errors, fractions in [0, 1]; None or NaN when missing.
            Without a train-dev set, ``variance`` is taken as dev - train and ``data_mismatch`` is NaN.

    Returns:
        :class:`BiasVariance`; ``largest`` is the name of the largest finite gap (None if none).

    Raises:
        ValueError: an error outside [0, 1] (percent given instead of a fraction?).

    Example (the practice's own): human 1%, train 8%, dev 10% -> avoidable bias 7 points,
    the largest: work on bias. Human 7.5%, train 8%, dev 10% -> variance 2 points is larger.
    """
    vals = {"human": _f(human), "train": _f(train), "train_dev": _f(train_dev), "dev": _f(dev), "test": _f(test)}
    for k, v in vals.items():
        if not math.isnan(v) and not (0.0 <= v <= 1.0):
            raise ValueError(f"{k} error must be a fraction in [0, 1], got {v} (percent instead of a fraction?)")
    h, tr, td, dv, te = vals["human"], vals["train"], vals["train_dev"], vals["dev"], vals["test"]
    ab = tr - h
    if math.isnan(td):
        var, dm = dv - tr, float("nan")
    else:
        var, dm = td - tr, dv - td
    ov = te - dv
    gaps = {"avoidable_bias": ab, "variance": var, "data_mismatch": dm, "overfitting_to_dev": ov}
    finite = {k: v for k, v in gaps.items() if not math.isnan(v)}
    largest = max(finite, key=lambda k: finite[k]) if finite else None
    if largest is not None and finite[largest] <= 0:
        largest = None
    return BiasVariance(
        human=h, train=tr, train_dev=td, dev=dv, test=te, **gaps, largest=largest,
        better_than_human=(not math.isnan(tr) and not math.isnan(h) and tr < h),
    )


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.2f}%"


def render_markdown(bv: BiasVariance, title: str = "") -> str:
    """The report as a Markdown table plus the diagnosis and the knobs for the largest gap."""
    lines = [f"# Bias / variance{(' — ' + title) if title else ''}", "", "| split | error |", "|---|---|"]
    for k in ("human", "train", "train_dev", "dev", "test"):
        lines.append(f"| {k.replace('_', '-')} | {_pct(getattr(bv, k))} |")
    lines += ["", "| gap | definition | value (points) |", "|---|---|---|"]
    defs = {
        "avoidable_bias": "train - human",
        "variance": "train-dev - train",
        "data_mismatch": "dev - train-dev",
        "overfitting_to_dev": "test - dev",
    }
    for g in GAPS:
        lines.append(f"| {g.replace('_', ' ')} | {defs[g]} | {_pct(getattr(bv, g))} |")
    lines.append("")
    if bv.better_than_human:
        lines.append(
            "Training error is below the human-level proxy: the proxy no longer bounds Bayes error, "
            "so progress gets harder to judge; look at the errors one by one (error analysis)."
        )
        lines.append("")
    if bv.largest is None:
        lines.append("No positive gap: nothing stands out.")
    else:
        lines.append(f"**Largest gap: {bv.largest.replace('_', ' ')}** — goal: {GOALS[bv.largest]}. Knobs:")
        lines += [f"- {k}" for k in KNOBS[bv.largest]]
    return "\n".join(lines) + "\n"


def _err(row: Mapping[str, Any], split: str) -> float:
    """A split's error from a trial dict: ``split`` or ``<split>/error`` or ``metrics.<split>/error``."""
    for key in (split, f"{split}/error", f"metrics.{split}/error"):
        if key in row and row[key] is not None:
            return float(row[key])
    metrics = row.get("metrics")
    if isinstance(metrics, Mapping):
        for key in (f"{split}/error", split):
            if metrics.get(key) is not None:
                return float(metrics[key])
    return float("nan")


def render_search_table(trials: Sequence[Mapping[str, Any]], human: float | None = None, title: str = "") -> str:
    """A Markdown table of the bias/variance gaps of every trial of a search, best dev error first.

    Args:
        trials: one dict per trial with its errors (fractions in [0, 1]) under the split names
            (``"train"``, ``"train_dev"``, ``"dev"``, ``"test"``, ``"human"``) or the metric names
            (``"dev/error"``; also nested under ``"metrics"``); a trial label under ``"trial"``,
            ``"trial_id"`` or ``"run_id"`` (else its position).
        human: human-level error used where a trial carries none.
        title: heading suffix.

    Returns:
        Markdown: one row per trial with the errors, the four gaps and the largest gap; a last
        line counting how often each gap is the largest.

    Raises:
        ValueError: an error outside [0, 1].
    """
    h_default = float("nan") if human is None else float(human)
    rows = []
    for pos, t in enumerate(trials, start=1):
        label = next((str(t[k]) for k in ("trial", "trial_id", "run_id") if t.get(k) is not None), str(pos))
        h = _err(t, "human")
        bv = bias_variance(h_default if math.isnan(h) else h, _err(t, "train"), _err(t, "train_dev"),
                           _err(t, "dev"), _err(t, "test"))
        rows.append((label, bv))
    rows.sort(key=lambda r: (math.isnan(r[1].dev), r[1].dev if not math.isnan(r[1].dev) else 0.0))
    lines = [f"# Bias / variance over the search{(' — ' + title) if title else ''}", "",
             "| trial | train | train-dev | dev | test | avoidable bias | variance | data mismatch "
             "| overfitting to dev | largest gap |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    counts: dict[str, int] = {}
    for label, bv in rows:
        cells = [_pct(bv.train), _pct(bv.train_dev), _pct(bv.dev), _pct(bv.test)] + [_pct(getattr(bv, g)) for g in GAPS]
        largest = bv.largest.replace("_", " ") if bv.largest else "none"
        counts[largest] = counts.get(largest, 0) + 1
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {largest} |")
    lines.append("")
    if rows:
        lines.append("Largest gap across trials: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])) + ".")
    else:
        lines.append("No trials.")
    return "\n".join(lines) + "\n"


def plot_bias_variance(bv: BiasVariance, path: Path, title: str = "") -> Path:
    """Write a PNG with two bar charts: the errors per split, and the four gaps (percent points,
    the largest highlighted). Returns ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.0, 3.8), dpi=100)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    splits = ("human", "train", "train_dev", "dev", "test")
    vals = [getattr(bv, s) for s in splits]
    ax1.bar([s.replace("_", "-") for s in splits], [0.0 if math.isnan(v) else 100 * v for v in vals],
            color=["gray", "C0", "C1", "C2", "C3"])
    for i, v in enumerate(vals):
        ax1.text(i, 0 if math.isnan(v) else 100 * v, "n/a" if math.isnan(v) else f"{100 * v:.1f}",
                 ha="center", va="bottom", fontsize=8)
    ax1.set_ylabel("error (%)")
    ax1.set_title("errors")
    gvals = [getattr(bv, g) for g in GAPS]
    colours = ["C3" if g == bv.largest else "C0" for g in GAPS]
    ax2.bar([g.replace("_", " ").replace("overfitting to dev", "overfit dev") for g in GAPS],
            [0.0 if math.isnan(v) else 100 * v for v in gvals], color=colours)
    ax2.axhline(0, color="black", linewidth=0.8)
    ax2.set_ylabel("gap (percent points)")
    ax2.set_title("gaps (largest in red)")
    ax2.tick_params(axis="x", labelsize=8)
    fig.suptitle(f"bias / variance{(' — ' + title) if title else ''}")
    fig.tight_layout()
    fig.savefig(path)
    return path


class BiasVarianceReporter:
    """Reporter ``bias_variance``, in every scope.

    * ``trial`` and ``model`` scopes: metrics ``bias_variance/<gap>`` (fraction points);
      artifacts ``bias_variance.md``, ``bias_variance.png`` and, given ``context.trials``,
      ``bias_variance_trials.md`` (:func:`render_search_table`).
    * ``search`` scope: only ``bias_variance_trials.md``, the table over the trials that
      finished (with metrics), human-level error from ``context.errors["human"]``.
    """

    name = "bias_variance"
    scopes = (SCOPE_TRIAL, SCOPE_SEARCH, SCOPE_MODEL)

    def report(self, context: ReportContext) -> Report:
        """The report of ``context`` in its scope (see the class docstring).

        Raises:
            ValueError: an error outside [0, 1] (percent given instead of a fraction?).
        """
        if context.scope == SCOPE_SEARCH:
            return self._search(context)
        e: Mapping[str, float] = context.errors
        bv = bias_variance(e.get("human", float("nan")), e.get("train", float("nan")),
                           e.get("train_dev"), e.get("dev"), e.get("test"))
        md = render_markdown(bv, context.title)
        out = Path(context.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / "bias_variance.md"
        path.write_text(md)
        artifacts = [path, plot_bias_variance(bv, out / "bias_variance.png", context.title)]
        if context.trials:
            table = render_search_table(context.trials, bv.human, context.title)
            tpath = out / "bias_variance_trials.md"
            tpath.write_text(table)
            artifacts.append(tpath)
        metrics = {f"bias_variance/{g}": v for g, v in bv.gaps().items() if not math.isnan(v)}
        summary = (
            f"largest gap: {bv.largest.replace('_', ' ')} ({_pct(getattr(bv, bv.largest))})"
            if bv.largest else "no positive gap"
        )
        return Report(metrics=metrics, artifacts=artifacts, markdown=md, summary=summary)

    def _search(self, context: ReportContext) -> Report:
        rows = [t for t in context.trials if t.get("metrics")]  # a failed trial has no errors
        if not rows:
            return Report(summary="no finished trials")
        table = render_search_table(rows, human=context.errors.get("human"), title=context.title)
        out = Path(context.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / "bias_variance_trials.md"
        path.write_text(table)
        return Report(artifacts=[path], markdown=table, summary=f"{len(rows)} trials: bias_variance_trials.md")


@hookimpl
def dlops_reporters() -> dict[str, object]:
    return {"bias_variance": BiasVarianceReporter()}
