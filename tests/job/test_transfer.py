"""Transfer learning end to end on real data files, real Ray, real MLflow (SQLite) and real torchvision.

a. An image folder with broken files (truncated PNG, empty .png, a .txt, a hidden folder) trains a
   resnet18 from a state_dict file; the broken files are named in ``data_manifest.json``, the
   hidden folder is no class, the registered model carries the folders' class names.
b. The frozen backbone of that registered model equals the source state_dict bit for bit
   (parameters and BatchNorm buffers); only the head changed.
c. A registered model (``models:/digits-transfer@champion``) is the source network of a second
   project: no pretraining, the features equal the champion's bitwise, the head is a fresh one,
   trained (replayed here step by step).
d. The multi-label example with missing labels: (N, 3) logits, and the logged dev error is the
   error over the observed labels only, recomputed here from the registered model.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from dlops_testing import EXAMPLE, REPO, TINY, invoke_cli, make_digits_images_module

pytestmark = pytest.mark.slow

STAGES = "search.stages=[{trials: 2, epochs: 1}, {trials: 1, epochs: 1}]"
#: folder name -> class name in the image-folder test (words, so that class names can only
#: come from the folders; sorted order differs from digit order)
WORDS = {"5": "five", "6": "six", "7": "seven", "8": "eight", "9": "nine"}




def _by_kind(client, exp_id: str, kind: str):
    return client.search_runs([exp_id], filter_string=f"tags.`dlops.kind` = '{kind}'", max_results=1000)




# ------------------------------------------------------------------------------------------------
# a + b: image folder, resnet18 from a state_dict file, through the CLI
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder_job(tmp_path_factory, local_ray):
    """The image-folder project through the CLI (click's runner, in this process, on the module's
    local Ray: a subprocess would add its imports and its own Ray start)."""
    import types

    import torch

    from dlops.models import create_model

    d = tmp_path_factory.mktemp("folder")
    mk = make_digits_images_module()
    mk.write_image_folders(d, seed=0, size=16)
    target = d / "digits-target"
    for digit, word in WORDS.items():
        (target / digit).rename(target / word)
    assert (target / ".cache" / "thumb.png").stat().st_size > 0  # a good image in a hidden folder
    torch.manual_seed(123)
    src = create_model("resnet18", 5, in_channels=3)  # random init: nothing downloaded
    source_state = {k: v.detach().clone() for k, v in src.state_dict().items()}
    weights = d / "resnet18-random.pt"
    torch.save(source_state, weights)
    uri = f"sqlite:///{d}/mlflow.db"
    sets = [f"data.target_dir={target}", "data.source_dir=null", "data.target_train_share=0.5", "data.dev_share=0.25",
            "data.image_size=16", f"model.weights={weights}", "model.freeze=backbone", STAGES,
            f"ray.storage_path={d}/ray_results", "ray.num_cpus=2", "report.reporters=[bias_variance]",
            "ensemble.tta=ten_crop", "ensemble.crop_fraction=0.75"]
    args = ["run", str(REPO / "examples" / "imagefolder-transfer.yaml"), "--tracking-uri", uri]
    for s in sets:
        args += ["--set", s]
    res = invoke_cli(args, d)
    # the CLI's exit code and its two streams, as the tests below read a finished process's
    r = types.SimpleNamespace(returncode=res.exit_code, stdout=res.stdout,
                              stderr=res.stderr + (f"\n{res.exception!r}" if res.exception else ""))
    from mlflow import MlflowClient

    return {"dir": d, "uri": uri, "proc": r, "source_state": source_state, "client": MlflowClient(uri),
            "name": "imagefolder-transfer"}


def test_image_folder_with_broken_files_trains_and_names_them(folder_job):
    import mlflow
    import torch

    r, c = folder_job["proc"], folder_job["client"]
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert "== dlops run: summary ==" in r.stdout
    assert "models:/imagefolder-transfer@champion" in r.stdout
    assert "skipped 3 unusable files" in r.stdout + r.stderr
    exp = c.get_experiment_by_name(folder_job["name"])
    search = _by_kind(c, exp.experiment_id, "search")
    assert len(search) == 1 and search[0].info.status == "FINISHED"
    assert {t.info.status for t in _by_kind(c, exp.experiment_id, "trial")} == {"FINISHED"}
    assert len(_by_kind(c, exp.experiment_id, "trial")) == 3
    assert search[0].data.tags["dlops.skipped_files"] == "3"
    manifest = json.loads(Path(c.download_artifacts(search[0].info.run_id, "data_manifest.json",
                                                    str(folder_job["dir"]))).read_text())
    skipped = {Path(s["path"]).relative_to(folder_job["dir"] / "digits-target").as_posix(): s["reason"]
               for s in manifest["skipped"]}
    assert set(skipped) == {"five/truncated.png", "six/empty.png", "seven/notes.txt"}, skipped
    assert all(isinstance(v, str) and v.strip() for v in skipped.values()), skipped
    assert "empty" in skipped["six/empty.png"].lower()
    # the hidden folder is no class and none of its files is used or reported
    assert manifest["class_map"] == {"eight": 0, "five": 1, "nine": 2, "seven": 3, "six": 4}
    used = [p for split in manifest["splits"].values() for p in split["target"]]
    assert used and not any(".cache" in p or "truncated" in p or "empty.png" in p for p in used)
    assert not any(".cache" in s["path"] for s in manifest["skipped"])
    n_good = sum(1 for p in (folder_job["dir"] / "digits-target").rglob("*.png")
                 if ".cache" not in p.parts and p.name not in ("truncated.png", "empty.png"))
    assert len(used) == n_good
    # the registered model: the folders' class names, the right output shape
    mv = c.get_model_version_by_alias("imagefolder-transfer", "champion")
    class_index = json.loads(mv.tags["dlops.class_index"])
    assert class_index == {"0": "eight", "1": "five", "2": "nine", "3": "seven", "4": "six"}
    mlflow.set_tracking_uri(folder_job["uri"])
    uri = "models:/imagefolder-transfer@champion"
    info = mlflow.models.get_model_info(uri)
    assert info.metadata["class_index"] == class_index
    # an outputs-only signature: the dlops pyfunc checks its inputs itself (float64 too); the size is the spec's
    assert info.signature.inputs is None and info.metadata["model_spec"]["image_size"] == 16
    assert list(info.signature.outputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 5]
    model = mlflow.pytorch.load_model(uri).eval()
    with torch.no_grad():
        out = model(torch.randn(7, 3, 16, 16))
    assert out.shape == (7, 5) and torch.isfinite(out).all()
    pyf = mlflow.pyfunc.load_model(uri)
    p = np.asarray(pyf.predict(np.random.default_rng(0).normal(size=(2, 3, 16, 16)).astype(np.float32)))
    assert p.shape == (2, 5)


def test_ensemble_with_ten_crop_tta_is_registered_with_its_config(folder_job):
    """An image-folder run with ``ensemble.tta=ten_crop``: the ensemble run records the TTA
    settings, the registered pyfunc carries them, and its output is the mean over 10 views
    (differs from the same members without TTA)."""
    import mlflow

    assert folder_job["proc"].returncode == 0, folder_job["proc"].stderr[-3000:]
    assert "with ten_crop TTA" in folder_job["proc"].stderr  # the progress lines
    c = folder_job["client"]
    erun = c.search_runs([c.get_experiment_by_name(folder_job["name"]).experiment_id],
                         "tags.`dlops.kind` = 'ensemble'")[0]
    assert erun.data.params["tta"] == "ten_crop" and erun.data.params["crop_fraction"] == "0.75"
    mlflow.set_tracking_uri(folder_job["uri"])
    uri = "models:/imagefolder-transfer-ensemble/1"  # holds an alias only if it beat its best member
    assert mlflow.models.get_model_info(uri).metadata["tta"] == "ten_crop"
    x = np.random.default_rng(1).normal(size=(3, 3, 16, 16)).astype(np.float32)
    p = np.asarray(mlflow.pyfunc.load_model(uri).predict(x))
    plain = np.asarray(mlflow.pyfunc.load_model(uri, model_config={"tta": "none"}).predict(x))
    assert p.shape == plain.shape == (3, 5)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    assert not np.allclose(p, plain)


def test_frozen_backbone_is_bitwise_unchanged_after_training(folder_job):
    import mlflow
    import torch

    assert folder_job["proc"].returncode == 0, folder_job["proc"].stderr[-3000:]
    mlflow.set_tracking_uri(folder_job["uri"])
    model = mlflow.pytorch.load_model("models:/imagefolder-transfer@champion")
    trained = model.state_dict()
    src = folder_job["source_state"]
    assert set(trained) == set(src)
    backbone = [k for k in src if not k.startswith("fc.")]
    buffers = [k for k in backbone if "running_mean" in k or "running_var" in k or "num_batches_tracked" in k]
    assert len(buffers) == 3 * 20 and len(backbone) > 100  # resnet18: 20 BatchNorm layers
    changed = [k for k in backbone if not torch.equal(trained[k], src[k])]
    assert changed == [], changed
    # the head is a new layer, trained: not the source's fc (same shape: 5 classes both)
    assert trained["fc.weight"].shape == src["fc.weight"].shape
    assert not torch.equal(trained["fc.weight"], src["fc.weight"])
    assert float((trained["fc.weight"] - src["fc.weight"]).abs().max()) > 1e-3
    # the trial really trained (one epoch, finite loss)
    c = folder_job["client"]
    mv = c.get_model_version_by_alias("imagefolder-transfer", "champion")
    assert math.isfinite(c.get_run(mv.run_id).data.metrics["train/loss"])


# ------------------------------------------------------------------------------------------------
# c: a registered model as the source of a new transfer
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry_job(tmp_path_factory, local_ray):
    from dlops.config import load_config
    from dlops.job import run_project

    d = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{d}/mlflow.db"
    common = [f"tracking.uri={uri}", f"ray.storage_path={d}/ray_results", "report.reporters=[bias_variance]"]
    old = os.getcwd()
    os.chdir(d)
    try:
        cfg1 = load_config(EXAMPLE, TINY + common)
        lines: list[str] = []
        first = run_project(cfg1, out=lines.append)
        cfg2 = load_config(EXAMPLE, common + [
            STAGES, "model.weights=models:/digits-transfer@champion", "registry.model_name=digits-from-registry",
            "pretrain.epochs=1", "ensemble.enabled=false", "search.confirm=null"])
        second = run_project(cfg2, out=lines.append)
    finally:
        os.chdir(old)
    from mlflow import MlflowClient

    return {"dir": d, "uri": uri, "cfg1": cfg1, "cfg2": cfg2, "first": first, "second": second,
            "lines": lines, "client": MlflowClient(uri)}


def test_registered_model_is_the_source_of_a_new_transfer(registry_job):
    import mlflow
    import torch

    from dlops.data.sources import load_task
    from dlops.data.transforms import build_transform
    from dlops.models.freeze import param_groups
    from dlops.models.transfer import apply_freeze, build_model, transfer_features
    from dlops.job.source import make_spec
    from dlops.train.trial import trial_spec
    from dlops.train.loop import fit_epoch, make_loader, seed_everything

    c, first, second, cfg2 = registry_job["client"], registry_job["first"], registry_job["second"], registry_job["cfg2"]
    assert first.pretrain_run_id is not None
    # the pretrain phase was skipped: no new pretrain run, no pretrain tag on the second search
    assert second.pretrain_run_id is None
    pre = _by_kind(c, second.experiment_id, "pretrain")
    assert [r.info.run_id for r in pre] == [first.pretrain_run_id]
    assert "dlops.pretrain_run_id" not in c.get_run(second.search_run_id).data.tags
    assert any("source weights from models:/digits-transfer@champion" in ln for ln in registry_job["lines"])
    assert second.model_uri == "models:/digits-from-registry@champion"
    assert second.n_trials == 3 and second.n_failed == 0
    assert {r.info.status for r in c.search_runs([second.experiment_id], max_results=1000)} == {"FINISHED"}

    mlflow.set_tracking_uri(registry_job["uri"])
    champ = mlflow.pytorch.load_model("models:/digits-transfer@champion").state_dict()
    new = mlflow.pytorch.load_model("models:/digits-from-registry@champion").state_dict()
    feats = [k for k in new if k.startswith("features.")]
    assert len(feats) == 14  # 2 conv (w, b) + 2 BatchNorm (w, b, mean, var, count)
    for k in feats:
        assert torch.equal(new[k], champ[k]), k
    heads = [k for k in new if k.startswith("head.")]
    assert heads and set(heads) | set(feats) == set(new)

    # the head was re-initialised and trained: replay the best trial (same seed, same steps) from
    # a fresh head on the champion's features, and get the registered head back
    best = second.best_config
    data = load_task(cfg2.data, cfg2.seed, cfg2.task)
    spec = trial_spec(make_spec(cfg2, data), best)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the trial's (search.resources.cpu = 1)
    try:
        seed_everything(cfg2.seed)
        model = build_model(spec)
        fresh = {k: v.detach().clone() for k, v in model.state_dict().items()}
        transfer_features(model, champ)
        apply_freeze(model, cfg2.model.freeze)
        lr = float(best["lr"])
        opt = torch.optim.SGD(param_groups(model, lr, 1.0), lr=lr, momentum=float(best["momentum"]))
        t = build_transform("none", 0.0, spec["image_size"], spec["mean"], spec["std"], train=True)
        for epoch in range(int(best["epochs"])):
            fit_epoch(model, make_loader(data.train.x, data.train.y, t, int(best["batch_size"]), shuffle=True,
                                         seed=cfg2.seed + epoch), opt)
    finally:
        torch.set_num_threads(threads)
    replay = model.state_dict()
    for k in heads:
        assert new[k].shape == fresh[k].shape
        torch.testing.assert_close(new[k], replay[k], rtol=1e-5, atol=1e-6, msg=k)
        assert not torch.equal(new[k], fresh[k]), f"{k} did not train"
        if new[k].shape == champ[k].shape:
            assert not torch.equal(new[k], champ[k]), f"{k} is the champion's"


# ------------------------------------------------------------------------------------------------
# d: multi-label with missing labels
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def multilabel_job(tmp_path_factory, local_ray):
    from dlops.config import load_config
    from dlops.job import run_project

    d = tmp_path_factory.mktemp("multilabel")
    rows = make_digits_images_module().write_multilabel(d, seed=0)
    csv = d / "digits-multilabel.csv"
    uri = f"sqlite:///{d}/mlflow.db"
    project = d / "multilabel.yaml"
    shutil.copy(REPO / "examples" / "multilabel.yaml", project)
    cfg = load_config(project, [f"data.target_csv={csv}", STAGES, f"tracking.uri={uri}",
                                f"ray.storage_path={d}/ray_results"])
    old = os.getcwd()
    os.chdir(d)
    try:
        summary = run_project(cfg, out=lambda s: None)
    finally:
        os.chdir(old)
    from mlflow import MlflowClient

    return {"dir": d, "uri": uri, "cfg": cfg, "summary": summary, "rows": rows, "client": MlflowClient(uri)}


def test_multilabel_example_leaves_missing_labels_out(multilabel_job):
    import mlflow
    import torch

    from dlops.data.sources import load_task

    c, cfg, s = multilabel_job["client"], multilabel_job["cfg"], multilabel_job["summary"]
    assert multilabel_job["rows"] == 1797
    assert s.n_trials == 3 and s.n_failed == 0
    trials = _by_kind(c, s.experiment_id, "trial")
    assert len(trials) == 3
    for r in trials:
        e = r.data.metrics["dev/error"]
        assert math.isfinite(e) and 0.0 <= e <= 1.0
    mlflow.set_tracking_uri(multilabel_job["uri"])
    mv = c.get_model_version_by_alias(cfg.model_name, "champion")
    assert json.loads(mv.tags["dlops.class_index"]) == {"0": "even", "1": "large", "2": "round"}
    model = mlflow.pytorch.load_model(f"models:/{cfg.model_name}@champion").eval()

    data = load_task(cfg.data, cfg.seed, cfg.task)
    y = data.dev.y.astype(np.float64)
    assert y.shape == (len(data.dev), 3)
    missing = np.isnan(y)
    assert 0.05 < missing.mean() < 0.3  # the CSV's ~15% missing entries reach the dev split
    x = torch.from_numpy((data.dev.x.transpose(0, 3, 1, 2).astype(np.float32) / 255.0 - 0.5) / 0.5)
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (len(data.dev), 3)
    prob = torch.sigmoid(logits).numpy().astype(np.float64)
    pred = prob >= 0.5
    per_label = []
    for j in range(3):
        obs = ~missing[:, j]
        per_label.append(np.mean(pred[obs, j] != (y[obs, j] == 1.0)))
    by_hand = float(np.mean(per_label))
    logged = c.get_run(s.best_run_id).data.metrics["dev/error"]
    assert mv.run_id == s.best_run_id
    assert by_hand == pytest.approx(logged, abs=1e-6)
    # counting a missing label as a negative would give another number
    naive = float(np.mean([np.mean(pred[:, j] != (np.nan_to_num(y[:, j], nan=0.0) == 1.0)) for j in range(3)]))
    assert abs(naive - logged) > 1e-4


# ------------------------------------------------------------------------------------------------
# the batched loader path (make_loader with a transform without augmentation)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["digits", "grey_to_rgb_resized", "multilabel_nan", "float_input"])
def test_batched_loader_gives_the_per_image_batches(case):
    """make_loader's batched path yields the per-image DataLoader's batches bit for bit, with the
    same strides (conv kernels depend on them) and label dtypes, in the same order."""
    import torch
    from torch.utils.data import DataLoader

    from dlops.data.transforms import build_transform
    from dlops.train.loop import ImageDataset, make_loader

    rng = np.random.default_rng(0)
    imagenet = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    x, y, size, (mean, std) = {
        "digits": (rng.integers(0, 256, (53, 8, 8, 1), dtype=np.uint8), rng.integers(0, 5, 53), None, ([0.5], [0.5])),
        "grey_to_rgb_resized": (rng.integers(0, 256, (41, 10, 12, 1), dtype=np.uint8), rng.integers(0, 5, 41), 16,
                                imagenet),
        "multilabel_nan": (rng.integers(0, 256, (37, 20, 20, 3), dtype=np.uint8),
                           np.where(rng.random((37, 3)) < 0.2, np.nan, rng.integers(0, 2, (37, 3))).astype(np.float32),
                           8, imagenet),
        "float_input": (rng.random((30, 8, 8, 1)).astype(np.float32), rng.integers(0, 5, 30), None, ([0.5], [0.5])),
    }[case]
    t = build_transform("none", 0.0, size, mean, std, train=True)
    assert t.batch is not None
    for shuffle in (True, False):
        g = torch.Generator()
        g.manual_seed(3)
        ref = list(DataLoader(ImageDataset(x, y, t), batch_size=16, shuffle=shuffle, generator=g))
        new = list(make_loader(x, y, t, 16, shuffle, 3))
        assert len(ref) == len(new)
        for (xa, ya), (xb, yb) in zip(ref, new):
            assert torch.equal(xa, xb) and xa.stride() == xb.stride()
            assert ya.dtype == yb.dtype and torch.equal(torch.nan_to_num(ya, nan=-1.0), torch.nan_to_num(yb, nan=-1.0))
    # a policy that augments per image keeps the per-image path
    assert build_transform("flip", 0.5, size, mean, std, train=True).batch is None
