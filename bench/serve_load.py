"""Load test of ``dlops serve``: a bounded closed-loop load generator on 127.0.0.1 against a single
model, an ensemble of 5 and the same ensemble with test-time augmentation, each with requests of
1 and of 8 images; served images/s as a ratio to a raw batched torch forward of the same model(s)
in this process, measured in the same run.

The models are registered in a temporary SQLite store the way dlops registers them
(``mlflow.pytorch.log_model`` with the ``model_spec`` / ``class_index`` metadata, 5 versions; the
ensemble with ``dlops.registry_ensemble.build_registry_ensemble``), random weights of the
project's default network (the small CNN on 8x8 grey digits, as ``examples/digits-transfer.yaml``
trains; ``--arch resnet18 --image-size 32 --channels 3`` for a heavier one). Requests are what a
client sends: JSON ``{"images": [base64 PNG, ...]}`` of real digits (``--payload tensor`` sends
preprocessed tensors instead), decoded and preprocessed on the server.

Closed loop: ``--concurrency`` client threads, each with one keep-alive connection, send the next
request when the previous answer arrives, ``--requests`` in all per cell; nothing is dropped by
the client, so ``lost`` (sent - answered) counts connection errors and time-outs. Latency is per
request, from send to the last byte of the answer (ms). The raw forward is the members' plain
``model(x)`` loop (softmax, views for TTA) on batches of ``--max-batch-size`` images with one torch
thread, as a replica runs; its figure is the median of 5 repeats of >= 0.5 s.

Noise: the machine is shared (2 cores, other jobs): the client, Serve's proxy and the replica
share those cores with everything else; rerun to see the spread (the JSON has each cell's
numbers). Last line of stdout: one JSON object.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_store(d: Path, arch: str, image_size: int, channels: int, members: int) -> tuple[str, str, str]:
    """A SQLite store with ``members`` versions of model ``bench-model`` and their ensemble
    ``bench-model-ensemble`` version 1. Returns (tracking URI, single URI, ensemble URI)."""
    import mlflow
    import torch
    from mlflow import MlflowClient

    from dlops.ensemble import EnsemblePyfunc
    from dlops.models.registry import build_from_spec

    uri = f"sqlite:///{d}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    exp = mlflow.create_experiment("bench", artifact_location=str(d / "mlartifacts"))
    classes = [str(i) for i in range(5, 10)]
    spec = {"name": arch, "num_classes": 5, "in_channels": channels, "hidden": 64, "width": 16, "freeze": "none",
            "image_size": image_size, "mean": [0.5] * channels, "std": [0.5] * channels, "class_names": classes,
            "task": "classification", "input_layout": "NCHW float32, pixels scaled to [0,1] then (x-mean)/std"}
    for i in range(members):
        torch.manual_seed(i)
        model = build_from_spec(spec).eval()
        with mlflow.start_run(experiment_id=exp):
            mlflow.pytorch.log_model(model, name="model", registered_model_name="bench-model",
                                     serialization_format="pickle", pip_requirements=["torch"],
                                     metadata={"model_spec": spec, "class_index": {str(j): c for j, c in enumerate(classes)}})
    # the ensemble as dlops registers one (dlops.registry_ensemble): the pyfunc with the members'
    # model directories as artifacts, tag dlops.members; unevaluated (random weights: no gate)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    uris = [f"models:/bench-model/{i + 1}" for i in range(members)]
    mc = {"tta": "none", "crop_fraction": 0.875, "method": "average"}
    with tempfile.TemporaryDirectory() as td, mlflow.start_run(experiment_id=exp):
        arts = {f"member_{i}": mlflow.artifacts.download_artifacts(artifact_uri=u, dst_path=f"{td}/m{i}")
                for i, u in enumerate(uris)}
        info = mlflow.pyfunc.log_model(name="ensemble", python_model=EnsemblePyfunc(), artifacts=arts,
                                       pip_requirements=["torch"], model_config=mc,
                                       metadata={"model_spec": spec, "class_index": {str(j): c for j, c in enumerate(classes)},
                                                 "members": uris, **mc})
    mv = mlflow.register_model(info.model_uri, "bench-model-ensemble")
    client.set_model_version_tag("bench-model-ensemble", mv.version, "dlops.members", json.dumps(uris))
    client.set_model_version_tag("bench-model-ensemble", mv.version, "dlops.ensemble_method", "average")
    return uri, "models:/bench-model/1", f"models:/bench-model-ensemble/{mv.version}"


def payloads(kind: str, n: int, image_size: int, channels: int) -> list[bytes]:
    """16 request bodies of ``n`` images each (real digits, resized to the model's size when it
    is not 8)."""
    from PIL import Image

    from dlops.data.digits import load_digits_arrays

    x, _ = load_digits_arrays()
    imgs = []
    for a in x[: 16 * n]:
        im = Image.fromarray(a[..., 0], mode="L")
        if image_size != 8:
            im = im.resize((image_size, image_size), Image.BILINEAR)
        imgs.append(im.convert("RGB") if channels == 3 else im)
    bodies = []
    for k in range(16):
        chunk = imgs[k * n:(k + 1) * n]
        if kind == "tensor":
            arr = np.stack([np.asarray(im, dtype=np.float32).reshape(image_size, image_size, channels) for im in chunk])
            arr = ((arr / 255.0 - 0.5) / 0.5).transpose(0, 3, 1, 2)
            bodies.append(json.dumps({"inputs": arr.tolist()}).encode())
        else:
            enc = []
            for im in chunk:
                buf = io.BytesIO()
                im.save(buf, format="PNG")
                enc.append(base64.b64encode(buf.getvalue()).decode())
            bodies.append(json.dumps({"images": enc}).encode())
    return bodies


def closed_loop(port: int, bodies: list[bytes], requests: int, concurrency: int, timeout: float = 60.0) -> dict[str, Any]:
    """``requests`` POSTs by ``concurrency`` threads, each sending its next request when its
    previous answer is in. Returns wall time, latencies (ms) of the 200s, counts by status."""
    lock = threading.Lock()
    issued = [0]
    lat: list[float] = []
    status: dict[str, int] = {}

    def worker(w: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        while True:
            with lock:
                if issued[0] >= requests:
                    break
                i = issued[0]
                issued[0] += 1
            body = bodies[(i + w) % len(bodies)]
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/", body=body, headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                code = str(r.status)
                if r.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
            except (OSError, http.client.HTTPException) as exc:
                code = type(exc).__name__
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
            dt = (time.perf_counter() - t0) * 1000.0
            with lock:
                status[code] = status.get(code, 0) + 1
                if code == "200":
                    lat.append(dt)
        conn.close()

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"wall_s": time.perf_counter() - t0, "lat_ms": lat, "status": status}


def summarize(res: dict[str, Any], requests: int, n_images: int) -> dict[str, Any]:
    lat = np.asarray(res["lat_ms"]) if res["lat_ms"] else np.asarray([np.nan])
    ok = int(res["status"].get("200", 0))
    answered = sum(v for k, v in res["status"].items() if k.isdigit())
    return {"requests": requests, "ok": ok, "rps": ok / res["wall_s"], "images_per_s": ok * n_images / res["wall_s"],
            "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
            "p99_ms": float(np.percentile(lat, 99)), "status": res["status"],
            "errors_5xx": sum(v for k, v in res["status"].items() if k.startswith("5")),
            "errors_4xx": sum(v for k, v in res["status"].items() if k.startswith("4")),
            "lost": requests - answered, "wall_s": res["wall_s"]}


def raw_forward_images_per_s(version_uris: list[str], tracking_uri: str, batch: int, tta: str, crop_fraction: float,
                             image_size: int, channels: int, repeats: int = 5,
                             stacked: bool = False) -> tuple[float, list[float]]:
    """Images/s of the members' plain forward loop on a batch of ``batch`` images (one torch
    thread): median and all repeats. ``stacked``: the members as one vmapped forward
    (:class:`dlops.stacked.StackedMembers` with ``stack=True``) instead of the loop."""
    import mlflow
    import torch

    from dlops.predict import tta_views

    torch.set_num_threads(1)
    mlflow.set_tracking_uri(tracking_uri)
    models = [mlflow.pytorch.load_model(u, map_location="cpu").eval() for u in version_uris]
    x = torch.randn(batch, channels, image_size, image_size)

    from dlops.stacked import StackedMembers

    vm = StackedMembers(models, stack=True) if stacked else None

    def once() -> None:
        with torch.inference_mode():
            v = tta_views(x, tta, crop_fraction)
            v = v.reshape(-1, *v.shape[2:])
            if vm is not None:
                torch.softmax(vm(v), -1).reshape(len(models), -1, batch, 5).mean(1).mean(0)
                return
            probs = [torch.softmax(m(v), 1).reshape(-1, batch, 5).mean(0) for m in models]
            torch.stack(probs).mean(0)

    once()
    rates = []
    for _ in range(repeats):
        k, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 0.5:
            once()
            k += 1
        rates.append(k * batch / (time.perf_counter() - t0))
    return statistics.median(rates), rates


class Served:
    """``dlops serve`` in a subprocess (its own session, so that a group Ctrl-C reaches Ray's
    processes too, as in a terminal)."""

    def __init__(self, model_uri: str, tracking_uri: str, port: int, extra: list[str], cwd: Path) -> None:
        env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
        env.pop("RAY_ADDRESS", None)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        self.port = port
        self.err = cwd / f"serve-{port}.log"
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "dlops.cli", "serve", model_uri, "--tracking-uri",
                                      tracking_uri, "--port", str(port), *extra], cwd=cwd, env=env,
                                     stdout=subprocess.DEVNULL, stderr=open(self.err, "w"), start_new_session=True)

    def wait_ready(self, timeout: float = 300) -> float:
        url = f"http://127.0.0.1:{self.port}/-/ready"
        while time.perf_counter() - self.t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dlops serve exited {self.proc.returncode}: {self.err.read_text()[-2000:]}")
            try:
                if json.loads(urllib.request.urlopen(url, timeout=2).read()).get("ready"):
                    return time.perf_counter() - self.t0
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        raise RuntimeError("dlops serve did not become ready")

    def counters(self) -> tuple[int, int]:
        """(forwards, images) the replica has run so far (its readiness endpoint)."""
        url = f"http://127.0.0.1:{self.port}/-/ready"
        r = json.loads(urllib.request.urlopen(url, timeout=30).read())
        return int(r.get("forwards") or 0), int(r.get("images") or 0)

    def stop(self) -> dict[str, Any]:
        """Ctrl-C to the whole process group; the exit code and whether stderr stayed quiet."""
        t0 = time.perf_counter()
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            rc = self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            rc = self.proc.wait()
        text = self.err.read_text()
        startup = next((ln for ln in text.splitlines() if ln.startswith("start-up ")), "")
        return {"rc": rc, "stop_s": time.perf_counter() - t0, "startup_line": startup,
                "quiet": "Traceback" not in text and "graceful_shutdown" not in text}


def cell_name(config: str, wait: float, waits: list[float]) -> str:
    """A configuration's name in the output: ``config``, or ``config@wWAIT`` when several batch
    waits run."""
    return config if len(waits) == 1 else f"{config}@w{wait:g}"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="requests per cell (model x batch size)")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--batch-sizes", default="1,8", help="images per request")
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--tta", default="five_crop", help="the TTA mode of the third configuration")
    ap.add_argument("--arch", default="small_cnn")
    ap.add_argument("--image-size", type=int, default=8)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--payload", choices=["png", "tensor"], default="png")
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--batch-wait-timeout-s", default="0.002",
                    help="seconds; a comma list runs every configuration once per value (cells name@wVALUE)")
    ap.add_argument("--configs", default="single,ensemble,ensemble_tta")
    a = ap.parse_args()
    sizes = [int(s) for s in a.batch_sizes.split(",")]
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dlops-serve-load-") as td:
        d = Path(td)
        uri, single, ensemble = make_store(d, a.arch, a.image_size, a.channels, a.members)
        members = [f"models:/bench-model/{i + 1}" for i in range(a.members)]
        configs = {"single": (single, [], [members[0]], "none"),
                   "ensemble": (ensemble, ["--tta", "none"], members, "none"),
                   "ensemble_tta": (ensemble, ["--tta", a.tta], members, a.tta)}
        bodies = {n: payloads(a.payload, n, a.image_size, a.channels) for n in sizes}
        out: dict[str, Any] = {"requests_per_cell": a.requests, "concurrency": a.concurrency, "payload": a.payload,
                               "arch": a.arch, "image_size": a.image_size, "members": a.members,
                               "max_batch_size": a.max_batch_size, "cells": {}, "servers": {}, "raw": {}}
        waits = [float(w) for w in str(a.batch_wait_timeout_s).split(",")]
        out["batch_wait_timeout_s"] = waits
        for name in a.configs.split(","):
            model_uri, extra, raw_uris, tta = configs[name]
            for wait in waits:
                key = cell_name(name, wait, waits)
                srv = Served(model_uri, uri, free_port(), extra + ["--max-batch-size", str(a.max_batch_size),
                                                                   "--batch-wait-timeout-s", str(wait)], d)
                try:
                    ready_s = srv.wait_ready()
                    closed_loop(srv.port, bodies[sizes[0]], 4 * a.concurrency, a.concurrency)  # warm-up
                    for n in sizes:
                        before = srv.counters()
                        s = summarize(closed_loop(srv.port, bodies[n], a.requests, a.concurrency), a.requests, n)
                        after = srv.counters()
                        forwards = after[0] - before[0]
                        # the batching achieved: images per forward in the replica over this cell
                        s["mean_batch_images"] = (after[1] - before[1]) / forwards if forwards else None
                        out["cells"][f"{key}/b{n}"] = s
                        mb = s["mean_batch_images"]
                        print(f"{key:18s} b={n}: {s['rps']:7.1f} req/s {s['images_per_s']:8.1f} img/s  p50 "
                              f"{s['p50_ms']:6.1f}  p95 {s['p95_ms']:6.1f}  p99 {s['p99_ms']:6.1f} ms  status "
                              f"{s['status']}  lost {s['lost']}  images/forward "
                              f"{'-' if mb is None else f'{mb:.1f}'}", flush=True)
                finally:
                    stop = srv.stop()
                out["servers"][key] = {"ready_s": ready_s, **stop}
                print(f"{key:18s} ready in {ready_s:.1f} s ({stop['startup_line']}); Ctrl-C: rc {stop['rc']} in "
                      f"{stop['stop_s']:.1f} s, quiet={stop['quiet']}", flush=True)
            med, reps = raw_forward_images_per_s(raw_uris, uri, a.max_batch_size, tta, 0.875, a.image_size, a.channels)
            out["raw"][name] = {"images_per_s": med, "repeats": reps}
            if len(raw_uris) > 1:  # the members as one vmapped forward, side by side with the loop
                smed, sreps = raw_forward_images_per_s(raw_uris, uri, a.max_batch_size, tta, 0.875, a.image_size,
                                                       a.channels, stacked=True)
                out["raw"][name].update(stacked_images_per_s=smed, stacked_repeats=sreps, stacked_over_loop=smed / med)
                print(f"{name:18s} raw forward: loop {med:.0f} img/s, vmapped (dlops.stacked) {smed:.0f} img/s "
                      f"= {smed / med:.2f}x", flush=True)
            for wait in waits:
                key = cell_name(name, wait, waits)
                for n in sizes:
                    c = out["cells"][f"{key}/b{n}"]
                    c["ratio_to_raw"] = c["images_per_s"] / med
                    print(f"{key:18s} b={n}: served / raw forward = {c['images_per_s']:.0f} / {med:.0f} img/s = "
                          f"{c['ratio_to_raw']:.2f}", flush=True)
    cells = out["cells"]
    out["goals"] = {
        "zero_5xx_and_lost": all(c["errors_5xx"] == 0 and c["lost"] == 0 for c in cells.values()),
        "ensemble_ratio_ge_0.5": {k: c["ratio_to_raw"] >= 0.5 for k, c in cells.items() if k.startswith("ensemble")},
        "single_b1_p99_lt_100ms": {k: c["p99_ms"] < 100.0 for k, c in cells.items()
                                   if k.startswith("single") and k.endswith(f"/b{sizes[0]}")},
    }
    out["wall_s"] = time.perf_counter() - t_all
    print(json.dumps(out, default=lambda o: round(o, 4) if isinstance(o, float) else str(o)))


if __name__ == "__main__":
    main()
