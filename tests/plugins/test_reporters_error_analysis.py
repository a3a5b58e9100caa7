"""error_analysis reporter: confusion matrix, most-confused pairs, top losses, tag shares."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from dlops.plugins import build_registry
from dlops.reporting import ReportContext, SplitPredictions
from dlops_plugins.reporters.error_analysis import confusion_matrix, most_confused, tag_shares


def _probs(pred: list[int], c: int, conf: list[float]) -> np.ndarray:
    p = np.full((len(pred), c), 0.0)
    for i, (k, q) in enumerate(zip(pred, conf)):
        p[i] = (1 - q) / (c - 1)
        p[i, k] = q
    return p


def test_confusion_and_pairs():
    cm = confusion_matrix(np.array([0, 0, 1, 1, 2, 2, 2]), np.array([0, 1, 1, 0, 0, 0, 2]), 3)
    assert cm.tolist() == [[1, 1, 0], [1, 1, 0], [2, 0, 1]]
    assert most_confused(cm, 2) == [(2, 0, 2), (0, 1, 1)]
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([3]), np.array([0]), 3)


def test_tag_shares_multi_tag_ceiling():
    wrong = np.array([True, True, True, True, False])
    tags = [["blurry", "dark"], ["blurry"], [], ["mislabeled"], ["blurry"]]
    s = {t.tag: t for t in tag_shares(wrong, tags)}
    assert s["blurry"].count == 2 and s["blurry"].share == pytest.approx(0.5)  # correct example not counted
    assert s["blurry"].ceiling == pytest.approx(2 / 5)
    assert s["dark"].share == pytest.approx(0.25) and s["mislabeled"].share == pytest.approx(0.25)
    # Wilson 95% intervals of 2 of 4 mistakes and 2 of 5 examples (Wilson 1927)
    assert (s["blurry"].share_ci.low, s["blurry"].share_ci.high) == pytest.approx((0.1500, 0.8500), abs=5e-5)
    assert (s["blurry"].ceiling_ci.low, s["blurry"].ceiling_ci.high) == pytest.approx((0.1176, 0.7693), abs=5e-5)
    with pytest.raises(ValueError, match="one list per example"):
        tag_shares(wrong, tags[:3])


def test_report_artifacts_and_metrics(tmp_path):
    y = np.array([0, 0, 1, 1, 2, 2, 2, 2])
    pred = [0, 1, 1, 2, 0, 0, 2, 2]
    prob = _probs(pred, 3, [0.9, 0.6, 0.8, 0.99, 0.7, 0.5, 0.9, 0.9])
    images = np.random.default_rng(0).integers(0, 256, (8, 8, 8, 1), dtype=np.uint8)
    tags = [[], ["blurry"], [], ["blurry", "rotated"], ["rotated"], ["blurry"], [], []]
    ctx = ReportContext(errors={"dev": 0.5}, out_dir=tmp_path,
                        predictions={"dev": SplitPredictions(y, prob, images=images, tags=tags)},
                        class_names=["zero", "one", "two"])
    rep = build_registry().get("reporters", "error_analysis").report(ctx)
    names = {p.name for p in rep.artifacts}
    assert {"error_analysis.md", "confusion_matrix.csv", "confusion_matrix.png", "top_losses.png",
            "error_tags.csv"} <= names
    for p in rep.artifacts:
        assert p.exists() and p.stat().st_size > 0
    assert (tmp_path / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.reader((tmp_path / "confusion_matrix.csv").open()))
    assert rows[0] == ["true \\ predicted", "zero", "one", "two"]
    assert rows[3] == ["two", "2", "0", "2"]
    assert rep.metrics["error_analysis/error"] == pytest.approx(0.5)
    assert rep.metrics["error_analysis/n_errors"] == 4
    assert rep.metrics["error_analysis/tag_share/blurry"] == pytest.approx(3 / 4)
    assert rep.metrics["error_analysis/tag_share/rotated"] == pytest.approx(2 / 4)
    assert rep.metrics["error_analysis/tag_ceiling/blurry"] == pytest.approx(3 / 8)
    assert rep.metrics["error_analysis/tag_share_ci_low/blurry"] < 3 / 4 < rep.metrics["error_analysis/tag_share_ci_high/blurry"]
    assert rep.metrics["error_analysis/tag_ceiling_ci_low/blurry"] < 3 / 8 < rep.metrics["error_analysis/tag_ceiling_ci_high/blurry"]
    assert "| blurry | 3 / 4 | 75.0% | [" in rep.markdown
    assert "| two | zero | 2 |" in rep.markdown
    assert "two -> zero" in rep.summary


def test_without_dev_predictions(tmp_path):
    rep = build_registry().get("reporters", "error_analysis").report(ReportContext(errors={}, out_dir=tmp_path))
    assert rep.metrics == {} and "no dev predictions" in rep.summary
