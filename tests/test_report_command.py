"""``dlops report`` on the project's own data and task, end to end: real Ray (one local Ray for the
module), a real MLflow SQLite store, ``dlops run`` and ``dlops report`` through the CLI (click's
runner, in this process: a subprocess would add its imports and its own Ray start to each run).

a. An image-folder project (three classes named by their folders, 8x8 grey PNGs of real digits,
   the project file in another folder than the one ``dlops run`` and ``dlops report`` start
   from): the recomputed error analysis names the folder's classes and counts the dev split the
   run logged in its manifest, and its error is the registered model's dev error.
b. A multi-label project (the example, with missing labels): the recomputed bias/variance gaps
   are those of the multi-label errors the main job registered.
c. The image folder gone: ``dlops report`` ends with exit code 2 and a message naming the folder.

Before the fix, ``dlops report`` rebuilt the digits data and scored single-label whatever the
project: a and b failed (a traceback, exit 1).
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from dlops_testing import REPO, invoke_cli, make_digits_images_module

pytestmark = pytest.mark.slow

#: folder name -> digit (words, so that class names can only come from the folders)
CLASSES = {"zero": 0, "one": 1, "two": 2}
PER_CLASS = 40

PROJECT = """\
name: folder-report
seed: 0
human_level_error: 0.01
data:
  source: imagefolder
  target_dir: images            # relative to this file's folder
  target_train_share: 0.5
  dev_share: 0.25
  image_size: 8
  channels: 1
model: {name: small_cnn, weights: null, freeze: none}
search:
  metric: dev/error
  mode: min
  space:
    lr:         {scale: log, low: 1.0e-2, high: 0.3, tier: 1}
    momentum:   {scale: one_minus_log, low: 0.9, high: 0.99, tier: 2}
    batch_size: {scale: choice, choices: [16], tier: 2}
    hidden:     {scale: log_int, low: 16, high: 32, tier: 2}
  stages:
    - {trials: 2, epochs: 2, method: sobol}
ensemble: {enabled: false}
ray: {num_cpus: 2}
report:
  reporters: [bias_variance]
