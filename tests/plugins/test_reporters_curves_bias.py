"""learning_curves reporter, bias_variance PNG and search-level table."""

from __future__ import annotations

import csv

import pytest

from dlops.plugins import build_registry
from dlops.reporting import ReportContext
from dlops_plugins.reporters.bias_variance import render_search_table
from dlops_plugins.reporters.learning_curves import curves

PNG = b"\x89PNG\r\n\x1a\n"
HISTORY = [
    {"epoch": 1, "train/error": 0.30, "train_dev/error": 0.32, "dev/error": 0.35},
    {"epoch": 2, "train/error": 0.15, "train_dev/error": 0.20, "dev/error": 0.22},
    {"epoch": 3, "train/error": 0.05, "train_dev/error": 0.12, "dev/error": 0.25},
]
TRIALS = [
    {"trial_id": "t1", "params": {"lr": 0.01, "batch_size": 32}, "metrics": {"train/error": 0.10, "dev/error": 0.20}},
    {"trial_id": "t2", "params": {"lr": 0.1}, "metrics": {"train/error": 0.02, "dev/error": 0.15}},
]


def test_curves_skip_missing_points():
    data = curves([{"epoch": 1, "train/error": 0.3}, {"epoch": 2, "train/error": 0.2, "dev/error": float("nan")}])
    assert data == {"train/error": ([1.0, 2.0], [0.3, 0.2])}


def test_learning_curves_report(tmp_path):
    ctx = ReportContext(errors={"human": 0.01}, out_dir=tmp_path, history=HISTORY, trials=TRIALS)
    rep = build_registry().get("reporters", "learning_curves").report(ctx)
    assert (tmp_path / "learning_curves.png").read_bytes()[:8] == PNG
    assert rep.metrics["learning_curves/best_epoch"] == 2
    assert rep.metrics["learning_curves/best_dev_error"] == pytest.approx(0.22)
    assert rep.metrics["learning_curves/n_trials"] == 2
    rows = list(csv.DictReader((tmp_path / "trials.csv").open()))
    assert list(rows[0]) == ["trial_id", "params.lr", "params.batch_size", "metrics.train/error", "metrics.dev/error"]
    assert rows[1]["params.batch_size"] == "" and rows[1]["metrics.dev/error"] == "0.15"


def test_learning_curves_without_history(tmp_path):
    rep = build_registry().get("reporters", "learning_curves").report(ReportContext(errors={}, out_dir=tmp_path))
    assert not (tmp_path / "learning_curves.png").exists() and rep.summary == "no dev curve"


def test_bias_variance_png_and_trials_table(tmp_path):
    ctx = ReportContext(errors={"human": 0.01, "train": 0.08, "train_dev": 0.09, "dev": 0.10}, out_dir=tmp_path,
                        trials=TRIALS)
    rep = build_registry().get("reporters", "bias_variance").report(ctx)
    names = {p.name for p in rep.artifacts}
    assert {"bias_variance.md", "bias_variance.png", "bias_variance_trials.md"} <= names
    assert (tmp_path / "bias_variance.png").read_bytes()[:8] == PNG
    assert rep.metrics["bias_variance/avoidable_bias"] == pytest.approx(0.07)


def test_search_table_rows_sorted_by_dev_with_largest_gap():
    md = render_search_table([
        {"trial": "a", "train": 0.10, "train_dev": 0.11, "dev": 0.12},
        {"trial": "b", "train/error": 0.02, "train_dev/error": 0.09, "dev/error": 0.10},
    ], human=0.01)
    rows = [line for line in md.splitlines() if line.startswith("| a ") or line.startswith("| b ")]
    assert rows[0].startswith("| b ") and rows[0].endswith("| variance |")
    assert rows[1].startswith("| a ") and rows[1].endswith("| avoidable bias |")
    assert "9.00%" in rows[1]  # avoidable bias of a: 10% - 1%
    with pytest.raises(ValueError, match="fraction"):
        render_search_table([{"train": 8.0}], human=0.01)
