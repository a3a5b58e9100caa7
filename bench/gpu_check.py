"""The GPU check (issue 15): dlops on a CUDA GPU, in under 5 minutes.

    .venv/bin/python bench/gpu_check.py              # on a machine with an NVIDIA GPU
    .venv/bin/python bench/gpu_check.py --cpu-dry-run  # the same logic on the CPU (tiny sizes)

What it does, side by side in one run:

1. The demo (``examples/digits-transfer.yaml``) and the image-folder example
   (``examples/imagefolder-transfer.yaml``, data made by ``examples/make_digits_images.py``, weights
   from scratch) each run twice with ``dlops run``: ``search.resources.gpu: 1`` and ``gpu: 0.25``
   (``allow_cpu: false``, so a trial that cannot get CUDA fails instead of training on the CPU).
   It asserts that every trial ran on CUDA: each trial run in MLflow carries the ``gpu_mem_mb``
   metric, which only a CUDA trial reports. Trials/hour = trials / (last trial end - first trial
   start), from MLflow's run times; the goal is >= 3x for ``0.25`` vs ``1`` (4 trials share a GPU).
2. resnet18 training at 224 px, images/s: dlops's path (``dlops.models`` resnet18,
   :func:`dlops.train.device.device_settings`: bf16 autocast where supported, ``channels_last``,
   cuDNN autotuning; batches from :class:`dlops.data.loader.TrainLoader`; :func:`dlops.train.loop.fit_epoch`)
   against a bare torch loop on the same GPU (torchvision resnet18, the same settings written out,
   the same tensors already on the device), paired repeats (ABAB), ratio with a 95% CI. Goal >= 0.9.
3. Peak GPU memory: the largest ``gpu_mem_mb`` of the trials, and that of each throughput loop
   (``torch.cuda.max_memory_allocated``, MB = 10**6 bytes).

Exit status: 0 when every trial ran on CUDA (the goals are reported, not enforced); 1 with a message
when no GPU is present (without ``--cpu-dry-run``) or a trial did not run on CUDA; 2 bad usage.
In ``--cpu-dry-run`` the runs use ``gpu: 0`` with ``cpu: 2`` vs ``cpu: 0.5`` on a 2-CPU local Ray in
place of ``gpu: 1`` vs ``gpu: 0.25`` (the same packing logic on CPU slots; with 2 CPUs a trial of the
image-folder example, whose ``flip`` policy works per image, also runs one DataLoader worker), the trials must *not* report
``gpu_mem_mb``, and the throughput loop uses 32 px images. The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))


def _env() -> dict[str, str]:
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _projects(work: Path, dry: bool) -> dict[str, Path]:
    """The two example projects copied into ``work`` (image-folder data generated there)."""
    demo = work / "demo" / "project.yaml"
    demo.parent.mkdir(parents=True)
    shutil.copy(REPO / "examples" / "digits-transfer.yaml", demo)
    imf = work / "imagefolder" / "project.yaml"
    imf.parent.mkdir(parents=True)
    shutil.copy(REPO / "examples" / "imagefolder-transfer.yaml", imf)
    r = subprocess.run([sys.executable, str(REPO / "examples" / "make_digits_images.py"), str(imf.parent / "data"),
                        "--no-weights"], capture_output=True, text=True, env=_env(), timeout=300)
    if r.returncode != 0:
        raise SystemExit(f"gpu_check: making the image-folder data failed:\n{r.stdout}\n{r.stderr}")
    return {"demo": demo, "imagefolder": imf}


#: per project: overrides that keep a run short (one stage of 8 trials, so 4 can share a GPU)
SHORT = {
    "demo": ["pretrain.epochs=2", "search.stages=[{trials: 8, epochs: 3}]", "ensemble.enabled=false",
             "report.reporters=[]"],
    "imagefolder": ["model.weights=null", "search.stages=[{trials: 8, epochs: 2}]", "ensemble.enabled=false",
                    "report.reporters=[]"],
}


def _run(project: Path, name: str, slot: str, dry: bool, work: Path) -> dict[str, Any]:
    """``dlops run`` of ``project`` with one resource slot; returns the trials' numbers from MLflow."""
    from mlflow.tracking import MlflowClient

    tag = f"{name}-{slot}"
    db = work / f"{tag}.db"
    res = {"1": ("1", "1"), "0.25": ("0.25", "1")}[slot] if not dry else {"1": ("0", "2"), "0.25": ("0", "0.5")}[slot]
    gpu, cpu = res
    sets = [f"search.resources.gpu={gpu}", f"search.resources.cpu={cpu}",
            f"search.resources.allow_cpu={'true' if dry else 'false'}", f"tracking.uri=sqlite:///{db}",
            f"ray.storage_path={work / (tag + '-ray')}", f"name={tag}"] + SHORT[name]
    if dry:
        sets += ["ray.num_cpus=2"]
    args = [sys.executable, "-m", "dlops.cli", "run", str(project)]
    for s in sets:
        args += ["--set", s]
    t0 = time.perf_counter()
    r = subprocess.run(args, cwd=project.parent, capture_output=True, text=True, env=_env(), timeout=600)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        tail = "\n".join((r.stdout + r.stderr).splitlines()[-25:])
        return {"ok": False, "error": f"dlops run exited {r.returncode}", "tail": tail, "wall_s": wall}
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name(tag)
    runs = client.search_runs([exp.experiment_id], "tags.`dlops.kind` = 'trial'", max_results=1000)
    if not runs:
        return {"ok": False, "error": "no trial runs in MLflow", "wall_s": wall}
    mems = [r_.data.metrics.get("gpu_mem_mb") for r_ in runs]
    on_cuda = [m is not None and m > 0 for m in mems]
    start = min(r_.info.start_time for r_ in runs) / 1000.0
    end = max((r_.info.end_time or r_.info.start_time) for r_ in runs) / 1000.0
    span = max(end - start, 1e-3)
    return {"ok": True, "trials": len(runs), "on_cuda": sum(on_cuda), "span_s": round(span, 2),
            "trials_per_hour": round(len(runs) / span * 3600.0, 1), "wall_s": round(wall, 1),
            "peak_gpu_mem_mb": max((m for m in mems if m is not None), default=None),
            "statuses": sorted({r_.info.status for r_ in runs})}


