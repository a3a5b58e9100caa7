"""Transfer learning vs training from scratch on the digits target task, and training-loop throughput.

Part 1 (epochs to a target). The target task of the embedded default (``load_task`` with the default
``DataConfig``: digits 5-9, 30 labelled training examples per class, dev from the target task).
For each seed:

* a source network (the small CNN) is trained on digits 0-4, all their examples, as
  ``dlops.job.source.pretrain`` does (same spec, same hyperparameters: ``PretrainConfig``
  defaults, 8 epochs, lr 0.05, momentum 0.9, batch 32), without MLflow;
* ``scratch``: the small CNN from random init, everything trains;
* ``frozen``: source features copied (``transfer_features``), backbone frozen (BatchNorm too),
  new head trained;
* ``finetune``: source features copied, everything trains.

All three use the same hyperparameters (SGD, lr 0.05, momentum 0.9, batch 16, up to ``--epochs``
epochs, no augmentation) and the same training code (``make_loader`` + ``fit_epoch``). The target
is the dev error scratch has after its last epoch; for each variant we record the first epoch at
which its dev error is <= that target, and the training wall time (``fit_epoch`` only, no
evaluation) up to that epoch. Medians over seeds. A variant that never gets there counts as
``inf``. Target: transfer needs at most a third of scratch's epochs.

Part 2 (throughput). Images per second of one training epoch over the source data (digits 0-4,
~900 images) through ``make_loader`` + ``build_transform`` + ``fit_epoch`` against a bare torch
loop (the same images pre-normalised once into one tensor, a ``randperm`` per epoch, manual
slicing into batches), same model architecture and init, same batch size, same optimizer;
repeats alternate (dlops, bare, dlops, ...) and the median of each is kept. Target: ratio >= 0.9.

One thread (``torch.set_num_threads(1)``), CPU. The last line printed is one JSON object with the
headline figures.

Options for the sensitivity runs recorded in ``bench/README.md`` (the defaults are the headline):
``--lr`` (all variants), ``--schedule cosine`` (cosine decay of every group's lr over the budget,
per epoch), ``--train-per-class`` (labelled target examples per class; default the
``DataConfig`` default, 30).

Usage: ``python bench/transfer_vs_scratch.py [--seeds 5] [--epochs 30] [--repeats 15]
[--lr 0.05] [--schedule constant|cosine] [--train-per-class 30] [--no-throughput]``
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

LR, MOMENTUM, BATCH = 0.05, 0.9, 16
VARIANTS = ("scratch", "frozen", "finetune")
EPOCHS_PER_REPEAT = 3  # epochs timed per throughput repeat


def project(seed: int, train_per_class: int | None = None) -> Any:
    """The default example's project (pretrain and model sections) with ``seed``; its data
    section is the default ``DataConfig`` (with ``train_per_class`` labelled target examples per
    class when given)."""
    from dlops.config import DataConfig, load_config

    root = Path(__file__).resolve().parents[1]
    sets = [f"seed={seed}"] + ([f"data.train_per_class={train_per_class}"] if train_per_class else [])
    cfg = load_config(root / "examples" / "digits-transfer.yaml", sets)
    assert cfg.data == DataConfig(**({"train_per_class": train_per_class} if train_per_class else {})), \
        "the example's data section must be the default DataConfig"
    return cfg


def pretrain_source(cfg: Any, data: Any, spec: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The source network on the source task, exactly as the main job trains it (no MLflow)."""
    from dlops.job.source import train_source_network

    model, _ = train_source_network(cfg, data, spec)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_variant(variant: str, cfg: Any, data: Any, spec: dict[str, Any], source: dict[str, torch.Tensor],
                  epochs: int, lr: float = LR, schedule: str = "constant") -> tuple[list[float], list[float]]:
    """Dev error after each epoch and cumulative training seconds after each epoch.

    ``schedule``: ``constant`` lr, or ``cosine`` (lr * (1 + cos(pi * epoch / epochs)) / 2 at the
    start of each epoch; Loshchilov & Hutter 2017, SGDR, without restarts)."""
    from dlops.data.transforms import build_transform
    from dlops.models.freeze import param_groups
    from dlops.models.transfer import apply_freeze, build_model, transfer_features
    from dlops.train.loop import evaluate_task, fit_epoch, make_loader, predict_proba, seed_everything, stack_eval

    seed = cfg.seed
    seed_everything(seed)
    model = build_model(spec)
    if variant != "scratch":
        transfer_features(model, source)
    apply_freeze(model, "backbone" if variant == "frozen" else "none")
    opt = torch.optim.SGD(param_groups(model, lr, 1.0), lr=lr, momentum=MOMENTUM)
    base = [g["lr"] for g in opt.param_groups]
    t_train = build_transform("none", 0.0, spec["image_size"], spec["mean"], spec["std"], train=True)
    t_eval = build_transform("none", 0.0, spec["image_size"], spec["mean"], spec["std"], train=False)
    xdev = stack_eval(data.dev.x, t_eval)
    errs, secs, total = [], [], 0.0
    for epoch in range(epochs):
        if schedule == "cosine":
            for g, b in zip(opt.param_groups, base):
                g["lr"] = b * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
        t0 = time.perf_counter()
        loader = make_loader(data.train.x, data.train.y, t_train, BATCH, shuffle=True, seed=seed + epoch)
        fit_epoch(model, loader, opt)
        total += time.perf_counter() - t0
        secs.append(total)
        errs.append(evaluate_task(predict_proba(model, xdev), data.dev.y).error)
    return errs, secs


