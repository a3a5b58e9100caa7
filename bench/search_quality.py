"""Search quality: coarse-to-fine vs random search vs TPE vs ASHA, same budget, paired seeds.

Run::

    .venv/bin/python bench/search_quality.py            # full: 20 seeds, budgets 32 and 64
    .venv/bin/python bench/search_quality.py --quick    # 5 seeds, a smoke run
    .venv/bin/python bench/search_quality.py --seeds 30 --objectives branin,hartmann6

What is compared (all minimise; every method gets the same budget of ``trials x epochs``
epochs, where ``epochs`` = :data:`MAX_EPOCHS`, and the same seed ``s`` for paired comparisons):

* ``c2f``: :class:`dlops.search.plan.StagedPlan` driven by :func:`dlops.search.plan.run_plan`
  with the stages of :func:`c2f_stages` (a scrambled-Sobol first stage with 25% of the trials,
  then 3 zoom stages) and the rule of :data:`C2F_RULES` (``--rule``, default ``shrink-tie``: on
  objectives that also return a secondary metric (digits: dev loss), near-tied trials are
  ranked by it when choosing the zoom's centre).
* ``random``: one stage of i.i.d. uniform points in the sampling scale (``sample_box``).
* ``tpe``: Optuna's ``TPESampler(seed=s)`` with its defaults, on the same sampling scale
  (``suggest_float`` on ``r``, i.e. ``lr = 10**r``, equivalent to ``log=True``). It runs through
  Optuna directly, not Ray Tune's ``OptunaSearch``: 20 seeds x 3 objectives x 96 trials through
  Tune's driver loop does not fit in 10 minutes on 2 cores. The sampler is the same object that
  ``OptunaSearch`` wraps; the output says ``tpe_backend``.
* ``asha``: random configurations under a *simulation* of Ray Tune's ``ASHAScheduler``
  (``time_attr="epoch"``, ``max_t=MAX_EPOCHS``, ``grace_period=1``, ``reduction_factor=3``, one
  bracket). Trials run one after the other; at each rung (1, 3, 9 epochs) a trial continues only if
  its value is within the best ``1/3`` of all values recorded at that rung so far (Ray's
  ``_Bracket.cutoff``: the ``(1 - 1/rf)`` percentile, ``nanpercentile``). New trials start until
  the epoch budget is spent. Its best value is the best *full-fidelity* value of the trials that
  reached ``max_t``.

Fidelity model of the cheap functions (documented assumption, not a measurement): after ``e`` of
``E`` epochs a trial reports ``f(x) + spread * (1 - e/E) * (0.5 + |z|)`` with ``z ~ N(0, 1)`` fresh
at every report and ``spread`` the interquartile range of ``f`` under uniform sampling; at
``e = E`` it reports ``f(x)`` exactly. Methods that train every trial to ``E`` epochs therefore see
``f(x)`` itself; ASHA trades fidelity for more configurations.

Objectives (:data:`OBJECTIVES`): Branin (2-D, minimum 0.397887), Rosenbrock-4D on
``[-5, 10]^4`` (minimum 0), Hartmann-6 on ``[0, 1]^6`` (minimum -3.32237); sources: Surjanovic
& Bingham, *Virtual Library of Simulation Experiments* (sfu.ca/~ssurjano). Each input is a
hyperparameter on an ``lr``-like log scale (``lr = 10**r``, ``r in [-4, 0]``) or a ``beta``-like
scale (``beta = 1 - 10**r``, ``r in [-3, -1]``), alternating; ``r`` is mapped linearly onto the
function's domain. So the methods search ``lr`` and ``beta`` and only a search in the right scale
sees the functions' usual shape.

Adding an objective (e.g. the real digits trainable, 12 seeds): build a :class:`Objective` with
``params`` (a list of :class:`dlops.search.space.Param`) and ``evaluate(config, epochs, seed) ->
float`` (the value to minimise after ``epochs`` epochs; a training run would train ``epochs``
epochs and return ``dev/error``), optionally ``seeds`` (overrides ``--seeds``) and ``budgets``,
and pass it to :func:`register_objective` before :func:`main` (or import this module and call
:func:`run_benchmark` with it). Nothing else in this file is specific to the cheap functions.

The LAST line printed is one JSON object with the headline figures.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from dlops.search.plan import Stage, StagedPlan, run_plan
from dlops.search.space import Param, initial_box, sample_box
from dlops.search.zoom import ZoomRule

MAX_EPOCHS = 9  # epochs of a full-fidelity trial; ASHA rungs at 1, 3, 9
ASHA_GRACE = 1
ASHA_RF = 3
METRIC = "loss"
TIE_METRIC = "tie"  # secondary metric of objectives with ``evaluate_metrics`` (digits: dev loss)

# --------------------------------------------------------------------------------------------
# Objectives
# --------------------------------------------------------------------------------------------


@dataclass
class Objective:
    """A benchmark objective: a search space and a multi-fidelity value to minimise.

    Attributes:
        name: short name (table rows, JSON keys).
        params: the search space.
        evaluate: ``(config, epochs, seed) -> float``, the value after ``epochs`` epochs; at
            ``epochs == MAX_EPOCHS`` the full-fidelity value that "best value" means.
        seeds: seeds to run (None: ``--seeds``); a costly objective sets e.g. 3.
        budgets: trial budgets (None: ``--budgets``).
        f_min: known minimum (for the table only), or None.
    """

    name: str
    params: list[Param]
    evaluate: Callable[[Mapping[str, Any], int, int], float]
    seeds: int | None = None
    budgets: tuple[int, ...] | None = None
    f_min: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    #: optional ``(config, epochs, seed) -> {name: value}`` with the value to minimise under
    #: :data:`METRIC` and secondary metrics (e.g. :data:`TIE_METRIC`, the dev loss behind a
    #: quantised dev error) that a rule's ``ZoomRule.tie_break`` may use; the baselines and the
    #: reported best value use :data:`METRIC` only
    evaluate_metrics: Callable[[Mapping[str, Any], int, int], Mapping[str, float]] | None = None


def branin(x: np.ndarray) -> float:
    """Branin-Hoo on x1 in [-5, 10], x2 in [0, 15]; minimum 0.397887 at three points."""
    x1, x2 = x
    b, c, r, s, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 6.0, 10.0, 1 / (8 * math.pi)
    return float((x2 - b * x1**2 + c * x1 - r) ** 2 + s * (1 - t) * math.cos(x1) + s)


def rosenbrock(x: np.ndarray) -> float:
    """Rosenbrock in d dimensions; minimum 0 at (1, ..., 1)."""
    return float(np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2))


_H6_A = np.array(
    [[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]]
)
_H6_P = 1e-4 * np.array(
    [
        [1312, 1696, 5569, 124, 8283, 5886],
        [2329, 4135, 8307, 3736, 1004, 9991],
        [2348, 1451, 3522, 2883, 3047, 6650],
        [4047, 8828, 8732, 5743, 1091, 381],
    ]
)
_H6_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])


def hartmann6(x: np.ndarray) -> float:
    """Hartmann-6 on [0, 1]^6; minimum -3.32237."""
    return float(-np.sum(_H6_ALPHA * np.exp(-np.sum(_H6_A * (x - _H6_P) ** 2, axis=1))))


def hp_space(d: int) -> list[Param]:
    """``d`` hyperparameters alternating ``lr``-like (log, 1e-4..1) and ``beta``-like (0.9..0.999)."""
    out = []
    for i in range(d):
        if i % 2 == 0:
            out.append(Param(f"lr{i}", "log", 1e-4, 1.0))
        else:
            out.append(Param(f"beta{i}", "one_minus_log", 0.9, 0.999))
    return out


def synthetic(
    name: str, fn: Callable[[np.ndarray], float], lows: Sequence[float], highs: Sequence[float], f_min: float
) -> Objective:
    """Place ``fn`` (defined on the box ``lows..highs``) on the hyperparameter scales of :func:`hp_space`."""
    lows_a, highs_a = np.asarray(lows, float), np.asarray(highs, float)
    params = hp_space(len(lows_a))
    ubox = initial_box(params)

    def full(config: Mapping[str, Any]) -> float:
        t = np.array(
            [
                (p.to_u(float(config[p.name])) - ubox.intervals[p.name][0]) / ubox.width(p.name)
                for p in params
            ]
        )
        return fn(lows_a + np.clip(t, 0.0, 1.0) * (highs_a - lows_a))

    rng = np.random.default_rng(12345)
    ref = [full(c) for c in sample_box(params, ubox, 2000, rng)]
    spread = float(np.subtract(*np.percentile(ref, [75, 25])))

    def evaluate(config: Mapping[str, Any], epochs: int, seed: int) -> float:
        f = full(config)
        if epochs >= MAX_EPOCHS:
            return f
        key = zlib.crc32(np.asarray([float(config[p.name]) for p in params]).tobytes())
        noise_rng = np.random.default_rng([seed, epochs, key])
        return f + spread * (1 - epochs / MAX_EPOCHS) * (0.5 + abs(float(noise_rng.normal())))

    return Objective(name, params, evaluate, f_min=f_min, meta={"spread": spread})


OBJECTIVES: dict[str, Objective] = {}


def register_objective(obj: Objective) -> None:
    """Make ``obj`` available to ``--objectives`` (the hook for e.g. the digits trainable)."""
    OBJECTIVES[obj.name] = obj


register_objective(synthetic("branin", branin, [-5, 0], [10, 15], 0.397887))
register_objective(synthetic("rosenbrock4", rosenbrock, [-5] * 4, [10] * 4, 0.0))
register_objective(synthetic("hartmann6", hartmann6, [0] * 6, [1] * 6, -3.32237))


# --------------------------------------------------------------------------------------------
# The real digits transfer objective
# --------------------------------------------------------------------------------------------

#: the digits search space (the example project's): lr on log 1e-4..1, momentum on 1 - 10**r
#: 0.9..0.999, batch size in {8, 16, 32}, hidden units on log_int 16..256
DIGITS_PARAMS = [
    Param("lr", "log", 1e-4, 1.0),
    Param("momentum", "one_minus_log", 0.9, 0.999),
    Param("batch_size", "choice", choices=(8, 16, 32)),
    Param("hidden", "log_int", 16, 256),
]


class DigitsTransfer:
    """The real digits transfer objective: dev error after fine-tuning the frozen-backbone model.

    The small CNN source network is trained once per process on digits 0-4 (the default
    :class:`dlops.config.DataConfig` and :class:`dlops.config.PretrainConfig`, data seed 0). Each
    evaluation builds the target model (digits 5-9, 30 training examples per class, hidden units
    from the config), copies the source features, freezes the backbone (BatchNorm included),
    trains with SGD(lr, momentum) and mini-batches of ``batch_size`` for ``epochs`` epochs
    (training seed = the benchmark seed, so paired seeds see the same noise) and returns
    ``dev/error`` (a fraction). A diverged run (NaN loss) returns 1.0, the worst error.

    Successive calls for the same config and seed with growing ``epochs`` (ASHA's rungs) continue
    the same training run instead of starting over, as a Tune trial would.
    """

    def __init__(self) -> None:
        self._ready = False
        self._last: tuple[Any, ...] | None = None  # (key, model, opt, epochs done)
        self.n_epochs = 0  # epochs trained (all calls): a cost counter

    def _setup(self) -> None:
        import torch

        from dlops.config import DataConfig, PretrainConfig
        from dlops.data.sources import load_task
        from dlops.data.transforms import build_transform
        from dlops.models.transfer import build_model
        from dlops.train.loop import fit_epoch, make_loader, seed_everything, stack_eval

        torch.set_num_threads(1)
        self.data = load_task(DataConfig(), 0)
        d, p = self.data, PretrainConfig()
        c = int(d.channels)
        self.spec = {"name": "small_cnn", "num_classes": len(d.class_names), "in_channels": c, "width": 16,
                     "mean": [0.5] * c, "std": [0.5] * c, "image_size": int(d.image_size)}
        self.t_eval = build_transform("none", 0.0, self.spec["image_size"], self.spec["mean"], self.spec["std"],
                                      train=False)
        seed_everything(0)
        src = build_model(dict(self.spec, num_classes=len(d.source_classes), hidden=64))
        loader = make_loader(d.source.x, d.source.y, self.t_eval, p.batch_size, shuffle=True, seed=0)
        opt = torch.optim.SGD(src.parameters(), lr=p.lr, momentum=p.momentum)
        for _ in range(p.epochs):
            fit_epoch(src, loader, opt)
        self.source_state = {k: v.detach().clone() for k, v in src.state_dict().items()}
        self.x_dev = stack_eval(d.dev.x, self.t_eval)
        self._ready = True

    def __call__(self, config: Mapping[str, Any], epochs: int, seed: int) -> float:
        return self.metrics(config, epochs, seed)[METRIC]

    def metrics(self, config: Mapping[str, Any], epochs: int, seed: int) -> dict[str, float]:
        """``{METRIC: dev error, TIE_METRIC: dev cross-entropy}`` (diverged: 1.0 and inf)."""
        import torch

        from dlops.models.transfer import apply_freeze, build_model, transfer_features
        from dlops.train.loop import NonFiniteLossError, evaluate_task, fit_epoch, make_loader, predict_proba, \
            seed_everything

        if not self._ready:
            self._setup()
        key = (seed, float(config["lr"]), float(config["momentum"]), int(config["batch_size"]), int(config["hidden"]))
        if self._last is not None and self._last[0] == key and self._last[3] <= epochs:
            _, model, opt, done = self._last
        else:
            seed_everything(seed)
            model = build_model(dict(self.spec, hidden=int(config["hidden"])))
            transfer_features(model, self.source_state)
            apply_freeze(model, "backbone")
            opt = torch.optim.SGD([q for q in model.parameters() if q.requires_grad], lr=float(config["lr"]),
                                  momentum=float(config["momentum"]))
            done = 0
        d = self.data
        try:
            for e in range(done, epochs):
                if done < 0:
                    break
                loader = make_loader(d.train.x, d.train.y, self.t_eval, int(config["batch_size"]), shuffle=True,
                                     seed=seed + e)
                fit_epoch(model, loader, opt)
                self.n_epochs += 1
                done = e + 1
        except NonFiniteLossError:
            done = -1
        self._last = (key, model, opt, done)
        if done < 0:
            return {METRIC: 1.0, TIE_METRIC: math.inf}
        ev = evaluate_task(predict_proba(model, self.x_dev), d.dev.y)
        loss = float(ev.loss)
        return {METRIC: float(ev.error), TIE_METRIC: loss if math.isfinite(loss) else math.inf}


#: paired seeds of the digits objective: 12, so that ">= 75% of seeds" is 9 of 12 (the dev error
#: is quantised and noisy; with 3 seeds one seed is a third of a rate)
DIGITS_SEEDS = 12


def digits_objective() -> Objective:
    """The digits transfer objective (12 seeds, budgets 16, 32 and 64 trials of 9 epochs; dev loss as `TIE_METRIC`)."""
    fn = DigitsTransfer()
    return Objective("digits", DIGITS_PARAMS, fn, seeds=DIGITS_SEEDS, budgets=(16, 32, 64), f_min=None,
                     meta={"metric": "dev/error", "tie": "dev/loss", "data": "digits 0-4 -> 5-9, 30/class"},
                     evaluate_metrics=fn.metrics)


register_objective(digits_objective())

# --------------------------------------------------------------------------------------------
# Methods: each returns the best full-fidelity value found with ``n`` trials x MAX_EPOCHS
# --------------------------------------------------------------------------------------------

#: coarse-to-fine configurations: name -> (zoom rule, keyword arguments of :func:`c2f_stages`).
#: ``shrink-tie`` (the default) is ``shrink`` (chosen on synthetic validation seeds 200-239)
#: plus a dev-loss tie-break within 0.01 dev error (chosen on digits validation seeds 100-105);
#: neither was chosen on the reported seeds.
DEFAULT_RULE = "shrink-tie"
C2F_RULES: dict[str, tuple[ZoomRule, dict[str, Any]]] = {
    # as ``shrink``; in the zoom, trials within 0.01 of the best value (3.5 dev examples of 348
    # on digits) count as tied and the lowest TIE_METRIC (dev loss) of them is the centre. Only
    # objectives with ``evaluate_metrics`` have a tie metric: on the others this is ``shrink``.
    "shrink-tie": (
        ZoomRule(kind="shrink", shrink=0.5, use_history=True, tie_break=TIE_METRIC, tie_tolerance=0.01),
        {"first": 0.25, "n_zoom": 3},
    ),
    # as ``shrink-tie``, the categorical choices kept in a zoom are those of the top 5 (not 3)
    # trials: with few trials per batch size, a choice is not dropped on one or two noisy values
    "shrink-tie5": (
        ZoomRule(kind="shrink", shrink=0.5, use_history=True, tie_break=TIE_METRIC, tie_tolerance=0.01, top_k=5),
        {"first": 0.25, "n_zoom": 3},
    ),
    # noise-robust centres tried on digits (validation seeds 100-115), not better there:
    # the box centred on the mean (in the sampling scale) of the top 3 trials
    "mean3": (ZoomRule(kind="shrink", shrink=0.5, use_history=True, centre="mean", top_k=3),
              {"first": 0.25, "n_zoom": 3}),
    # centred on the trial with the best mean value over itself and its 3 nearest neighbours
    "smooth3": (ZoomRule(kind="shrink", shrink=0.5, use_history=True, rank="smooth", smooth_k=3),
                {"first": 0.25, "n_zoom": 3}),
    # as ``shrink-tie``; below 32 trials one zoom stage after a 50% first stage
    "shrink-tie-s2": (
        ZoomRule(kind="shrink", shrink=0.5, use_history=True, tie_break=TIE_METRIC, tie_tolerance=0.01),
        {"first": 0.25, "n_zoom": 3, "small_n_zoom": 1, "small_first": 0.5},
    ),
    # as ``shrink`` with a 40% first stage (better on digits@64, worse on the synthetic cells)
    "first-40": (ZoomRule(kind="shrink", shrink=0.5, use_history=True, tie_break=TIE_METRIC),
                 {"first": 0.4, "n_zoom": 3}),
    # 25% Sobol, then 3 Sobol stages, each box centred on the best trial so far, width halved
    "shrink": (ZoomRule(kind="shrink", shrink=0.5, use_history=True), {"first": 0.25, "n_zoom": 3}),
    # rule B of shared/notes/zoom-rules.md: 40% Sobol, 3 stages, centred on the stage's best
    "notes-B": (ZoomRule(kind="shrink", shrink=0.5, use_history=False), {"first": 0.4, "n_zoom": 3}),
    # 25% Sobol, 7 stages, width x0.7, coordinates kept at the best with probability 0.5
    "anchored": (
        ZoomRule(kind="shrink", shrink=0.7, use_history=True),
        {"first": 0.25, "n_zoom": 7, "method": "anchored", "perturb": 0.5},
    ),
    # rule A of the notes: 4 equal random stages, bounding box of the top 4 + 25% margin
    "box": (
        ZoomRule(kind="box", top_k=4, margin=0.25, use_history=False),
        {"first": 0.25, "n_zoom": 3, "method": "random", "first_method": "random"},
    ),
}


def c2f_stages(
    n: int,
    first: float = 0.25,
    n_zoom: int = 3,
    method: str = "sobol",
    perturb: float = 0.5,
    first_method: str = "sobol",
    small_n_zoom: int | None = None,
    small_first: float | None = None,
    small_below: int = 32,
) -> list[Stage]:
    """A first stage with ``first`` of the ``n`` trials, then ``n_zoom`` (nearly) equal zoom stages.

    Below ``small_below`` trials, ``small_n_zoom`` and ``small_first`` (when set) replace
    ``n_zoom`` and ``first``: a small budget spread over many stages gives each stage too few
    trials to zoom on."""
    if n < small_below:
        n_zoom = small_n_zoom if small_n_zoom is not None else n_zoom
        first = small_first if small_first is not None else first
    n0 = max(1, int(round(first * n)))
    rest = n - n0
    sizes = [rest // n_zoom + (1 if i < rest % n_zoom else 0) for i in range(n_zoom)]
    stages = [Stage(n0, epochs=MAX_EPOCHS, method=first_method)]  # type: ignore[arg-type]
    stages += [Stage(s, epochs=MAX_EPOCHS, method=method, perturb=perturb) for s in sizes if s > 0]  # type: ignore[arg-type]
    return stages


def run_c2f(obj: Objective, n: int, seed: int, rule: str = DEFAULT_RULE, **stage_kw: Any) -> float:
    zoom_rule, kw = C2F_RULES[rule]
    stages = c2f_stages(n, **{**kw, **stage_kw})
    plan = StagedPlan(obj.params, stages, METRIC, "min", rule=zoom_rule, seed=seed)

    def f(cfg: Mapping[str, Any]) -> dict[str, float]:
        x = {p.name: cfg[p.name] for p in obj.params}
        if zoom_rule.tie_break is not None and obj.evaluate_metrics is not None:
            return dict(obj.evaluate_metrics(x, int(cfg["epochs"]), seed))
        return {METRIC: obj.evaluate(x, int(cfg["epochs"]), seed)}

    run_plan(plan, f)
    best = plan.best()
    return float(best.metrics[METRIC]) if best else math.inf


def run_random(obj: Objective, n: int, seed: int) -> float:
    rng = np.random.default_rng([seed, 7])
    cfgs = sample_box(obj.params, initial_box(obj.params), n, rng, "random")
    return min(obj.evaluate(c, MAX_EPOCHS, seed) for c in cfgs)


def run_tpe(obj: Objective, n: int, seed: int) -> float:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    box = initial_box(obj.params)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))

    def f(trial: Any) -> float:
        cfg = {}
        for p in obj.params:
            if p.scale == "choice":
                cfg[p.name] = trial.suggest_categorical(p.name, list(p.choices or ()))
                continue
            lo, hi = box.intervals[p.name]
            cfg[p.name] = p.from_u(trial.suggest_float(p.name, lo, hi))
        return obj.evaluate(cfg, MAX_EPOCHS, seed)

    study.optimize(f, n_trials=n)
    return float(study.best_value)


def asha_milestones(max_t: int = MAX_EPOCHS, grace: int = ASHA_GRACE, rf: int = ASHA_RF) -> list[int]:
    """Rungs of Ray's ASHA (one bracket): grace * rf**k below max_t (ray.tune.schedulers.async_hyperband)."""
    out, t = [], grace
    while t < max_t:
        out.append(t)
        t *= rf
    return out


def run_asha(obj: Objective, n: int, seed: int) -> float:
    budget = n * MAX_EPOCHS
    rng = np.random.default_rng([seed, 11])
    box = initial_box(obj.params)
    rungs = {m: [] for m in asha_milestones()}  # type: dict[int, list[float]]
    spent, best = 0, math.inf
    while spent < budget:
        cfg = sample_box(obj.params, box, 1, rng, "random")[0]
        for e in range(1, MAX_EPOCHS + 1):
            if spent >= budget:
                break
            spent += 1
            v = obj.evaluate(cfg, e, seed)
            if e == MAX_EPOCHS:
                best = min(best, v)
                break
            if e in rungs:
                rungs[e].append(v)
                cutoff = float(np.nanpercentile(rungs[e], (1 - 1 / ASHA_RF) * 100))
                if v > cutoff:  # mode=min: stop unless within the best 1/rf so far
                    break
    return best


METHODS: dict[str, Callable[..., float]] = {
    "c2f": run_c2f,
    "random": run_random,
    "tpe": run_tpe,
    "asha": run_asha,
}

# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def run_benchmark(
    objectives: Sequence[Objective],
    seeds: int,
    budgets: Sequence[int],
    rule: str = DEFAULT_RULE,
    methods: Sequence[str] = ("c2f", "random", "tpe", "asha"),
    stage_kw: Mapping[str, Any] | None = None,
    seed0: int = 0,
) -> dict[str, Any]:
    """Run every method on every objective, budget and seed; return per-cell results.

    Returns:
        ``{"<objective>@<budget>": {"values": {method: [best per seed]}, ...}}``.
    """
    out: dict[str, Any] = {}
    for obj in objectives:
        for n in obj.budgets or budgets:
            cell: dict[str, list[float]] = {m: [] for m in methods}
            times = {m: 0.0 for m in methods}
            for s in range(seed0, seed0 + (obj.seeds or seeds)):
                for m in methods:
                    t0 = time.perf_counter()
                    kw = {"rule": rule, **(stage_kw or {})} if m == "c2f" else {}
                    cell[m].append(METHODS[m](obj, n, s, **kw))
                    times[m] += time.perf_counter() - t0
            out[f"{obj.name}@{n}"] = {"objective": obj.name, "budget": n, "values": cell, "seconds": times}
    return out


