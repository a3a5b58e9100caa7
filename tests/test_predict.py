"""Test-time augmentation of the ensemble: the views (pure tensor functions, checked against
slicing and flipping by hand), and the registered pyfunc ensemble averaging members x views, saved
and loaded through a real MLflow store (SQLite) with real torchvision transforms."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dlops.predict import TTA_MODES, VIEWS, check_tta, predict_tta, tta_views


def _x(n=3, c=2, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, h, w, generator=g)


@pytest.mark.parametrize("mode", TTA_MODES)
def test_views_shape_and_count(mode):
    x = _x()
    v = tta_views(x, mode, 0.75)
    assert v.shape == (VIEWS[mode], *x.shape)


def test_none_and_flip_are_the_image_and_its_mirror():
    x = _x()
    assert torch.equal(tta_views(x, "none")[0], x)
    v = tta_views(x, "flip")
    assert torch.equal(v[0], x)
    assert torch.equal(v[1], x[..., ::1].flip(-1))
    assert not torch.equal(v[1], x)


def test_crops_are_the_corners_and_centre_resized_back():
    x = _x(h=8, w=8)
    v = tta_views(x, "ten_crop", 0.5)  # 4x4 crops, resized to 8x8
    from torchvision.transforms.v2 import functional as F

    def up(t):
        return F.resize(t, [8, 8], antialias=True)

    def five(t):  # top-left, top-right, bottom-left, bottom-right, centre
        return [t[..., :4, :4], t[..., :4, 4:], t[..., 4:, :4], t[..., 4:, 4:], t[..., 2:6, 2:6]]

    for i, (e, em) in enumerate(zip(five(x), five(x.flip(-1)))):
        torch.testing.assert_close(v[i], up(e))
        torch.testing.assert_close(v[5 + i], up(em))  # the same crops of the mirrored image
    # crop_fraction 1: every crop is the full image (no resize), mirrors in the second half
    full = tta_views(x, "ten_crop", 1.0)
    for i in range(5):
        assert torch.equal(full[i], x) and torch.equal(full[5 + i], x.flip(-1))


@pytest.mark.parametrize("mode,frac,match", [("mirror", 0.9, "ensemble.tta"), ("ten_crop", 0.0, "crop_fraction"),
                                             ("five_crop", 1.5, "crop_fraction")])
def test_bad_settings_name_the_field(mode, frac, match):
    with pytest.raises(ValueError, match=match):
        check_tta(mode, frac)
    with pytest.raises(ValueError, match=match):
        tta_views(_x(), mode, frac)


def test_views_need_a_batch():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        tta_views(torch.zeros(1, 8, 8), "flip")


def test_predict_tta_is_the_mean_over_views():
    x = _x(n=4, c=1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 5)).eval()

    def predict(t):
        with torch.no_grad():
            return torch.softmax(model(t), 1).numpy()

    p = predict_tta(predict, x, "flip")
    manual = (predict(x) + predict(x.flip(-1))) / 2
    np.testing.assert_allclose(p, manual, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-6)
    assert not np.allclose(p, predict(x))  # the mirror changed the prediction


def _member(tmp, i, spec):
    from dlops.models.transfer import build_model
    from dlops.train.checkpoint import CHECKPOINT_FILE, SPEC_FILE

    torch.manual_seed(100 + i)
    m = build_model(spec)
    d = tmp / f"member_{i}"
    d.mkdir()
    torch.save({"model": m.state_dict()}, d / CHECKPOINT_FILE)
    (d / SPEC_FILE).write_text(json.dumps(spec))
    return m.eval(), str(d)


@pytest.mark.parametrize("task", ["classification", "multilabel"])
def test_pyfunc_ensemble_averages_members_and_views(tmp_path, task):
    import mlflow

    spec = {"name": "small_cnn", "num_classes": 4, "in_channels": 3, "hidden": 16, "width": 8, "image_size": 16,
            "task": task}
    members = [_member(tmp_path, i, spec) for i in range(2)]
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    try:
        _check_pyfunc(tmp_path, task, members, x)
    finally:
        mlflow.set_tracking_uri(previous)


def _check_pyfunc(tmp_path, task, members, x):
    import mlflow

    from dlops.train.loop import predict_proba
    from dlops.ensemble import EnsemblePyfunc

    exp = mlflow.create_experiment("tta", artifact_location=(tmp_path / "artifacts").as_uri())
    cfg = {"tta": "ten_crop", "crop_fraction": 0.875}
    with mlflow.start_run(experiment_id=exp) as run:
        info = mlflow.pyfunc.log_model(name="ensemble", python_model=EnsemblePyfunc(),
                                       artifacts={f"member_{i}": p for i, (_, p) in enumerate(members)},
                                       model_config=cfg)
    assert mlflow.get_run(run.info.run_id).info.status == "FINISHED"
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    p = loaded.predict(x.numpy())
    views = tta_views(x, "ten_crop", 0.875)
    manual = np.mean([[predict_proba(m, v, task=task) for v in views] for m, _ in members], axis=(0, 1))
    np.testing.assert_allclose(p, manual, rtol=1e-4, atol=1e-5)
    if task == "classification":
        np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    else:  # one sigmoid per label: rows do not sum to 1, every value in (0, 1)
        assert not np.allclose(p.sum(1), 1.0) and ((p > 0) & (p < 1)).all()
    # the same model without TTA, by overriding the model config at load time
    plain = mlflow.pyfunc.load_model(info.model_uri, model_config={"tta": "none"}).predict(x.numpy())
    np.testing.assert_allclose(plain, np.mean([predict_proba(m, x, task=task) for m, _ in members], axis=0),
                               rtol=1e-4, atol=1e-5)
    assert not np.allclose(plain, p)
    with pytest.raises(ValueError, match="ensemble.tta"):
        mlflow.pyfunc.load_model(info.model_uri, model_config={"tta": "mirror"})


def test_a_truncated_member_is_named_with_its_file(tmp_path):
    """A member's state.pt cut short (a failed copy): the error names the member and its file,
    not only torch's ``OSError: [Errno 22] Invalid argument``."""
    from types import SimpleNamespace

    from dlops.ensemble import EnsemblePyfunc
    from dlops.train.checkpoint import CHECKPOINT_FILE

    spec = {"name": "small_cnn", "num_classes": 4, "in_channels": 3, "hidden": 16, "width": 8, "image_size": 16}
    paths = [_member(tmp_path, i, spec)[1] for i in range(2)]
    f = tmp_path / "member_1" / CHECKPOINT_FILE
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    ctx = SimpleNamespace(artifacts={f"member_{i}": p for i, p in enumerate(paths)}, model_config={})
    with pytest.raises(RuntimeError, match=r"ensemble member member_1 \(.*member_1/state\.pt\) does not load: ") as e:
        EnsemblePyfunc().load_context(ctx)
    assert e.value.__cause__ is not None  # torch's own error, chained
    EnsemblePyfunc().load_context(SimpleNamespace(artifacts={"member_0": paths[0]}, model_config={}))  # the whole one loads


def test_loading_the_ensemble_prints_no_mlflow_type_hint_notice():
    """MLflow prints a yellow "Add type hints to the `predict` method" (ANSI codes in logs) in
    every process that defines the ensemble's class; dlops drops that one notice and no other."""
    import subprocess
    import sys

    code = "import warnings, dlops.ensemble; warnings.warn('another warning', UserWarning)"
    r = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Add type hints" not in r.stderr and "\x1b[33m" not in r.stderr, r.stderr[-2000:]
    assert "another warning" in r.stderr  # other warnings still show
