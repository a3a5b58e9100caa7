"""Confirmation on a noisy objective (``search.confirm: {top_k, seeds}``). Pure: no Ray, no MLflow.

On a small dev set the best of N trials is mostly the luckiest one: the observed optimum is biased
low (the winner's curse). After the last stage the ``top_k`` best feasible configurations are
trained again with ``seeds`` fresh training seeds each (the same seeds for every configuration,
so the comparison is paired), and the winner is the configuration whose **mean** optimizing
metric over those fresh seeds is best. Only the fresh seeds count: the first run of each
configuration is the one it was selected on, so it is biased. The satisficing constraints apply
to the means of the constraint metrics.

:class:`dlops.search.tune.searcher.StagedSearcher` issues the configurations of
:func:`confirm_configs` as Tune trials after the last stage; :func:`confirm_result` picks the winner.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from dlops.search.space import Constraint, Mode, TrialOutcome, select_top

#: config key of a trial's training seed (``dlops.train.trial`` reads it; default: the project's seed)
SEED_KEY = "seed"
#: config key of a confirmation trial: the trial id whose configuration it trains again
CONFIRM_KEY = "confirm_of"


def fresh_seeds(base_seed: int, n: int) -> list[int]:
    """``n`` training seeds no trial of the search used: ``base_seed + 1000 * (j + 1)``, j < n."""
    return [int(base_seed) + 1000 * (j + 1) for j in range(n)]


def confirm_configs(top: Sequence[TrialOutcome], seeds: int, base_seed: int, extra: Mapping[str, Any] = ()
                    ) -> list[dict[str, Any]]:
    """The configurations of the confirmation trials: each of ``top`` once per fresh seed.

    Args:
        top: the configurations to confirm, best first (e.g. :func:`select_top` of the search).
        seeds: fresh seeds per configuration (>= 1).
        base_seed: the project's seed (the search's trials trained with it).
        extra: keys set on every configuration (e.g. the stage index).

    Returns:
        ``len(top) * seeds`` configs: the trial's config with :data:`SEED_KEY` and
        :data:`CONFIRM_KEY` (the trial id) set, ordered seed-major (every configuration's first
        seed before any second seed, so an interrupted confirmation is still paired).

    Raises:
        ValueError: ``seeds < 1``.
    """
    if seeds < 1:
        raise ValueError(f"search.confirm.seeds must be >= 1, got {seeds}")
    out = []
    for s in fresh_seeds(base_seed, seeds):
        for t in top:
            cfg = {k: v for k, v in t.config.items() if k not in (SEED_KEY, CONFIRM_KEY)}
            out.append({**cfg, **dict(extra), SEED_KEY: s, CONFIRM_KEY: t.trial_id})
    return out


@dataclass(frozen=True)
class ConfirmedConfig:
    """One confirmed configuration.

    Attributes:
        trial_id: the search trial whose configuration it is.
        config: that trial's configuration.
        values: the optimizing metric of each fresh seed that ended with a finite value.
        mean, std: their mean and sample standard deviation (ddof = 1; 0 with one value; NaN with none).
        first: the optimizing metric of the search trial itself (the value it was selected on).
        metrics: the mean of every numeric metric over the fresh seeds (what the constraints see).
    """

    trial_id: str
    config: Mapping[str, Any]
    values: tuple[float, ...]
    mean: float
    std: float
    first: float
    metrics: Mapping[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"trial_id": self.trial_id, "values": list(self.values), "mean": self.mean, "std": self.std,
                "first": self.first, "n": len(self.values)}


@dataclass(frozen=True)
class ConfirmResult:
    """The confirmation's table (best first by mean; infeasible last) and its winner (None when no
    configuration has a finite, feasible mean)."""

    winner: Optional[str]
    table: tuple[ConfirmedConfig, ...]


def _mean_metrics(runs: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    keys = {k for r in runs for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    out = {}
    for k in sorted(keys):
        vals = [float(r[k]) for r in runs if isinstance(r.get(k), (int, float)) and math.isfinite(float(r[k]))]
        if vals:
            out[k] = sum(vals) / len(vals)
    return out


def confirm_result(top: Sequence[TrialOutcome], runs: Mapping[str, Sequence[Mapping[str, Any]]], metric: str,
                   mode: Mode, constraints: Sequence[Constraint] = ()) -> ConfirmResult:
    """Pick the winner of a confirmation on the mean over fresh seeds.

    Args:
        top: the confirmed search trials (their configs and first metrics).
        runs: trial id -> the final metrics of each of its confirmation trials (``{}`` for one
            that failed; a failed or non-finite seed is left out of the mean).
        metric, mode: the optimizing metric and ``min``/``max``.
        constraints: the satisficing constraints, applied to the means.

    Returns:
        The :class:`ConfirmResult`. Ties on the mean keep the search's order of ``top``.
    """
    rows = []
    for t in top:
        seeds = [r for r in runs.get(t.trial_id, ()) if isinstance(r.get(metric), (int, float))
                 and math.isfinite(float(r[metric]))]
        vals = tuple(float(r[metric]) for r in seeds)
        mean = sum(vals) / len(vals) if vals else float("nan")
        std = (math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1
               else (0.0 if vals else float("nan")))
        first = t.metrics.get(metric)
        rows.append(ConfirmedConfig(t.trial_id, dict(t.config), vals, mean, std,
                                    float(first) if isinstance(first, (int, float)) else float("nan"),
                                    _mean_metrics(seeds)))
    ranked = select_top([TrialOutcome(r.trial_id, r.config, r.metrics) for r in rows], metric, mode, constraints)
    order = {t.trial_id: i for i, t in enumerate(ranked)}
    table = tuple(sorted(rows, key=lambda r: order.get(r.trial_id, len(rows))))
    return ConfirmResult(ranked[0].trial_id if ranked else None, table)