def first_reach(errs: list[float], target: float) -> int | None:
    for i, e in enumerate(errs):
        if e <= target + 1e-12:
            return i + 1
    return None


def part_transfer(seeds: int, epochs: int, lr: float = LR, schedule: str = "constant",
                  train_per_class: int | None = None) -> dict[str, Any]:
    from dlops.data.sources import load_task
    from dlops.job.source import make_spec

    rows = []
    for s in range(seeds):
        cfg = project(s, train_per_class)
        data = load_task(cfg.data, cfg.seed, cfg.task)
        spec = make_spec(cfg, data)
        t0 = time.perf_counter()
        source = pretrain_source(cfg, data, spec)
        pre_s = time.perf_counter() - t0
        curves = {v: train_variant(v, cfg, data, spec, source, epochs, lr, schedule) for v in VARIANTS}
        target = curves["scratch"][0][-1]
        row: dict[str, Any] = {"seed": s, "target": target, "pretrain_s": pre_s}
        for v in VARIANTS:
            errs, secs = curves[v]
            ep = first_reach(errs, target)
            row[v] = {"epochs": ep, "seconds": secs[ep - 1] if ep else math.inf, "final": errs[-1],
                      "best": min(errs)}
        rows.append(row)
        print(f"seed {s}: scratch final dev error {target:.4f}; epochs to reach it: "
              + ", ".join(f"{v} {row[v]['epochs']}" for v in VARIANTS)
              + f"; source pretraining {pre_s:.2f} s", flush=True)

    def med(v: str, key: str) -> float:
        vals = [r[v][key] if r[v][key] is not None else math.inf for r in rows]
        return float(statistics.median(vals))

    print()
    print(f"{'variant':<10} {'epochs to target':>17} {'train s to target':>18} {'final dev err':>14} "
          f"{'best dev err':>13}   (medians over {seeds} seeds, budget {epochs} epochs)")
    summary = {}
    for v in VARIANTS:
        summary[v] = {"epochs": med(v, "epochs"), "seconds": med(v, "seconds"), "final": med(v, "final"),
                      "best": med(v, "best")}
        print(f"{v:<10} {summary[v]['epochs']:>17.1f} {summary[v]['seconds']:>18.3f} {summary[v]['final']:>14.4f} "
              f"{summary[v]['best']:>13.4f}")
    pre = statistics.median(r["pretrain_s"] for r in rows)
    print(f"(source pretraining, paid once per source network: median {pre:.2f} s)")
    summary["target_dev_error"] = float(statistics.median(r["target"] for r in rows))
    summary["pretrain_s"] = float(pre)
    summary["rows"] = rows
    return summary


