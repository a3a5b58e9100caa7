"""The interval math (dlops.reporting.stats) against published values, and the bias/variance
verdict with intervals through the public reporter API."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from dlops.reporting import ReportContext
from dlops.reporting.stats import constant, difference_independent, difference_paired, error_interval, \
    error_metrics, n_for_half_width, stands_out, wilson
from dlops_plugins.reporters.bias_variance import BiasVarianceReporter, bias_variance, render_search_table, verdict_lines


def test_wilson_known_values():
    ci = wilson(81, 263)  # Newcombe 1998a, Table I: 0.2553 to 0.3662
    assert (ci.low, ci.high) == pytest.approx((0.2553, 0.3662), abs=5e-5)
    zero = wilson(0, 10)  # 0 to 0.2775
    assert zero.low == 0.0 and zero.high == pytest.approx(0.2775, abs=5e-5)
    assert math.isnan(wilson(0, 0).value)
    with pytest.raises(ValueError):
        wilson(5, 3)


def test_independent_difference_known_values():
    # Newcombe 1998a, method 10: 56/70 - 48/80 -> 0.0524 to 0.3339; 9/10 - 3/10 -> 0.1705 to 0.8090
    d = difference_independent(wilson(56, 70), wilson(48, 80))
    assert (d.value, d.low, d.high) == pytest.approx((0.2, 0.0524, 0.3339), abs=5e-5)
    d = difference_independent(wilson(9, 10), wilson(3, 10))
    assert (d.low, d.high) == pytest.approx((0.1705, 0.8090), abs=5e-5)
    # minus a constant: the Wilson interval shifted
    w = wilson(8, 100)
    d = difference_independent(w, constant(0.01))
    assert (d.low, d.high) == pytest.approx((w.low - 0.01, w.high - 0.01))


def test_paired_difference():
    # no correlation (phi = 0) -> the independent formula on the two margins
    d = difference_paired(5, 5, 5, 5)
    assert d.value == 0.0 and d.low < 0 < d.high
    # positively correlated outcomes (two models failing on the same examples): narrower than independent
    paired = difference_paired(both=40, only_a=10, only_b=2, neither=148)
    indep = difference_independent(wilson(50, 200), wilson(42, 200))
    assert paired.value == pytest.approx(0.04)
    assert paired.high - paired.low < indep.high - indep.low
    assert paired.low > 0  # 10 vs 2 discordant pairs: A is worse


def test_error_interval_and_metrics():
    ci = error_interval(5 / 348, 348)  # the demo's overfitting-to-dev numerator: 5 of 348
    assert ci.low < 5 / 348 < ci.high
    with pytest.raises(ValueError, match="fraction"):
        error_interval(8.0, 100)
    m = error_metrics({"human": 0.01, "dev": 0.1, "test": float("nan")}, {"dev": 100, "test": 100})
    assert set(m) == {"dev/n", "dev/error_ci_low", "dev/error_ci_high"}
    assert m["dev/n"] == 100 and m["dev/error_ci_low"] < 0.1 < m["dev/error_ci_high"]


def test_n_for_half_width_and_stands_out():
    assert n_for_half_width(0.1, 0.01) == 3458  # 1.96^2 * 0.09 / 0.0001
    assert stands_out(constant(0.07), [constant(0.02)])
    assert not stands_out(difference_independent(wilson(1, 50), wilson(0, 50)), [])  # 1 vs 0 errors: noise


BIG = {"train": 10_000, "train_dev": 10_000, "dev": 10_000, "test": 10_000}


def test_the_seeds_two_cases_at_realistic_sizes(tmp_path: Path):
    bv = bias_variance(human=0.01, train=0.08, dev=0.10, counts=BIG)
    assert bv.stands_out and bv.named == "avoidable_bias"
    bv = bias_variance(human=0.075, train=0.08, dev=0.10, counts=BIG)
    assert bv.stands_out and bv.named == "variance"
    assert bv.within_noise("avoidable_bias")
    # through the public reporter API
    for human, gap in ((0.01, "avoidable bias"), (0.075, "variance")):
        ctx = ReportContext(errors={"human": human, "train": 0.08, "dev": 0.10}, out_dir=tmp_path / str(human),
                            counts={"train": 10_000, "dev": 10_000})
        rep = BiasVarianceReporter().report(ctx)
        assert rep.metrics["bias_variance/stands_out"] == 1.0
        assert rep.summary.startswith(f"largest gap: {gap} ")
        assert f"**Largest gap: {gap}**" in rep.markdown
    # the same errors on 200 examples each: noise, no gap named
    small = bias_variance(human=0.075, train=0.08, dev=0.10, counts={"train": 200, "dev": 200})
    assert small.stands_out is False and small.named is None and small.resolve


def test_the_demo_names_no_gap_and_gives_a_size(tmp_path: Path):
    # the demo: train 150, train-dev 50 (1 error = 2 points), dev and test 348
    counts = {"train": 150, "train_dev": 50, "dev": 348, "test": 348}
    errors = {"human": 0.01, "train": 2 / 150, "train_dev": 1 / 50, "dev": 11 / 348, "test": 16 / 348}
    rep = BiasVarianceReporter().report(ReportContext(errors=errors, out_dir=tmp_path, counts=counts))
    assert rep.metrics["bias_variance/stands_out"] == 0.0
    assert rep.metrics["bias_variance/overfitting_to_dev"] == pytest.approx(5 / 348)
    assert rep.metrics["bias_variance/overfitting_to_dev_ci_low"] < 0 < rep.metrics["bias_variance/overfitting_to_dev_ci_high"]
    md = (tmp_path / "bias_variance.md").read_text()
    assert "No gap stands out beyond the noise" in md and "Largest gap" not in md
    assert "| train-dev | 2.00% | 1 / 50 |" in md
    assert "would be told from 0 with about" in md and "would stand out from every other gap with about" in md
    assert "no gap stands out" in rep.summary
    assert (tmp_path / "bias_variance.png").stat().st_size > 0


def test_search_table_marks_noise_instead_of_negative_variance():
    counts = {"train": 150, "train_dev": 50, "dev": 348}
    md = render_search_table([{"trial": "t1", "train": 0.04, "train_dev": 0.02, "dev": 0.03}], human=0.01,
                             counts=counts)
    row = next(line for line in md.splitlines() if line.startswith("| t1 "))
    assert "(~-2.00%)" in row  # a negative variance inside the noise is not a finding
    assert row.endswith("| none stands out |")
    # without counts: as before
    md = render_search_table([{"trial": "t1", "train": 0.04, "train_dev": 0.02, "dev": 0.03}], human=0.01)
    assert "(~" not in md


def test_an_error_of_one_plots(tmp_path: Path):
    # a diverged trial gets every example wrong: Wilson's upper end must be exactly 1, not 1 - 1e-16
    from dlops_plugins.reporters.bias_variance import plot_bias_variance

    assert wilson(10, 10).high == 1.0 and wilson(0, 10).low == 0.0
    bv = bias_variance(human=0.0, train=1.0, train_dev=1.0, dev=1.0, counts={"train": 7, "train_dev": 3, "dev": 9})
    assert plot_bias_variance(bv, tmp_path / "bv.png").stat().st_size > 0


def test_a_gap_whose_split_has_no_count_is_not_judged():
    # newcomer review: counts for dev only gave "cannot be told apart ... at any realistic set size" for 7 vs 2 points
    bv = bias_variance(human=0.01, train=0.08, dev=0.10, counts={"dev": 10000})
    assert bv.stands_out is None and bv.named == "avoidable_bias" and not bv.resolve
    text = " ".join(verdict_lines(bv))
    assert "noise is not judged" in text and "any realistic set size" not in text
