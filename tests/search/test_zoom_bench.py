"""The pure parts of ``bench/search_quality.py``: Holm's correction, the paired comparison, the
tables scored by the true seed-mean, BBOB on the users' scales, the unit-cube decoding."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "search_quality.py"


@pytest.fixture(scope="module")
def sq():
    spec = importlib.util.spec_from_file_location("search_quality_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    yield mod
    sys.modules.pop(spec.name, None)


def test_holm_hand_computed(sq) -> None:
    # Holm 1979: sorted p 0.01, 0.02, 0.04 -> 3*0.01, max(0.03, 2*0.02), max(0.04, 1*0.04)
    assert sq.holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert sq.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # monotone: never below an earlier step


def test_compare_counts_wins_and_tests_the_pairs(sq) -> None:
    a = np.arange(30.0)
    c = sq.compare(a, a + 1.0)  # c2f lower on every seed
    assert (c["wins"], c["losses"], c["n"]) == (30, 0, 30) and c["p"] < 1e-5
    assert c["lo"] < 1.0 and c["hi"] == pytest.approx(1.0)
    t = sq.compare(a, a)  # all ties: no evidence
    assert t["wins"] == t["losses"] == 0 and t["p"] == 1.0


def test_table_task_observes_one_seed_and_scores_the_seed_mean(sq) -> None:
    task = sq.table_task("hpobench", "credit_g")
    vals, means, best = sq._table("hpobench", "credit_g")
    cfg = {"alpha": 1e-8, "batch_size": 4, "depth": 1, "learning_rate_init": 1e-5, "width": 16}
    seeds = 1.0 + vals["00000"]  # 1 - val_acc per seed (vals hold -val_acc: minimised)
    rng = np.random.default_rng(0)
    seen = {task.observe(cfg, rng) for _ in range(60)}
    assert seen <= set(seeds.tolist()) and len(seen) > 1
    assert task.true(cfg) == pytest.approx(float(seeds.mean()))
    assert task.f_opt == pytest.approx(1.0 + best) and task.f_opt <= task.true(cfg)
    # a value between two grid points snaps to the nearer one in the sampling (log) scale
    near = dict(cfg, learning_rate_init=1.2e-5)
    assert task.true(near) == task.true(cfg)


def test_bbob_task_is_on_the_users_scales_with_its_optimum(sq) -> None:
    task = sq.bbob_task(8, 3, 5)
    assert [p.scale for p in task.params] == ["log", "one_minus_log", "log", "one_minus_log", "log"]
    box = sq.initial_box(task.params)
    rng = np.random.default_rng(1)
    vals = [task.true(sq.decode(task.params, box, t)) for t in rng.random((50, 5))]
    assert min(vals) > task.f_opt and all(math.isfinite(v) for v in vals)


def test_decode_covers_choices_and_bounds(sq) -> None:
    task = sq.table_task("hpolib", "naval_propulsion")
    box = sq.initial_box(task.params)
    lo = sq.decode(task.params, box, [0.0] * task.dim)
    hi = sq.decode(task.params, box, [1.0] * task.dim)
    assert lo["activation_fn_1"] == "relu" and hi["activation_fn_1"] == "tanh"
    assert lo["init_lr"] == pytest.approx(5e-4) and hi["init_lr"] == pytest.approx(0.1)
    assert math.isfinite(task.true(lo)) and math.isfinite(task.true(hi))
