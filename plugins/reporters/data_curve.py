"""Data curve reporter: how dev error falls with more training data.

The practice: end-to-end learning needs a lot of data; with little data a pipeline or transfer
learning wins. This reporter trains the chosen configuration (the best trial's hyperparameters,
same seed, same epochs) on 1/8, 1/4, 1/2 and all of the training pool (nested, stratified
subsets), scores each on the dev set with its Wilson 95% interval, fits a power law
``error(n) = a · n^(-b)`` (:func:`dlops.reporting.stats.fit_power_law`) and says whether more
labelled data is the knob: the curve is *still falling* when the model trained on the whole pool
beats the one trained on half of it beyond the noise (the paired interval of the two dev errors,
Newcombe 1998b, lies above 0: the two models are scored on the same dev examples).

When the project transfers from a source network, the same curve is also trained from scratch
(no source weights, nothing frozen), so the plot shows where transfer stops mattering.

Off by default (it trains 4 or 8 more models): add it to ``report.reporters``::

    report:
      reporters: [bias_variance, data_curve]

Needs ``context.train_context`` (:class:`dlops.reporting.contract.TrainContext`), which the main
job gives in the ``model`` scope; ``dlops report`` has none, and the reporter then says so.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dlops import hookimpl
from dlops.reporting import SCOPE_MODEL, Report, ReportContext
from dlops.reporting.stats import Interval, PowerLaw, difference_paired, fit_power_law, paired_counts, wilson

#: the shares of the training pool the curve is trained on
FRACTIONS = (0.125, 0.25, 0.5, 1.0)
LABELS = {0.125: "1_8", 0.25: "1_4", 0.5: "1_2", 1.0: "all"}


def nested_subsets(y: np.ndarray, fractions: Sequence[float] = FRACTIONS, seed: int = 0) -> list[np.ndarray]:
    """Nested, stratified subsets of a training pool: each holds about ``fraction`` of every
    class (at least one example of each), and each smaller subset is inside the larger ones.

    Args:
        y: (N,) class indices of the pool.
        fractions: increasing shares in (0, 1].
        seed: the permutation's seed (``numpy.random.default_rng``).

    Returns:
        One sorted int64 index array per fraction.

    Raises:
        ValueError: a fraction outside (0, 1] or not increasing.
    """
    fr = list(fractions)
    if any(not 0 < f <= 1 for f in fr) or fr != sorted(fr):
        raise ValueError(f"fractions must be increasing shares in (0, 1], got {fr}")
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    per_class = {c: rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)}
    out = []
    for f in fr:
        idx = [p[: max(1, int(math.ceil(f * len(p))))] for p in per_class.values()]
        out.append(np.sort(np.concatenate(idx)).astype(np.int64))
    return out


@dataclass(frozen=True)
class Curve:
    """One learning curve: training-set sizes, dev errors with intervals, the fit, the verdict."""

    name: str
    n: list[int]
    errors: list[Interval]
    fit: PowerLaw | None
    last_step: Interval  # error(half) - error(all), paired, fraction points
    still_falling: bool


def curve_verdict(name: str, n: Sequence[int], wrong: Sequence[np.ndarray]) -> Curve:
    """A :class:`Curve` from the dev outcomes of models trained on growing sets.

    Args:
        name: the curve's label (``transfer`` or ``scratch``).
        n: training-set sizes, increasing.
        wrong: per size, (M,) booleans: which dev examples that model gets wrong (same examples).

    Returns:
        The curve; ``still_falling`` when the paired 95% interval of error(second largest) -
        error(largest) lies above 0 (Newcombe 1998b).
    """
    errs = [wilson(int(np.sum(w)), len(w)) for w in wrong]
    try:
        fit: PowerLaw | None = fit_power_law([float(v) for v in n], [e.value for e in errs])
    except ValueError:
        fit = None
    step = difference_paired(*paired_counts(wrong[-2], wrong[-1])) if len(wrong) >= 2 else \
        Interval(float("nan"), float("nan"), float("nan"))
    return Curve(name, list(n), errs, fit, step, bool(step.low > 0))


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.2f}%"


def render_markdown(curves: Sequence[Curve], n_dev: int, title: str = "") -> str:
    """The curves as a Markdown table (size, dev error, Wilson 95% interval), the fits and the verdict."""
    lines = [f"# Data curve{(' — ' + title) if title else ''}", "",
             f"Dev error against training-set size (dev: {n_dev} examples; same configuration, seed and epochs).", "",
             "| curve | train examples | dev error | 95% interval (Wilson) |", "|---|---|---|---|"]
    for c in curves:
        for n, e in zip(c.n, c.errors):
            lines.append(f"| {c.name} | {n} | {_pct(e.value)} | [{100 * e.low:.2f}, {100 * e.high:.2f}] % |")
    lines.append("")
    for c in curves:
        fit = (f"fit error(n) = {c.fit.a:.3g} · n^(-{c.fit.b:.3f}); at {2 * c.n[-1]} examples "
               f"{_pct(min(1.0, c.fit(2 * c.n[-1])))}") if c.fit else "no fit"
        step = (f"halving the pool costs {100 * c.last_step.value:+.2f} points "
                f"(paired 95% [{100 * c.last_step.low:.2f}, {100 * c.last_step.high:.2f}])")
        if c.still_falling:
            verdict = "**still falling**: more labelled data is a knob (it beats the noise)"
        else:
            verdict = "**flat within noise**: more labelled data is not the first knob at this size"
        lines.append(f"- {c.name}: {verdict}; {step}; {fit}.")
    by = {c.name: c for c in curves}
    if "transfer" in by and "scratch" in by:
        t, s = by["transfer"], by["scratch"]
        wins = [n for n, et, es in zip(t.n, t.errors, s.errors) if et.high < es.low]
        if wins:
            lines.append(f"- transfer beats scratch beyond the noise at {', '.join(map(str, wins))} training examples"
                         + ("; at the full pool it no longer does: transfer stops mattering there"
                            if t.n[-1] not in wins else "") + ".")
        else:
            lines.append("- transfer and scratch are within noise of each other at every size.")
    lines += ["", "Intervals: Wilson (1927) per point; the last step as a paired difference on the same dev "
              "examples (Newcombe 1998b); power law as in Hestness et al. (2017)."]
    return "\n".join(lines) + "\n"


def plot_curves(curves: Sequence[Curve], path: Path, title: str = "") -> Path:
    """A PNG: dev error (%) against training examples (log scale), 95% error bars, fitted power
    laws dashed. Returns ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, c in enumerate(curves):
        v = [100 * e.value for e in c.errors]
        yerr = [[max(0.0, 100 * (e.value - e.low)) for e in c.errors], [max(0.0, 100 * (e.high - e.value)) for e in c.errors]]
        ax.errorbar(c.n, v, yerr=yerr, marker="o", capsize=3, color=f"C{i}", label=c.name)
        if c.fit is not None:
            xs = np.geomspace(c.n[0], 2 * c.n[-1], 30)
            ax.plot(xs, [100 * min(1.0, c.fit(x)) for x in xs], "--", color=f"C{i}", linewidth=0.8,
                    label=f"{c.name} fit n^-{c.fit.b:.2f}")
    ax.set_xscale("log")
    ax.set_xlabel("training examples")
    ax.set_ylabel("dev error (%)")
    ax.legend(fontsize=8)
    ax.set_title(f"data curve{(' — ' + title) if title else ''}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    return path


def write_csv(curves: Sequence[Curve], path: Path) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["curve", "train_examples", "dev_error", "ci_low", "ci_high"])
        for c in curves:
            for n, e in zip(c.n, c.errors):
                w.writerow([c.name, n, f"{e.value:.6f}", f"{e.low:.6f}", f"{e.high:.6f}"])
    return path


