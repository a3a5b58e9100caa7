"""The picture of a search (artifact ``search/stages.png`` of the search run).

One panel per pair of numeric parameters (at most :data:`MAX_PAIRS`, in the order of the space:
tier 1 first), in the **sampling scale** (``lr.r = log10 lr``, ``beta.r = log10(1 - beta)``): each
stage's box as a rectangle, each trial as a dot in its stage's colour (confirmation trials left
out: they repeat configurations), the best trial as a star; and a last panel with the optimizing
metric of every trial in the order they ended and the best so far (a step curve). Matplotlib
with the ``Agg`` backend (no display needed).
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Optional

#: most parameter pairs drawn (the space's first parameters; one panel each)
MAX_PAIRS = 6


def stages_figure(plan: Any, path: str, best_id: Optional[str] = None) -> Optional[str]:
    """Draw the search of ``plan`` (a :class:`dlops.search.plan.StagedPlan` after its search) to
    ``path`` (PNG). Returns ``path``, or None when the plan has no trial with a finite metric.

    Args:
        plan: the plan (boxes, suggested configs, results, metric and mode).
        path: where the PNG goes.
        best_id: the trial to mark as best (default: ``plan.best()``; the confirmation's winner
            when ``search.confirm`` is on).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from dlops.search.space import to_u

    outcomes = plan.outcomes()
    metric = plan.metric
    ys = [(t, float(t.metrics[metric])) for t in outcomes
          if isinstance(t.metrics.get(metric), (int, float)) and math.isfinite(float(t.metrics[metric]))]
    if not ys:
        return None
    star = "best" if best_id is None else "confirmed winner"
    if best_id is None:
        b = plan.best()
        best_id = b.trial_id if b is not None else None
    numeric = [p for p in plan.params if p.is_numeric and p.scale != "const"]
    pairs = list(itertools.combinations(numeric, 2))[:MAX_PAIRS]
    if not pairs and numeric:
        pairs = [(numeric[0], numeric[0])]
    n = len(pairs) + 1
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
    colours = plt.get_cmap("viridis")
    k_max = max(1, len(plan.stages) - 1)

    def u(p: Any, v: Any) -> float:
        return float(to_u(p.scale, float(v)))

    def label(p: Any) -> str:
        return f"{p.name}.r" if p.scale in ("log", "log_int", "one_minus_log") else p.name

    for ax, (px, py) in zip(axes.flat, pairs):
        for k, box in enumerate(plan.boxes):
            if px.name in box.intervals and py.name in box.intervals:
                (x0, x1), (y0, y1) = box.intervals[px.name], box.intervals[py.name]
                ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1.5,
                                       edgecolor=colours(k / k_max), label=f"stage {k} box ({_method(plan, k)})"))
        pts = [(u(px, t.config[px.name]), u(py, t.config[py.name]), int(plan.trial_stage.get(t.trial_id, 0)))
               for t, _ in ys if px.name in t.config and py.name in t.config]
        if pts:
            ax.scatter([a for a, _, _ in pts], [b for _, b, _ in pts], s=14,
                       color=[colours(k / k_max) for _, _, k in pts])
        best = [t for t, _ in ys if t.trial_id == best_id]
        if best and px.name in best[0].config and py.name in best[0].config:
            ax.scatter(u(px, best[0].config[px.name]), u(py, best[0].config[py.name]), marker="*", s=220,
                       color="red", edgecolor="black", zorder=5, label=star)
        ax.set_xlabel(label(px))
        ax.set_ylabel(label(py))
        ax.autoscale_view()
    ax = axes.flat[len(pairs)]
    pos = {key: i for i, key in enumerate(plan.suggested)}
    order = sorted(ys, key=lambda ty: pos.get(ty[0].trial_id, len(pos)))
    vals = [v for _, v in order]
    sign = 1.0 if plan.mode == "min" else -1.0
    best_so_far, cur = [], math.inf
    for v in vals:
        cur = min(cur, sign * v)
        best_so_far.append(sign * cur)
    ax.scatter(range(1, len(vals) + 1), vals, s=12,
               color=[colours(int(plan.trial_stage.get(t.trial_id, 0)) / k_max) for t, _ in order])
    ax.step(range(1, len(vals) + 1), best_so_far, where="post", color="red", label="best so far")
    ax.set_xlabel("trial (suggestion order)")
    ax.set_ylabel(metric)
    ax.legend(loc="best", fontsize=7)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if pairs and handles:
        axes.flat[0].legend(handles, labels, loc="best", fontsize=7)
    for extra in list(axes.flat)[n:]:
        extra.axis("off")
    fig.suptitle(figure_title(plan, len(ys)))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _method(plan: Any, k: int) -> str:
    """Stage k's sampling method as the project file names it (``random``, ``sobol``, ``gp``)."""
    return str(plan.stages[k].method)


def figure_title(plan: Any, n_trials: int) -> str:
    """The figure's title: the stages with their methods, the trials drawn, the metric and mode
    (e.g. ``coarse-to-fine search: 4 stages (sobol, gp, gp, gp), 64 trials (dev/error, min)``)."""
    methods = ", ".join(_method(plan, k) for k in range(len(plan.stages)))
    return (f"coarse-to-fine search: {len(plan.stages)} stages ({methods}), {n_trials} trials "
            f"({plan.metric}, {plan.mode})")
