"""Augmentation throughput: albumentations policies vs equivalent torchvision.transforms.v2 ones.

Measured side by side in one run, one process, one thread each (``cv2.setNumThreads(1)``,
``torch.set_num_threads(1)``), rounds interleaved (albumentations, torchvision, albumentations,
...) and the median round kept, so that machine drift hits both alike. Images: real handwritten
digits (scikit-learn's 8x8 set, on disk) upscaled to S x S with bilinear interpolation and
tinted into RGB uint8, S = 224 by default. The torchvision pipelines are the ``tv2_*`` policies of
:mod:`dlops_plugins.augment.tv2`, step for step the same as the albumentations ones.

Also: DataLoader epoch time (the full training transform, ``standard``, to normalised tensors)
with 0, 1 and 2 workers.

Target: ``standard`` at least 1.5x the throughput of torchvision's equivalent.
The last line printed is one JSON object with the headline figures.

Usage: ``python bench/augment_throughput.py [--size 224] [--seconds 1.0] [--n 256]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

PAIRS = (("flip", "tv2_flip"), ("crop", "tv2_crop"), ("standard", "tv2_standard"), ("heavy", "tv2_heavy"))
TV2_ONLY = ("tv2_autoaugment", "tv2_randaugment", "tv2_trivialaugment")


def digit_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) uint8: sklearn digits upscaled (bilinear) and tinted with a random colour."""
    import cv2
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(seed)
    d = load_digits().images  # (1797, 8, 8) float in [0, 16]
    idx = rng.integers(0, len(d), n)
    out = np.empty((n, size, size, 3), np.uint8)
    for k, i in enumerate(idx):
        g = cv2.resize((d[i] / 16.0).astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
        fg, bg = rng.uniform(0.5, 1.0, 3), rng.uniform(0.0, 0.3, 3)
        rgb = bg[None, None, :] + g[:, :, None] * (fg - bg)[None, None, :]
        out[k] = np.clip(rgb * 255 + rng.normal(0, 4, rgb.shape), 0, 255).astype(np.uint8)
    return out


def rate(policy, images: np.ndarray, seconds: float) -> float:
    """Images per second of ``policy`` over ``images`` (cycled) for about ``seconds``."""
    n, done = len(images), 0
    policy(images[0])  # build the pipeline for this shape
    t0 = time.perf_counter()
    while True:
        for _ in range(16):
            policy(images[done % n])
            done += 1
        el = time.perf_counter() - t0
        if el >= seconds:
            return done / el


class _DS:
    def __init__(self, images: np.ndarray, transform) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), 0


def loader_epoch_s(images: np.ndarray, workers: int, size: int, policy: str = "standard") -> float:
    """Seconds for one epoch (after a warm-up epoch) of a DataLoader, batch 64."""
    import torch

    from dlops.data.transforms import build_transform

    tf = build_transform(policy, 0.5, size, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), train=True)
    dl = torch.utils.data.DataLoader(_DS(images, tf), batch_size=64, shuffle=True, num_workers=workers,
                                     persistent_workers=workers > 0)
    for _ in dl:  # warm-up (worker start, pipeline build)
        pass
    t0 = time.perf_counter()
    for _ in dl:
        pass
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224, help="image side in pixels")
    ap.add_argument("--seconds", type=float, default=1.0, help="seconds per measured round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per pair (median kept)")
    ap.add_argument("--n", type=int, default=256, help="distinct images")
    ap.add_argument("--loader-n", type=int, default=512, help="images per DataLoader epoch")
    a = ap.parse_args(argv)

    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    from dlops.plugins import build_registry

    reg = build_registry()
    if reg.errors:
        print("plugin errors:", reg.errors, file=sys.stderr)
    images = digit_images(a.n, a.size)
    print(f"images: {a.n} x {a.size}x{a.size}x3 uint8 (digits upscaled); one thread; "
          f"{a.rounds} interleaved rounds of {a.seconds:g} s, median", flush=True)

    results: dict[str, dict[str, float]] = {}
    print(f"{'policy':<10} {'albumentations img/s':>22} {'torchvision v2 img/s':>22} {'ratio':>7}")
    for alb, tv in PAIRS:
        pa = reg.augment_policies[alb](magnitude=0.5, image_size=a.size, train=True)
        pt = reg.augment_policies[tv](magnitude=0.5, image_size=a.size, train=True)
        ra, rt = [], []
        for _ in range(a.rounds):
            ra.append(rate(pa, images, a.seconds))
            rt.append(rate(pt, images, a.seconds))
        ma, mt = statistics.median(ra), statistics.median(rt)
        results[alb] = {"albumentations_img_s": round(ma, 1), "torchvision_img_s": round(mt, 1),
                        "ratio": round(ma / mt, 3)}
        print(f"{alb:<10} {ma:>22.1f} {mt:>22.1f} {ma / mt:>7.2f}", flush=True)
    tv_only = {}
    for tv in TV2_ONLY:
        p = reg.augment_policies[tv](magnitude=0.5, image_size=a.size, train=True)
        tv_only[tv] = round(rate(p, images, a.seconds), 1)
        print(f"{tv:<20} {tv_only[tv]:>12.1f} img/s", flush=True)

    torch.set_num_threads(1)
    loader_images = images[np.arange(a.loader_n) % len(images)]
    epochs = {}
    for w in (0, 1, 2):
        epochs[w] = loader_epoch_s(loader_images, w, a.size)
        print(f"DataLoader standard, {w} workers: {epochs[w]:.2f} s/epoch of {a.loader_n} "
              f"({a.loader_n / epochs[w]:.0f} img/s)", flush=True)

    head = {
        "bench": "augment_throughput",
        "image_size": a.size,
        "cpus": os.cpu_count(),
        "standard_ratio_vs_tv2": results["standard"]["ratio"],
        "standard_target_met": results["standard"]["ratio"] >= 1.5,
        "ratios_vs_tv2": {k: v["ratio"] for k, v in results.items()},
        "img_s_albumentations": {k: v["albumentations_img_s"] for k, v in results.items()},
        "img_s_torchvision": {k: v["torchvision_img_s"] for k, v in results.items()},
        "img_s_tv2_only": tv_only,
        "loader_epoch_s": {str(k): round(v, 3) for k, v in epochs.items()},
        "loader_images": a.loader_n,
    }
    print(json.dumps(head, sort_keys=True))
    return head


if __name__ == "__main__":
    main()