def summarise(results: Mapping[str, Any]) -> dict[str, Any]:
    rows = {}
    for key, cell in results.items():
        v = {m: np.asarray(x) for m, x in cell["values"].items()}
        row: dict[str, Any] = {m: float(np.median(x)) for m, x in v.items()}
        if "c2f" in v and "random" in v:
            # a win is strictly better: with a quantised metric (digits) a tie is not a win
            row["win_vs_random"] = float(np.mean(v["c2f"] < v["random"]))
            row["tie_vs_random"] = float(np.mean(v["c2f"] == v["random"]))
        if "c2f" in v and "tpe" in v:
            # "matches or beats": equal or better (a tie counts as a match)
            row["match_vs_tpe"] = float(np.mean(v["c2f"] <= v["tpe"] + 1e-12))
        if "c2f" in v and "asha" in v:
            row["win_vs_asha"] = float(np.mean(v["c2f"] < v["asha"]))
        row["n_seeds"] = int(len(next(iter(v.values()))))
        rows[key] = row
    return rows


def print_table(rows: Mapping[str, Mapping[str, Any]], methods: Sequence[str]) -> None:
    head = f"{'objective@budget':<18}" + "".join(f"{'med ' + m:>12}" for m in methods)
    head += f"{'c2f<random':>12}{'=random':>9}{'c2f<=tpe':>10}{'c2f<asha':>10}{'seeds':>7}"
    print(head)
    print("-" * len(head))
    for key, r in rows.items():
        line = f"{key:<18}" + "".join(f"{r[m]:>12.4g}" for m in methods)
        line += f"{r.get('win_vs_random', float('nan')):>12.2f}{r.get('tie_vs_random', float('nan')):>9.2f}"
        line += f"{r.get('match_vs_tpe', float('nan')):>10.2f}"
        line += f"{r.get('win_vs_asha', float('nan')):>10.2f}{r['n_seeds']:>7d}"
        print(line)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=20, help="paired seeds per cell (default 20)")
    ap.add_argument("--quick", action="store_true", help="5 seeds, budget 32 only (smoke run)")
    ap.add_argument("--budgets", default="32,64", help="trial budgets, comma-separated")
    ap.add_argument("--objectives", default=",".join(OBJECTIVES), help="comma-separated names")
    ap.add_argument("--rule", default=DEFAULT_RULE, choices=sorted(C2F_RULES), help="c2f zoom rule")
    ap.add_argument("--methods", default="c2f,random,tpe,asha")
    ap.add_argument("--seed0", type=int, default=0, help="first seed (seeds seed0 .. seed0+n-1)")
    ap.add_argument("--digits-seeds", type=int, default=DIGITS_SEEDS,
                    help=f"paired seeds of the digits objective (default {DIGITS_SEEDS})")
    ap.add_argument("--digits-budgets", default="16,32,64",
                    help="trial budgets of the digits objective (default 16,32,64; ~0.1 s per 9-epoch trial)")
    ap.add_argument("--no-digits", action="store_true", help="the synthetic objectives only (~15 s)")
    args = ap.parse_args(argv)
    seeds = 5 if args.quick else args.seeds
    budgets = (32,) if args.quick else tuple(int(b) for b in args.budgets.split(","))
    methods = [m for m in args.methods.split(",") if m]
    objs = [OBJECTIVES[o] for o in args.objectives.split(",") if o and not (args.no_digits and o == "digits")]
    for o in objs:
        if o.name == "digits":
            o.seeds = args.digits_seeds
            o.budgets = (16,) if args.quick else tuple(int(b) for b in args.digits_budgets.split(","))
    t0 = time.perf_counter()
    results = run_benchmark(objs, seeds, budgets, rule=args.rule, methods=methods, seed0=args.seed0)
    rows = summarise(results)
    print(f"search quality: median best value (lower is better), {MAX_EPOCHS} epochs/trial budget, "
          f"rule={args.rule}, tpe_backend=optuna (direct), asha_backend=simulated")
    print_table(rows, methods)
    print("c2f<random: share of seeds where c2f is strictly better (a tie is not a win); =random: tied; "
          "c2f<=tpe: equal or better (a tie counts as a match)")
    elapsed = time.perf_counter() - t0
    headline = {
        "bench": "search_quality",
        "rule": args.rule,
        "seeds": seeds,
        "budgets": list(budgets),
        "per_objective": {o.name: {"seeds": o.seeds or seeds, "budgets": list(o.budgets or budgets)} for o in objs},
        "tpe_backend": "optuna-direct",
        "asha_backend": "simulated-ray-asha",
        "c2f_win_vs_random_min": min(r["win_vs_random"] for r in rows.values()) if "random" in methods else None,
        "c2f_match_vs_tpe_min": min(r["match_vs_tpe"] for r in rows.values()) if "tpe" in methods else None,
        "target_random_0.75_met": all(r.get("win_vs_random", 0) >= 0.75 for r in rows.values()),
        "target_tpe_0.5_met": all(r.get("match_vs_tpe", 0) >= 0.5 for r in rows.values()),
        "cells": {k: {kk: (round(vv, 4) if isinstance(vv, float) else vv) for kk, vv in r.items()} for k, r in rows.items()},
        "seconds": round(elapsed, 1),
    }
    print(json.dumps(headline))
    return 0


if __name__ == "__main__":
    sys.exit(main())
