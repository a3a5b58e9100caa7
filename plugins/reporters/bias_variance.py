"""Bias/variance reporter: the gaps between human-level, train, train-dev, dev and test error.

Source: Andrew Ng, *Structuring Machine Learning Projects* (deeplearning.ai) and *Machine Learning
Yearning*, chapters on bias and variance against human-level performance (a proxy for Bayes
error) and on data mismatch with a train-dev set:

    avoidable bias      = train error     - human-level error
    variance            = train-dev error - train error
    data mismatch       = dev error       - train-dev error
    overfitting to dev  = test error      - dev error

All errors are fractions in [0, 1]; the gaps are in the same unit (fraction points).

Uncertainty: given the number of examples of each split, each error gets its Wilson 95% interval
(Wilson 1927) and each gap the interval of a difference of two independent proportions
(Newcombe 1998a, method 10: train, train-dev, dev and test are different example sets; human-level
error is a constant), see :mod:`dlops.reporting.stats`. The largest gap is *named* only when it
stands out: its interval lies above 0 and above every other gap's interval. Otherwise the report
says that no gap stands out and that the first knob is a bigger dev / train-dev set, with the
size that would make the largest gap stand out at the observed error rates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from dlops import hookimpl
from dlops.reporting import SCOPE_MODEL, SCOPE_SEARCH, SCOPE_TRIAL, Report, ReportContext
from dlops.reporting.stats import NAN_INTERVAL, Interval, constant, difference_independent, error_interval, \
    stands_out

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


ERR_SPLITS = ("train", "train_dev", "dev", "test")
#: the sets grown together to find the size that resolves the gaps
GROWABLE = ERR_SPLITS
#: the largest growth factor tried
MAX_GROWTH = 10000.0


@dataclass(frozen=True)
class BiasVariance:
    """The four gaps (fractions; NaN where a split is missing), their intervals and the verdict.

    Attributes:
        largest: the gap with the largest positive value (None if none), noise or not.
        named: ``largest`` when it stands out beyond the noise (or when no counts were given:
            the noise is then unknown), else None.
        stands_out: the largest gap's interval lies above 0 and above every other gap's
            (:func:`dlops.reporting.stats.stands_out`); None without counts.
        counts: examples per split (``{}`` when not given).
        intervals: ``{split: Interval}`` of each error (Wilson 95%).
        gap_intervals: ``{gap: Interval}`` (Newcombe 1998a, method 10).
        resolve: ``{split: examples}`` that would make the largest gap stand out at the observed
            rates (every split grown by one factor), ``{}`` when it already does or none would.
        resolve_zero: the same for the largest gap's interval to lie above 0 (the gap is real),
            ``{}`` when it already does or none would.
    """

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
    counts: Mapping[str, int] = field(default_factory=dict)
    intervals: Mapping[str, Interval] = field(default_factory=dict)
    gap_intervals: Mapping[str, Interval] = field(default_factory=dict)
    stands_out: bool | None = None
    resolve: Mapping[str, int] = field(default_factory=dict)
    resolve_zero: Mapping[str, int] = field(default_factory=dict)

    @property
    def named(self) -> str | None:
        return self.largest if self.stands_out is not False else None

    def gaps(self) -> dict[str, float]:
        return {g: getattr(self, g) for g in GAPS}

    def within_noise(self, gap: str) -> bool:
        """The gap's interval contains 0 (False without counts or for a missing gap)."""
        ci = self.gap_intervals.get(gap, NAN_INTERVAL)
        return not math.isnan(ci.value) and ci.low <= 0.0 <= ci.high


