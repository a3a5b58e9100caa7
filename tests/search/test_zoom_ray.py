"""The benchmark's batched driver and a search through Ray Tune itself pick the same trials: the
Tune searcher (:class:`dlops.search.tune.searcher.StagedSearcher`) only calls the pure plan and
zoom functions that ``bench/search_quality.py`` drives with ask/tell batches. Real local Ray."""

from __future__ import annotations

import math
import sys

import pytest

from dlops.search.plan import Stage, StagedPlan, run_plan_batched, stage_sizes
from dlops.search.space import Param
from dlops.search.zoom import ZoomRule

PARAMS = [Param("lr", "log", 1e-4, 1.0), Param("beta", "one_minus_log", 0.9, 0.999)]
Q = 4


def value(cfg: dict) -> float:
    """A rotated valley in the sampling scale (min 0 at lr = 10**-2.2, beta = 1 - 10**-1.7)."""
    r, s = math.log10(cfg["lr"]) + 2.2, math.log10(1 - cfg["beta"]) + 1.7
    return (r + s) ** 2 + 10 * (r - s) ** 2


def trainable(config: dict) -> None:
    from ray import tune

    tune.report({"loss": value(config)})


def _plan() -> StagedPlan:
    sizes = stage_sizes(16, Q, len(PARAMS))
    rule = ZoomRule(kind="trust", shrink=0.5, grow=2.0, min_width=0.05)
    return StagedPlan(PARAMS, [Stage(n, method="sobol") for n in sizes], "loss", "min", rule=rule, seed=11)


@pytest.fixture
def _by_value():
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.mark.slow
def test_ray_tune_search_matches_the_batched_driver(local_ray, _by_value, tmp_path) -> None:
    from ray import tune

    from dlops.search.tune.searcher import StagedSearcher

    ref = _plan()
    run_plan_batched(ref, lambda c: {"loss": value(c)}, Q)

    searcher = StagedSearcher(_plan())
    # reuse_actors=True, as dlops's engine runs Tune (dlops.search.tune.runtime): a new actor per
    # no-op trial cost about 2 s each on 2 cores (this module took 83 s, now 26 s)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1, max_concurrent_trials=Q, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="parity", verbose=0),
    )
    grid = tuner.fit()
    assert grid.num_errors == 0 and len(grid) == ref.total_trials
    got = searcher.plan
    # the same configurations in every stage (order inside a stage may differ), the same boxes
    for k in range(len(ref.stages)):
        want = sorted(round(value(t.config), 12) for t in ref.outcomes(k))
        assert sorted(round(value(t.config), 12) for t in got.outcomes(k)) == want
    assert [b.to_dict() for b in got.boxes] == [b.to_dict() for b in ref.boxes]
    assert got.best().metrics["loss"] == pytest.approx(ref.best().metrics["loss"])


@pytest.mark.slow
def test_gp_stages_run_through_ray_tune_with_trials_in_flight(local_ray, _by_value, tmp_path) -> None:
    """``method: gp`` stages under Tune with 4 trials in flight: every trial runs, lies in its
    stage's box, none repeats a configuration, and the model stages improve on the Sobol stage."""
    from ray import tune

    from dlops.search.tune.searcher import StagedSearcher

    plan = StagedPlan(PARAMS, [Stage(8, method="sobol"), Stage(8, method="gp"), Stage(8, method="gp")],
                      "loss", "min", seed=5)
    searcher = StagedSearcher(plan)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1, max_concurrent_trials=Q, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="gp", verbose=0),
    )
    grid = tuner.fit()
    got = searcher.plan
    assert grid.num_errors == 0 and len(grid) == 24
    configs = [(t.config["lr"], t.config["beta"]) for t in got.outcomes()]
    assert len(set(configs)) == 24
    for k in (1, 2):
        box = got.boxes[k]
        for t in got.outcomes(k):
            for p in PARAMS:
                lo, hi = box.intervals[p.name]
                assert lo - 1e-9 <= p.to_u(t.config[p.name]) <= hi + 1e-9
    first = min(value(t.config) for t in got.outcomes(0))
    assert got.best().metrics["loss"] < first
