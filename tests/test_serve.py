"""`dlops serve`: a registered model (the champion of a real dlops run) and its ensemble served by
Ray Serve over HTTP, in a subprocess, as a user runs it. Real Ray, real Serve, real MLflow
(SQLite). Checks: predictions equal the registered model's own, test-time augmentation of the
ensemble, HTTP 400 naming the field for bad input, nothing listening beyond loopback, Ctrl-C
exits 130 and closes the port; bad arguments exit 2 before anything starts and create nothing."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import requests

from dlops_testing import EXAMPLE, TINY, free_port, post_json, run_dlops, subprocess_env

pytestmark = pytest.mark.slow


def _listeners() -> set[tuple[str, int]]:
    """Every TCP socket in LISTEN state on this machine whose address is not loopback
    (from /proc/net/tcp and tcp6; addresses as hex, as the kernel writes them)."""
    out = set()
    for name in ("tcp", "tcp6"):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            if state != "0A":  # LISTEN
                continue
            addr, port = local.split(":")
            loopback = (addr == "0100007F"  # 127.0.0.1 (little-endian)
                        or addr.endswith("7F")  # 127.x.y.z
                        or addr == "00000000000000000000000001000000"  # ::1
                        or (addr.startswith("0000000000000000FFFF0000") and addr.endswith("7F")))  # ::ffff:127.x
            if not loopback:
                out.add((addr, int(port, 16)))
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A tiny dlops run: a champion model and an ensemble in a SQLite store."""
    from dlops.config import load_config
    from dlops.job import run_project

    d = tmp_path_factory.mktemp("serve")
    uri = f"sqlite:///{d}/mlflow.db"
    old = os.getcwd()
    os.chdir(d)
    try:
        cfg = load_config(EXAMPLE, TINY + [f"tracking.uri={uri}", f"ray.storage_path={d}/ray_results",
                                           "ray.num_cpus=2", "report.reporters=[bias_variance]"])
        summary = run_project(cfg, out=lambda s: None)
    finally:
        os.chdir(old)
    return {"dir": d, "uri": uri, "cfg": cfg, "summary": summary}