class DataCurveReporter:
    """Reporter ``data_curve`` (``model`` scope; see the module docstring).

    Metrics: ``data_curve/<curve>/dev_error/<share>`` with ``_ci_low`` / ``_ci_high``
    (fractions; share ``1_8``, ``1_4``, ``1_2``, ``all``), ``data_curve/<curve>/n/<share>``,
    ``data_curve/<curve>/exponent`` (the power law's ``b``) and ``data_curve/<curve>/still_falling``
    (1 or 0); curves ``transfer`` (with a source network) and ``scratch``. Artifacts
    ``data_curve.md``, ``data_curve.png``, ``data_curve.csv``.
    """

    name = "data_curve"
    scopes = (SCOPE_MODEL,)

    def report(self, context: ReportContext) -> Report:
        """Train the curves and report them.

        Raises:
            dlops.train.loop.NonFiniteLossError: a model's loss became NaN or inf.
        """
        tc = context.train_context
        if tc is None:
            return Report(summary="skipped: no training context (it runs inside dlops run)")
        if tc.task != "classification":
            return Report(summary="skipped: the data curve is for single-label classification")
        from dlops.train.fit import fit_predict

        data = tc.data
        x, y = data.train.x, np.asarray(data.train.y)
        xd, yd = data.dev.x, np.asarray(data.dev.y)
        subsets = nested_subsets(y, FRACTIONS, tc.seed)
        epochs = int(tc.config.get("epochs", tc.default_epochs))
        variants: list[tuple[str, Any, str]] = []
        if tc.source_state is not None:
            variants.append(("transfer", tc.source_state, tc.freeze))
        variants.append(("scratch", None, "none"))
        curves = []
        for name, state, freeze in variants:
            wrong = []
            for idx in subsets:
                prob = fit_predict((x[idx], y[idx]), {"dev": xd}, tc.config, tc.spec, state, freeze, tc.seed,
                                   epochs, tc.policy, tc.magnitude)["dev"]
                wrong.append(np.argmax(prob, axis=1) != yd)
            curves.append(curve_verdict(name, [len(i) for i in subsets], wrong))
        out = Path(context.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        md = render_markdown(curves, len(yd), context.title)
        (out / "data_curve.md").write_text(md)
        artifacts = [out / "data_curve.md", plot_curves(curves, out / "data_curve.png", context.title),
                     write_csv(curves, out / "data_curve.csv")]
        metrics: dict[str, float] = {}
        for c in curves:
            for f, n, e in zip(FRACTIONS, c.n, c.errors):
                key = f"data_curve/{c.name}/dev_error/{LABELS[f]}"
                metrics[key], metrics[key + "_ci_low"], metrics[key + "_ci_high"] = e.value, e.low, e.high
                metrics[f"data_curve/{c.name}/n/{LABELS[f]}"] = float(n)
            if c.fit is not None:
                metrics[f"data_curve/{c.name}/exponent"] = c.fit.b
            metrics[f"data_curve/{c.name}/still_falling"] = float(c.still_falling)
        summary = "; ".join(f"{c.name} {_pct(c.errors[0].value)} -> {_pct(c.errors[-1].value)} "
                            f"({'still falling' if c.still_falling else 'flat within noise'})" for c in curves)
        return Report(metrics=metrics, artifacts=artifacts, markdown=md, summary=summary)


@hookimpl
def dlops_reporters() -> dict[str, object]:
    return {"data_curve": DataCurveReporter()}
