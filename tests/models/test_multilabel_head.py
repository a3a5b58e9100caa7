"""Multi-label head support: masked BCE and per-label metrics (dlops.train.multilabel)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dlops.train.multilabel import best_thresholds, masked_bce_with_logits, multilabel_metrics

NAN = float("nan")


def test_masked_bce_leaves_missing_labels_out():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]], requires_grad=True)
    targets = torch.tensor([[1.0, NAN, 0.0], [-1.0, 1.0, 1.0]])
    loss = masked_bce_with_logits(logits, targets)
    obs = [(0, 0, 1.0), (0, 2, 0.0), (1, 1, 1.0), (1, 2, 1.0)]
    manual = sum(torch.nn.functional.binary_cross_entropy_with_logits(logits[i, j], torch.tensor(t)).item()
                 for i, j, t in obs) / len(obs)
    assert loss.item() == pytest.approx(manual, rel=1e-6)
    loss.backward()
    assert logits.grad[0, 1] == 0 and logits.grad[1, 0] == 0 and logits.grad[0, 0] != 0
    total = masked_bce_with_logits(logits.detach(), targets, reduction="sum")
    assert total.item() == pytest.approx(manual * 4, rel=1e-6)


def test_changing_logits_of_missing_labels_does_not_change_the_loss():
    torch.manual_seed(0)
    logits = torch.randn(8, 4)
    targets = torch.randint(0, 2, (8, 4)).float()
    targets[::2, 1] = NAN
    moved = logits.clone()
    moved[::2, 1] += 100.0
    assert torch.equal(masked_bce_with_logits(logits, targets), masked_bce_with_logits(moved, targets))


def test_all_missing_gives_zero_and_still_backpropagates():
    logits = torch.randn(3, 2, requires_grad=True)
    loss = masked_bce_with_logits(logits, torch.full((3, 2), NAN))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros(3, 2))


def test_masked_bce_errors():
    with pytest.raises(ValueError, match=r"\(N, L\)"):
        masked_bce_with_logits(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        masked_bce_with_logits(torch.zeros(1, 2), torch.tensor([[2.0, 0.0]]))
    with pytest.raises(ValueError, match="reduction"):
        masked_bce_with_logits(torch.zeros(1, 2), torch.zeros(1, 2), reduction="max")


def test_a_multilabel_network_learns_with_the_masked_loss():
    from dlops.models import create_model

    torch.manual_seed(0)
    model = create_model("small_cnn", 3, in_channels=1)
    x = torch.randn(16, 1, 8, 8)
    y = (x.mean(dim=(1, 2, 3)) > 0).float()[:, None].repeat(1, 3)
    y[:8, 2] = NAN
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = masked_bce_with_logits(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_metrics_per_label_with_thresholds_and_missing():
    probs = np.array([[0.9, 0.2, 0.6], [0.4, 0.7, 0.1], [0.8, 0.1, 0.3], [0.3, 0.6, 0.9]])
    targets = np.array([[1, 0, NAN], [0, 1, -1], [0, 0, NAN], [1, NAN, NAN]])
    m = multilabel_metrics(probs, targets, thresholds=[0.5, 0.5, 0.5], label_names=["a", "b", "c"])
    # label a: pred [1,0,1,0] truth [1,0,0,1]: tp1 fp1 fn1 -> error 2/4, f1 0.5
    assert m["error/a"] == pytest.approx(0.5) and m["f1/a"] == pytest.approx(0.5)
    # label b (3 observed): pred [0,1,0] truth [0,1,0]: perfect
    assert m["error/b"] == 0.0 and m["f1/b"] == 1.0 and m["support/b"] == 3
    # label c: nothing observed -> NaN, left out of the means
    assert math.isnan(m["error/c"]) and math.isnan(m["f1/c"]) and m["support/c"] == 0
    assert m["error"] == pytest.approx(0.25) and m["f1"] == pytest.approx(0.75)
    assert m["micro_f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert m["observed"] == pytest.approx(7 / 12)
    # per-label thresholds: a at 0.85 predicts only row 0 -> tp1 fp0 fn1
    m2 = multilabel_metrics(probs, targets, thresholds=[0.85, 0.5, 0.5], label_names=["a", "b", "c"])
    assert m2["precision/a"] == 1.0 and m2["recall/a"] == 0.5 and m2["error/a"] == pytest.approx(0.25)


def test_metrics_accept_tensors_and_check_shapes():
    m = multilabel_metrics(torch.tensor([[0.9], [0.1]]), torch.tensor([[1.0], [0.0]]))
    assert m["error"] == 0.0 and m["f1/0"] == 1.0
    with pytest.raises(ValueError, match="one value per label"):
        multilabel_metrics(np.zeros((2, 2)), np.zeros((2, 2)), thresholds=[0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match=r"\(N, L\)"):
        multilabel_metrics(np.zeros((2, 2)), np.zeros((2, 3)))
    # no positives and none predicted: F1 is zero_division (scikit-learn's convention)
    assert multilabel_metrics(np.zeros((2, 1)), np.zeros((2, 1)))["f1"] == 0.0
    assert multilabel_metrics(np.zeros((2, 1)), np.zeros((2, 1)), zero_division=1.0)["f1"] == 1.0


def test_best_thresholds_maximise_per_label_f1():
    probs = np.array([[0.3, 0.9], [0.25, 0.8], [0.1, 0.2], [0.05, 0.6]])
    targets = np.array([[1, 1], [1, 1], [0, 0], [0, NAN]])
    th = best_thresholds(probs, targets)
    assert 0.1 < th[0] <= 0.25 and th[1] == 0.5
    assert multilabel_metrics(probs, targets, th)["f1/0"] == 1.0
    assert multilabel_metrics(probs, targets, 0.5)["f1/0"] == 0.0