def _digits(n: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Target-task digits (5-9), preprocessed as the small CNN's spec says (mean = std = 0.5)."""
    from dlops.data.digits import load_digits_arrays

    x, y = load_digits_arrays()
    keep = np.isin(y, [5, 6, 7, 8, 9])
    x, y = x[keep][:n], y[keep][:n]
    xt = ((x.astype(np.float32) / 255.0 - 0.5) / 0.5).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(xt), y


def _raw(n: int) -> np.ndarray:
    """The first ``n`` images of :func:`_digits` as stored: (n, 8, 8, 1) uint8."""
    from dlops.data.digits import load_digits_arrays

    x, y = load_digits_arrays()
    return x[np.isin(y, [5, 6, 7, 8, 9])][:n]


def _encode(im: np.ndarray, fmt: str = "PNG") -> bytes:
    """An (H, W, 1) uint8 image as an encoded file."""
    import io

    from PIL import Image

    b = io.BytesIO()
    Image.fromarray(im[..., 0]).save(b, fmt)
    return b.getvalue()


class Server:
    def __init__(self, args: list[str], cwd: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        # its own session: a Ctrl-C reaches the whole process group (Ray's processes too), as in a terminal
        self.proc = subprocess.Popen([sys.executable, "-m", "dlops.cli", "serve", *args, "--port", str(self.port)],
                                     cwd=cwd, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)

    def wait_ready(self, timeout: float = 180) -> None:
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise AssertionError(f"dlops serve exited {self.proc.returncode}: {self.proc.stderr.read()[-3000:]}")
            try:
                urllib.request.urlopen(self.url, timeout=2).read()
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(1)
        raise AssertionError("dlops serve did not answer in time")

    def get(self) -> dict:
        return json.loads(urllib.request.urlopen(self.url, timeout=30).read())

    def post(self, body: object) -> tuple[int, dict]:
        return post_json(self.url, body)

    def interrupt(self) -> int:
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


def test_serve_champion_predicts_like_the_registered_model(store):
    import mlflow
    import torch

    cfg = store["cfg"]
    before = _listeners()
    # Ray Serve's autoscaling, from 1 replica to at most 2 when more than 1 request is in flight
    conf = store["dir"] / "serve-autoscaling.yaml"
    conf.write_text("autoscaling_config: {min_replicas: 1, max_replicas: 2, target_ongoing_requests: 1,\n"
                    "                     upscale_delay_s: 0.5, metrics_interval_s: 0.5, look_back_period_s: 1}\n")
    srv = Server([f"models:/{cfg.model_name}@champion", "--tracking-uri", store["uri"], "--max-request-mb", "0.05",
                  "--serve-config", str(conf)], store["dir"])
    try:
        srv.wait_ready()
        ready = json.loads(urllib.request.urlopen(srv.url + "-/ready", timeout=30).read())
        assert ready["ready"] is True and ready["name"] == cfg.model_name and ready["version"] == "1" and ready["load_s"] > 0
        info = srv.get()
        assert info["kind"] == "single" and info["ensemble_method"] is None and info["name"] == cfg.model_name and info["version"] == "1"
        assert info["max_request_mb"] == 0.05
        assert info["deployment"]["autoscaling_config"]["max_replicas"] == 2 and "num_replicas" not in info["deployment"]
        assert info["classes"] == ["5", "6", "7", "8", "9"] and info["input_shape"] == [1, 8, 8]
        x, y = _digits()
        status, out = srv.post({"inputs": x.tolist()})
        assert status == 200, out
        # the replica counts its forwards and their images (the batching achieved)
        counts = json.loads(urllib.request.urlopen(srv.url + "-/ready", timeout=30).read())
        assert ready["forwards"] == 0 and ready["mean_batch_images"] is None
        assert counts["forwards"] >= 1 and counts["images"] >= len(x) and counts["mean_batch_images"] > 0, counts
        # the registered version's own outputs, loaded here with MLflow
        mlflow.set_tracking_uri(store["uri"])
        model = mlflow.pytorch.load_model(f"models:/{cfg.model_name}/1").eval()
        with torch.no_grad():
            ref = torch.softmax(model(torch.from_numpy(x)), 1).numpy()
        np.testing.assert_allclose(np.asarray(out["probabilities"]), ref, rtol=1e-4, atol=1e-6)
        assert out["predictions"] == [str(5 + int(i)) for i in ref.argmax(1)]
        assert np.mean(np.asarray(out["predictions"]).astype(int) == y) > 0.5  # a trained model, not chance
        # eval mode: the same images again give bit-identical outputs (no batch statistics, no
        # BatchNorm buffer moved by serving; the small CNN has BatchNorm layers)
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
        assert srv.post({"inputs": x.tolist()}) == (200, out)
        # images in (issue 13): the server applies the training transform. A PNG (lossless) gets
        # dlops report's probabilities for that image (report: the eval transform of the stored
        # uint8 image, then the registered network); a JPEG gets report's class for the decoded
        # JPEG; a multipart body too; a 1-pixel image and bytes that are no image get a 422
        from dlops.data.decode import decode_image
        from dlops.data.transforms import eval_transform
        from dlops.train.loop import stack_eval

        spec = mlflow.models.get_model_info(f"models:/{cfg.model_name}/1").metadata["model_spec"]
        raw = _raw(4)
        with torch.no_grad():
            report = torch.softmax(model(stack_eval(raw, eval_transform(spec))), 1).numpy()
        for i in range(4):
            r = requests.post(srv.url, data=_encode(raw[i]), headers={"Content-Type": "image/png"}, timeout=60)
            assert r.status_code == 200, r.text
            np.testing.assert_allclose(r.json()["probabilities"][0], report[i], rtol=1e-4, atol=1e-6)
            jpg = _encode(raw[i], "JPEG")
            with torch.no_grad():
                rj = model(stack_eval(decode_image(jpg, 1)[None], eval_transform(spec))).argmax(1)
            r = requests.post(srv.url, data=jpg, headers={"Content-Type": "image/jpeg"}, timeout=60)
            assert r.status_code == 200 and r.json()["predictions"] == [str(5 + int(rj[0]))], r.text
        r = requests.post(srv.url, files={f"f{i}": (f"{i}.png", _encode(raw[i]), "image/png") for i in range(3)},
                          timeout=60)
        assert r.status_code == 200 and r.json()["predictions"] == out["predictions"][:3], r.text
        r = requests.post(srv.url, data=b"hello", headers={"Content-Type": "image/png"}, timeout=60)
        assert r.status_code == 422 and "not an image" in r.json()["error"], r.text
        r = requests.post(srv.url, data=_encode(raw[0][:1, :1]), headers={"Content-Type": "image/png"}, timeout=60)
        assert r.status_code == 422 and "minimum is 8x8" in r.json()["error"], r.text
        assert "image/png" in info["inputs"]["images"]["content_types"]
        # bad input: 400 naming the field and the expected shape; the server keeps serving
        status, err = srv.post({"inputs": [[1.0, 2.0]]})
        assert status in (400, 422) and "inputs" in err["error"] and "(N, 1, 8, 8)" in err["error"]
        status, err = srv.post({"tensor": x.tolist()})
        assert status == 400 and "inputs" in err["error"]
        assert srv.post({"inputs": x[:1].tolist()})[0] == 200
        # strings, booleans and nulls are not numbers; values that overflow the model are refused too
        for bad in ([[[["1.0"] * 8] * 8]], [[[[True] * 8] * 8]], [[[[None] * 8] * 8]], [[[[3e38] * 8] * 8]]):
            status, err = srv.post({"inputs": bad})
            assert status in (400, 422) and "inputs" in err["error"], (bad[0][0][0][:1], status, err)
        # a body over --max-request-mb (50 kB here; 12 images are ~16 kB) gets 413, announced
        # (Content-Length) or streamed (chunked, no length), and the server keeps serving
        big = json.dumps({"inputs": np.tile(x, (16, 1, 1, 1)).tolist()}).encode()
        assert len(big) > 50_000
        status, err = srv.post({"inputs": np.tile(x, (16, 1, 1, 1)).tolist()})
        assert status == 413 and "--max-request-mb" in err["error"] and "0.05 MB" in err["error"], (status, err)
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
        conn.request("POST", "/", body=iter([big[i:i + 8192] for i in range(0, len(big), 8192)]),
                     headers={"Content-Type": "application/json"}, encode_chunked=True)
        r = conn.getresponse()
        assert r.status == 413 and "--max-request-mb" in json.loads(r.read())["error"]
        conn.close()
        # a body far larger than the socket buffers (6 MB): both clients see the 413, not a
        # connection reset (the server drains the body before answering)
        huge = b'{"inputs": [' + b"0.0, " * 1_200_000 + b"0.0]}"
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(urllib.request.Request(srv.url, data=huge, headers={"Content-Type": "application/json"}),
                                   timeout=60)
        assert e.value.code == 413 and "--max-request-mb" in json.loads(e.value.read())["error"]
        r = requests.post(srv.url, data=huge, headers={"Content-Type": "application/json"}, timeout=60)
        assert r.status_code == 413 and "--max-request-mb" in r.json()["error"]
        assert srv.post({"inputs": x.tolist()})[0] == 200
        put = urllib.request.Request(srv.url, data=b"{}", method="PUT")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(put, timeout=30)
        assert e.value.code == 405
        pre = info["preprocessing"]
        assert pre["layout"] == "NCHW" and pre["mean"] == [0.5] and pre["std"] == [0.5] and pre["image_size"] == 8
        # under load (6 clients, each keeping a request in flight) Serve adds the second replica:
        # the readiness endpoint, answered by one replica or the other, shows two replica tags
        tags = {ready["replica"]}
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                requests.post(srv.url, json={"inputs": x.tolist()}, timeout=60)

        workers = [threading.Thread(target=load, daemon=True) for _ in range(6)]
        for w in workers:
            w.start()
        t0 = time.time()
        try:
            while len(tags) < 2 and time.time() - t0 < 120:
                tags.add(json.loads(urllib.request.urlopen(srv.url + "-/ready", timeout=30).read())["replica"])
                time.sleep(0.2)
        finally:
            stop.set()
            for w in workers:
                w.join(timeout=60)
        assert len(tags) == 2 and None not in tags, tags
        # nothing new listens beyond loopback: the HTTP proxy, Ray and the replicas' gRPC servers
        assert _listeners() - before == set()
        assert srv.interrupt() == 130
        # the start-up log says where it serves, and not Serve's "new http_options will not be
        # applied" (they were: serve.start set the port)
        err = srv.proc.stderr.read()
        assert f"ready at http://127.0.0.1:{srv.port}/" in err and "will not be applied" not in err, err[-2000:]
        # where the start-up seconds went; a quiet stop (Ctrl-C to the whole group, as a terminal)
        assert "start-up " in err and "Ray " in err and "Serve + replicas" in err, err[-2000:]
        assert "Traceback" not in err and "graceful_shutdown" not in err, err[-3000:]
    finally:
        srv.kill()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(srv.url, timeout=3)


def test_serve_ensemble_with_ten_crop_tta(store):
    import mlflow

    cfg = store["cfg"]
    # a tiny queue and a long batch wait (Ray Serve's option names, from a --serve-config file):
    # 2 requests in the replica, 2 queued at the proxy, the rest refused with 503 at once
    conf = store["dir"] / "serve-small-queue.yaml"
    conf.write_text("max_ongoing_requests: 2\nmax_queued_requests: 2\nmax_batch_size: 1000\nbatch_wait_timeout_s: 1.0\n")
    srv = Server([f"models:/{cfg.ensemble_name}/1", "--tracking-uri", store["uri"], "--tta", "ten_crop",
                  "--crop-fraction", "0.75", "--serve-config", str(conf)], store["dir"])
    try:
        srv.wait_ready()
        info = srv.get()
        assert info["kind"] == "ensemble" and info["tta"] == "ten_crop" and info["ensemble_method"] == "average"
        assert info["max_batch_size"] == 1000 and info["batch_wait_timeout_s"] == 1.0
        assert info["crop_fraction"] == 0.75 and len(info["members"]) == 3, info  # the top-3 of the run
        assert requests.head(srv.url, timeout=30).status_code == 200  # health checkers' HEAD
        x, _ = _digits(6)
        status, out = srv.post({"inputs": x.tolist()})
        assert status == 200, out
        # base64 images in JSON: decoded and preprocessed on the server, the same probabilities
        import base64

        status, o = srv.post({"images": [base64.b64encode(_encode(im)).decode() for im in _raw(6)]})
        assert status == 200, o
        np.testing.assert_allclose(o["probabilities"], out["probabilities"], rtol=1e-4, atol=1e-6)
        mlflow.set_tracking_uri(store["uri"])
        uri = f"models:/{cfg.ensemble_name}/1"
        tta = mlflow.pyfunc.load_model(uri, model_config={"tta": "ten_crop", "crop_fraction": 0.75}).predict(x)
        plain = mlflow.pyfunc.load_model(uri).predict(x)  # registered with tta none (the default)
        p = np.asarray(out["probabilities"])
        np.testing.assert_allclose(p, tta, rtol=1e-4, atol=1e-6)
        assert not np.allclose(p, plain)
        np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
        # 10 clients at once, image i each: those admitted are batched together and each gets its
        # own image's row back; beyond the queue bound the proxy answers 503 fast
        results: dict[int, tuple[int, float, dict]] = {}

        def client(i: int) -> None:
            t0 = time.perf_counter()
            r = requests.post(srv.url, json={"inputs": x[i % 6:i % 6 + 1].tolist()}, timeout=120)
            results[i] = (r.status_code, time.perf_counter() - t0, r.json() if r.status_code == 200 else {})

        threads = [threading.Thread(target=client, args=(i,)) for i in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(c for c, _, _ in results.values())
        # how many get in depends on timing (a request that finished frees its slot for a late
        # thread): some are admitted, some are refused
        assert set(codes) == {200, 503} and 1 <= codes.count(200) < 10, codes
        assert all(dt < 1.0 for c, dt, _ in results.values() if c == 503)  # refused, not queued behind the batch
        for i, (c, _, body) in results.items():
            if c == 200:
                np.testing.assert_allclose(body["probabilities"][0], tta[i % 6], rtol=1e-4, atol=1e-6)
        assert srv.post({"inputs": x[:2].tolist()})[0] == 200  # and it keeps serving
        # SIGTERM (systemd, Kubernetes) stops it as Ctrl-C does: 143, the port closed
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(timeout=90) == 143, srv.proc.stderr.read()[-2000:]
        err = srv.proc.stderr.read()
        assert "stopping (SIGTERM)" in err  # said, as Ctrl-C says "stopping"
        assert "Add type hints" not in err and "\x1b[" not in err, err[-2000:]  # MLflow's yellow notice dropped
    finally:
        srv.kill()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(srv.url, timeout=3)


def test_serve_port_in_use_exits_2_before_ray(store):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run_dlops(["serve", f"models:/{store['cfg'].model_name}@champion", "--tracking-uri", store["uri"],
                    "--port", str(port)], store["dir"])
    assert r.returncode == 2 and "--port" in r.stderr and str(port) in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("args,needle", [
    (["models:/nope@champion"], "nope@champion"),
    (["runs:/abc/model"], "MODEL_URI"),
    (["models:/x@champion", "--crop-fraction", "0"], "--crop-fraction"),
    (["models:/x@champion", "--tta", "mirror"], "mirror"),
    (["models:/x@champion", "--replicas", "0"], "--replicas"),
    (["models:/x@champion", "--max-request-mb", "0"], "--max-request-mb"),
    (["models:/x@champion", "--max-queued-requests", "0"], "--max-queued-requests: 0 would refuse every request"),
    (["models:/x@champion", "--max-batch-size", "0"], "--max-batch-size: "),  # the flag, not the option's key
    (["models:/x@champion", "--serve-config", "nope.yaml"], "nope.yaml"),
])
def test_serve_bad_arguments_exit_2_and_create_nothing(tmp_path, args, needle):
    r = run_dlops(["serve", *args, "--tracking-uri", f"sqlite:///{tmp_path}/missing.db"], tmp_path)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no store created, no Ray started here


def test_serve_unknown_model_in_an_existing_store_exits_2(store):
    r = run_dlops(["serve", "models:/digits-transfer@nosuchalias", "--tracking-uri", store["uri"]], store["dir"])
    assert r.returncode == 2 and "nosuchalias" in r.stderr and store["uri"] in r.stderr


def test_serve_broken_model_exits_2_fast_with_the_real_error(store):
    """A registered version whose weights file is corrupt: exit 2 with the unpickling error, from
    the driver's test load (dlops.serving.engine.CheckLoads, which runs while Ray starts), before Serve
    starts (no crash-looping replica)."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(store["uri"])
    src = Path(mlflow.artifacts.download_artifacts(f"models:/{store['cfg'].model_name}/1",
                                                   dst_path=str(store["dir"] / "broken")))
    weights = list((src / "data").glob("*.pth"))
    assert weights
    for w in weights:
        w.write_bytes(b"not a pickle")
    client = MlflowClient(store["uri"], store["uri"])
    client.create_registered_model("broken-model")
    client.create_model_version("broken-model", source=str(src))
    t0 = time.time()
    r = run_dlops(["serve", "models:/broken-model/1", "--tracking-uri", store["uri"], "--port", str(free_port())],
                  store["dir"])
    elapsed = time.time() - t0
    assert r.returncode == 2, r.stderr[-2000:]
    assert "broken-model" in r.stderr and "does not load" in r.stderr and "UnpicklingError" in r.stderr
    assert "Traceback" not in r.stderr and "Started Serve" not in r.stderr
    assert elapsed < 90, elapsed  # seconds on a quiet machine: Ray starts, Serve does not


REPLICA_FAILS = r"""
import sys, time
import ray
from ray import serve
from dlops.cluster import init_ray
from dlops.errors import ServeError
from dlops.serving.app import start
from dlops.serving.resolve import ModelRef

uri, port = sys.argv[1], int(sys.argv[2])
init_ray(None, 2, None)
t0 = time.time()
try:
    start(ModelRef(uri="models:/broken-in-replica/1", name="broken-in-replica", version="1", kind="single"),
          uri, port=port)
    print("STARTED")
except ServeError as exc:
    print("SERVE_ERROR", exc)
print("SECONDS", round(time.time() - t0, 1))
print("STATUS", serve.status().applications["dlops"].status)
serve.shutdown()
ray.shutdown()
"""


def test_a_replica_whose_model_fails_to_load_is_one_error_not_a_crash_loop(store):
    """The path behind the driver's test load: the replica's own constructor raises (the model
    does not load there). `start` raises ServeError carrying the replica's exception line, after
    one retry (``max_constructor_retry_count=1``), not Serve's default of retrying for minutes."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(store["uri"])
    src = Path(mlflow.artifacts.download_artifacts(f"models:/{store['cfg'].model_name}/1",
                                                   dst_path=str(store["dir"] / "broken-in-replica")))
    for w in (src / "data").glob("*.pth"):
        w.write_bytes(b"not a pickle")
    client = MlflowClient(store["uri"], store["uri"])
    client.create_registered_model("broken-in-replica")
    client.create_model_version("broken-in-replica", source=str(src))
    r = subprocess.run([sys.executable, "-c", REPLICA_FAILS, store["uri"], str(free_port())], cwd=store["dir"],
                       env=subprocess_env(), capture_output=True, text=True, timeout=240)
    out = r.stdout
    assert r.returncode == 0, r.stderr[-3000:]
    assert "STARTED" not in out, out
    line = next(ln for ln in out.splitlines() if ln.startswith("SERVE_ERROR"))
    assert "models:/broken-in-replica/1 (version 1) failed to load in its replica" in line, line
    assert "UnpicklingError" in line, line  # the replica's own exception, not Serve's wrapper
    assert "DEPLOY_FAILED" in out, out
    seconds = float(next(ln for ln in out.splitlines() if ln.startswith("SECONDS")).split()[1])
    assert seconds < 90, seconds


def test_missing_weights_and_a_deleted_champion_are_named_before_anything_starts(store):
    """What a new user met: a version whose model.pth was deleted was reported as a missing
    model.pt2 (MLflow's loader falls back to the exported format); an alias whose version was
    deleted said only "no registered model version". Both are now named, in the driver."""
    import mlflow
    from mlflow import MlflowClient

    from dlops.serving.resolve import resolve_model
    from dlops.tracking.registry import move_alias

    from dlops.errors import ServeError

    mlflow.set_tracking_uri(store["uri"])
    whole, src = (Path(mlflow.artifacts.download_artifacts(f"models:/{store['cfg'].model_name}/1",
                                                           dst_path=str(store["dir"] / d))) for d in ("w1", "w2"))
    client = MlflowClient(store["uri"], store["uri"])
    client.create_registered_model("no-weights")
    client.create_model_version("no-weights", source=str(whole))  # version 1: whole
    (src / "data" / "model.pth").unlink()
    client.create_model_version("no-weights", source=str(src))  # version 2: its weights deleted
    assert resolve_model("models:/no-weights/1", store["uri"]).version == "1"
    with pytest.raises(ServeError, match=r"weights file data/model\.pth is missing .*pickle_module_info\.txt"):
        resolve_model("models:/no-weights/2", store["uri"])
    # the champion's version is deleted: MLflow drops the alias, the promotion history remembers
    move_alias(client, "no-weights", "champion", "2", None, "forced", "test", "test")
    client.delete_model_version("no-weights", "2")
    with pytest.raises(ServeError, match=r"@champion pointed at version 2, which was deleted .*dlops promote"):
        resolve_model("models:/no-weights@champion", store["uri"])
    move_alias(client, "no-weights", "challenger", "1", None, "forced", "test", "test")
    with pytest.raises(ServeError, match=r"no-weights has no alias @best; its aliases: @challenger \(version 1\)"):
        resolve_model("models:/no-weights@best", store["uri"])
    with pytest.raises(ServeError, match=r"no-weights has no version 7 \(latest: 1\)"):
        resolve_model("models:/no-weights/7", store["uri"])
    with pytest.raises(ServeError, match=r"version 2 of no-weights was deleted \(latest: 1\)"):
        resolve_model("models:/no-weights/2", store["uri"])  # the history moved an alias to it
    assert resolve_model("models:/no-weights/latest", store["uri"]).version == "1"  # MLflow's own form
    for bad in ("models:/no-weights", "models:/no-weights@", "models:/@champion", "models:/no-weights/"):
        with pytest.raises(ServeError, match=r"MODEL_URI: expected models:/NAME@ALIAS or models:/NAME/VERSION"):
            resolve_model(bad, store["uri"])
    with pytest.raises(ServeError, match=r"no registered model named 'nope'"):
        resolve_model("models:/nope@champion", store["uri"])
