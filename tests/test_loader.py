"""The augmentation-free fast paths of make_loader give the DataLoader's own batches, in its order."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dlops.data.transforms import build_transform
from dlops.train.loop import ImageDataset, PretransformedBatches, make_loader, stack_eval


@pytest.mark.parametrize("multilabel", [False, True])
@pytest.mark.parametrize("seed", [0, 7])
def test_pretransformed_batches_equal_the_per_image_dataloader(seed, multilabel):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (53, 8, 8, 1), dtype=np.uint8)
    y = rng.random((53, 3)).round().astype(np.float32) if multilabel else (np.arange(53) % 5)
    if multilabel:
        y[::4, 1] = np.nan
    t = build_transform("none", 0.0, 8, [0.5], [0.5], train=True)
    pre = stack_eval(x, t)
    assert torch.equal(pre, torch.stack([t(im) for im in x]))
    fast = make_loader(x, y, t, 8, shuffle=True, seed=seed, pretransformed=pre)
    assert isinstance(fast, PretransformedBatches) and len(fast) == 7
    g = torch.Generator()
    g.manual_seed(seed)
    ref = list(DataLoader(ImageDataset(x, y, t), batch_size=8, shuffle=True, generator=g))
    got = list(fast)
    assert len(got) == len(ref)
    for (xa, ya), (xb, yb) in zip(got, ref):
        assert torch.equal(xa, xb)
        assert ya.dtype == yb.dtype and torch.equal(torch.nan_to_num(ya, -1), torch.nan_to_num(yb, -1))


def test_an_augmenting_policy_never_takes_the_fast_path():
    x = np.zeros((10, 8, 8, 1), dtype=np.uint8)
    t = build_transform("flip", 0.5, 8, [0.5], [0.5], train=True)
    assert getattr(t, "batch", None) is None
    loader = make_loader(x, np.zeros(10, dtype=np.int64), t, 4, shuffle=True, seed=0,
                         pretransformed=torch.zeros(10, 1, 8, 8))
    assert isinstance(loader, DataLoader)
