"""Weights references (one parser) and the one loader: files saved from DataParallel and torch.compile.

Fast: :func:`parse_weights_ref` for every kind and for bad values; :func:`load_source_state`,
:func:`load_weights` and :func:`transfer_features` on state dicts saved from a real
``torch.nn.DataParallel`` and a real ``torch.compile`` (only its ``state_dict``: no compiler runs).
Slow: ``dlops run``'s main job (:func:`dlops.job.run_project`) with ``model.weights`` such a file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dlops.errors import DataError
from dlops_testing import EXAMPLE
from dlops.models.weights import WeightsRef, parse_weights_ref

#: the model spec of the digits example (small CNN, 5 classes, grey 8x8)
SPEC = {"name": "small_cnn", "num_classes": 5, "in_channels": 1, "hidden": 64, "width": 16, "image_size": 8}


# ------------------------------------------------------------------------------------------------
# the parser
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, kind", [
    ("pretrain", "pretrain"),
    ("models:/digits-transfer@champion", "registry"),
    ("models:/digits-transfer/3", "registry"),
    ("runs:/0123abcd/model", "run"),
    ("weights/resnet18.pt", "file"),
    ("/abs/no/such/file", "file"),
    ("./state", "file"),
    ("net.pth", "file"),
    ("net.ckpt", "file"),
    ("DEFAULT", "torchvision"),
    ("IMAGENET1K_V1", "torchvision"),
    ("IMAGENET1K_SWAG_E2E_V1", "torchvision"),
])
def test_every_kind_parses(text, kind):
    ref = parse_weights_ref(text)
    assert ref == WeightsRef(kind, text)
    assert str(ref) == text
    assert ref.is_mlflow == (kind in ("registry", "run"))


def test_an_existing_file_is_a_file_even_when_it_looks_like_a_torchvision_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "DEFAULT").write_bytes(b"x")
    (tmp_path / "mystate").write_bytes(b"x")
    assert parse_weights_ref("DEFAULT") == WeightsRef("file", "DEFAULT")
    assert parse_weights_ref("mystate") == WeightsRef("file", "mystate")
    assert parse_weights_ref(Path("anything")) == WeightsRef("file", "anything")  # a path is a file


def test_a_relative_file_is_taken_from_base_first(tmp_path):
    (tmp_path / "src.pt").write_bytes(b"x")
    (tmp_path / "plain").write_bytes(b"x")
    assert parse_weights_ref("src.pt", base=tmp_path) == WeightsRef("file", str(tmp_path / "src.pt"))
    assert parse_weights_ref("plain", base=tmp_path) == WeightsRef("file", str(tmp_path / "plain"))
    assert parse_weights_ref("other.pt", base=tmp_path) == WeightsRef("file", "other.pt")  # not there: as given
    assert parse_weights_ref("DEFAULT", base=tmp_path).kind == "torchvision"
    assert parse_weights_ref("models:/m@a", base=tmp_path).kind == "registry"


@pytest.mark.parametrize("text", [
    "", "  ", "default", "imagenet", "Pretrain", "pretrained", "1234", "_X",
    "models:/", "models:/name", "models:/name@", "models:/@alias", "models:/name/v1", "models:/a/b/c",
    "runs:/", "runs:/abc", "runs:/abc/",
])
def test_bad_values_raise_value_error_naming_the_key_and_the_value(text):
    with pytest.raises(ValueError) as exc:
        parse_weights_ref(text)
    assert str(exc.value).startswith("model.weights: ")
    assert repr(text) in str(exc.value)


def test_the_parser_imports_no_torch():
    code = ("import sys\nfrom dlops.models.weights import parse_weights_ref\nimport dlops.models\n"
            "assert parse_weights_ref('DEFAULT').kind == 'torchvision'\n"
            "assert dlops.models.list_models()\n"
            "print([m for m in ('torch', 'torchvision', 'mlflow') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr


# ------------------------------------------------------------------------------------------------
# the loader: DataParallel and torch.compile state dicts
# ------------------------------------------------------------------------------------------------


def _source():
    """The small CNN of ``SPEC`` with recognisable weights and BatchNorm statistics."""
    import torch

    from dlops.models.transfer import build_model

    torch.manual_seed(7)
    model = build_model(SPEC)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.25)
        model.features[1].running_mean.add_(0.5)
        model.features[1].num_batches_tracked.add_(3)
    return model


def _wrapped_state(model, wrap: str):
    """The state dict of ``model`` as saved from a real wrapper."""
    import torch

    if wrap == "dataparallel":
        net = torch.nn.DataParallel(model)
    elif wrap == "compile":
        net = torch.compile(model)  # nothing is compiled until it is called
    elif wrap == "compile+dataparallel":
        net = torch.compile(torch.nn.DataParallel(model))
    else:
        net = model
    return net.state_dict()


WRAPS = {"dataparallel": "module.", "compile": "_orig_mod.", "compile+dataparallel": "_orig_mod.module."}


@pytest.mark.parametrize("wrap", list(WRAPS))
def test_load_source_state_reads_wrapper_state_dicts(tmp_path, wrap):
    import torch

    from dlops.models.weights import load_source_state

    src = _source()
    saved = _wrapped_state(src, wrap)
    assert all(k.startswith(WRAPS[wrap]) for k in saved)  # the real wrapper's prefixes
    path = tmp_path / f"{wrap}.pt"
    torch.save(saved, path)
    state = load_source_state(str(path), SPEC)
    assert set(state) == set(src.state_dict())
    for k, v in src.state_dict().items():
        assert torch.equal(state[k], v), k
    # a checkpoint dict holding it works too
    torch.save({"epoch": 3, "model": saved}, tmp_path / "ckpt.pt")
    assert set(load_source_state(parse_weights_ref(str(tmp_path / "ckpt.pt")), SPEC)) == set(src.state_dict())


@pytest.mark.parametrize("wrap", list(WRAPS))
def test_transfer_features_and_create_model_take_wrapper_state_dicts(tmp_path, wrap):
    import torch

    from dlops.models import create_model
    from dlops.models.transfer import build_model, transfer_features

    src = _source()
    saved = _wrapped_state(src, wrap)
    dst = build_model(SPEC)
    head_before = {k: v.clone() for k, v in dst.state_dict().items() if k.startswith("head.")}
    copied = transfer_features(dst, saved)  # straight from the wrapper's keys
    assert copied == sorted(k for k in src.state_dict() if k.startswith("features."))
    for k, v in dst.state_dict().items():
        if k.startswith("head."):
            assert torch.equal(v, head_before[k]), k  # the head is always a new one
        else:
            assert torch.equal(v, src.state_dict()[k]), k
    path = tmp_path / "w.pt"
    torch.save(saved, path)
    loaded = create_model("small_cnn", 5, weights=path, in_channels=1)
    for k, v in src.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_transfer_adapts_the_first_conv_to_the_input_channels():
    import torch

    from dlops.models.transfer import build_model, transfer_features

    torch.manual_seed(0)
    rgb = build_model(dict(SPEC, in_channels=3))
    grey = build_model(SPEC)
    assert "features.0.weight" in transfer_features(grey, torch.compile(rgb).state_dict())
    w = rgb.features[0].weight
    torch.testing.assert_close(grey.features[0].weight, w.sum(dim=1, keepdim=True))


def test_load_source_state_errors_name_the_file_or_model(tmp_path):
    import torch

    from dlops.models import create_model
    from dlops.models.weights import load_source_state

    def err(weights, spec=SPEC) -> str:
        with pytest.raises(DataError) as exc:
            load_source_state(weights, spec)
        msg = str(exc.value)
        assert msg.startswith("model.weights: "), msg
        return msg

    missing = tmp_path / "nope.pt"
    assert str(missing) in err(str(missing))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    assert str(junk) in err(str(junk)) and "weights_only" in err(str(junk))
    notsd = tmp_path / "notsd.pt"
    torch.save({"epoch": 3, "lr": torch.tensor(0.1), "note": "x"}, notsd)
    assert "state_dict" in err(str(notsd))
    other = tmp_path / "resnet18.pt"
    torch.save(create_model("resnet18", 5).state_dict(), other)
    msg = err(str(other))
    assert str(other) in msg and "another architecture" in msg and "features.0.weight" in msg
    wider = tmp_path / "wider.pt"
    torch.save(create_model("small_cnn", 5, in_channels=1, width=8).state_dict(), wider)
    msg = err(str(wider))
    assert "shape mismatch" in msg and "features.0.weight: (8, 1, 3, 3) in the weights, (16, 1, 3, 3)" in msg
    assert "'pretrain'" in err("pretrain")
    assert "'default'" in err("default")
    assert "'DEFAULT'" in err("DEFAULT") and "small_cnn" in err("DEFAULT")  # no torchvision weights
    with pytest.raises(DataError, match="model.weights: .*cannot load MLflow model 'models:/nope@champion'"):
        load_source_state("models:/nope@champion", SPEC)


# ------------------------------------------------------------------------------------------------
# end to end: dlops run's main job with model.weights a DataParallel / torch.compile file
# ------------------------------------------------------------------------------------------------




@pytest.mark.slow
@pytest.mark.parametrize("wrap", ["dataparallel", "compile"])
def test_dlops_run_transfers_a_wrapper_saved_state_dict(tmp_path, local_ray, wrap):
    """``model.weights`` saved from ``DataParallel`` (``module.``) or ``torch.compile``
    (``_orig_mod.``): the job finishes, and the registered model's frozen features are the saved
    tensors bit for bit (parameters and BatchNorm buffers), its head a new one."""
    import mlflow
    import torch
    from mlflow import MlflowClient

    from dlops.config import load_config
    from dlops.job import run_project

    src = _source()
    saved = _wrapped_state(src, wrap)
    assert all(k.startswith(WRAPS[wrap]) for k in saved)
    path = tmp_path / f"source-{wrap}.pt"
    torch.save(saved, path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    name = f"weights-{wrap.replace('+', '-')}"
    cfg = load_config(EXAMPLE, [
        f"tracking.uri={uri}", f"ray.storage_path={tmp_path}/ray_results", "ray.num_cpus=2",
        f"model.weights={path}", "model.freeze=backbone", "search.stages=[{trials: 2, epochs: 1}]",
        "search.confirm=null", "ensemble.enabled=false", "report.reporters=[]", f"registry.model_name={name}",
    ])
    lines: list[str] = []
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        summary = run_project(cfg, out=lines.append)
    finally:
        os.chdir(old)
    assert any(f"source weights from {path}" in ln for ln in lines), lines
    assert summary.pretrain_run_id is None
    assert summary.n_trials == 2 and summary.n_failed == 0
    c = MlflowClient(uri)
    assert {r.info.status for r in c.search_runs([summary.experiment_id], max_results=100)} == {"FINISHED"}
    assert summary.model_uri == f"models:/{name}@champion"
    mlflow.set_tracking_uri(uri)
    new = mlflow.pytorch.load_model(summary.model_uri).state_dict()
    want = src.state_dict()
    feats = [k for k in new if k.startswith("features.")]
    assert len(feats) == 14  # 2 conv (w, b) + 2 BatchNorm (w, b, mean, var, count)
    for k in feats:
        assert torch.equal(new[k], want[k]), k
    assert int(new["features.1.num_batches_tracked"]) == 3  # the saved BatchNorm counter, frozen
    heads = [k for k in new if k.startswith("head.")]
    assert heads and set(heads) | set(feats) == set(new)
    assert not torch.equal(new["head.0.bias"], want["head.0.bias"][: new["head.0.bias"].shape[0]])
