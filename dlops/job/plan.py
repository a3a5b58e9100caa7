"""The project's search section as the pure search objects: the staged plan and its constraints."""

from __future__ import annotations

from typing import Any

from dlops.config import ProjectConfig


def search_params(cfg: ProjectConfig) -> list[Any]:
    """The search space of the project as :class:`~dlops.search.Param` objects, in file order."""
    from dlops.search.space import Param

    return [
        Param(name=n, scale=p.scale, low=p.low, high=p.high,
              choices=tuple(p.choices) if p.choices is not None else None, value=p.value, q=p.q,
              tier=p.tier, default=p.default)
        for n, p in cfg.search.space.items()
    ]


def constraints(cfg: ProjectConfig) -> list[Any]:
    """The satisficing constraints (``search.constraints``) as :class:`~dlops.search.Constraint` objects."""
    from dlops.search.space import Constraint

    return [Constraint(c.metric, c.op, c.threshold) for c in cfg.search.constraints]


def build_plan(cfg: ProjectConfig) -> Any:
    """The :class:`~dlops.search.StagedPlan` of the project's search section."""
    from dlops.search.plan import Stage, StagedPlan
    from dlops.search.zoom import ZoomRule

    s = cfg.search
    z = s.zoom
    return StagedPlan(
        search_params(cfg),
        [Stage(st.trials, st.epochs, st.method, st.tiers, st.perturb) for st in s.stages],
        s.metric,
        s.mode,
        constraints(cfg),
        ZoomRule(kind=z.kind, top_k=z.top_k, top_fraction=z.top_fraction, margin=z.margin, shrink=z.shrink,
                 min_width=z.min_width, use_history=z.use_history, tie_break=z.tie_break,
                 tie_tolerance=z.tie_tolerance, keep_choices=z.keep_choices),
        seed=cfg.seed,
    )