def _f(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def _gap_intervals(h: float, cis: Mapping[str, Interval]) -> dict[str, Interval]:
    """The gaps as differences of independent proportions (human-level error a constant)."""
    tr, td, dv, te = (cis.get(s, NAN_INTERVAL) for s in ERR_SPLITS)
    hum = constant(h) if not math.isnan(h) else NAN_INTERVAL
    no_td = math.isnan(td.value)
    return {
        "avoidable_bias": difference_independent(tr, hum),
        "variance": difference_independent(dv if no_td else td, tr),
        "data_mismatch": NAN_INTERVAL if no_td else difference_independent(dv, td),
        "overfitting_to_dev": difference_independent(te, dv),
    }


def _verdict(largest: str | None, gis: Mapping[str, Interval]) -> bool:
    if largest is None:
        return False
    return stands_out(gis[largest], [v for k, v in gis.items() if k != largest])


def _resolve(vals: Mapping[str, float], counts: Mapping[str, int], largest: str,
             above_zero_only: bool = False) -> dict[str, int]:
    """The split sizes (every measured split grown by one factor) at which ``largest`` would
    stand out at the observed error rates (with ``above_zero_only``: at which its interval
    would lie above 0); ``{}`` if no factor up to :data:`MAX_GROWTH` does (the gaps are too
    close to tell apart)."""
    grow = [s for s in GROWABLE if counts.get(s) and not math.isnan(vals[s])]
    if not grow:
        return {}
    k = 1.0
    while k <= MAX_GROWTH:
        k *= 1.25
        n = {s: int(math.ceil(counts[s] * k)) if s in grow else counts.get(s) for s in ERR_SPLITS}
        cis = {s: error_interval(vals[s], n[s]) if n.get(s) else NAN_INTERVAL for s in ERR_SPLITS}
        gis = _gap_intervals(vals["human"], cis)
        if (gis[largest].low > 0) if above_zero_only else _verdict(largest, gis):
            return {s: n[s] for s in grow}
    return {}


def bias_variance(
    human: float,
    train: float,
    train_dev: float | None = None,
    dev: float | None = None,
    test: float | None = None,
    counts: Mapping[str, int] | None = None,
) -> BiasVariance:
    """Compute the gaps of the practice (see the module docstring), with their intervals.

    Args:
        human: human-level error (Bayes-error proxy), fraction in [0, 1].
        train, train_dev, dev, test: errors, fractions in [0, 1]; None or NaN when missing.
            Without a train-dev set, ``variance`` is taken as dev - train and ``data_mismatch`` is NaN.
        counts: examples per split (``{"train": 150, "dev": 348, ...}``); without them no
            interval is computed and the largest gap is named as before (noise unknown).

    Returns:
        :class:`BiasVariance`; ``largest`` is the largest positive finite gap (None if none),
        ``named`` it when it stands out beyond the noise.

    Raises:
        ValueError: an error outside [0, 1] (percent given instead of a fraction?).

    Example (the practice's own), with 10,000 examples per split: human 1%, train 8%, dev 10%
    -> avoidable bias 7 points [6.5, 7.5] stands out over variance 2 points [1.2, 2.8]: work on
    bias. Human 7.5%, train 8%, dev 10% -> variance 2 points [1.2, 2.8] stands out over
    avoidable bias 0.5 [-0.03, 1.05]: work on variance.
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
    counts = {s: int(n) for s, n in (counts or {}).items() if s in ERR_SPLITS and n is not None and int(n) > 0}
    cis: dict[str, Interval] = {}
    gis: dict[str, Interval] = {}
    verdict: bool | None = None
    resolve: dict[str, int] = {}
    real: dict[str, int] = {}
    uses = {"avoidable_bias": ("train",), "variance": ("train", "dev" if math.isnan(td) else "train_dev"),
            "data_mismatch": ("train_dev", "dev"), "overfitting_to_dev": ("dev", "test")}
    judged = bool(counts) and all(s in counts for g in finite for s in uses[g])  # else the noise is not judged
    if counts:
        cis = {s: error_interval(vals[s], counts[s]) if s in counts else NAN_INTERVAL for s in ERR_SPLITS}
        gis = _gap_intervals(h, cis)
    if judged:
        verdict = _verdict(largest, gis)
        if largest is not None and not verdict:
            resolve = _resolve(vals, counts, largest)
            if gis[largest].low <= 0:
                real = _resolve(vals, counts, largest, above_zero_only=True)
    return BiasVariance(
        human=h, train=tr, train_dev=td, dev=dv, test=te, **gaps, largest=largest,
        better_than_human=(not math.isnan(tr) and not math.isnan(h) and tr < h),
        counts=counts, intervals=cis, gap_intervals=gis, stands_out=verdict, resolve=resolve, resolve_zero=real,
    )


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.2f}%"


def _pts(ci: Interval) -> str:
    return "n/a" if math.isnan(ci.value) else f"[{100 * ci.low:.2f}, {100 * ci.high:.2f}]"


def _sizes(sizes: Mapping[str, int]) -> str:
    return ", ".join(f"{n:,} {s.replace('_', '-')}" for s, n in sizes.items())


def verdict_lines(bv: BiasVariance) -> list[str]:
    """The diagnosis: the named gap and its knobs, or why none is named and the set sizes that
    would resolve the gaps."""
    if bv.largest is None:
        return ["No positive gap: nothing stands out."]
    g = bv.largest.replace("_", " ")
    if bv.named is not None:
        head = f"**Largest gap: {g}** — goal: {GOALS[bv.largest]}."
        if bv.stands_out:
            head += " It stands out beyond the noise (its 95% interval lies above 0 and above every other gap's)."
        else:
            head += " (Not every split in the gaps has its example count: the noise is not judged.)"
        return [head + " Knobs:"] + [f"- {k}" for k in KNOBS[bv.largest]]
    out = [f"**No gap stands out beyond the noise**: the largest, {g} ({_pct(getattr(bv, bv.largest))}, "
           f"95% interval {_pts(bv.gap_intervals[bv.largest])} points), overlaps 0 or another gap's interval. "
           "The first knob is a bigger dev / train-dev set, not a change of the model."]
    now = " (now " + ", ".join(f"{bv.counts.get(s, 0):,}" for s in bv.counts if s in ERR_SPLITS) + ")"
    if bv.resolve_zero:
        out.append(f"At the observed error rates, {g} would be told from 0 with about "
                   + _sizes(bv.resolve_zero) + " examples" + now + ".")
    if bv.resolve:
        out.append(f"It would stand out from every other gap with about " + _sizes(bv.resolve) + " examples.")
    else:
        out.append("It cannot be told apart from the next largest gap at any realistic set size: they are too close.")
    return out


def render_markdown(bv: BiasVariance, title: str = "") -> str:
    """The report as Markdown: the errors (with counts and Wilson 95% intervals where the split
    sizes are known), the gaps (with Newcombe intervals, marked when within noise), and the
    diagnosis (:func:`verdict_lines`)."""
    lines = [f"# Bias / variance{(' — ' + title) if title else ''}", ""]
    if bv.counts:
        lines += ["| split | error | errors / examples | 95% interval (Wilson) |", "|---|---|---|---|",
                  f"| human | {_pct(bv.human)} | (given) | |"]
        for k in ERR_SPLITS:
            n = bv.counts.get(k)
            ci = bv.intervals.get(k, NAN_INTERVAL)
            cnt = f"{int(round(getattr(bv, k) * n))} / {n}" if n and not math.isnan(getattr(bv, k)) else "n/a"
            lines.append(f"| {k.replace('_', '-')} | {_pct(getattr(bv, k))} | {cnt} | {_pts(ci)} % |")
    else:
        lines += ["| split | error |", "|---|---|"]
        for k in ("human", "train", "train_dev", "dev", "test"):
            lines.append(f"| {k.replace('_', '-')} | {_pct(getattr(bv, k))} |")
    lines += ["", "| gap | definition | value (points) | 95% interval (points) | within noise |", "|---|---|---|---|---|"]
    defs = {
        "avoidable_bias": "train - human",
        "variance": "train-dev - train" if not math.isnan(bv.train_dev) else "dev - train",
        "data_mismatch": "dev - train-dev",
        "overfitting_to_dev": "test - dev",
    }
    for g in GAPS:
        ci = bv.gap_intervals.get(g, NAN_INTERVAL)
        noise = "n/a" if math.isnan(ci.value) else ("yes" if bv.within_noise(g) else "no")
        lines.append(f"| {g.replace('_', ' ')} | {defs[g]} | {_pct(getattr(bv, g))} | {_pts(ci)} | {noise} |")
    lines.append("")
    if bv.better_than_human:
        lines.append(
            "Training error is below the human-level proxy: the proxy no longer bounds Bayes error, "
            "so progress gets harder to judge; look at the errors one by one (error analysis)."
        )
        lines.append("")
    lines += verdict_lines(bv)
    if bv.counts:
        lines += ["", "Intervals: Wilson (1927) score interval of each error; each gap as a difference of two "
                  "independent proportions (Newcombe 1998, method 10); human-level error is taken as known."]
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


def render_search_table(trials: Sequence[Mapping[str, Any]], human: float | None = None, title: str = "",
                        counts: Mapping[str, int] | None = None) -> str:
    """A Markdown table of the bias/variance gaps of every trial of a search, best dev error first.

    Args:
        trials: one dict per trial with its errors (fractions in [0, 1]) under the split names
            (``"train"``, ``"train_dev"``, ``"dev"``, ``"test"``, ``"human"``) or the metric names
            (``"dev/error"``; also nested under ``"metrics"``); a trial label under ``"trial"``,
            ``"trial_id"`` or ``"run_id"`` (else its position).
        human: human-level error used where a trial carries none.
        title: heading suffix.
        counts: examples per split (the same for every trial); with them a gap whose 95%
            interval contains 0 is shown in parentheses with ``~`` (within noise, not a finding)
            and the last column names a gap only when it stands out.

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
                           _err(t, "dev"), _err(t, "test"), counts=counts)
        rows.append((label, bv))
    rows.sort(key=lambda r: (math.isnan(r[1].dev), r[1].dev if not math.isnan(r[1].dev) else 0.0))
    lines = [f"# Bias / variance over the search{(' — ' + title) if title else ''}", ""]
    if counts:
        lines += ["Examples: " + ", ".join(f"{k.replace('_', '-')} {v}" for k, v in counts.items() if k in ERR_SPLITS)
                  + ". A gap in parentheses with ~ is within noise (its 95% interval contains 0): not a finding.", ""]
    lines += ["| trial | train | train-dev | dev | test | avoidable bias | variance | data mismatch "
              "| overfitting to dev | largest gap |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    counted: dict[str, int] = {}
    for label, bv in rows:
        gap_cells = [f"(~{_pct(getattr(bv, g))})" if bv.within_noise(g) else _pct(getattr(bv, g)) for g in GAPS]
        cells = [_pct(bv.train), _pct(bv.train_dev), _pct(bv.dev), _pct(bv.test)] + gap_cells
        if bv.largest is None:
            largest = "none"
        elif bv.named is None:
            largest = "none stands out"
        else:
            largest = bv.named.replace("_", " ")
        counted[largest] = counted.get(largest, 0) + 1
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {largest} |")
    lines.append("")
    if rows:
        lines.append("Largest gap across trials: " + ", ".join(f"{k} {v}" for k, v in sorted(counted.items(), key=lambda kv: -kv[1])) + ".")
    else:
        lines.append("No trials.")
    return "\n".join(lines) + "\n"


def plot_bias_variance(bv: BiasVariance, path: Path, title: str = "") -> Path:
    """Write a PNG with two bar charts: the errors per split, and the four gaps (percent points),
    with 95% intervals as error bars where the counts are known; the named gap in red, gaps
    within noise in grey. Returns ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.0, 3.8), dpi=100)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    splits = ("human", "train", "train_dev", "dev", "test")
    vals = [getattr(bv, s) for s in splits]
    def yerr(cis: list[Interval], vs: list[float]) -> list[list[float]] | None:
        if not any(not math.isnan(c.value) for c in cis):
            return None
        # the bar is the error as given; its interval comes from round(error * n) errors, so a value
        # that is not a whole count of n may sit a hair outside it: clamp the bars at 0
        return [[0.0 if math.isnan(c.value) or math.isnan(v) else max(0.0, 100 * (v - c.low)) for c, v in zip(cis, vs)],
                [0.0 if math.isnan(c.value) or math.isnan(v) else max(0.0, 100 * (c.high - v)) for c, v in zip(cis, vs)]]

    cis = [bv.intervals.get(s, NAN_INTERVAL) for s in splits]
    ax1.bar([s.replace("_", "-") for s in splits], [0.0 if math.isnan(v) else 100 * v for v in vals],
            color=["gray", "C0", "C1", "C2", "C3"], yerr=yerr(cis, vals), capsize=3)
    for i, v in enumerate(vals):
        ax1.text(i, 0 if math.isnan(v) else 100 * v, "n/a" if math.isnan(v) else f"{100 * v:.1f}",
                 ha="center", va="bottom", fontsize=8)
    ax1.set_ylabel("error (%)")
    ax1.set_title("errors")
    gvals = [getattr(bv, g) for g in GAPS]
    colours = ["C3" if g == bv.named else ("lightgray" if bv.within_noise(g) else "C0") for g in GAPS]
    gcis = [bv.gap_intervals.get(g, NAN_INTERVAL) for g in GAPS]
    ax2.bar([g.replace("_", " ").replace("overfitting to dev", "overfit dev") for g in GAPS],
            [0.0 if math.isnan(v) else 100 * v for v in gvals], color=colours, yerr=yerr(gcis, gvals), capsize=3)
    ax2.axhline(0, color="black", linewidth=0.8)
    ax2.set_ylabel("gap (percent points)")
    ax2.set_title("gaps, 95% intervals (red: stands out; grey: within noise)" if bv.counts else "gaps (largest in red)",
                  fontsize=9)
    ax2.tick_params(axis="x", labelsize=8)
    fig.suptitle(f"bias / variance{(' — ' + title) if title else ''}")
    fig.tight_layout()
    fig.savefig(path)
    return path


class BiasVarianceReporter:
    """Reporter ``bias_variance``, in every scope.

    * ``trial`` and ``model`` scopes: metrics ``bias_variance/<gap>`` (fraction points) and, with
      the split sizes (``context.counts`` or the predictions), ``bias_variance/<gap>_ci_low`` /
      ``_ci_high`` (95%, fraction points) and ``bias_variance/stands_out`` (1: the largest gap is
      named, 0: none stands out beyond the noise); artifacts ``bias_variance.md``,
      ``bias_variance.png`` and, given ``context.trials``, ``bias_variance_trials.md``
      (:func:`render_search_table`).
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
        counts = context.split_counts()
        bv = bias_variance(e.get("human", float("nan")), e.get("train", float("nan")),
                           e.get("train_dev"), e.get("dev"), e.get("test"), counts=counts)
        md = render_markdown(bv, context.title)
        out = Path(context.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / "bias_variance.md"
        path.write_text(md)
        artifacts = [path, plot_bias_variance(bv, out / "bias_variance.png", context.title)]
        if context.trials:
            table = render_search_table(context.trials, bv.human, context.title, counts=counts)
            tpath = out / "bias_variance_trials.md"
            tpath.write_text(table)
            artifacts.append(tpath)
        metrics = {f"bias_variance/{g}": v for g, v in bv.gaps().items() if not math.isnan(v)}
        for g, ci in bv.gap_intervals.items():
            if not math.isnan(ci.value):
                metrics[f"bias_variance/{g}_ci_low"], metrics[f"bias_variance/{g}_ci_high"] = ci.low, ci.high
        if bv.stands_out is not None:
            metrics["bias_variance/stands_out"] = float(bv.stands_out)
        if bv.largest is None:
            summary = "no positive gap"
        elif bv.named is not None:
            ci = bv.gap_intervals.get(bv.largest)
            summary = f"largest gap: {bv.largest.replace('_', ' ')} ({_pct(getattr(bv, bv.largest))}" + \
                      (f", 95% {_pts(ci)} points)" if ci is not None else ")")
        else:
            summary = (f"no gap stands out beyond the noise (largest: {bv.largest.replace('_', ' ')} "
                       f"{_pct(getattr(bv, bv.largest))}, 95% {_pts(bv.gap_intervals[bv.largest])} points); "
                       "first knob: a bigger dev / train-dev set"
                       + (" (told from 0 at about " + _sizes(bv.resolve_zero) + ")" if bv.resolve_zero else ""))
        return Report(metrics=metrics, artifacts=artifacts, markdown=md, summary=summary)

    def _search(self, context: ReportContext) -> Report:
        rows = [t for t in context.trials if t.get("metrics")]  # a failed trial has no errors
        if not rows:
            return Report(summary="no finished trials")
        table = render_search_table(rows, human=context.errors.get("human"), title=context.title,
                                    counts=context.split_counts())
        out = Path(context.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / "bias_variance_trials.md"
        path.write_text(table)
        return Report(artifacts=[path], markdown=table, summary=f"{len(rows)} trials: bias_variance_trials.md")


@hookimpl
def dlops_reporters() -> dict[str, object]:
    return {"bias_variance": BiasVarianceReporter()}
