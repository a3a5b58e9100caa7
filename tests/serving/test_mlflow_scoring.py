"""MLflow's own scoring: a single network and an ensemble registered the way dlops registers them
(:func:`dlops.serving.pyfunc.log_model`, the ensemble pyfunc with :func:`model_signature`), loaded
with ``mlflow.pyfunc.load_model`` and served by ``mlflow models serve --env-manager local`` on
127.0.0.1. Real MLflow (SQLite registry), real torch; the networks are small CNNs trained here on
scikit-learn's digits for a second (no Ray: a dlops run would cost the suite minutes).

Checks: MLflow's input formats (``inputs``, ``instances``, ``dataframe_split``) with what JSON
decodes to (float64/int64), base64 PNG/JPEG images, bad input -> 400 naming the problem; and that
a PNG scored by the served champion gets exactly ``dlops report``'s prediction for that image
(the JPEG: report's prediction for the decoded JPEG)."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from dlops_testing import free_port, mlflow_uris, post_json, restore_mlflow_uris, subprocess_env

pytestmark = pytest.mark.slow

CLASSES = ["5", "6", "7", "8", "9"]
SPEC = {"name": "small_cnn", "num_classes": 5, "in_channels": 1, "hidden": 32, "width": 16, "image_size": 8,
        "mean": [0.5], "std": [0.5], "class_names": CLASSES, "task": "classification"}


def _digits():
    from dlops.data.digits import load_digits_arrays

    x, y = load_digits_arrays()
    keep = y >= 5
    return x[keep], y[keep] - 5  # (N, 8, 8, 1) uint8, labels 0..4


def _train(seed: int):
    import torch

    from dlops.data.transforms import eval_transform
    from dlops.models import create_model
    from dlops.train.loop import stack_eval

    torch.manual_seed(seed)
    x, y = _digits()
    xt, yt = stack_eval(x[:400], eval_transform(SPEC)), torch.as_tensor(y[:400])
    model = create_model("small_cnn", 5, in_channels=1, hidden=SPEC["hidden"], width=SPEC["width"])
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    return model.eval()


def _png(img: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    from PIL import Image

    b = io.BytesIO()
    Image.fromarray(img[..., 0]).save(b, fmt, **kw)
    return b.getvalue()


def _b64(blob: bytes) -> str:
    return base64.b64encode(blob).decode()


class Scorer:
    """``mlflow models serve -m URI --env-manager local`` on 127.0.0.1:<free port>."""

    def __init__(self, uri: str, store: str) -> None:
        self.port = free_port()
        env = subprocess_env()
        env["MLFLOW_TRACKING_URI"] = store
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def wait(self, timeout: float = 240) -> None:
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise AssertionError(f"mlflow models serve exited {self.proc.returncode}: {self.proc.stdout.read()[-3000:]}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ping", timeout=2).read()
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.3)
        raise AssertionError("mlflow models serve did not answer in time")

    def post(self, body: object) -> tuple[int, object]:
        return post_json(f"http://127.0.0.1:{self.port}/invocations", body)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """Two networks registered as versions 1 (champion) and 2 of ``digits-scoring``, and their
    ensemble as ``digits-scoring-ensemble`` version 1, in a SQLite store; both scoring servers."""
    import mlflow
    from mlflow import MlflowClient

    from dlops.ensemble import EnsemblePyfunc
    from dlops.serving.pyfunc import log_model, model_signature
    from dlops.tracking.models import pip_requirements

    d = tmp_path_factory.mktemp("scoring")
    store = f"sqlite:///{d}/mlflow.db"
    saved = mlflow_uris()  # given back at teardown: later modules must not see this store
    mlflow.set_tracking_uri(store)
    mlflow.set_registry_uri(store)
    client = MlflowClient(store, store)
    mlflow.set_experiment("scoring")
    meta = {"model_spec": SPEC, "class_index": {str(i): c for i, c in enumerate(CLASSES)}}
    models, dirs = [], []
    for seed in (0, 1):
        model = _train(seed)
        with mlflow.start_run():
            info = log_model(model, name="model", signature=model_signature(5), pip_requirements=pip_requirements(),
                             serialization_format="pickle", metadata=meta)
        mv = mlflow.register_model(info.model_uri, "digits-scoring")
        models.append(model)
        dirs.append(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/digits-scoring/{mv.version}",
                                                        dst_path=str(d / f"m{seed}")))
    client.set_registered_model_alias("digits-scoring", "champion", "1")
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="ensemble", python_model=EnsemblePyfunc(),
                                       artifacts={f"member_{i}": p for i, p in enumerate(dirs)},
                                       signature=model_signature(5), pip_requirements=pip_requirements(),
                                       model_config={"tta": "none", "method": "average"},
                                       metadata={**meta, "members": ["1", "2"]})
    mlflow.register_model(info.model_uri, "digits-scoring-ensemble")
    single = Scorer("models:/digits-scoring@champion", store)
    ens = Scorer("models:/digits-scoring-ensemble/1", store)
    try:
        yield {"store": store, "models": models, "single": single, "ensemble": ens}
    finally:
        single.stop()
        ens.stop()
        restore_mlflow_uris(saved)


def test_pyfunc_takes_json_dtypes_and_images(registered):
    """``mlflow.pyfunc.load_model(...).predict``: float64, int64, lists, base64 images and data
    frames, for the single model and the ensemble; probabilities out; mlflow.pytorch still loads."""
    import mlflow
    import pandas as pd
    import torch

    x, _ = _digits()
    xin = ((x[400:406].astype(np.float64) / 255.0 - 0.5) / 0.5).transpose(0, 3, 1, 2)  # float64 (6, 1, 8, 8)
    single = mlflow.pyfunc.load_model("models:/digits-scoring@champion")
    net = mlflow.pytorch.load_model("models:/digits-scoring@champion")
    with torch.no_grad():
        ref = torch.softmax(net(torch.as_tensor(xin, dtype=torch.float32)), 1).numpy()
    ens = mlflow.pyfunc.load_model("models:/digits-scoring-ensemble/1")
    ref_e = np.mean([torch.softmax(m(torch.as_tensor(xin, dtype=torch.float32)), 1).detach().numpy()
                     for m in registered["models"]], axis=0)
    pngs = [_b64(_png(im)) for im in x[400:406]]
    for model, want in ((single, ref), (ens, ref_e)):
        for inp in (xin, xin.astype(np.float32), xin.tolist(), pd.DataFrame(xin.reshape(6, 64)), pngs,
                    pd.DataFrame({"image": pngs})):
            out = np.asarray(model.predict(inp))
            assert out.shape == (6, 5) and out.dtype == np.float32
            np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
        assert np.asarray(model.predict(np.zeros((2, 1, 8, 8), dtype=np.int64))).shape == (2, 5)
    assert single.metadata.signature.inputs is None  # the pyfunc checks its own inputs (float64 too)
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match="3 channels"):
        single.predict(np.zeros((1, 3, 8, 8)))


def test_png_and_jpeg_get_dlops_reports_prediction(registered):
    """The served champion (``mlflow models serve``) scores a PNG exactly as ``dlops report``'s
    predictor scores the same image, and a JPEG as report scores the decoded JPEG."""
    import mlflow

    from dlops.data.decode import decode_image
    from dlops.data.transforms import eval_transform
    from dlops.reporting.recompute import _predictor  # report's model loader + probabilities
    from dlops.train.loop import stack_eval

    mlflow.set_tracking_uri(registered["store"])
    predict, spec = _predictor("model:models:/digits-scoring@champion", "models:/digits-scoring@champion",
                               "classification")
    x, _ = _digits()
    imgs = x[410:420]
    report = np.asarray(predict(stack_eval(imgs, eval_transform(spec))))
    srv = registered["single"]
    srv.wait()
    status, out = srv.post({"inputs": [_b64(_png(im)) for im in imgs]})
    assert status == 200, out
    np.testing.assert_allclose(np.asarray(out["predictions"]), report, rtol=1e-5, atol=1e-6)
    assert len(set(report.argmax(1))) > 1  # a trained model, not one class for everything
    jpgs = [_png(im, "JPEG", quality=90) for im in imgs]
    status, out = srv.post({"dataframe_split": {"columns": ["image"], "data": [[_b64(j)] for j in jpgs]}})
    assert status == 200, out
    decoded = np.stack([decode_image(j, 1) for j in jpgs])
    report_j = np.asarray(predict(stack_eval(decoded, eval_transform(spec))))
    assert list(np.asarray(out["predictions"]).argmax(1)) == list(report_j.argmax(1))


def test_mlflow_models_serve_input_formats_and_bad_input(registered):
    """``inputs`` / ``instances`` / ``dataframe_split`` as JSON lists (float64, int64), for the
    champion and the ensemble; bad input is a 400 whose message names the problem."""
    x, _ = _digits()
    xin = ((x[420:424].astype(np.float64) / 255.0 - 0.5) / 0.5).transpose(0, 3, 1, 2)
    for key in ("single", "ensemble"):
        srv = registered[key]
        srv.wait()
        status, ref = srv.post({"inputs": xin.tolist()})
        assert status == 200, ref
        ref = np.asarray(ref["predictions"])
        assert ref.shape == (4, 5) and np.allclose(ref.sum(1), 1, atol=1e-5)
        for body in ({"instances": xin.tolist()},
                     {"dataframe_split": {"columns": [str(i) for i in range(64)], "data": xin.reshape(4, 64).tolist()}},
                     {"inputs": [_b64(_png(im)) for im in x[420:424]]}):
            status, out = srv.post(body)
            assert status == 200, (key, list(body), out)
            np.testing.assert_allclose(np.asarray(out["predictions"]), ref, rtol=1e-5, atol=1e-6)
        status, out = srv.post({"inputs": np.zeros((1, 1, 8, 8), dtype=int).tolist()})
        assert status == 200 and np.asarray(out["predictions"]).shape == (1, 5)
        for bad, needle in (({"inputs": np.full((1, 1, 8, 8), 1e30).tolist()}, "not a preprocessed pixel"),
                            ({"inputs": [_b64(b"not an image")]}, "images[0]: not an image"),
                            ({"inputs": [_b64(_png(np.zeros((1, 1, 1), np.uint8)))]}, "minimum is 8x8"),
                            ({"inputs": np.zeros((1, 3, 8, 8)).tolist()}, "3 channels")):
            status, out = srv.post(bad)
            assert status == 400 and needle in out["message"], (key, needle, status, str(out)[-300:])


def test_resolve_model_reads_the_store_it_is_given_not_the_default(registered, tmp_path, monkeypatch):
    """``dlops serve --tracking-uri STORE`` from a directory whose default store (./mlflow.db) is
    another one: the version and its MLmodel are read from STORE (``models:/`` URIs resolve
    against the process's registry URI, which resolve_model must set)."""
    import mlflow

    from dlops.serving import resolve_model

    monkeypatch.chdir(tmp_path)
    other = f"sqlite:///{tmp_path}/mlflow.db"
    saved = mlflow_uris()
    try:
        mlflow.set_tracking_uri(other)
        mlflow.set_registry_uri(other)
        ref = resolve_model("models:/digits-scoring@champion", registered["store"])
        assert (ref.name, ref.version, ref.kind) == ("digits-scoring", "1", "single")
    finally:
        restore_mlflow_uris(saved)