def part_throughput(repeats: int) -> dict[str, Any]:
    from dlops.data.sources import load_task
    from dlops.data.transforms import build_transform
    from dlops.models.transfer import build_model
    from dlops.job.source import make_spec
    from dlops.train.loop import fit_epoch, make_loader, seed_everything, stack_eval

    cfg = project(0)
    data = load_task(cfg.data, cfg.seed, cfg.task)
    spec = dict(make_spec(cfg, data), num_classes=len(data.source_classes))
    x, y = data.source.x, data.source.y
    t = build_transform("none", 0.0, spec["image_size"], spec["mean"], spec["std"], train=True)
    mean = torch.tensor(spec["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(spec["std"]).view(1, -1, 1, 1)
    xt = (torch.from_numpy(x).permute(0, 3, 1, 2).float().div(255.0) - mean) / std  # once, outside the timing
    yt = torch.from_numpy(np.asarray(y)).long()
    assert torch.allclose(xt[0], t(x[0]), atol=1e-6), "the bare loop must see the same pixels"
    seed_everything(0)
    init = build_model(spec).state_dict()

    def fresh() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        m = build_model(spec)
        m.load_state_dict(init)
        return m, torch.optim.SGD(m.parameters(), lr=LR, momentum=MOMENTUM)

    # as a trial does: the augmentation-free transform once per trial (like the bare loop's xt), then a
    # loader per epoch over it
    xd = stack_eval(x, t)
    assert torch.equal(xd, torch.stack([t(im) for im in x])), "batched transform must equal the per-image one"

    def run_dlops(epoch: int) -> float:
        m, opt = fresh()
        t0 = time.perf_counter()
        for k in range(EPOCHS_PER_REPEAT):
            fit_epoch(m, make_loader(x, y, t, BATCH, shuffle=True, seed=epoch * EPOCHS_PER_REPEAT + k,
                                     pretransformed=xd), opt)
        return time.perf_counter() - t0

    def run_bare(epoch: int) -> float:
        m, opt = fresh()
        g = torch.Generator()
        t0 = time.perf_counter()
        for k in range(EPOCHS_PER_REPEAT):
            g.manual_seed(epoch * EPOCHS_PER_REPEAT + k)
            m.train()
            perm = torch.randperm(len(yt), generator=g)
            for i in range(0, len(yt), BATCH):
                idx = perm[i : i + BATCH]
                xb, yb = xt[idx], yt[idx]
                opt.zero_grad(set_to_none=True)
                loss = torch.nn.functional.cross_entropy(m(xb), yb)
                loss.backward()
                opt.step()
        return time.perf_counter() - t0

    run_dlops(0), run_bare(0)  # warm-up
    td, tb = [], []
    for r in range(repeats):
        td.append(run_dlops(r + 1))
        tb.append(run_bare(r + 1))
    n = len(yt) * EPOCHS_PER_REPEAT
    ips_d, ips_b = n / statistics.median(td), n / statistics.median(tb)
    print()
    print(f"training-loop throughput, {len(yt)} images x {EPOCHS_PER_REPEAT} epochs (8x8 grey), batch {BATCH}, "
          f"small CNN, 1 thread, median of {repeats} alternating repeats")
    print(f"{'loop':<40} {'images/s':>10} {'repeat s':>9}")
    print(f"{'dlops make_loader+build_transform+fit_epoch':<40} {ips_d:>10.0f} {statistics.median(td):>9.4f}")
    print(f"{'bare torch (tensor, randperm, slicing)':<40} {ips_b:>10.0f} {statistics.median(tb):>9.4f}")
    print(f"ratio dlops / bare: {ips_d / ips_b:.3f} (target >= 0.9)")
    return {"images_per_s_dlops": ips_d, "images_per_s_bare": ips_b, "ratio": ips_d / ips_b, "n_images": len(yt)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--lr", type=float, default=LR)
    ap.add_argument("--schedule", choices=("constant", "cosine"), default="constant")
    ap.add_argument("--train-per-class", type=int, default=None)
    ap.add_argument("--no-throughput", action="store_true", help="skip part 2")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    tr = part_transfer(args.seeds, args.epochs, args.lr, args.schedule, args.train_per_class)
    tp = part_throughput(args.repeats) if not args.no_throughput else {"ratio": math.nan, "images_per_s_dlops": math.nan,
                                                                       "images_per_s_bare": math.nan}
    scratch_ep = tr["scratch"]["epochs"]
    best_transfer = min(tr["frozen"]["epochs"], tr["finetune"]["epochs"])
    # the target read two ways: a third of scratch's budget, and a third of the epochs scratch
    # itself needed to first reach its final error
    out = {
        "bench": "transfer_vs_scratch", "seeds": args.seeds, "budget_epochs": args.epochs,
        "lr": args.lr, "schedule": args.schedule, "momentum": MOMENTUM, "batch_size": BATCH,
        "train_per_class": args.train_per_class or 30,
        "target_dev_error": round(tr["target_dev_error"], 4),
        "epochs_to_target": {v: tr[v]["epochs"] for v in VARIANTS},
        "train_s_to_target": {v: round(tr[v]["seconds"], 4) for v in VARIANTS},
        "final_dev_error": {v: round(tr[v]["final"], 4) for v in VARIANTS},
        "transfer_epochs_over_scratch": {v: round(tr[v]["epochs"] / scratch_ep, 3) for v in ("frozen", "finetune")},
        "transfer_epochs_over_budget": {v: round(tr[v]["epochs"] / args.epochs, 3) for v in ("frozen", "finetune")},
        "transfer_within_third_of_budget": bool(best_transfer <= args.epochs / 3),
        "transfer_within_third_of_scratch_epochs": bool(best_transfer <= scratch_ep / 3),
        "throughput_ratio": round(tp["ratio"], 3) if not args.no_throughput else None,
        "images_per_s": ({"dlops": round(tp["images_per_s_dlops"]), "bare": round(tp["images_per_s_bare"])}
                         if not args.no_throughput else None),
        "target_throughput_ratio_0_9": bool(tp["ratio"] >= 0.9) if not args.no_throughput else None,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
