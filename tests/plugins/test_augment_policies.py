"""Albumentations policies: shapes, magnitude, serialisation, seeding across workers and epochs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dlops.data.transforms import build_transform
from dlops.plugins import build_registry
from dlops_plugins.augment import policies
from dlops.data.policy import describe_policy, policy_param, worker_init_fn, write_policy_json


@pytest.fixture(scope="module")
def registry():
    return build_registry()


def digit(i: int = 0) -> np.ndarray:
    from sklearn.datasets import load_digits

    return (load_digits().images[i] * 255 / 16).astype(np.uint8)[:, :, None]  # (8, 8, 1)


def rgb224(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (224, 224, 3), dtype=np.uint8)


def test_registry_has_every_policy(registry):
    assert registry.errors == {}
    for name in ("none", "flip", "crop", "standard", "heavy"):
        assert name in registry.augment_policies


@pytest.mark.parametrize("name", policies.POLICIES)
def test_shapes_tiny_grayscale_and_rgb(registry, name):
    f = registry.augment_policies[name]
    small = f(magnitude=1.0, image_size=None, train=True)
    for _ in range(5):
        out = small(digit())
        assert out.shape == (8, 8, 1) and out.dtype == np.uint8
    assert small(digit()[:, :, 0]).shape == (8, 8, 1)
    big = f(magnitude=1.0, image_size=224, train=True)
    out = big(rgb224())
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    if name not in ("none", "flip"):
        assert f(magnitude=1.0, image_size=16, train=True)(digit()).shape == (16, 16, 1)


def test_magnitude_zero_is_identity_for_flip_and_crop():
    img = rgb224(1)
    for name in ("flip", "crop"):
        p = policies.make_policy(name, 0.0, 224)
        assert all(np.array_equal(p(img), img) for _ in range(10)), name


def test_magnitude_changes_the_image_and_is_checked():
    img = rgb224(2)
    p = policies.make_policy("standard", 1.0, 224)
    assert any(not np.array_equal(p(img), img) for _ in range(5))
    with pytest.raises(ValueError, match="magnitude"):
        policies.make_policy("standard", 1.5, 224)
    with pytest.raises(ValueError, match="unknown"):
        policies.make_policy("bogus")


def test_eval_policy_is_identity():
    img = rgb224(3)
    p = policies.make_policy("heavy", 1.0, 224, train=False)
    assert np.array_equal(p(img), img)


def test_heavy_contains_warp_and_pca():
    d = policies.make_policy("heavy", 0.5, 32).describe((32, 32, 3))
    text = json.dumps(d)
    for cls in ("ElasticTransform", "GridDistortion", "Perspective", "FancyPCA", "Affine", "HorizontalFlip",
                "RandomResizedCrop", "ColorJitter"):
        assert cls in text, cls


def test_describe_round_trips_through_albumentations(registry):
    import albumentations as A

    desc = describe_policy("standard", 0.7, 32, channels=3, registry=registry)
    assert desc["backend"] == "albumentations" and desc["input_shape"] == [32, 32, 3]
    json.dumps(desc)  # serialisable as an MLflow JSON artifact
    rebuilt = A.from_dict(desc["pipeline"])
    ours = policies.make_policy("standard", 0.7, 32).pipeline((32, 32, 3))
    rebuilt.set_random_seed(5)
    ours.set_random_seed(5)
    img = rgb224(4)[:32, :32]
    for _ in range(5):
        assert np.array_equal(rebuilt(image=img)["image"], ours(image=img)["image"])


def test_serialized_attribute_and_json_artifact(tmp_path):
    p = policies.make_policy("crop", 0.5, None)
    assert p.serialized is None  # size unknown until an image is seen
    p(digit())
    assert p.serialized["input_shape"] == [8, 8, 1]
    path = write_policy_json(p.serialized, tmp_path)
    assert json.loads(path.read_text())["policy"] == "crop"


def test_policy_param_fits_and_truncates():
    desc = policies.make_policy("heavy", 0.5, 224).describe()
    full = policy_param(desc)
    assert len(full) <= 6000 and json.loads(full)["policy"] == "heavy"
    short = policy_param(desc, limit=300)
    assert len(short) <= 300 and short.startswith("heavy(m=0.5,albumentations): HorizontalFlip")
    tiny = policy_param(desc, limit=40)
    assert len(tiny) == 40 and tiny.endswith("...[truncated]")


class _SameImage(torch.utils.data.Dataset):
    def __init__(self, aug) -> None:
        self.aug, self.img = aug, np.repeat(np.repeat(digit(3), 2, 0), 2, 1)  # (16, 16, 1)

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int):
        return torch.from_numpy(np.ascontiguousarray(self.aug(self.img)))


def _epochs(make_aug, seed: int, workers: int, init=None, epochs: int = 2) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    dl = torch.utils.data.DataLoader(_SameImage(make_aug()), batch_size=4, num_workers=workers,
                                     worker_init_fn=init, multiprocessing_context="fork" if workers else None)
    return [torch.stack(list(dl)) for _ in range(epochs)]  # each (2 batches, 4, 16, 16, 1)


def _policy():
    return policies.make_policy("standard", 1.0, 16)


@pytest.mark.parametrize("init", [None, worker_init_fn])
def test_workers_and_epochs_differ_and_runs_repeat(init):
    a = _epochs(_policy, 0, 2, init)
    # batch 0 comes from worker 0, batch 1 from worker 1
    assert not torch.equal(a[0][0], a[0][1]), "two workers produced the same augmentations"
    assert not torch.equal(a[0], a[1]), "two epochs produced the same augmentations"
    b = _epochs(_policy, 0, 2, init)
    assert all(torch.equal(x, y) for x, y in zip(a, b)), "same torch seed, different sequence"
    c = _epochs(_policy, 1, 2, init)
    assert not torch.equal(a[0], c[0])


def test_plain_compose_repeats_across_workers_control():
    """The pitfall the policy guards against: a bare albumentations Compose forked into workers."""
    import albumentations as A

    def bare():
        comp = A.Compose([A.RandomResizedCrop(size=(16, 16), scale=(0.3, 1.0)), A.Affine(rotate=(-30, 30), p=1)])
        return lambda img: comp(image=img)["image"]

    a = _epochs(bare, 0, 2)
    assert torch.equal(a[0][0], a[0][1]) and torch.equal(a[0], a[1])


def test_single_process_epochs_differ_and_repeat():
    a = _epochs(_policy, 7, 0)
    assert not torch.equal(a[0], a[1])
    b = _epochs(_policy, 7, 0)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_eval_transform_uint8_and_float_agree_and_do_not_augment(registry):
    img = rgb224(5)
    tf = build_transform("heavy", 1.0, 64, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), train=False,
                         registry=registry)
    assert tf.policy is None
    a = tf(img)
    assert a.shape == (3, 64, 64) and a.dtype == torch.float32
    assert torch.equal(tf(img.astype(np.float32) / 255.0), a)
    assert torch.allclose(tf(img / 255.0), a, atol=1e-6)  # float64 input
    assert torch.equal(tf(img), a)  # no randomness
    g = digit()
    t1 = build_transform("none", 0.5, None, train=False, registry=registry)
    assert torch.equal(t1(g), t1(g.astype(np.float32) / 255.0))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        tf(img.astype(np.float32))  # 0..255 floats: probably a mistake


def test_train_transform_applies_policy(registry):
    tf = build_transform("standard", 1.0, 16, train=True, registry=registry)
    assert tf.policy is not None and tf.policy.name == "standard"
    outs = [tf(digit()) for _ in range(6)]
    assert outs[0].shape == (1, 16, 16)
    assert any(not torch.equal(outs[0], o) for o in outs[1:])
    rgb = build_transform("crop", 0.5, 16, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), train=True, registry=registry)
    assert rgb(digit()).shape == (3, 16, 16)  # grayscale replicated for 3-value mean/std
