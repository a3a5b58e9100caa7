"""The data_curve reporter: nested subsets, the verdict (pure), and the curve trained for transfer
and from scratch on the digits example (no Ray, no MLflow: the reporter API)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dlops.reporting import ReportContext
from dlops.reporting.contract import TrainContext
from dlops.reporting.stats import fit_power_law
from dlops_plugins.reporters.data_curve import FRACTIONS, DataCurveReporter, curve_verdict, nested_subsets


def test_nested_stratified_subsets():
    y = np.repeat(np.arange(5), 30)
    subs = nested_subsets(y, FRACTIONS, seed=0)
    assert [len(s) for s in subs] == [20, 40, 75, 150]  # ceil(30 * f) per class, 5 classes
    for small, big in zip(subs, subs[1:]):
        assert set(small) <= set(big)
    assert all(np.bincount(y[s], minlength=5).min() >= 1 for s in subs)
    with pytest.raises(ValueError):
        nested_subsets(y, (0.5, 0.25))


def test_power_law_fit_known():
    p = fit_power_law([100, 200, 400, 800], [0.2, 0.1, 0.05, 0.025])
    assert (p.a, p.b) == pytest.approx((20.0, 1.0))
    with pytest.raises(ValueError, match="two or more"):
        fit_power_law([100, 100], [0.1, 0.2])


def test_verdict_falling_vs_flat():
    m = 400
    rng = np.random.default_rng(0)
    base = rng.random(m)
    falling = [base < e for e in (0.40, 0.30, 0.20, 0.08)]  # nested wrong sets: the last step wins 12 points
    c = curve_verdict("scratch", [20, 40, 80, 160], falling)
    assert c.still_falling and c.last_step.low > 0 and c.fit is not None and c.fit.b > 0
    flat = [base < e for e in (0.40, 0.30, 0.101, 0.10)]
    assert not curve_verdict("scratch", [20, 40, 80, 160], flat).still_falling


def test_data_curve_on_digits_transfer_and_scratch(tmp_path: Path):
    from dlops.config import load_config
    from dlops.job.run import load_data
    from dlops.job.source import make_spec, train_source_network
    from dlops_testing import EXAMPLE

    cfg = load_config(EXAMPLE, ["pretrain.epochs=3"])
    data = load_data(cfg)
    spec = make_spec(cfg, data)
    net, _ = train_source_network(cfg, data, spec)
    tc = TrainContext(config={"lr": 0.05, "momentum": 0.9, "batch_size": 16, "epochs": 6}, data=data, spec=spec,
                      source_state=net.state_dict(), freeze=cfg.model.freeze, seed=0, task="classification",
                      weights="pretrain")
    rep = DataCurveReporter().report(ReportContext(errors={}, out_dir=tmp_path, train_context=tc))
    m = rep.metrics
    assert m["data_curve/transfer/n/all"] == len(data.train) and m["data_curve/scratch/n/1_8"] < len(data.train) / 4
    for curve in ("transfer", "scratch"):
        assert m[f"data_curve/{curve}/dev_error/all_ci_low"] <= m[f"data_curve/{curve}/dev_error/all"] \
            <= m[f"data_curve/{curve}/dev_error/all_ci_high"]
        assert m[f"data_curve/{curve}/still_falling"] in (0.0, 1.0)
    # with few examples the frozen source features beat training from scratch
    assert m["data_curve/transfer/dev_error/1_8"] < m["data_curve/scratch/dev_error/1_8"]
    md = (tmp_path / "data_curve.md").read_text()
    assert "| transfer | " in md and "| scratch | " in md and ("still falling" in md or "flat within noise" in md)
    assert (tmp_path / "data_curve.png").stat().st_size > 0
    assert len((tmp_path / "data_curve.csv").read_text().splitlines()) == 1 + 8


def test_without_a_training_context_it_says_so(tmp_path: Path):
    rep = DataCurveReporter().report(ReportContext(errors={}, out_dir=tmp_path))
    assert "no training context" in rep.summary and not rep.metrics
