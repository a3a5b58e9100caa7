"""Plugins end to end, through the CLI in subprocesses: a third-party plugin installed with pip
(tests/resources/dlops-test-plugin) listed by `dlops plugins list` and used by `dlops run` (its
augmentation policy and its reporter), the same project refused without it, a search that chooses
among policies, bias/variance metrics against each trial's own errors, and error analysis with tags
on real predictions. Real Ray, real MLflow (SQLite under tmp_path), read back with MlflowClient.

(Worker seeding, "augmentations differ across DataLoader workers and epochs, the same seed repeats
the sequence", is covered by tests/plugins/test_augment_policies.py.)
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "digits-transfer.yaml"
TEST_PLUGIN = REPO / "tests" / "resources" / "dlops-test-plugin"
EXPERIMENT = "digits-transfer"

#: overrides that make the example a few seconds of training
TINY = ["--set", "search.stages=[{trials: 2, epochs: 1}, {trials: 2, epochs: 1}]",
        "--set", "pretrain.epochs=1", "--set", "ray.num_cpus=2", "--set", "search.confirm=null"]
#: the project uses the test plugin's policy and reporter
WITH_PLUGIN = ["--set", "augmentation.policy=test_invert",
               "--set", "report.reporters=[bias_variance, test_split_count]"]
POLICY_CHOICES = ["none", "flip", "standard"]


def _dlops(args: list[str], cwd: Path, site: Path | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    """``python -m dlops.cli ARGS`` in ``cwd``; ``site`` (a pip --target dir) goes on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", "PYTHONPATH")}
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    paths = [str(site)] if site is not None else []
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    return subprocess.run([sys.executable, "-m", "dlops.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _run(cwd: Path, extra: list[str], site: Path | None = None) -> tuple[subprocess.CompletedProcess, str]:
    uri = f"sqlite:///{cwd}/m.db"
    return _dlops(["run", str(EXAMPLE), "--tracking-uri", uri, *TINY, *extra], cwd, site), uri


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """The test plugin pip-installed (no deps, no index) into a private --target directory."""
    d = tmp_path_factory.mktemp("plugin")
    src, site = d / "src", d / "site"
    shutil.copytree(TEST_PLUGIN, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                        "--quiet", "--target", str(site), str(src)], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (site / "dlops_test_plugin-0.1.0.dist-info").is_dir()
    return site


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(uri)


def _runs_by_kind(client) -> dict[str, list]:
    exp = client.get_experiment_by_name(EXPERIMENT)
    assert exp is not None
    out: dict[str, list] = {}
    for r in client.search_runs([exp.experiment_id], max_results=1000):
        out.setdefault(r.data.tags.get("dlops.kind"), []).append(r)
    return out


# ------------------------------------------------------------------------------------------------
# 1. `dlops plugins list` shows the third-party plugin next to the built-ins
# ------------------------------------------------------------------------------------------------


def test_plugins_list_shows_the_installed_third_party_plugin(plugin_site, tmp_path):
    r = _dlops(["plugins", "list"], tmp_path, plugin_site, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "BROKEN" not in r.stdout + r.stderr
    rows = {line.split()[0]: line for line in r.stdout.splitlines() if line.strip()}
    row = rows["test_plugin"]
    assert "0.1.0" in row and "entry point (dlops-test-plugin 0.1.0)" in row
    assert "augment_policies: test_invert" in row and "reporters: test_split_count" in row
    for builtin in ("augment", "augment_tv2", "bias_variance", "error_analysis", "learning_curves", "ensemble"):
        assert "builtin" in rows[builtin], rows.get(builtin)

    r = _dlops(["plugins", "list", "--json"], tmp_path, plugin_site, timeout=120)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["errors"] == {}
    by_name = {p["name"]: p for p in data["plugins"]}
    tp = by_name["test_plugin"]
    assert tp["module"] == "dlops_test_plugin" and tp["version"] == "0.1.0"
    assert tp["source"] == "entry point (dlops-test-plugin 0.1.0)"
    assert tp["provides"] == {"augment_policies": ["test_invert"], "reporters": ["test_split_count"]}
    assert by_name["augment"]["source"] == "builtin" and "standard" in by_name["augment"]["provides"]["augment_policies"]
    assert by_name["error_analysis"]["provides"] == {"reporters": ["error_analysis"]}

    # without the plugin on the path, the list has only the built-ins
    r = _dlops(["plugins", "list", "--json"], tmp_path, None, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "test_plugin" not in {p["name"] for p in json.loads(r.stdout)["plugins"]}


# ------------------------------------------------------------------------------------------------
# 2. a project uses the third-party policy and reporter in `dlops run`
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plugin_run(plugin_site, tmp_path_factory):
    d = tmp_path_factory.mktemp("plugin_run")
    r, uri = _run(d, WITH_PLUGIN, plugin_site)
    assert r.returncode == 0, r.stdout + r.stderr[-4000:]
    return {"proc": r, "uri": uri, "dir": d}


@pytest.mark.slow
def test_run_uses_third_party_policy_and_reporter(plugin_run):
    c = _client(plugin_run["uri"])
    kinds = _runs_by_kind(c)
    (parent,) = kinds["search"]
    assert parent.info.status == "FINISHED"
    assert len(kinds["trial"]) == 4 and all(t.info.status == "FINISHED" for t in kinds["trial"])
    # the policy is recorded on the search parent run: the project param and its description
    p = parent.data.params
    assert p["augmentation.policy"] == "test_invert"
    assert json.loads(p["augment.test_invert"])["policy"] == "test_invert"
    assert [a.path for a in c.list_artifacts(parent.info.run_id, "augment")] == ["augment/test_invert.json"]
    local = c.download_artifacts(parent.info.run_id, "project.json", str(plugin_run["dir"]))
    project = json.loads(Path(local).read_text())
    assert project["augmentation"]["policy"] == "test_invert"
    assert project["report"]["reporters"] == ["bias_variance", "test_split_count"]
    # the third-party reporter ran on the registered model with all four splits' predictions,
    # logged to the parent run and to the best trial's run; bias_variance ran too
    assert parent.data.metrics["test_split_count/n_splits"] == 4.0
    best = c.get_run(parent.data.tags["dlops.best_run_id"])
    assert best.data.metrics["test_split_count/n_splits"] == 4.0
    assert "bias_variance/avoidable_bias" in parent.data.metrics
    reports = {a.path for a in c.list_artifacts(parent.info.run_id, "reports")}
    assert "reports/bias_variance.md" in reports
    assert "test_split_count 4 splits" in plugin_run["proc"].stdout


@pytest.mark.slow
def test_third_party_policy_param_is_the_same_in_every_process(plugin_run, plugin_site):
    """`dlops run --resume` logs ``augment.<policy>`` again on the same parent run, and MLflow refuses
    a changed param value: the description of a policy without ``describe()`` must not contain
    anything process-specific (it used to hold ``repr(policy)`` with a memory address)."""
    parent = _runs_by_kind(_client(plugin_run["uri"]))["search"][0]
    probe = ("from dlops.data.policy import describe_policy, policy_param\n"
             "print(policy_param(describe_policy('test_invert', 0.5, 8, channels=1)))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(plugin_site), os.environ.get("PYTHONPATH")])))
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == parent.data.params["augment.test_invert"]
    assert " at 0x" not in r.stdout


# ------------------------------------------------------------------------------------------------
# 3. the same project without the plugin: exit 2, one clear message, nothing logged
# ------------------------------------------------------------------------------------------------


def test_without_the_plugin_exit_2_and_nothing_logged(tmp_path):
    r, _ = _run(tmp_path, WITH_PLUGIN, None)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "augmentation.policy" in r.stderr and "'test_invert'" in r.stderr
    assert "Traceback" not in r.stderr
    r2, _ = _run(tmp_path, ["--set", "report.reporters=[bias_variance, test_split_count]"], None)
    assert r2.returncode == 2, r2.stdout + r2.stderr
    assert "report.reporters[1]" in r2.stderr and "'test_split_count'" in r2.stderr
    assert not (tmp_path / "m.db").exists()
    assert not (tmp_path / "mlartifacts").exists() and not (tmp_path / "ray_results").exists()


# ------------------------------------------------------------------------------------------------
# 4. the policy as a searched hyperparameter
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def policy_search_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("policy_search")
    r, uri = _run(d, ["--set", "search.stages=[{trials: 6, epochs: 1, method: sobol}, {trials: 2, epochs: 1}]",
                      "--set", "search.space.policy={scale: choice, choices: [none, flip, standard]}"])
    assert r.returncode == 0, r.stdout + r.stderr[-4000:]
    return {"proc": r, "uri": uri, "dir": d}


@pytest.mark.slow
def test_search_chooses_among_policies(policy_search_run):
    c = _client(policy_search_run["uri"])
    kinds = _runs_by_kind(c)
    stages = {int(r.data.tags["dlops.stage"]): r for r in kinds["stage"]}
    assert sorted(stages) == [0, 1]
    trials: dict[int, list[str]] = {0: [], 1: []}
    for t in kinds["trial"]:
        trials[int(t.data.tags["dlops.stage"])].append(t.data.params["policy"])
    assert len(trials[0]) == 6 and len(trials[1]) == 2
    assert all(p in POLICY_CHOICES for ps in trials.values() for p in ps), trials
    assert len(set(trials[0])) > 1, f"stage 0 sampled one policy only: {trials[0]}"
    box0 = json.loads(stages[0].data.params["box.policy"])
    box1 = json.loads(stages[1].data.params["box.policy"])
    assert box0 == POLICY_CHOICES
    assert box1 and set(box1) <= set(box0), (box0, box1)
    assert set(trials[1]) <= set(box1), (trials[1], box1)
    # every policy the search may use is described on the parent run (none is the identity)
    (parent,) = kinds["search"]
    assert {"augment.flip", "augment.standard"} <= set(parent.data.params)
    # and each trial run carries the exact pipeline it ran (none: no pipeline param)
    for t in kinds["trial"]:
        pol = t.data.params["policy"]
        if pol == "none":
            assert "augment.pipeline" not in t.data.params
        else:
            desc = json.loads(t.data.params["augment.pipeline"])
            assert desc["policy"] == pol and desc["backend"] == "albumentations"


# ------------------------------------------------------------------------------------------------
# 5. bias/variance metrics agree with each trial's own logged errors
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("which", ["plugin_run", "policy_search_run"])
def test_bias_variance_agrees_with_logged_errors(which, request):
    job = request.getfixturevalue(which)
    c = _client(job["uri"])
    kinds = _runs_by_kind(c)
    (parent,) = kinds["search"]
    human = float(parent.data.params["human_level_error"])
    assert kinds["trial"]
    for t in kinds["trial"]:
        m = t.data.metrics
        name = t.info.run_name
        assert m["bias_variance/avoidable_bias"] == pytest.approx(m["train/error"] - human, abs=1e-9), name
        assert m["bias_variance/variance"] == pytest.approx(m["train_dev/error"] - m["train/error"], abs=1e-9), name
        assert m["bias_variance/data_mismatch"] == pytest.approx(m["dev/error"] - m["train_dev/error"], abs=1e-9), name
        if "test/error" in m:  # the registered (best) trial
            assert m["bias_variance/overfitting_to_dev"] == pytest.approx(m["test/error"] - m["dev/error"], abs=1e-9)


# ------------------------------------------------------------------------------------------------
# 6. error analysis with tags on real predictions
# ------------------------------------------------------------------------------------------------


def test_error_analysis_tag_shares_on_real_predictions(tmp_path):
    from scipy.ndimage import gaussian_filter
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    from dlops.plugins import build_registry
    from dlops.reporting import ReportContext, SplitPredictions

    digits = load_digits()
    x, y = digits.images, digits.target  # (1797, 8, 8) in 0..16, (1797,)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    tr, dv = order[:200], order[200:600]  # a small train set, 400 dev examples
    clf = LogisticRegression(max_iter=2000).fit(x[tr].reshape(len(tr), -1), y[tr])
    dev = x[dv].copy()
    blurred = np.zeros(len(dv), bool)
    blurred[::4] = True  # a known quarter of dev is really blurred before prediction
    dev[blurred] = np.stack([gaussian_filter(im, sigma=1.0) for im in dev[blurred]])
    prob = clf.predict_proba(dev.reshape(len(dv), -1))  # (400, 10)
    y_dev = y[dv]
    wrong = prob.argmax(1) != y_dev
    assert 0 < wrong.sum() < len(dv)
    ink = dev.reshape(len(dv), -1).sum(1)
    faint = ink < np.quantile(ink, 0.25)
    low_digit = y_dev < 3
    tags = [[t for t, on in (("blurry", blurred[i]), ("faint", faint[i]), ("low_digit", low_digit[i])) if on]
            for i in range(len(dv))]
    assert any(len(t) >= 2 for t in tags)  # several tags per example
    images = (dev * 255 / 16).astype(np.uint8)[:, :, :, None]  # (400, 8, 8, 1)
    ctx = ReportContext(errors={"human": 0.01, "dev": float(wrong.mean())}, out_dir=tmp_path,
                        predictions={"dev": SplitPredictions(y_dev, prob, images=images, tags=tags)},
                        class_names=[str(i) for i in range(10)])
    reg = build_registry()
    rep = reg.get("reporters", "error_analysis").report(ctx)

    n_wrong = int(wrong.sum())
    assert rep.metrics["error_analysis/n_errors"] == n_wrong
    assert rep.metrics["error_analysis/error"] == pytest.approx(n_wrong / len(dv))
    for tag, mask in (("blurry", blurred), ("faint", faint), ("low_digit", low_digit)):
        k = int((wrong & mask).sum())
        assert k > 0, tag
        assert rep.metrics[f"error_analysis/tag_share/{tag}"] == pytest.approx(k / n_wrong), tag
        assert rep.metrics[f"error_analysis/tag_ceiling/{tag}"] == pytest.approx(k / len(dv)), tag
    # the blur is a real cause: blurred examples are misclassified more often than the rest
    assert wrong[blurred].mean() > wrong[~blurred].mean()

    names = {p.name for p in rep.artifacts}
    assert {"error_analysis.md", "confusion_matrix.csv", "confusion_matrix.png", "top_losses.png",
            "error_tags.csv"} <= names
    for p in rep.artifacts:
        assert p.exists() and p.stat().st_size > 0
    for png in ("confusion_matrix.png", "top_losses.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.reader((tmp_path / "confusion_matrix.csv").open()))
    cm = np.array([[int(v) for v in r[1:]] for r in rows[1:]])
    assert cm.shape == (10, 10) and cm.sum() == len(dv)
    assert np.trace(cm) == len(dv) - n_wrong
    assert cm.sum(1).tolist() == np.bincount(y_dev, minlength=10).tolist()  # rows: true class
    tag_rows = {r["tag"]: r for r in csv.DictReader((tmp_path / "error_tags.csv").open())}
    assert set(tag_rows) == {"blurry", "faint", "low_digit"}
    assert int(tag_rows["blurry"]["count"]) == int((wrong & blurred).sum())
    assert float(tag_rows["blurry"]["share_of_mistakes"]) == pytest.approx((wrong & blurred).sum() / n_wrong,
                                                                          abs=1e-6)
