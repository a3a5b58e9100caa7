"""The bias/variance math against the practice's own hand-computed examples."""

import math

import pytest

from dlops_plugins.reporters.bias_variance import bias_variance, render_markdown


def test_bias_example_points_at_avoidable_bias():
    # Ng: human 1%, train 8%, dev 10% -> avoidable bias 7 points, variance 2 points: focus on bias
    bv = bias_variance(human=0.01, train=0.08, dev=0.10)
    assert bv.avoidable_bias == pytest.approx(0.07)
    assert bv.variance == pytest.approx(0.02)
    assert bv.largest == "avoidable_bias"


def test_variance_example_points_at_variance():
    # Ng: human 7.5%, train 8%, dev 10% -> avoidable bias 0.5 points, variance 2 points: focus on variance
    bv = bias_variance(human=0.075, train=0.08, dev=0.10)
    assert bv.avoidable_bias == pytest.approx(0.005)
    assert bv.variance == pytest.approx(0.02)
    assert bv.largest == "variance"


def test_train_dev_splits_variance_from_data_mismatch():
    # train 1%, train-dev 1.5%, dev 10%: the gap is data mismatch, not variance
    bv = bias_variance(human=0.0, train=0.01, train_dev=0.015, dev=0.10, test=0.11)
    assert bv.variance == pytest.approx(0.005)
    assert bv.data_mismatch == pytest.approx(0.085)
    assert bv.overfitting_to_dev == pytest.approx(0.01)
    assert bv.largest == "data_mismatch"


def test_overfitting_to_dev_and_knobs_in_markdown():
    bv = bias_variance(human=0.01, train=0.011, train_dev=0.012, dev=0.013, test=0.08)
    assert bv.largest == "overfitting_to_dev"
    md = render_markdown(bv)
    assert "bigger dev set" in md
    assert "| avoidable bias | train - human | 0.10% |" in md


def test_better_than_human_is_said():
    bv = bias_variance(human=0.05, train=0.03, dev=0.04)
    assert bv.better_than_human
    assert bv.avoidable_bias == pytest.approx(-0.02)
    assert "below the human-level proxy" in render_markdown(bv)


def test_missing_splits_are_nan_and_percent_is_refused():
    bv = bias_variance(human=0.01, train=0.02)
    assert math.isnan(bv.variance) and math.isnan(bv.data_mismatch)
    with pytest.raises(ValueError, match="fraction"):
        bias_variance(human=1.0, train=8.0, dev=10.0)
