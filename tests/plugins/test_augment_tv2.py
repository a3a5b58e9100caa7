"""torchvision.transforms.v2 backend: same factory contract, seeded by torch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dlops.plugins import BUILTIN_PLUGINS, build_registry
from dlops_plugins.augment import tv2
from dlops.data.policy import policy_param


def test_registered_as_builtin():
    assert ("augment_tv2", "dlops_plugins.augment.tv2") in BUILTIN_PLUGINS
    reg = build_registry()
    info = next(i for i in reg.plugins if i.name == "augment_tv2")
    assert set(info.provides["augment_policies"]) == set(tv2.POLICIES)


@pytest.mark.parametrize("name", tv2.POLICIES)
def test_contract_on_tiny_grayscale_and_rgb(name):
    torch.manual_seed(0)
    p = tv2.make_policy(name, 1.0, None)
    g = np.random.default_rng(0).integers(0, 256, (8, 8, 1), dtype=np.uint8)
    out = p(g)
    assert out.shape == (8, 8, 1) and out.dtype == np.uint8
    rgb = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = tv2.make_policy(name, 1.0, 32)(rgb)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8


@pytest.mark.parametrize("name", ["tv2_autoaugment", "tv2_randaugment", "tv2_trivialaugment"])
def test_learned_policies_follow_torch_seed_and_magnitude(name):
    rgb = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    p = tv2.make_policy(name, 1.0, 32)
    torch.manual_seed(3)
    a = [p(rgb) for _ in range(8)]
    torch.manual_seed(3)
    b = [p(rgb) for _ in range(8)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert any(not np.array_equal(x, rgb) for x in a)
    off = tv2.make_policy(name, 0.0, 32)
    assert all(np.array_equal(off(rgb), rgb) for _ in range(5))


def test_describe_and_param():
    d = tv2.make_policy("tv2_randaugment", 0.5, 224).describe()
    assert d["backend"] == "torchvision.transforms.v2"
    assert "RandAugment" in json.dumps(d) and "magnitude=15" in json.dumps(d)
    assert policy_param(d, limit=200).startswith("tv2_randaugment(m=0.5,torchvision.transforms.v2): RandAugment")


def test_pca_lighting_shifts_colour_along_principal_axis():
    rng = np.random.default_rng(0)
    base = rng.integers(60, 200, (16, 16, 1)).astype(np.float32)
    img = torch.from_numpy(np.concatenate([base, base * 0.5, base * 0.2], axis=2).astype(np.uint8)).permute(2, 0, 1)
    torch.manual_seed(0)
    out = tv2.pca_lighting(img, 0.5)
    delta = (out.float() - img.float()).mean(dim=(1, 2))
    assert delta.abs().sum() > 0.5
    # the image's colours lie on one axis (1, 0.5, 0.2): the shift is along it
    axis = torch.tensor([1.0, 0.5, 0.2])
    cos = torch.dot(delta, axis) / (delta.norm() * axis.norm())
    assert cos.abs() > 0.99
    assert torch.equal(tv2.pca_lighting(img, 0.0), img)
