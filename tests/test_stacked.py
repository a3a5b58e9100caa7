"""dlops.stacked: members of one architecture run as one vmapped forward with the loop's outputs
(1e-5); mixed architectures fall back to a loop; eval mode always (BatchNorm buffers untouched,
the same input twice gives bit-identical outputs); TTA views go through one forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from dlops.models.small_cnn import SmallCNN
from dlops.predict import member_probabilities, tta_views
from dlops.stacked import StackedMembers


def _bn_stats_random(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-trivial running statistics, so that eval vs train mode would differ."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model


def _members() -> list[torch.nn.Module]:
    torch.manual_seed(0)
    cnns = [_bn_stats_random(SmallCNN(num_classes=5, in_channels=3), i) for i in range(3)]
    resnets = [_bn_stats_random(torchvision.models.resnet18(num_classes=5), 10 + i) for i in range(2)]
    return [cnns[0], resnets[0], cnns[1], resnets[1], cnns[2]]  # interleaved: order must survive


def test_stacked_equals_the_loop_and_groups_by_architecture():
    members = _members()
    x = torch.randn(4, 3, 32, 32)
    stacked, loop = StackedMembers(members, stack=True), StackedMembers(members, stack=False)
    assert stacked.groups == [[0, 2, 4], [1, 3]] and loop.groups == [[0], [1], [2], [3], [4]]
    a, b = stacked(x), loop(x)
    assert a.shape == (5, 4, 5)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # each row is that member's own forward (eval mode), not another's
    with torch.no_grad():
        for i in (0, 1, 4):
            torch.testing.assert_close(a[i], members[i].eval()(x), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(a[0], a[2])  # different weights, different outputs


def test_eval_mode_always_bn_buffers_untouched_and_repeatable():
    members = _members()
    for m in members:
        m.train()  # as a caller might leave them
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in members]
    s = StackedMembers(members, stack=True)
    x = torch.randn(3, 3, 32, 32)
    y1, y2 = s(x), s(x)
    assert torch.equal(y1, y2)  # bit-identical
    # a single image gives the same output whatever batch it arrives in (no batch statistics)
    torch.testing.assert_close(s(x[:1])[:, 0], y1[:, 0], rtol=1e-5, atol=1e-5)
    for m, b in zip(members, before):
        assert not m.training
        for k, v in m.state_dict().items():
            assert torch.equal(v, b[k]), k  # running stats and num_batches_tracked unchanged
    assert StackedMembers(members).stacked is False  # "auto" on CPU: the loop (see the module doc)
    with pytest.raises(ValueError, match="stack"):
        StackedMembers(members, stack="yes")


def test_member_probabilities_tta_in_one_forward_equals_per_view_mean():
    members = _members()[:3]
    x = torch.randn(3, 3, 32, 32)
    calls = []
    s = StackedMembers(members, stack=True)
    orig = s.__call__

    class Counting(StackedMembers):
        def __call__(self, inp):
            calls.append(tuple(inp.shape))
            return orig(inp)

    s.__class__ = Counting
    got = member_probabilities(s, x, "classification", "ten_crop", 0.75)
    assert calls == [(30, 3, 32, 32)]  # N * V views, one forward
    views = tta_views(x, "ten_crop", 0.75)
    with torch.no_grad():
        ref = np.stack([np.mean([torch.softmax(m.eval()(v), 1).numpy() for v in views], axis=0) for m in members])
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-6)
    # chunks of batch_size // V images give the same numbers
    calls.clear()
    chunked = member_probabilities(s, x, "classification", "ten_crop", 0.75, batch_size=20)
    assert calls == [(20, 3, 32, 32), (10, 3, 32, 32)]
    np.testing.assert_allclose(chunked, got, rtol=1e-6, atol=1e-7)
