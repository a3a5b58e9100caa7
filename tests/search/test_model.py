"""The ``gp`` stage method (dlops.search.model): a GP Thompson draw inside the box, pure functions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlops.search.model import encode, fit_posterior, matern52, normal_scores
from dlops.search.plan import Stage, StagedPlan, run_plan_batched
from dlops.search.space import Box, Constraint, Param, TrialOutcome, initial_box

PARAMS = [Param("lr", "log", 1e-4, 1.0), Param("momentum", "one_minus_log", 0.9, 0.999),
          Param("batch_size", "choice", choices=(8, 16, 32)), Param("seed", "const", value=3)]


def _bowl(cfg):  # minimum at lr = 1e-2, momentum = 0.99, batch_size 16
    return (math.log10(cfg["lr"]) + 2) ** 2 + (math.log10(1 - cfg["momentum"]) + 2) ** 2 + (
        0.0 if cfg["batch_size"] == 16 else 0.5)


def _trials(n, seed=0, f=_bowl):
    from dlops.search.space import sample_box

    cfgs = sample_box(PARAMS, initial_box(PARAMS), n, np.random.default_rng(seed))
    return [TrialOutcome(f"t{i}", c, {"loss": f(c)}) for i, c in enumerate(cfgs)]


def test_encode_puts_the_original_range_on_the_unit_cube_and_choices_one_hot():
    box = initial_box(PARAMS)
    x = encode(PARAMS, box, [{"lr": 1e-4, "momentum": 0.999, "batch_size": 16, "seed": 3},
                             {"lr": 1.0, "momentum": 0.9, "batch_size": 32, "seed": 3}])
    assert x.shape == (2, 2 + 3)  # lr, momentum, three choices; const left out
    assert x[0, 0] == pytest.approx(0.0) and x[1, 0] == pytest.approx(1.0)
    # one_minus_log: u = log10(1 - x), so 0.999 is the low end of u
    assert x[0, 1] == pytest.approx(0.0) and x[1, 1] == pytest.approx(1.0)
    assert list(x[0, 2:]) == [0.0, 1.0, 0.0] and list(x[1, 2:]) == [0.0, 0.0, 1.0]


@given(st.lists(st.floats(-1e9, 1e9), min_size=1, max_size=40), st.sampled_from(["min", "max"]))
@settings(max_examples=60, deadline=None)
def test_normal_scores_keep_the_order_and_are_centred(values, mode):
    z = normal_scores(values, mode)
    sign = 1 if mode == "min" else -1
    for i in range(len(values)):
        for j in range(len(values)):
            if sign * values[i] < sign * values[j]:
                assert z[i] < z[j]
            if values[i] == values[j]:
                assert z[i] == z[j]
    if len(set(values)) == len(values):  # without ties the scores are symmetric about 0
        assert abs(float(np.mean(z))) < 1e-9


def test_normal_scores_rank_nan_worst():
    z = normal_scores([1.0, float("nan"), 0.5], "min")
    assert z[1] == max(z) and z[2] == min(z)


def test_matern52_is_one_at_zero_decreasing_and_exactly_zero_far_away():
    d = np.array([[0.0, 0.1, 0.5, 1.0, 100.0]])
    k = matern52(d, 0.2)[0]
    assert k[0] == 1.0 and all(np.diff(k) < 0) and k[-1] == 0.0


def test_too_few_feasible_trials_give_no_posterior():
    box = initial_box(PARAMS)
    one = _trials(1)
    failed = [TrialOutcome("f", one[0].config, {})]
    assert fit_posterior(PARAMS, box, box, one + failed, "loss", "min", np.random.default_rng(0)) is None


def test_draws_lie_in_the_box_keep_fixed_values_and_the_const():
    orig = initial_box(PARAMS)
    box = Box({"lr": (-3.0, -2.0), "momentum": (-2.5, -1.5)}, {"batch_size": (16, 32)}, {})
    post = fit_posterior(PARAMS, box, orig, _trials(12), "loss", "min", np.random.default_rng(1),
                         fixed={"batch_size": 32})
    assert post is not None
    rng = np.random.default_rng(2)
    for _ in range(20):
        c = post.draw(rng)
        assert 1e-3 - 1e-12 <= c["lr"] <= 1e-2 + 1e-12
        assert -2.5 - 1e-9 <= math.log10(1 - c["momentum"]) <= -1.5 + 1e-9
        assert c["batch_size"] == 32 and c["seed"] == 3


def test_draws_concentrate_where_the_model_says_the_minimum_is():
    """30 trials of a bowl: the Thompson draws land nearer the minimum than random points do."""
    orig = initial_box(PARAMS)
    post = fit_posterior(PARAMS, orig, orig, _trials(30), "loss", "min", np.random.default_rng(0))
    rng = np.random.default_rng(5)
    drawn = [_bowl(post.draw(rng)) for _ in range(40)]
    rand = [_bowl(t.config) for t in _trials(40, seed=9)]
    assert np.median(drawn) < 0.5 * np.median(rand)


def test_failed_and_infeasible_trials_push_the_draws_away():
    """Every trial with lr > 1e-2 failed or broke the constraint: no draw goes there."""
    orig = initial_box(PARAMS)
    trials = []
    for t in _trials(40, seed=3):
        if t.config["lr"] > 1e-2:
            m = {} if len(trials) % 2 else {"loss": 0.0, "latency_ms": 99.0}  # failed / infeasible
        else:
            m = {"loss": 1.0 + math.log10(t.config["lr"]) / 10, "latency_ms": 1.0}
        trials.append(TrialOutcome(t.trial_id, t.config, m))
    post = fit_posterior(PARAMS, orig, orig, trials, "loss", "min", np.random.default_rng(0),
                         constraints=[Constraint("latency_ms", "<=", 10)])
    rng = np.random.default_rng(1)
    assert all(post.draw(rng)["lr"] < 3e-2 for _ in range(30))


def _plan(method, seed=0):
    return StagedPlan(PARAMS, [Stage(8, method="sobol"), Stage(8, method=method), Stage(8, method=method)],
                      "loss", "min", seed=seed)


def test_a_gp_stage_runs_in_batches_is_deterministic_and_beats_random_stages_on_a_bowl():
    def obj(cfg):
        return {"loss": _bowl(cfg)}

    best = {}
    for method in ("gp", "random"):
        vals = []
        for seed in range(12):
            plan = _plan(method, seed)
            rounds = run_plan_batched(plan, obj, 4)
            assert rounds == 6 and len(plan.results) == 24  # 3 stages x 2 batches of 4
            vals.append(plan.best().metrics["loss"])
        best[method] = vals
    # same seed, same trials
    a, b = _plan("gp", 3), _plan("gp", 3)
    run_plan_batched(a, obj, 4)
    run_plan_batched(b, obj, 4)
    assert a.suggested == b.suggested
    assert sum(g < r for g, r in zip(best["gp"], best["random"])) >= 9  # 10 of 12 when written
    assert np.median(best["gp"]) < 0.25 * np.median(best["random"])


def test_a_gp_stage_survives_a_state_round_trip():
    def obj(cfg):
        return {"loss": _bowl(cfg)}

    full = _plan("gp", 1)
    run_plan_batched(full, obj, 2)
    part = _plan("gp", 1)
    for i in range(0, 12, 2):  # the first stage and half of the second, in the same batches of 2
        keys = [f"t{i:05d}", f"t{i + 1:05d}"]
        cfgs = [part.suggest(k) for k in keys]
        for k, c in zip(keys, cfgs):
            part.record(k, obj(c))
    resumed = _plan("gp", 1)
    resumed.load_state_dict(part.state_dict())
    run_plan_batched(resumed, obj, 2)
    assert resumed.suggested == full.suggested


def test_draws_from_one_posterior_never_repeat_a_candidate():
    orig = initial_box(PARAMS)
    post = fit_posterior(PARAMS, orig, orig, _trials(10), "loss", "min", np.random.default_rng(0), n_candidates=16)
    rng = np.random.default_rng(0)
    seen = [repr(sorted(post.draw(rng).items())) for _ in range(16)]
    assert len(set(seen)) == 16  # all 16 candidates, each once
    post.draw(rng)  # then they are all available again
    assert len(post.taken) == 1


def test_a_first_gp_stage_takes_sobol_points_until_two_trials_ended_then_asks_the_model():
    def obj(cfg):
        return {"loss": _bowl(cfg)}

    plan = StagedPlan(PARAMS, [Stage(10, method="gp")], "loss", "min", seed=0)
    sobol = StagedPlan(PARAMS, [Stage(10, method="sobol")], "loss", "min", seed=0)
    first = [plan.suggest(f"t{i}") for i in range(3)]  # three in flight, none ended: no model yet
    ref = [sobol.suggest(f"t{i}") for i in range(3)]
    assert first == ref  # the stage's own Sobol points, in order
    for i, c in enumerate(first):
        plan.record(f"t{i}", obj(c))
    rest = [plan.suggest(f"t{i}") for i in range(3, 10)]
    assert all(isinstance(c, dict) for c in rest)
    sobol_rest = [sobol.suggest(f"t{i}") for i in range(3, 10)]
    assert all(a != b for a, b in zip(rest, sobol_rest))  # the model placed every one of them
    assert len({repr(sorted(c.items())) for c in first + rest}) == 10


def test_a_gp_stage_after_a_stage_of_failed_trials_samples_instead_of_crashing():
    plan = StagedPlan(PARAMS, [Stage(4, method="sobol"), Stage(4, method="gp")], "loss", "min", seed=2)
    for i in range(4):
        plan.suggest(f"a{i}")
        plan.record(f"a{i}", {})  # failed: no metrics
    cfgs = [plan.suggest(f"b{i}") for i in range(4)]
    assert all(isinstance(c, dict) and c["stage"] == 1 for c in cfgs)
    assert len({repr(sorted(c.items())) for c in cfgs}) == 4
    box = plan.boxes[1]
    for c in cfgs:
        for p in PARAMS:
            if p.is_numeric:
                lo, hi = box.intervals[p.name]
                assert lo - 1e-9 <= p.to_u(c[p.name]) <= hi + 1e-9


def test_fit_posterior_refuses_no_candidates():
    orig = initial_box(PARAMS)
    with pytest.raises(ValueError, match="n_candidates"):
        fit_posterior(PARAMS, orig, orig, _trials(4), "loss", "min", np.random.default_rng(0), n_candidates=0)


def test_a_fit_on_many_trials_uses_the_cap_inside_the_box_first():
    from dlops.search.model import _most_relevant
    from dlops.search.space import Box

    orig = initial_box(PARAMS)
    lo, hi = orig.intervals["lr"]
    box = Box({**orig.intervals, "lr": (lo, lo + 0.25 * (hi - lo))}, dict(orig.choices))
    trials = _trials(600, seed=4)
    trials[5] = TrialOutcome("t5", trials[5].config, {})  # a failed trial
    kept = _most_relevant(PARAMS, box, trials, "loss", "min", (), 100)
    assert len(kept) == 100
    n_inside = sum(lo <= PARAMS[0].to_u(t.config["lr"]) <= lo + 0.25 * (hi - lo) for t in trials)
    assert n_inside > 100  # about a quarter of 600: the cap is all inside the box
    assert all(PARAMS[0].to_u(t.config["lr"]) <= lo + 0.25 * (hi - lo) + 1e-12 for t in kept)
    assert all("loss" in t.metrics for t in kept)  # the feasible ones before the failed one
    inside_losses = sorted(t.metrics["loss"] for t in trials
                           if "loss" in t.metrics and PARAMS[0].to_u(t.config["lr"]) <= lo + 0.25 * (hi - lo))
    assert max(t.metrics["loss"] for t in kept) == pytest.approx(inside_losses[99])  # the best 100 of them
    assert [t.trial_id for t in kept] == [t.trial_id for t in trials if t in kept]  # in their order
    post = fit_posterior(PARAMS, box, orig, trials, "loss", "min", np.random.default_rng(0), max_trials=100)
    assert post is not None
    for _ in range(5):
        c = post.draw(np.random.default_rng(1))
        assert lo - 1e-9 <= PARAMS[0].to_u(c["lr"]) <= lo + 0.25 * (hi - lo) + 1e-9
