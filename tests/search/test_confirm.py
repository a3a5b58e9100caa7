"""Confirmation on fresh seeds (dlops.search.confirm) and the searcher's confirmation stage: pure,
no Ray runtime (the searcher is driven by hand)."""

from __future__ import annotations

import json
import math

import pytest

from dlops.search.confirm import CONFIRM_KEY, SEED_KEY, confirm_configs, confirm_result, fresh_seeds
from dlops.search.space import Constraint, TrialOutcome


def _t(tid: str, err: float, **cfg) -> TrialOutcome:
    return TrialOutcome(tid, {"lr": 0.1, **cfg}, {"dev/error": err, "latency_ms": 1.0})


def test_confirm_configs_pair_the_same_fresh_seeds_seed_major() -> None:
    top = [_t("a", 0.1), _t("b", 0.2)]
    cfgs = confirm_configs(top, seeds=2, base_seed=7, extra={"stage": 2})
    assert fresh_seeds(7, 2) == [1007, 2007]
    assert [(c[CONFIRM_KEY], c[SEED_KEY]) for c in cfgs] == [("a", 1007), ("b", 1007), ("a", 2007), ("b", 2007)]
    assert all(c["stage"] == 2 and c["lr"] == 0.1 for c in cfgs)
    assert 7 not in {c[SEED_KEY] for c in cfgs}  # the search's own seed is not "fresh"
    with pytest.raises(ValueError, match="seeds"):
        confirm_configs(top, 0, 0)


def test_winner_is_the_best_mean_over_fresh_seeds_not_the_lucky_first_value() -> None:
    top = [_t("lucky", 0.05), _t("steady", 0.10)]
    runs = {"lucky": [{"dev/error": 0.20, "latency_ms": 1.0}, {"dev/error": 0.16, "latency_ms": 1.0}],
            "steady": [{"dev/error": 0.11, "latency_ms": 1.0}, {"dev/error": 0.09, "latency_ms": 1.0}]}
    res = confirm_result(top, runs, "dev/error", "min")
    assert res.winner == "steady"
    assert [r.trial_id for r in res.table] == ["steady", "lucky"]
    steady = res.table[0]
    assert steady.mean == pytest.approx(0.10) and steady.std == pytest.approx(math.sqrt(2) * 0.01)
    assert steady.first == 0.10 and steady.values == (0.11, 0.09)
    json.dumps([r.as_dict() for r in res.table])  # what the search run's tag holds


def test_failed_seeds_are_left_out_and_constraints_apply_to_the_means() -> None:
    top = [_t("fast", 0.1), _t("slow", 0.1)]
    runs = {"fast": [{"dev/error": 0.3, "latency_ms": 4.0}, {}, {"dev/error": float("nan"), "latency_ms": 4.0}],
            "slow": [{"dev/error": 0.1, "latency_ms": 9.0}, {"dev/error": 0.1, "latency_ms": 12.0}]}
    res = confirm_result(top, runs, "dev/error", "min", [Constraint("latency_ms", "<=", 10.0)])
    assert res.winner == "fast"  # slow's mean latency 10.5 ms breaks the constraint
    fast = [r for r in res.table if r.trial_id == "fast"][0]
    assert fast.values == (0.3,) and fast.std == 0.0
    none = confirm_result(top, {"fast": [{}], "slow": []}, "dev/error", "min")
    assert none.winner is None and all(math.isnan(r.mean) for r in none.table)


def test_searcher_runs_a_confirmation_stage_and_saves_it_with_the_plan() -> None:
    from ray.tune.search import Searcher

    from dlops.search.plan import Stage, StagedPlan
    from dlops.search.space import Param
    from dlops.search.tune.searcher import StagedSearcher

    plan = StagedPlan([Param("lr", "log", 1e-4, 1.0)], [Stage(3, epochs=2)], "dev/error", "min", seed=0)
    s = StagedSearcher(plan, confirm=(2, 2), base_seed=5)
    assert s.n_confirm == 4
    cfgs = {f"t{i}": s.suggest(f"t{i}") for i in range(3)}
    assert s.suggest("t3") is None and s.at_barrier  # the stage's trials have not ended
    for i, tid in enumerate(cfgs):
        s.on_trial_complete(tid, {"dev/error": [0.3, 0.1, 0.2][i]})
    conf = [s.suggest(f"c{i}") for i in range(4)]
    assert [(c[CONFIRM_KEY], c[SEED_KEY], c["stage"], c["epochs"]) for c in conf] == [
        ("t1", 1005, 1, 2), ("t2", 1005, 1, 2), ("t1", 2005, 1, 2), ("t2", 2005, 1, 2)]
    assert s.suggest("c4") is Searcher.FINISHED and not s.confirm_done()
    twin = StagedSearcher(StagedPlan([Param("lr", "log", 1e-4, 1.0)], [Stage(3, epochs=2)], "dev/error", "min"),
                          confirm=(2, 2), base_seed=5)
    twin.set_state(json.loads(json.dumps(s.get_state())))  # as Tune saves and restores it
    for i, err in enumerate([0.3, 0.1, 0.2, 0.1]):  # t2 (first 0.2) beats t1 (first 0.1) on the mean
        twin.on_trial_complete(f"c{i}", {"dev/error": err})
    assert twin.confirm_done() and twin.confirmation().winner == "t2"
    assert s.confirmation().winner is None  # the original saw no confirmation result


def test_sampling_coordinates_are_params_in_the_scale_the_search_ran_in() -> None:
    from dlops.search.space import Param
    from dlops.search.tune.runtime import sampling_params_fn

    fn = sampling_params_fn([Param("lr", "log", 1e-4, 1.0), Param("momentum", "one_minus_log", 0.9, 0.999),
                             Param("dropout", "linear", 0.0, 0.5), Param("bs", "choice", choices=[8, 16])])
    out = fn({"lr": 10 ** -2.6, "momentum": 0.99, "dropout": 0.1, "bs": 8})
    assert out == {"lr.r": pytest.approx(-2.6), "momentum.r": pytest.approx(-2.0)}  # linear and choice add nothing