"""




def _write_folder(root: Path) -> None:
    """``PER_CLASS`` real digits per class as 8x8 grey PNGs under ``root/<word>/``."""
    from PIL import Image
    from dlops.data.digits import load_raw_digits

    images, target = load_raw_digits()  # scikit-learn's load_digits, as dlops ships it
    x = (images.astype(np.float64) * 255 / 16).astype(np.uint8)
    for word, digit in CLASSES.items():
        (root / word).mkdir(parents=True)
        for i in np.flatnonzero(target == digit)[:PER_CLASS]:
            Image.fromarray(x[i]).save(root / word / f"{i:04d}.png")


def _run(args: list[str], cwd: Path):
    """``dlops run ARGS`` through the CLI, from ``cwd`` (on the module's local Ray)."""
    r = invoke_cli(["run", *args], cwd)
    assert r.exit_code == 0, (r.output[-3000:], r.exception)
    return r


def _report(args: list[str], uri: str, cwd: Path, monkeypatch):
    from click.testing import CliRunner

    from dlops.cli import main

    monkeypatch.chdir(cwd)
    return CliRunner().invoke(main, ["report", *args, "--tracking-uri", uri])


def _gaps_from_tags(tags: dict[str, str], human: float) -> dict[str, float]:
    e = {k: float(tags[f"dlops.metric.{k}/error"]) for k in ("train", "train_dev", "dev", "test")}
    return {"avoidable_bias": e["train"] - human, "variance": e["train_dev"] - e["train"],
            "data_mismatch": e["dev"] - e["train_dev"], "overfitting_to_dev": e["test"] - e["dev"]}


def _last(client, run_id: str, key: str) -> float:
    hist = client.get_metric_history(run_id, key)
    assert hist, key
    return max(hist, key=lambda m: m.timestamp).value


@pytest.fixture(scope="module")
def folder_job(tmp_path_factory, local_ray):
    d = tmp_path_factory.mktemp("report-folder")
    proj = d / "project"
    _write_folder(proj / "images")
    (proj / "project.yaml").write_text(PROJECT)
    elsewhere = d / "elsewhere"  # dlops run starts from another folder than the project file's
    elsewhere.mkdir()
    uri = f"sqlite:///{d}/mlflow.db"
    _run([str(proj / "project.yaml"), "--tracking-uri", uri, "--set", f"ray.storage_path={d}/ray_results"], elsewhere)
    from mlflow import MlflowClient

    return {"dir": d, "proj": proj, "uri": uri, "client": MlflowClient(uri)}


def test_report_on_an_image_folder_project_uses_its_own_dev_set(folder_job, tmp_path, monkeypatch):
    c, uri = folder_job["client"], folder_job["uri"]
    mv = c.get_model_version_by_alias("folder-report", "champion")
    res = _report(["models:/folder-report@champion", "--reporter", "error_analysis", "--reporter", "bias_variance"],
                  uri, tmp_path, monkeypatch)
    assert res.exit_code == 0, (res.output, res.exception)
    assert f"logged to run {mv.run_id}" in res.output
    assert "warning" not in res.output  # the rebuilt data are the run's (its data_manifest.json)
    search_id = mv.tags["dlops.search_run_id"]
    manifest = json.loads(Path(c.download_artifacts(search_id, "data_manifest.json", str(tmp_path))).read_text())
    n_dev = len(manifest["splits"]["dev"]["target"])
    assert 0 < n_dev < len(CLASSES) * PER_CLASS
    # error analysis ran only in `dlops report` (the project's reporters are [bias_variance])
    cm_path = Path(c.download_artifacts(mv.run_id, "reports/confusion_matrix.csv", str(tmp_path)))
    rows = list(csv.reader(cm_path.open()))
    assert rows[0][1:] == sorted(CLASSES)  # the folder's class names, in the class index order
    assert [r[0] for r in rows[1:]] == sorted(CLASSES)
    assert sum(int(v) for r in rows[1:] for v in r[1:]) == n_dev  # the dev split of THAT project
    md = Path(c.download_artifacts(mv.run_id, "reports/error_analysis.md", str(tmp_path))).read_text()
    assert f"of {n_dev} examples" in md
    err = c.get_run(mv.run_id).data.metrics["error_analysis/error"]
    assert err == pytest.approx(float(mv.tags["dlops.metric.dev/error"]), abs=1e-9)
    # the recomputed bias/variance gaps are the registered model's
    for gap, v in _gaps_from_tags(mv.tags, 0.01).items():
        assert _last(c, mv.run_id, f"bias_variance/{gap}") == pytest.approx(v, abs=1e-9), gap


def test_report_with_the_image_folder_gone_names_it(folder_job, tmp_path, monkeypatch):
    images = folder_job["proj"] / "images"
    moved = folder_job["dir"] / "images-moved"
    images.rename(moved)
    try:
        res = _report(["models:/folder-report@champion"], folder_job["uri"], tmp_path, monkeypatch)
    finally:
        moved.rename(images)
    assert res.exit_code == 2, (res.output, res.exception)
    assert str(images) in res.output and "Traceback" not in res.output


@pytest.fixture(scope="module")
def multilabel_job(tmp_path_factory, local_ray):
    d = tmp_path_factory.mktemp("report-multilabel")
    make_digits_images_module().write_multilabel(d / "data", seed=0)
    shutil.copy(REPO / "examples" / "multilabel.yaml", d / "multilabel.yaml")  # target_csv: data/...
    uri = f"sqlite:///{d}/mlflow.db"
    _run([str(d / "multilabel.yaml"), "--tracking-uri", uri, "--set", "search.stages=[{trials: 2, epochs: 2}]",
          "--set", "ensemble.enabled=false", "--set", "ray.num_cpus=2", "--set", f"ray.storage_path={d}/ray_results"], d)
    from mlflow import MlflowClient

    return {"dir": d, "uri": uri, "client": MlflowClient(uri)}


def test_report_on_a_multilabel_project_matches_the_multilabel_evaluation(multilabel_job, tmp_path, monkeypatch):
    c, uri = multilabel_job["client"], multilabel_job["uri"]
    mv = c.get_model_version_by_alias("digits-multilabel", "champion")
    before = {k: len(c.get_metric_history(mv.run_id, f"bias_variance/{k}")) for k in ("avoidable_bias", "variance")}
    res = _report(["models:/digits-multilabel@champion"], uri, tmp_path, monkeypatch)
    assert res.exit_code == 0, (res.output, res.exception)
    assert "bias_variance:" in res.output and "learning_curves:" in res.output
    for k, n in before.items():
        assert len(c.get_metric_history(mv.run_id, f"bias_variance/{k}")) == n + 1, k
    gaps = _gaps_from_tags(mv.tags, 0.0)
    for gap, v in gaps.items():
        assert math.isfinite(v)
        assert _last(c, mv.run_id, f"bias_variance/{gap}") == pytest.approx(v, abs=1e-9), gap
    # the multi-label error (mean per-label error over the observed labels) of the dev split,
    # from the recomputed markdown
    md = Path(c.download_artifacts(mv.run_id, "reports/bias_variance.md", str(tmp_path))).read_text()
    assert f"| dev | {100 * float(mv.tags['dlops.metric.dev/error']):.2f}% |" in md
