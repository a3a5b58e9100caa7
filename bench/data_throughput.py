"""Data throughput (issue 15): dlops's training loader against a bare torchvision loop, on a folder
of generated 224x224 JPEGs, side by side in one run.

    .venv/bin/python bench/data_throughput.py [--images 1000] [--workers 1] [--repeats 5] [--train-steps 3]

Paths (the same ``standard`` augmentation policy and normalisation, the same workers, persistent
workers for both, batch 32):

* ``bare``: ``torchvision.datasets.ImageFolder`` (Pillow open + RGB) + ``DataLoader``, decoding every
  file every epoch, the dlops transform applied to the decoded array.
* ``dlops_files`` (no cache): :class:`dlops.data.loader.TrainLoader` over
  :class:`dlops.data.loader.FileImageDataset`: each file decoded every epoch
  (:func:`dlops.data.decode.decode_image`: EXIF, mode conversion, pixel limit).
* ``dlops_cached`` (epoch 2 on): the images decoded and resized once
  (:func:`dlops.data.cache.load_resized`, as ``dlops run`` does before the first trial), the loader
  over the arrays. The one-time decode is timed too, from the files and from a warm disk cache.
* ``*_nopolicy``: the same two without an augmentation policy (the cache's ceiling: dlops then
  transforms every image once per trial and slices batches from that tensor).

Measurements: loader images/s (iterating one epoch, no model), paired repeats in ABC order per
repeat, ratios as geometric means of per-repeat ratios with a 95% t-interval (bench/paired.py).
Then a resnet18 training step on the CPU (224 px, SGD) fed by each loader: images/s
over ``--train-steps`` steps per repeat (batch ``--train-batch``), paired the same way. Threads: the plan of a trial with
``workers + 1`` CPUs (:func:`dlops.data.loader.thread_plan`): each worker 1 thread, the trainer the rest.

Goals (issue 15): dlops_files >= 1.0x bare; dlops_cached >= 3x bare on epoch 2; training >= 0.95x.
The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def make_jpegs(root: Path, n: int, size: int = 224, classes: int = 4, seed: int = 0) -> list[tuple[str, int]]:
    """``n`` JPEGs (quality 90) of smooth random colour fields with edges, ``classes`` folders."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        c = i % classes
        d = root / f"class{c}"
        d.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (14, 14, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((size, size), Image.BICUBIC)
        arr = np.asarray(img).copy()
        arr[rng.integers(0, size - 40):, :: 7] = 255 * (c % 2)  # some high-frequency detail
        p = d / f"{i:05d}.jpg"
        Image.fromarray(arr).save(p, quality=90)
        out.append((str(p), c))
    return out


def loader_rate(batches_fn, n_images: int) -> float:
    t0 = time.perf_counter()
    seen = 0
    for xb, _ in batches_fn():
        seen += len(xb)
    dt = time.perf_counter() - t0
    return seen / dt


def train_rate(model, opt, batches, steps: int) -> float:
    import torch

    from dlops.train.loop import fit_epoch

    it = iter(batches)
    first = [next(it)]  # the loader's first batch is not the model's time
    t0 = time.perf_counter()
    taken = first + [next(it) for _ in range(steps - 1)]
    fit_epoch(model, taken, opt, "cpu")
    dt = time.perf_counter() - t0
    del it
    return sum(len(b[1]) for b in taken) / dt


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--train-batch", type=int, default=8)
    args = ap.parse_args(argv)

    import torch
    import torchvision
    from torch.utils.data import DataLoader

    from dlops.data.cache import load_resized
    from dlops.data.loader import FileImageDataset, TrainLoader, WorkerInit, cap_threads, thread_plan
    from dlops.data.transforms import build_transform
    from paired import paired_ratio_ci

    plan = thread_plan(args.workers + 1, args.workers)
    cap_threads(plan.main_threads)
    size, bs = args.size, 32
    out: dict = {"images": args.images, "size": size, "workers": plan.num_workers, "main_threads": plan.main_threads,
                 "repeats": args.repeats, "batch": bs, "policy": "standard"}
    with tempfile.TemporaryDirectory(prefix="dlops-data-bench-") as tmp:
        t0 = time.perf_counter()
        samples = make_jpegs(Path(tmp) / "images", args.images, size)
        out["generate_s"] = round(time.perf_counter() - t0, 1)
        paths = [p for p, _ in samples]
        labels = np.asarray([c for _, c in samples], dtype=np.int64)
        t_train = build_transform("standard", 0.5, size, MEAN, STD, train=True)

        # the one-time decode dlops does before the first trial: from the files, then from a warm disk cache
        cdir = str(Path(tmp) / "cache")
        t0 = time.perf_counter()
        x, st = load_resized(paths, 3, size, mode="disk", cache_dir=cdir, threads=plan.num_workers + 1)
        out["decode_once_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        x2, st2 = load_resized(paths, 3, size, mode="disk", cache_dir=cdir, threads=plan.num_workers + 1)
        out["disk_cache_read_s"] = round(time.perf_counter() - t0, 2)
        assert st.decoded == len(paths) and st2.hits == len(paths) and np.array_equal(x, x2)
        del x2

        files = FileImageDataset(paths, labels, 3, size)
        tail = build_transform("none", 0.0, size, MEAN, STD, train=False).batch  # what a trial passes
        dl_files = TrainLoader(files, labels, t_train, bs, 0, plan, batch_tail=tail)
        dl_cached = TrainLoader(x, labels, t_train, bs, 0, plan, batch_tail=tail)

        def bare_tf(pil):
            return t_train(np.asarray(pil))

        bare_ds = torchvision.datasets.ImageFolder(str(Path(tmp) / "images"), transform=bare_tf)
        g = torch.Generator()
        g.manual_seed(0)
        bare = DataLoader(bare_ds, batch_size=bs, shuffle=True, generator=g, num_workers=plan.num_workers,
                          persistent_workers=plan.num_workers > 0,
                          worker_init_fn=WorkerInit(0, 1) if plan.num_workers else None)
        epoch = {"n": 0}

        def files_epoch():
            epoch["n"] += 1
            return dl_files.epoch(epoch["n"])

        def cached_epoch():
            epoch["n"] += 1
            return dl_cached.epoch(epoch["n"])

        # the cache's ceiling: no augmentation policy on either side (bare: decode + to-tensor every
        # epoch; dlops: every image transformed once per trial, batches sliced from that tensor)
        t_none = build_transform("none", 0.0, size, MEAN, STD, train=True)
        bare_none_ds = torchvision.datasets.ImageFolder(str(Path(tmp) / "images"),
                                                        transform=lambda pil: t_none(np.asarray(pil)))
        bare_none = DataLoader(bare_none_ds, batch_size=bs, shuffle=True, generator=g, num_workers=plan.num_workers,
                               persistent_workers=plan.num_workers > 0,
                               worker_init_fn=WorkerInit(0, 1) if plan.num_workers else None)
        dl_none = TrainLoader(x, labels, t_none, bs, 0, thread_plan(plan.num_workers + 1, per_image_work=False),
                              pretransformed=t_none.batch(x))

        def none_epoch():
            epoch["n"] += 1
            return dl_none.epoch(epoch["n"])

        paths_fns = {"bare": lambda: iter(bare), "dlops_files": files_epoch, "dlops_cached": cached_epoch,
                     "bare_nopolicy": lambda: iter(bare_none), "dlops_cached_nopolicy": none_epoch}
        for fn in paths_fns.values():  # warm-up: workers started, first epoch done (the cached path's epoch 1)
            loader_rate(fn, len(paths))
        rates: dict[str, list[float]] = {k: [] for k in paths_fns}
        for _ in range(args.repeats):
            for k, fn in paths_fns.items():
                rates[k].append(loader_rate(fn, len(paths)))
        out["loader_img_s"] = {k: round(float(np.median(v)), 1) for k, v in rates.items()}
        for k, ref in (("dlops_files", "bare"), ("dlops_cached", "bare"), ("dlops_cached_nopolicy", "bare_nopolicy")):
            r, lo, hi = paired_ratio_ci(rates[k], rates[ref])
            out[f"loader_ratio_{k}_vs_{ref}"] = {"ratio": round(r, 3), "ci95": [round(lo, 3), round(hi, 3)]}
        del bare_none

        # resnet18 training on the CPU fed by each loader
        models = {}
        for k in paths_fns:
            torch.manual_seed(0)
            m = torchvision.models.resnet18(num_classes=4)
            models[k] = (m, torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9))
        tb = args.train_batch
        dl_files_t = TrainLoader(files, labels, t_train, tb, 1, plan, batch_tail=tail)
        dl_cached_t = TrainLoader(x, labels, t_train, tb, 1, plan, batch_tail=tail)
        bare_t = DataLoader(bare_ds, batch_size=tb, shuffle=True, generator=g, num_workers=plan.num_workers,
                            persistent_workers=plan.num_workers > 0,
                            worker_init_fn=WorkerInit(1, 1) if plan.num_workers else None)
        feeds = {"bare": lambda e: iter(bare_t), "dlops_files": dl_files_t.epoch, "dlops_cached": dl_cached_t.epoch}
        models = {k: models[k] for k in feeds}
        train: dict[str, list[float]] = {k: [] for k in feeds}
        for k, f in feeds.items():  # warm-up step each
            train_rate(*models[k], f(0), 2)
        for rep in range(args.repeats):
            for k, f in feeds.items():
                train[k].append(train_rate(*models[k], f(rep + 1), args.train_steps))
        out["train_img_s"] = {k: round(float(np.median(v)), 2) for k, v in train.items()}
        for k in ("dlops_files", "dlops_cached"):
            r, lo, hi = paired_ratio_ci(train[k], train["bare"])
            out[f"train_ratio_{k}_vs_bare"] = {"ratio": round(r, 3), "ci95": [round(lo, 3), round(hi, 3)]}
        for obj in (dl_files, dl_cached, dl_none, dl_files_t, dl_cached_t):
            obj.close()
        del bare, bare_t
    out["goals"] = {"loader_files_ge_1.0": out["loader_ratio_dlops_files_vs_bare"]["ratio"] >= 1.0,
                    "loader_cached_ge_3": out["loader_ratio_dlops_cached_vs_bare"]["ratio"] >= 3.0,
                    "train_ge_0.95": min(out["train_ratio_dlops_files_vs_bare"]["ratio"],
                                         out["train_ratio_dlops_cached_vs_bare"]["ratio"]) >= 0.95}
    li = out["loader_img_s"]
    print(f"loader images/s (median of {args.repeats}): " + ", ".join(f"{k} {v}" for k, v in li.items()))
    for k, ref in (("dlops_files", "bare"), ("dlops_cached", "bare"), ("dlops_cached_nopolicy", "bare_nopolicy")):
        v = out[f"loader_ratio_{k}_vs_{ref}"]
        print(f"  {k} / {ref} = {v['ratio']}x (95% CI {v['ci95'][0]}..{v['ci95'][1]})")
    ti = out["train_img_s"]
    print(f"resnet18 CPU training images/s: bare {ti['bare']}, dlops files {ti['dlops_files']}, "
          f"dlops cached {ti['dlops_cached']}")
    for k in ("dlops_files", "dlops_cached"):
        v = out[f"train_ratio_{k}_vs_bare"]
        print(f"  {k} / bare = {v['ratio']}x (95% CI {v['ci95'][0]}..{v['ci95'][1]})")
    print(f"one-time decode of {args.images} files: {out['decode_once_s']} s; from the disk cache: "
          f"{out['disk_cache_read_s']} s")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
