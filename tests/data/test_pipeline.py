"""The training data pipeline at size (dlops.data.loader, dlops.data.cache): workers, threads,
per-worker seeding, the last-batch rule with BatchNorm, the image cache, bad and large files."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from dlops.data.cache import DiskCache, cache_key, choose_cache, default_cache_dir, load_resized, read_resized
from dlops.data.loader import (EpochBatchSampler, FileImageDataset, ThreadPlan, TrainLoader, WorkerInit,
                               cap_threads, default_num_workers, drop_last_batch, opencv_pool_paused, thread_counts, thread_plan,
                               worker_seed)
from dlops.data.transforms import build_transform
from dlops.errors import DataError


def test_thread_plan_never_oversubscribes_the_trials_cpus():
    assert [default_num_workers(c) for c in (0.5, 1, 2, 4, 8)] == [0, 0, 1, 3, 7]
    for cpus in (1, 2, 3, 4, 8, 16):
        p = thread_plan(cpus)
        assert p.num_workers == cpus - 1 and p.total_threads == cpus
        assert thread_plan(cpus, per_image_work=False) == ThreadPlan(0, cpus, 1)  # no augmentation: no workers
    assert thread_plan(4, num_workers=0) == ThreadPlan(0, 4, 1)
    assert thread_plan(4, num_workers=2).total_threads == 4
    assert thread_plan(2, num_workers=5).main_threads == 1  # the user's count wins; the trainer keeps one


def test_drop_last_batch_only_for_a_batch_of_one():
    assert drop_last_batch(33, 32) and drop_last_batch(9, 4)
    assert not any([drop_last_batch(32, 32), drop_last_batch(34, 32), drop_last_batch(1, 32),
                    drop_last_batch(5, 1)])
    s = EpochBatchSampler(9, 4, seed=3)
    batches = list(s)
    assert len(s) == len(batches) == 2 and all(len(b) == 4 for b in batches)
    s.set_epoch(1)
    assert [i for _, i in sum(list(s), [])] != [i for _, i in sum(batches, [])]  # another shuffle per epoch


def test_epoch_order_is_the_dataloaders_shuffle():
    from torch.utils.data import DataLoader

    s = EpochBatchSampler(20, 20, seed=5)
    s.set_epoch(2)
    g = torch.Generator()
    g.manual_seed(5 + 2)
    (ref,) = list(DataLoader(list(range(20)), batch_size=20, shuffle=True, generator=g))
    assert s.order() == ref.tolist()


def test_worker_seeds_differ_across_workers_and_epochs():
    seeds = {worker_seed(0, e, w) for e in range(3) for w in range(4)}
    assert len(seeds) == 12
    assert worker_seed(7, 1, 2) == worker_seed(7, 1, 2) != worker_seed(8, 1, 2)


class _BN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.bn, self.out = torch.nn.Linear(16, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.out(torch.relu(self.bn(self.fc(x.flatten(1)))))


@pytest.mark.parametrize("policy", ["none", "flip"])
def test_a_last_batch_of_one_never_reaches_batchnorm(policy):
    from dlops.train.loop import fit_epoch, make_loader

    x = np.random.default_rng(0).integers(0, 256, (9, 4, 4, 1), dtype=np.uint8)
    y = np.arange(9) % 2
    t = build_transform(policy, 0.5, 4, [0.5], [0.5], train=True)
    pre = torch.stack([build_transform("none", 0, 4, [0.5], [0.5], train=False)(im) for im in x])
    model = _BN()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = TrainLoader(x, y, t, 4, seed=0, plan=thread_plan(1), pretransformed=pre)
    sizes = [len(yb) for yb in (b[1] for b in loader.epoch(0))]
    assert sizes == [4, 4]
    assert np.isfinite(fit_epoch(model, loader.epoch(1), opt))
    assert np.isfinite(fit_epoch(model, make_loader(x, y, t, 4, shuffle=True, seed=0, pretransformed=pre), opt))
    with pytest.raises(ValueError, match="more than 1 value"):  # what the rule prevents
        model.train()
        model(torch.zeros(1, 1, 4, 4))


class _Threads(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        c = thread_counts()
        return torch.tensor([c["torch"], c["cv2"], torch.utils.data.get_worker_info().id])


def test_threads_inside_a_worker_are_capped():
    plan = thread_plan(3)  # 2 workers of 1 thread, the trainer 1: 3 threads for 3 CPUs
    dl = torch.utils.data.DataLoader(_Threads(), batch_size=1, num_workers=plan.num_workers,
                                     worker_init_fn=WorkerInit(0, plan.worker_threads))
    with opencv_pool_paused():  # whatever OpenCV pool an earlier test left in this process
        it = iter(dl)
    rows = torch.cat(list(it)).view(-1, 3)
    assert set(rows[:, 2].tolist()) == {0, 1}
    assert rows[:, 0].tolist() == [1] * 4 and rows[:, 1].tolist() == [1] * 4
    before = torch.get_num_threads()
    try:
        cap_threads(plan.main_threads)
        assert thread_counts() == {"torch": 1, "cv2": 1} and os.environ["OMP_NUM_THREADS"] == "1"
        assert plan.main_threads + plan.num_workers * rows[:, 0].max().item() <= 3
    finally:
        torch.set_num_threads(before)


def test_worker_augmentation_is_reproducible_per_seed_and_differs_across_workers():
    x = np.repeat(np.random.default_rng(1).integers(0, 256, (1, 16, 16, 3), dtype=np.uint8), 16, axis=0)
    y = np.zeros(16, dtype=np.int64)

    def batches(seed):
        t = build_transform("standard", 1.0, 16, [0.5], [0.5], train=True)
        loader = TrainLoader(x, y, t, 4, seed=seed, plan=thread_plan(3))
        assert loader.num_workers == 2
        out = [[b[0] for b in loader.epoch(e)] for e in (0, 1)]  # workers persist across the two epochs
        loader.close()
        return out

    a, b = batches(0), batches(0)
    assert all(torch.equal(p, q) for ea, eb in zip(a, b) for p, q in zip(ea, eb))  # same trial seed: same batches
    # the same image everywhere: worker 0 makes batches 0 and 2, worker 1 batches 1 and 3; equal
    # streams would give equal batches
    assert not torch.equal(a[0][0], a[0][1])
    assert not torch.equal(a[0][0], a[1][0])  # epoch 1 is not epoch 0 again


def _jpeg(path, size=(24, 16), colour=(200, 30, 30), exif=None):
    img = Image.new("RGB", size, colour)
    img.paste((0, 0, 255), (0, 0, size[0] // 2, 4))
    kw = {"exif": exif} if exif is not None else {}
    img.save(path, quality=95, **kw)


def test_disk_cache_rereads_a_changed_file(tmp_path):
    paths = []
    for i in range(4):
        p = tmp_path / f"{i}.jpg"
        _jpeg(p, colour=(40 * i, 10, 10))
        paths.append(str(p))
    cdir = str(tmp_path / "cache")
    x1, s1 = load_resized(paths, 3, 8, mode="disk", cache_dir=cdir)
    x2, s2 = load_resized(paths, 3, 8, mode="disk", cache_dir=cdir)
    assert (s1.decoded, s1.hits, s2.decoded, s2.hits) == (4, 0, 0, 4) and np.array_equal(x1, x2)
    assert np.array_equal(x1[2], read_resized(paths[2], 3, 8))
    _jpeg(paths[2], size=(30, 30), colour=(0, 250, 0))  # another size in bytes and mtime
    os.utime(paths[2], ns=(1, 1))
    x3, s3 = load_resized(paths, 3, 8, mode="disk", cache_dir=cdir)
    assert (s3.decoded, s3.hits) == (1, 3)
    assert np.array_equal(x3[2], read_resized(paths[2], 3, 8)) and not np.array_equal(x3[2], x1[2])
    _, s4 = load_resized(paths, 1, 8, mode="disk", cache_dir=cdir)  # other channels: other entries
    assert s4.decoded == 4
    assert cache_key(paths[0], 3, 8) != cache_key(paths[0], 3, 16)
    assert DiskCache(cdir).get(cache_key(paths[0], 3, 8), (16, 16, 3)) is None  # wrong shape: a miss
    _, s5 = load_resized(paths, 3, 8, mode="memory", cache_dir=str(tmp_path / "none"))
    assert s5.mode == "memory" and s5.decoded == 4 and not (tmp_path / "none").exists()


def test_cache_choice_and_place():
    assert choose_cache("auto", 2000, 224, 3, 256) == "disk"  # 301 MB decoded
    assert choose_cache("auto", 1000, 224, 3, 256) == "memory"  # 150.5 MB
    assert choose_cache("memory", 10**6, 224, 3, 1) == "memory" and choose_cache("disk", 1, 4, 1, 1e9) == "disk"
    with pytest.raises(ValueError, match="data.cache"):
        choose_cache("ram", 1, 1, 1, 1)
    assert default_cache_dir("runs/ray") == os.path.join("runs", "ray", "dlops_cache")
    assert default_cache_dir("s3://bucket/ray").endswith(os.path.join(".cache", "dlops"))


def test_exif_rotation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    p = tmp_path / "rot.jpg"
    _jpeg(p, size=(24, 16), exif=exif)
    arr = read_resized(str(p), 3, None)
    assert arr.shape == (24, 16, 3)  # displayed upright: 16 wide, 24 high
    right = arr[:, -4:].astype(int)  # the blue band along the top (left half) is now down the right (top half)
    assert right[:10, :, 2].mean() > 200 and right[14:, :, 0].mean() > 150 and right[14:, :, 2].mean() < 60


def test_a_file_that_breaks_mid_epoch_is_a_data_error_naming_it(tmp_path):
    paths = [str(tmp_path / f"{i}.jpg") for i in range(3)]
    for p in paths:
        _jpeg(p)
    ds = FileImageDataset(paths, [0, 1, 0], 3, 8, build_transform("none", 0, 8, [0.5], [0.5], train=False))
    assert ds[1][0].shape == (3, 8, 8)
    with open(paths[1], "wb") as fh:
        fh.write(b"not a jpeg any more")
    with pytest.raises(DataError, match="1.jpg"):
        ds[1]
    os.remove(paths[2])
    with pytest.raises(DataError, match="2.jpg"):
        ds[2]


def test_a_very_large_image_is_skipped_by_the_scan_and_refused_by_the_decoder(tmp_path, monkeypatch):
    import dlops.data.decode as decode
    from dlops.data.imagefolder import check_image_file

    p = tmp_path / "big.png"
    Image.new("RGB", (64, 64)).save(p)
    assert check_image_file(p) is None
    monkeypatch.setattr(decode, "MAX_PIXELS", 1000)
    assert "image too large: 64x64" in check_image_file(p)
    with pytest.raises(DataError, match="big.png"):
        read_resized(str(p), 3, 8)


def test_config_defaults(tmp_path):
    from dlops.config import ProjectConfig

    cfg = ProjectConfig.model_validate({"name": "p", "ray": {"storage_path": str(tmp_path / "rr")},
                                        "search": {"space": {"lr": {"scale": "log", "low": 1e-3, "high": 1}},
                                                   "stages": [{"trials": 1}]}})
    assert cfg.data.num_workers is None and cfg.data.cache == "auto"
    assert cfg.data.cache_dir == str(tmp_path / "rr" / "dlops_cache")


def test_uint8_batches_normalised_at_once_equal_the_per_image_transform():
    x = np.random.default_rng(2).integers(0, 256, (10, 12, 12, 3), dtype=np.uint8)
    y = np.arange(10) % 3
    t = build_transform("standard", 0.5, 8, [0.4, 0.5, 0.6], [0.2, 0.25, 0.3], train=True)
    tail = build_transform("none", 0.0, 8, [0.4, 0.5, 0.6], [0.2, 0.25, 0.3], train=False).batch
    per_image = [b for b in TrainLoader(x, y, t, 4, seed=1, plan=thread_plan(1)).epoch(3)]
    batched = [b for b in TrainLoader(x, y, t, 4, seed=1, plan=thread_plan(1), batch_tail=tail).epoch(3)]
    assert [len(b[1]) for b in batched] == [4, 4, 2]
    assert TrainLoader(x, y, t, 4, seed=1, plan=thread_plan(1), pin_memory=True, batch_tail=tail).tail is None
    for (xa, ya), (xb, yb) in zip(per_image, batched):
        assert xb.shape == (len(yb), 3, 8, 8) and xb.dtype == torch.float32
        assert torch.equal(ya, yb) and torch.allclose(xa, xb, atol=1e-5)


_FORK_AFTER_OPENCV = r"""
import sys
import cv2, numpy as np
from dlops.data.loader import TrainLoader, thread_plan
from dlops.data.transforms import build_transform

cv2.setNumThreads(4)  # the training process's own OpenCV pool, busy before the workers start
img = np.random.default_rng(0).random((1500, 1500)).astype(np.float32)
rng = np.random.default_rng(1)
x, y = rng.integers(0, 255, (8, 16, 16, 3), dtype=np.uint8), np.arange(8) % 2
t = build_transform("standard", 1.0, 16, [0.5], [0.5], train=True)
for round in range(8):  # a fork with the pool's threads alive hung about half the time
    for _ in range(2):
        cv2.GaussianBlur(img, (15, 15), 3)
    loader = TrainLoader(x, y, t, 4, seed=round, plan=thread_plan(3, num_workers=2))
    assert sum(len(b[1]) for b in loader.epoch(0)) == 8
    loader.close()
    assert cv2.getNumThreads() == 4  # restored after the fork
print("ok")
"""


def test_workers_forked_after_opencv_ran_threads_start(tmp_path):
    """A trial process whose OpenCV pool has run threads forks its DataLoader workers without
    hanging (:func:`dlops.data.loader.opencv_pool_paused`); in a subprocess, so a hang is a
    timeout here and the pool is this scenario's own."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", _FORK_AFTER_OPENCV], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]
