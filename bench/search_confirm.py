"""Confirmation on a noisy objective: which configuration does each method pick on digits, judged
on fresh seeds?

The objective is the real one of the demo: fine-tune the small CNN on the digits target task
(``examples/digits-transfer.yaml``: digits 5-9, 30 training examples per class, source features
from a network pretrained on digits 0-4, backbone frozen) for ``--epochs`` epochs with the trial's
``lr``, ``momentum``, ``batch_size``, ``hidden`` (the example's space and scales), and read the
dev error (348 examples: one example is 0.29 points). It is trained in-process with
:func:`dlops.train.fit.fit_predict` (the trial's own model, freeze and optimizer code), no Ray.

Per search seed ``s`` (paired: every method gets the same seed, the same training data and the
same budget of ``--budget`` trainings), every search trial trains with seed ``s``:

* ``c2f_confirm``: the example's coarse-to-fine plan (its zoom rule), stages of
  ``budget - top_k * seeds`` trials (2/3 sobol, 1/3 zoomed), then :mod:`dlops.search.confirm`:
  the top ``--top-k`` configurations trained again on ``--confirm-seeds`` fresh seeds, the best
  mean wins (exactly what ``search.confirm`` does after the last stage);
* ``c2f_observed``: the same search's stages, picking the best observed trial (no confirmation;
  fewer trainings: an ablation, not a same-budget baseline);
* ``random``: ``budget`` random configurations (dlops's sampler in the same scales), best observed;
* ``tpe``: Optuna's ``TPESampler`` (current defaults, seeded) for ``budget`` trials, best observed.

The score of a pick is its **mean dev error over ``--eval-seeds`` fresh training seeds** that
neither the search nor the confirmation used (what the configuration is worth, not what its luckiest
run showed). Reported: each method's mean score, and the paired differences c2f_confirm minus
each baseline with a 95% t-interval, the share of seeds where c2f_confirm is lower (ties
excluded, with a Clopper-Pearson interval) and a two-sided Wilcoxon signed-rank p-value.

One torch thread, CPU. The last line of stdout is one JSON object.

Usage: ``python bench/search_confirm.py [--seeds 10] [--budget 18] [--epochs 5] [--top-k 2]
[--confirm-seeds 2] [--eval-seeds 3]``
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SPACE_KEYS = ("lr", "momentum", "batch_size", "hidden")


def _setup() -> dict[str, Any]:
    import torch

    from dlops.config import load_config
    from dlops.job.run import load_data
    from dlops.job.source import make_spec, train_source_network

    torch.set_num_threads(1)
    cfg = load_config(REPO / "examples" / "digits-transfer.yaml")
    data = load_data(cfg)
    spec = make_spec(cfg, data)
    model, _ = train_source_network(cfg, data, spec)
    return {"cfg": cfg, "data": data, "spec": spec, "source": model.state_dict()}


def _objective(env: dict[str, Any], epochs: int) -> Callable[[dict[str, Any], int], dict[str, float]]:
    """``(config, seed) -> {"dev/error", "dev/loss"}`` (a diverging trial: error 1, loss inf)."""
    from dlops.train.fit import fit_predict

    d = env["data"]

    def dev_metrics(config: dict[str, Any], seed: int) -> dict[str, float]:
        cfg = {k: config[k] for k in SPACE_KEYS}
        try:
            p = fit_predict((d.train.x, d.train.y), {"dev": d.dev.x}, cfg, env["spec"], env["source"], "backbone",
                            int(seed), epochs)["dev"]
        except Exception:  # noqa: BLE001 - a diverging lr: the worst error
            return {"dev/error": 1.0, "dev/loss": math.inf}
        err = float((p.argmax(1) != d.dev.y).mean())
        loss = float(-np.log(np.clip(p[np.arange(len(d.dev.y)), d.dev.y], 1e-12, 1.0)).mean())
        if not (math.isfinite(err) and math.isfinite(loss)):
            return {"dev/error": 1.0, "dev/loss": math.inf}
        return {"dev/error": err, "dev/loss": loss}

    return dev_metrics


def c2f(env: dict[str, Any], f: Callable[..., float], seed: int, budget: int, top_k: int, seeds: int
        ) -> tuple[dict[str, Any], dict[str, Any], int]:
    """The coarse-to-fine search with confirmation; returns (confirmed pick, observed-best pick, trainings)."""
    from dlops.config import load_config
    from dlops.job.plan import build_plan
    from dlops.search.confirm import confirm_configs, confirm_result
    from dlops.search.plan import run_plan
    from dlops.search.space import select_top

    n = budget - top_k * seeds
    n0 = max(2, round(2 * n / 3))
    cfg = load_config(REPO / "examples" / "digits-transfer.yaml",
                      [f"search.stages=[{{trials: {n0}, method: sobol}}, {{trials: {n - n0}}}]", f"seed={seed}",
                       "search.constraints=[]"])  # no latency here: every small CNN meets the 50 ms one
    plan = build_plan(cfg)
    run_plan(plan, lambda c: f(c, seed))
    top = select_top(plan.outcomes(), plan.metric, plan.mode, k=top_k, tie_break=plan.rule.tie_break)
    runs: dict[str, list[dict[str, float]]] = {}
    for c in confirm_configs(top, seeds, seed):
        runs.setdefault(c["confirm_of"], []).append(f(c, c["seed"]))
    res = confirm_result(top, runs, plan.metric, plan.mode)
    winner = next(t for t in top if t.trial_id == res.winner)
    observed = plan.best()
    return dict(winner.config), dict(observed.config), n + len(top) * seeds


def random_search(env: dict[str, Any], f: Callable[..., float], seed: int, budget: int) -> dict[str, Any]:
    from dlops.job.plan import build_plan
    from dlops.search.space import initial_box, sample_box

    plan = build_plan(env["cfg"])
    cfgs = sample_box(plan.params, initial_box(plan.params), budget, np.random.default_rng([seed, 99]), "random")
    vals = [f(c, seed)["dev/error"] for c in cfgs]
    return dict(cfgs[int(np.argmin(vals))])


def tpe(env: dict[str, Any], f: Callable[..., float], seed: int, budget: int) -> dict[str, Any]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: Any) -> float:
        c = {"lr": 10 ** trial.suggest_float("lr.r", -4.0, 0.0),
             "momentum": 1 - 10 ** trial.suggest_float("momentum.r", -3.0, -1.0),
             "batch_size": trial.suggest_categorical("batch_size", [8, 16, 32]),
             "hidden": int(round(10 ** trial.suggest_float("hidden.r", math.log10(16), math.log10(256))))}
        trial.set_user_attr("config", c)
        return f(c, seed)["dev/error"]

    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=budget)
    return dict(study.best_trial.user_attrs["config"])


def paired(a: list[float], b: list[float]) -> dict[str, Any]:
    """a - b per seed: mean, 95% t-interval, share of seeds with a < b (ties left out) with its
    Clopper-Pearson interval, Wilcoxon signed-rank p (two-sided)."""
    from scipy import stats

    d = [x - y for x, y in zip(a, b)]
    n = len(d)
    mean = statistics.fmean(d)
    half = stats.t.ppf(0.975, n - 1) * statistics.stdev(d) / math.sqrt(n) if n > 1 else float("nan")
    wins, losses = sum(x < 0 for x in d), sum(x > 0 for x in d)
    m = wins + losses
    ci = stats.binomtest(wins, m).proportion_ci(0.95, "exact") if m else None
    try:
        p = float(stats.wilcoxon(d).pvalue) if any(d) else 1.0
    except ValueError:
        p = 1.0
    return {"mean_diff": mean, "ci95": [mean - half, mean + half], "wins": wins, "losses": losses, "ties": n - m,
            "win_share": wins / m if m else float("nan"),
            "win_share_ci95": [ci.low, ci.high] if ci else [float("nan")] * 2, "wilcoxon_p": p}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--budget", type=int, default=18)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--confirm-seeds", type=int, default=2)
    ap.add_argument("--eval-seeds", type=int, default=3)
    a = ap.parse_args()
    t0 = time.perf_counter()
    env = _setup()
    f = _objective(env, a.epochs)
    scores: dict[str, list[float]] = {k: [] for k in ("c2f_confirm", "c2f_observed", "random", "tpe")}
    for s in range(a.seeds):
        picks = {}
        picks["c2f_confirm"], picks["c2f_observed"], used = c2f(env, f, s, a.budget, a.top_k, a.confirm_seeds)
        picks["random"] = random_search(env, f, s, a.budget)
        picks["tpe"] = tpe(env, f, s, a.budget)
        evals = [100_000 + 7919 * j + s for j in range(a.eval_seeds)]  # fresh: no search or confirmation seed
        line = []
        for k, c in picks.items():
            v = statistics.fmean(f(c, e)["dev/error"] for e in evals)
            scores[k].append(v)
            line.append(f"{k} {v:.4f}")
        print(f"seed {s}: " + ", ".join(line) + f" (c2f used {used} trainings; {time.perf_counter() - t0:.0f} s)",
              flush=True)
    means = {k: statistics.fmean(v) for k, v in scores.items()}
    vs = {b: paired(scores["c2f_confirm"], scores[b]) for b in ("random", "tpe", "c2f_observed")}
    for b, r in vs.items():
        print(f"c2f_confirm - {b}: mean {r['mean_diff']:+.4f} (95% CI {r['ci95'][0]:+.4f}..{r['ci95'][1]:+.4f}), "
              f"lower in {r['wins']}/{r['wins'] + r['losses']} seeds (ties {r['ties']}), Wilcoxon p={r['wilcoxon_p']:.3g}")
    print(json.dumps(_no_nan({"bench": "search_confirm", "seeds": a.seeds, "budget": a.budget, "epochs": a.epochs,
                      "top_k": a.top_k, "confirm_seeds": a.confirm_seeds, "eval_seeds": a.eval_seeds,
                      "mean_fresh_dev_error": means, "c2f_confirm_vs": vs, "wall_s": round(time.perf_counter() - t0, 1)})))


def _no_nan(v: Any) -> Any:
    """NaN (e.g. a win share with every seed tied) as null: the last line stays strict JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _no_nan(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_no_nan(x) for x in v]
    return v


if __name__ == "__main__":
    main()