def _throughput(dry: bool, repeats: int) -> dict[str, Any]:
    """resnet18 images/s: dlops's training path vs a bare torch loop, paired repeats (ABAB)."""
    import numpy as np
    import torch
    import torchvision

    from dlops.data.loader import TrainLoader, thread_plan
    from dlops.data.transforms import build_transform
    from dlops.models.transfer import build_model
    from dlops.train.device import apply_settings, device_settings, gpu_mem_mb, has_conv2d, reset_gpu_peak
    from dlops.train.loop import fit_epoch
    from paired import paired_ratio_ci

    device = "cpu" if dry else "cuda"
    size, bs, n = (32, 8, 32) if dry else (224, 64, 1024)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    y = rng.integers(0, 10, n)
    t_eval = build_transform("none", 0.0, size, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], train=False)
    pre = t_eval.batch(x)  # (N, 3, S, S) float32: the trial's augmentation-free batches
    spec = {"name": "resnet18", "num_classes": 10, "in_channels": 3, "image_size": size}

    def dlops_epoch(state: dict) -> float:
        if "model" not in state:
            torch.manual_seed(0)
            m = build_model(spec)
            st = device_settings(device, conv=has_conv2d(m))
            state.update(model=apply_settings(m, st), settings=st,
                         opt=torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9),
                         loader=TrainLoader(x, y, t_eval, bs, 0, thread_plan(1, per_image_work=False),
                                            pin_memory=st.pin_memory, pretransformed=pre))
        state["epoch"] = state.get("epoch", -1) + 1
        _sync(device)
        t0 = time.perf_counter()
        fit_epoch(state["model"], state["loader"].epoch(state["epoch"]), state["opt"], device,
                  settings=state["settings"])
        _sync(device)
        return n / (time.perf_counter() - t0)

    def bare_epoch(state: dict) -> float:
        if "model" not in state:
            torch.manual_seed(0)
            m = torchvision.models.resnet18(num_classes=10).to(device)
            cl = device == "cuda"
            if cl:
                torch.backends.cudnn.benchmark = True
                m = m.to(memory_format=torch.channels_last)
            bf16 = cl and torch.cuda.is_bf16_supported()
            xd = pre.to(device)
            yd = torch.as_tensor(y, dtype=torch.int64, device=device)
            state.update(model=m, opt=torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9), x=xd, y=yd,
                         cl=cl, bf16=bf16)
        m, opt = state["model"], state["opt"]
        m.train()
        perm = torch.randperm(n, device=device)
        _sync(device)
        t0 = time.perf_counter()
        for b in range(n // bs):
            idx = perm[b * bs:(b + 1) * bs]
            xb, yb = state["x"][idx], state["y"][idx]
            if state["cl"]:
                xb = xb.contiguous(memory_format=torch.channels_last)
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=state["bf16"]):
                out = m(xb)
            loss = torch.nn.functional.cross_entropy(out.float(), yb)
            loss.item()  # one host sync per step, as dlops's loop does (its NaN check)
            loss.backward()
            opt.step()
        _sync(device)
        return (n // bs) * bs / (time.perf_counter() - t0)

    sd: dict = {}
    sb: dict = {}
    reset_gpu_peak(device)
    dlops_epoch(sd)  # warm-up (cuDNN autotuning, allocator)
    dl_mem = gpu_mem_mb(device)
    reset_gpu_peak(device)
    bare_epoch(sb)
    bare_mem = gpu_mem_mb(device)
    a, b = [], []
    for _ in range(repeats):
        a.append(dlops_epoch(sd))
        b.append(bare_epoch(sb))
    ratio, lo, hi = paired_ratio_ci(a, b)
    return {"image_px": size, "batch": bs, "images": n, "repeats": repeats,
            "dlops_img_s": round(float(np.median(a)), 1), "bare_img_s": round(float(np.median(b)), 1),
            "ratio": round(ratio, 3), "ci95": [round(lo, 3), round(hi, 3)],
            "dlops_peak_gpu_mem_mb": dl_mem, "bare_peak_gpu_mem_mb": bare_mem}


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-dry-run", action="store_true", help="run the same logic on the CPU, tiny sizes")
    ap.add_argument("--repeats", type=int, default=None, help="paired throughput repeats (default 5; dry run 2)")
    ap.add_argument("--only", choices=["runs", "throughput"], default=None, help="one half of the check")
    args = ap.parse_args(argv)
    dry = args.cpu_dry_run
    import torch

    if not dry and not torch.cuda.is_available():
        print("gpu_check: FAILED: no CUDA GPU on this machine (torch.cuda.is_available() is False); run it on a "
              "GPU node, or pass --cpu-dry-run to check the script's logic on the CPU", file=sys.stderr)
        print(json.dumps({"ok": False, "error": "no CUDA GPU"}))
        return 1
    gpu_name = "cpu (dry run)" if dry else torch.cuda.get_device_name(0)
    print(f"gpu_check on {gpu_name}; torch {torch.__version__}"
          + ("" if dry else f", bf16 {torch.cuda.is_bf16_supported()}"))
    t_all = time.perf_counter()
    out: dict[str, Any] = {"ok": True, "dry_run": dry, "device": gpu_name, "runs": {}, "packing": {}}
    failures: list[str] = []
    if args.only != "throughput":
        with tempfile.TemporaryDirectory(prefix="dlops-gpu-check-") as tmp:
            work = Path(tmp)
            projects = _projects(work, dry)
            for name, project in projects.items():
                for slot in ("1", "0.25"):
                    r = _run(project, name, slot, dry, work)
                    out["runs"][f"{name}/gpu={slot}"] = r
                    label = f"{name} gpu={slot}" + (" (dry run: cpu slots)" if dry else "")
                    if not r["ok"]:
                        failures.append(f"{label}: {r['error']}")
                        print(f"  {label}: FAILED {r['error']}\n{r.get('tail', '')}")
                        continue
                    print(f"  {label}: {r['trials']} trials, {r['on_cuda']} on CUDA, {r['trials_per_hour']:.0f} "
                          f"trials/h (span {r['span_s']:.0f} s), peak {r['peak_gpu_mem_mb']} MB, {r['statuses']}")
                    want = 0 if dry else r["trials"]
                    if r["on_cuda"] != want:
                        failures.append(f"{label}: {r['on_cuda']} of {r['trials']} trials reported gpu_mem_mb "
                                        f"(expected {want})")
                one, quarter = out["runs"].get(f"{name}/gpu=1", {}), out["runs"].get(f"{name}/gpu=0.25", {})
                if one.get("ok") and quarter.get("ok"):
                    ratio = quarter["trials_per_hour"] / one["trials_per_hour"]
                    out["packing"][name] = {"trials_per_hour_ratio": round(ratio, 2), "goal": 3.0,
                                            "meets_goal": ratio >= 3.0}
                    print(f"  {name}: trials/hour gpu=0.25 / gpu=1 = {ratio:.2f}x (goal >= 3x)")
    if args.only != "runs":
        tp = _throughput(dry, args.repeats or (2 if dry else 5))
        tp["goal"], tp["meets_goal"] = 0.9, tp["ratio"] >= 0.9
        out["throughput"] = tp
        print(f"  resnet18 {tp['image_px']} px: dlops {tp['dlops_img_s']} img/s vs bare {tp['bare_img_s']} img/s = "
              f"{tp['ratio']}x, 95% CI {tp['ci95']} (goal >= 0.9); peak GPU memory dlops "
              f"{tp['dlops_peak_gpu_mem_mb']} MB, bare {tp['bare_peak_gpu_mem_mb']} MB")
    out["wall_s"] = round(time.perf_counter() - t_all, 1)
    out["failures"] = failures
    out["ok"] = not failures
    if failures:
        print("gpu_check: FAILED: " + "; ".join(failures), file=sys.stderr)
    print(json.dumps(out))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
