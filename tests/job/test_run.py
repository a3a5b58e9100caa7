"""The main job end to end on real Ray and a real MLflow SQLite store, read back with MlflowClient."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dlops_testing import EXAMPLE, TINY, invoke_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def job(tmp_path_factory, local_ray):
    """Run the tiny project twice into one store (the second run tests the promotion gate), on the
    module's local Ray."""
    from dlops.config import load_config
    from dlops.job import run_project

    d = tmp_path_factory.mktemp("job")
    old = os.getcwd()
    os.chdir(d)
    try:
        uri = f"sqlite:///{d}/mlflow.db"
        cfg = load_config(EXAMPLE, TINY + [f"tracking.uri={uri}", f"ray.storage_path={d}/ray_results",
                                           "ray.num_cpus=2",
                                           "report.reporters=[bias_variance, error_analysis, learning_curves, data_curve]"])
        lines: list[str] = []
        first = run_project(cfg, out=lines.append)
        # the second run confirms its top 2 configurations on one fresh seed each (search.confirm)
        cfg2 = load_config(EXAMPLE, TINY + [f"tracking.uri={uri}", f"ray.storage_path={d}/ray_results",
                                            "ray.num_cpus=2", "search.confirm={top_k: 2, seeds: 1}",
                                            "report.reporters=[bias_variance, error_analysis, learning_curves, data_curve]"])
        second = run_project(cfg2, out=lines.append)
    finally:
        os.chdir(old)
    from mlflow import MlflowClient

    return {"dir": d, "uri": uri, "cfg": cfg, "first": first, "second": second, "lines": lines,
            "client": MlflowClient(uri)}


def _runs(client, exp_id, search_id=None):
    flt = f"tags.`dlops.search_id` = '{search_id}'" if search_id else ""
    return client.search_runs([exp_id], filter_string=flt, max_results=1000)


def test_run_tree_nests_search_stage_trial(job):
    c, s = job["client"], job["first"]
    parent = c.get_run(s.search_run_id)
    sid = parent.data.tags["dlops.search_id"]
    runs = _runs(c, s.experiment_id, sid)
    kinds = {}
    for r in runs:
        kinds.setdefault(r.data.tags["dlops.kind"], []).append(r)
    assert len(kinds["search"]) == 1
    assert len(kinds["stage"]) == 2
    assert len(kinds["trial"]) == 5
    assert len(kinds["ensemble"]) == 1
    stage_ids = {int(r.data.tags["dlops.stage"]): r.info.run_id for r in kinds["stage"]}
    stage_params = {int(r.data.tags["dlops.stage"]): r.data.params for r in kinds["stage"]}
    for r in kinds["stage"] + kinds["ensemble"]:
        assert r.data.tags["mlflow.parentRunId"] == s.search_run_id
    per_stage = {0: 0, 1: 0}
    for r in kinds["trial"]:
        k = int(r.data.tags["dlops.stage"])
        per_stage[k] += 1
        assert r.data.tags["mlflow.parentRunId"] == stage_ids[k]
        assert r.data.params["stage"] == str(k)
        # the stage's method on each trial, as on its stage run (the UI can group trials by it)
        assert r.data.tags["dlops.stage_method"] == stage_params[k]["method"]
        assert {"lr", "momentum", "batch_size", "hidden"} <= set(r.data.params)
    assert per_stage == {0: 3, 1: 2}
    # the pretrain run is its own run, with its model
    pre = c.get_run(s.pretrain_run_id)
    assert pre.data.tags["dlops.kind"] == "pretrain" and pre.info.status == "FINISHED"
    assert "source/train/error" in pre.data.metrics


def test_every_run_ends_finished_never_running(job):
    c = job["client"]
    runs = c.search_runs([job["first"].experiment_id], max_results=1000)
    assert runs and {r.info.status for r in runs} == {"FINISHED"}


def test_trial_metric_histories_have_epoch_steps(job):
    c, s = job["client"], job["first"]
    sid = c.get_run(s.search_run_id).data.tags["dlops.search_id"]
    trials = [r for r in _runs(c, s.experiment_id, sid) if r.data.tags["dlops.kind"] == "trial"]
    for r in trials:
        epochs = 2 if r.data.tags["dlops.stage"] == "0" else 3
        assert r.data.params["epochs"] == str(epochs)
        for key in ("train/error", "train_dev/error", "dev/error", "train/loss", "latency_ms"):
            hist = c.get_metric_history(r.info.run_id, key)
            assert sorted(m.step for m in hist) == list(range(1, epochs + 1)), key
            assert all(math.isfinite(m.value) for m in hist)
        assert 0 < r.data.metrics["latency_ms"] < 1000
        assert 0 <= r.data.metrics["dev/error"] <= 1


def test_stage_1_box_lies_inside_stage_0_in_sampling_scale(job):
    c, s = job["client"], job["first"]
    sid = c.get_run(s.search_run_id).data.tags["dlops.search_id"]
    stages = {int(r.data.tags["dlops.stage"]): r for r in _runs(c, s.experiment_id, sid)
              if r.data.tags["dlops.kind"] == "stage"}
    for name in ("lr", "momentum", "hidden"):
        lo0, hi0 = json.loads(stages[0].data.params[f"box.{name}"])
        lo1, hi1 = json.loads(stages[1].data.params[f"box.{name}"])
        assert lo0 - 1e-9 <= lo1 <= hi1 <= hi0 + 1e-9, name
        assert hi1 - lo1 < hi0 - lo0, f"{name} did not zoom"
    # lr's stage-0 box is r in [-4, 0], i.e. the sampling scale, not lr itself
    assert json.loads(stages[0].data.params["box.lr"]) == pytest.approx([-4.0, 0.0])
    trials = [r for r in _runs(c, s.experiment_id, sid) if r.data.tags["dlops.kind"] == "trial"
              and r.data.tags["dlops.stage"] == "1"]
    lo1, hi1 = json.loads(stages[1].data.params["box.lr"])
    for r in trials:
        assert lo1 - 1e-9 <= math.log10(float(r.data.params["lr"])) <= hi1 + 1e-9


def test_registered_model_is_the_best_feasible_trial(job):
    c, s, cfg = job["client"], job["first"], job["cfg"]
    sid = c.get_run(s.search_run_id).data.tags["dlops.search_id"]
    trials = [r for r in _runs(c, s.experiment_id, sid) if r.data.tags["dlops.kind"] == "trial"]
    limit = cfg.search.constraints[0].threshold
    feasible = [r for r in trials if r.data.metrics["latency_ms"] <= limit and math.isfinite(r.data.metrics["dev/error"])]
    best_err = min(r.data.metrics["dev/error"] for r in feasible)
    mv = c.get_model_version_by_alias(cfg.model_name, "champion")
    assert str(mv.version) == "1"
    best_run = c.get_run(mv.run_id) if mv.run_id else c.get_run(mv.tags["dlops.run_id"])
    assert best_run.data.tags["dlops.kind"] == "trial"
    assert best_run.data.metrics["dev/error"] == pytest.approx(best_err)
    assert best_run.info.run_id == s.best_run_id
    assert s.model_aliases == ("challenger", "champion")  # the first version gets both
    class_index = json.loads(mv.tags["dlops.class_index"])
    assert class_index == {"0": "5", "1": "6", "2": "7", "3": "8", "4": "9"}


def test_registered_model_loads_with_signature_and_predicts(job):
    import mlflow

    from dlops.data.digits import build_transfer_data

    cfg = job["cfg"]
    mlflow.set_tracking_uri(job["uri"])
    uri = f"models:/{cfg.model_name}@champion"
    info = mlflow.models.get_model_info(uri)
    assert info.signature is not None
    # an outputs-only signature: the dlops pyfunc checks its inputs itself (float64 too); the size is the spec's
    assert info.signature.inputs is None and info.metadata["model_spec"]["image_size"] == 8
    assert list(info.signature.outputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 5]
    model = mlflow.pytorch.load_model(uri)
    d = cfg.data
    data = build_transfer_data(d.source_classes, d.target_classes, d.train_per_class, d.train_dev_per_class,
                               d.dev_fraction, cfg.seed)
    import torch

    x = torch.from_numpy((data.test.x.transpose(0, 3, 1, 2).astype(np.float32) / 255.0 - 0.5) / 0.5)
    with torch.no_grad():
        pred = model.eval()(x).argmax(1).numpy()
    err = float(np.mean(pred != data.test.y))
    assert err == pytest.approx(job["first"].best_metrics["test/error"], abs=1e-9)
    assert err < 0.5  # far better than chance (0.8) on 5 classes


def test_bias_variance_report_matches_logged_errors(job):
    c, s, cfg = job["client"], job["first"], job["cfg"]
    parent = c.get_run(s.search_run_id)
    m = parent.data.metrics
    assert m["bias_variance/avoidable_bias"] == pytest.approx(m["best/train/error"] - cfg.human_level_error)
    assert m["bias_variance/variance"] == pytest.approx(m["best/train_dev/error"] - m["best/train/error"])
    assert m["bias_variance/data_mismatch"] == pytest.approx(m["best/dev/error"] - m["best/train_dev/error"])
    assert m["bias_variance/overfitting_to_dev"] == pytest.approx(m["best/test/error"] - m["best/dev/error"])
    arts = [a.path for a in c.list_artifacts(s.search_run_id, "reports")]
    assert "reports/bias_variance.md" in arts
    local = c.download_artifacts(s.search_run_id, "reports/bias_variance.md", str(job["dir"]))
    text = Path(local).read_text()
    assert "avoidable bias" in text and "errors / examples" in text and "95% interval" in text
    # a gap is named only when it stands out beyond the noise (issue 16)
    if m["bias_variance/stands_out"] == 1.0:
        assert "Largest gap" in text
    else:
        assert "No gap stands out beyond the noise" in text and "Largest gap" not in text
    # every error carries its count and Wilson interval, in the parent run and the model's run
    for rid in (s.search_run_id, s.best_run_id):
        mm = c.get_run(rid).data.metrics
        for split, n in (("train", 150), ("train_dev", 50), ("dev", 348), ("test", 348)):
            assert mm[f"{split}/n"] == n
            assert mm[f"{split}/error_ci_low"] <= m[f"best/{split}/error"] <= mm[f"{split}/error_ci_high"]
    from dlops.job import format_summary

    assert "95% (Wilson)" in format_summary(s) and "dev [" in format_summary(s)


def test_data_curve_trains_transfer_and_scratch_in_the_report_phase(job):
    c, s = job["client"], job["first"]
    m = c.get_run(s.search_run_id).data.metrics
    assert m["data_curve/transfer/n/all"] == 150 and m["data_curve/scratch/n/all"] == 150
    assert m["data_curve/transfer/n/1_8"] == 20
    arts = {a.path for a in c.list_artifacts(s.search_run_id, "reports")}
    assert {"reports/data_curve.png", "reports/data_curve.md", "reports/data_curve.csv"} <= arts


def test_per_trial_reports_agree_with_each_trials_own_errors(job):
    c, s, cfg = job["client"], job["first"], job["cfg"]
    sid = c.get_run(s.search_run_id).data.tags["dlops.search_id"]
    trials = [r for r in _runs(c, s.experiment_id, sid) if r.data.tags["dlops.kind"] == "trial"]
    for r in trials:
        m = r.data.metrics
        assert m["bias_variance/avoidable_bias"] == pytest.approx(m["train/error"] - cfg.human_level_error)
        assert m["bias_variance/variance"] == pytest.approx(m["train_dev/error"] - m["train/error"])
        arts = {a.path for a in c.list_artifacts(r.info.run_id, "reports")}
        assert {"reports/bias_variance.md", "reports/bias_variance.png", "reports/learning_curves.png"} <= arts
    parent_arts = {a.path for a in c.list_artifacts(s.search_run_id, "reports")}
    assert {"reports/bias_variance_trials.md", "reports/trials.csv", "reports/confusion_matrix.png",
            "reports/confusion_matrix.csv", "reports/error_analysis.md"} <= parent_arts
    csv = Path(c.download_artifacts(s.search_run_id, "reports/trials.csv", str(job["dir"]))).read_text()
    assert len(csv.strip().splitlines()) == 1 + len(trials)


def test_dlops_report_recomputes_for_a_registered_model(job):
    cfg = job["cfg"]
    r = subprocess.run([sys.executable, "-m", "dlops.cli", "report", f"models:/{cfg.model_name}@champion",
                        "--split", "test", "--reporter", "error_analysis", "--reporter", "bias_variance",
                        "--tracking-uri", job["uri"]], capture_output=True, text=True, timeout=300,
                       cwd=job["dir"])
    assert r.returncode == 0, r.stderr[-2000:]
    c = job["client"]
    mv = c.get_model_version_by_alias(cfg.model_name, "champion")
    run = c.get_run(mv.run_id)
    # the test-split error analysis agrees with the registered model's test error
    assert run.data.metrics["error_analysis/error"] == pytest.approx(float(mv.tags["dlops.metric.test/error"]))
    assert "test error" in r.stdout
    bad = subprocess.run([sys.executable, "-m", "dlops.cli", "report", "no-such-run", "--tracking-uri", job["uri"]],
                         capture_output=True, text=True, timeout=120, cwd=job["dir"])
    assert bad.returncode == 2 and "no-such-run" in bad.stderr


def test_ensemble_registered_as_pyfunc_and_averages(job):
    import mlflow

    c, s, cfg = job["client"], job["first"], job["cfg"]
    mlflow.set_tracking_uri(job["uri"])
    assert len(s.ensemble_members) == 3
    mv = c.get_model_version(cfg.ensemble_name, "1")  # the first run's ensemble (it holds an alias only if it beat its best member)
    model = mlflow.pyfunc.load_model(f"models:/{cfg.ensemble_name}/{mv.version}")
    x = np.random.default_rng(0).normal(size=(4, 1, 8, 8)).astype(np.float32)
    p = model.predict(x)
    assert p.shape == (4, 5)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    erun = [r for r in c.search_runs([s.experiment_id], "tags.`dlops.kind` = 'ensemble'")
            if r.data.tags["mlflow.parentRunId"] == s.search_run_id][0]
    assert erun.data.metrics["test/error"] == pytest.approx(s.ensemble_test_error)
    assert json.loads(erun.data.params["members"]) == s.ensemble_members
    assert erun.data.params["tta"] == "none"  # the default: no test-time augmentation
    # the ensemble's model_spec holds what its members share; each member's own spec (its searched
    # hidden units) is in member_specs, in member order
    mine = [v for v in c.search_model_versions(f"name = '{cfg.ensemble_name}'") if v.run_id == erun.info.run_id]
    assert len(mine) == 1  # the version this search registered
    meta = mlflow.models.get_model_info(f"models:/{cfg.ensemble_name}/{mine[0].version}").metadata
    specs = meta["member_specs"]
    assert len(specs) == 3 and meta["members"] == s.ensemble_members
    for tid, sp in zip(s.ensemble_members, specs):
        trial = [r for r in c.search_runs([s.experiment_id], f"tags.`dlops.trial_id` = '{tid}'")][0]
        assert sp["hidden"] == int(trial.data.params["hidden"])
    hiddens = {sp["hidden"] for sp in specs}
    assert ("hidden" in meta["model_spec"]) == (len(hiddens) == 1)
    assert {"image_size", "in_channels", "mean", "std"} <= set(meta["model_spec"])


def test_second_run_is_challenger_and_gate_decides_champion(job):
    c, cfg = job["client"], job["cfg"]
    v1 = c.get_model_version(cfg.model_name, "1")
    v2 = c.get_model_version(cfg.model_name, "2")
    assert str(c.get_model_version_by_alias(cfg.model_name, "challenger").version) == "2"
    # the two runs' fingerprints are equal (the gate compares them), and name two different splits
    fp1, fp2 = json.loads(v1.tags["dlops.fingerprint"]), json.loads(v2.tags["dlops.fingerprint"])
    assert fp1 == fp2 and fp1["dev_split"] != fp1["test_split"]
    e1, e2 = float(v1.tags["dlops.metric.dev/error"]), float(v2.tags["dlops.metric.dev/error"])
    expected = "2" if e2 < e1 else "1"
    assert str(c.get_model_version_by_alias(cfg.model_name, "champion").version) == expected
    assert ("champion" in job["second"].model_aliases) == (expected == "2")


def test_summary_names_model_uris_and_ui_command(job):
    from dlops.job import format_summary

    s = job["first"]
    text = format_summary(s)
    assert f"models:/{job['cfg'].model_name}@champion" in text
    assert "mlflow ui --backend-store-uri sqlite:///" in text
    # the ensemble line shows the dev errors the gate compared, then the test errors, both labelled
    ens, single = s.ensemble_metrics, s.best_metrics
    shown = (f"dev error {ens['dev/error']:.4f} vs best single {single['dev/error']:.4f} (the gate's comparison); "
             f"test error {ens['test/error']:.4f} vs {single['test/error']:.4f}")
    assert s.gate_metric == job["cfg"].search.metric == "dev/error"
    assert f"ensemble       {s.ensemble_uri}  {shown} (3 members)" in text
    assert ens["test/error"] == pytest.approx(s.ensemble_test_error)
    printed = [line for line in job["lines"] if line.startswith("  ensemble of 3")]
    assert printed and printed[0].startswith(f"  ensemble of 3: {shown}; registered ")
    assert any(line.startswith("[search]") for line in job["lines"])


@pytest.mark.parametrize("sig,code,group", [(signal.SIGINT, 130, False), (signal.SIGTERM, 143, False),
                                            (signal.SIGTERM, 143, True)], ids=["sigint", "sigterm", "sigterm-group"])
def test_ctrl_c_leaves_no_run_running(tmp_path: Path, sig: int, code: int, group: bool):
    """SIGINT (Ctrl-C) or SIGTERM in the middle of the search: the CLI exits 130 / 143 and every
    run ends KILLED or FINISHED. SIGTERM to the driver alone (Kubernetes) or to its whole process
    group, Ray's processes included (``timeout``, systemd): no Ray abort (exit 134), no run left
    RUNNING, and ``--resume`` then finishes the search (after the group-wide SIGTERM)."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    cmd = [sys.executable, "-m", "dlops.cli", "run", str(EXAMPLE), "--tracking-uri", uri,
           "--set", "search.stages=[{trials: 4, epochs: 40}, {trials: 2, epochs: 8}]", "--set", "pretrain.epochs=1",
           "--set", "ray.num_cpus=2", "--set", "search.confirm=null"]
    p = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=group)
    client = MlflowClient(uri)
    deadline = time.time() + 120
    started = False
    while time.time() < deadline and p.poll() is None:
        time.sleep(1.0)
        try:
            exp = client.get_experiment_by_name("digits-transfer")
            runs = client.search_runs([exp.experiment_id], "tags.`dlops.kind` = 'trial'") if exp else []
        except Exception:
            runs = []
        # SIGTERM once every stage-0 trial has started: after --resume no new trial reopens stage 0
        if len(runs) >= (4 if sig == signal.SIGTERM else 1):
            started = True
            break
    assert started, "no trial started within 120 s"
    if group:
        os.killpg(p.pid, sig)  # the driver and the Ray processes it started
    else:
        p.send_signal(sig)
    out, _ = p.communicate(timeout=120)
    exp = client.get_experiment_by_name("digits-transfer")
    # a group-wide SIGTERM also stops Ray's processes; when Ray's driver sees them gone before the
    # runs are ended it exits 1 by itself (a race: 2 of 15 runs here): runs stay RUNNING as after a
    # kill -9, and --resume (below) must still finish the search
    race_lost = group and p.returncode == 1 and "terminated (SIGTERM)" not in out
    if not race_lost:
        assert p.returncode == code, out[-3000:]
        assert ("terminated (SIGTERM)" if sig == signal.SIGTERM else "interrupted") in out
        assert "SIGTERM received" not in out and "Traceback" not in out, out[-3000:]
        statuses = {r.info.status for r in client.search_runs([exp.experiment_id], max_results=1000)}
        assert "RUNNING" not in statuses
        assert "KILLED" in statuses
    if group:
        # --resume continues the search: every run then ends FINISHED, the stage runs that the
        # signal ended KILLED included (they run again with their resumed trials). Checked after the
        # group-wide SIGTERM, the harder case (Ray's processes stopped too; the driver alone leaves
        # them to Ray's own shutdown); the resume after kill -9 is tests/search/tune/test_engine_resume.py
        r = subprocess.run(cmd + ["--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        runs = client.search_runs([exp.experiment_id], max_results=1000)
        assert {(x.data.tags.get("dlops.kind"), x.info.status) for x in runs if x.info.status != "FINISHED"} == set()
        trials = [x.data.tags["dlops.trial_id"] for x in runs if x.data.tags.get("dlops.kind") == "trial"]
        assert len(trials) == len(set(trials)) == 6  # one run per trial


def test_common_spec_keeps_only_what_every_member_shares():
    from dlops.job.ensemble import common_spec

    a = {"name": "small_cnn", "image_size": 8, "hidden": 64, "mean": [0.5]}
    b = {"name": "small_cnn", "image_size": 8, "hidden": 128, "mean": [0.5]}
    assert common_spec([a, b]) == {"name": "small_cnn", "image_size": 8, "mean": [0.5]}
    assert common_spec([a, dict(a)]) == a
    assert common_spec([a, {"name": "small_cnn"}]) == {"name": "small_cnn"}  # a key one member lacks is not shared
    assert common_spec([]) == {}


def test_search_runs_have_unique_names_and_the_ui_context(job):
    """The MLflow UI: model-training experiment kind, a name per search, Source / Dataset columns."""
    c, s1, s2 = job["client"], job["first"], job["second"]
    exp = c.get_experiment(s1.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    r1, r2 = c.get_run(s1.search_run_id), c.get_run(s2.search_run_id)
    assert r1.info.run_name != r2.info.run_name
    assert r1.info.run_name == f"{job['cfg'].name}-search-{r1.data.tags['dlops.search_id'][:8]}"
    trials = [r for r in _runs(c, s1.experiment_id, r1.data.tags["dlops.search_id"]) if r.data.tags["dlops.kind"] == "trial"]
    for run in [r1] + trials:
        assert run.data.tags["mlflow.source.name"] == str(EXAMPLE) and run.data.tags["mlflow.user"]
        contexts = {i.dataset.name: [t.value for t in i.tags] for i in run.inputs.dataset_inputs}
        assert contexts == {f"{job['cfg'].name}-{k}": [k] for k in ("train", "train_dev", "dev", "test")}
    assert "mlflow.source.git.commit" in r1.data.tags  # the example lives in this git work tree
    # each trial carries its sampling-scale coordinates: lr.r = log10(lr), momentum.r = log10(1 - momentum)
    for t in trials:
        assert float(t.data.params["lr.r"]) == pytest.approx(math.log10(float(t.data.params["lr"])), abs=1e-3)
        assert float(t.data.params["momentum.r"]) == pytest.approx(math.log10(1 - float(t.data.params["momentum"])),
                                                                   abs=1e-3)
    assert [a.path for a in c.list_artifacts(s1.search_run_id, "search")] == ["search/stages.png"]


def test_best_trial_duration_excludes_the_model_logging(job):
    from mlflow import MlflowClient

    c, s = job["client"], job["first"]
    best = c.get_run(s.best_run_id)
    model = MlflowClient(job["uri"]).search_logged_models([s.experiment_id],
                                                          filter_string=f"source_run_id = '{s.best_run_id}'")
    assert model and best.info.end_time <= model[0].creation_timestamp  # the run ended before its model was logged


def test_confirmation_reruns_the_top_configs_and_registers_the_mean_winner(job):
    c, s = job["client"], job["second"]
    parent = c.get_run(s.search_run_id)
    runs = _runs(c, s.experiment_id, parent.data.tags["dlops.search_id"])
    confirm = [r for r in runs if r.data.tags.get("dlops.confirm") == "true" and r.data.tags["dlops.kind"] == "trial"]
    stage = [r for r in runs if r.data.tags["dlops.kind"] == "stage" and r.info.run_name == "confirm"]
    assert len(confirm) == 2 and len(stage) == 1 and stage[0].info.status == "FINISHED"
    table = json.loads(parent.data.tags["dlops.confirm"])
    by_id = {r.data.tags["dlops.trial_id"]: r for r in runs if r.data.tags["dlops.kind"] == "trial"}
    for row in table["configs"]:
        reruns = [r for r in confirm if r.data.params["confirm_of"] == row["trial_id"]]
        assert len(reruns) == 1 and reruns[0].data.params["seed"] == "1000"  # a fresh seed (the project's is 0)
        assert row["values"] == [pytest.approx(reruns[0].data.metrics["dev/error"])]
        for k in ("lr", "momentum", "batch_size", "hidden"):  # the same configuration, trained again
            assert reruns[0].data.params[k] == by_id[row["trial_id"]].data.params[k]
    means = {row["trial_id"]: row["mean"] for row in table["configs"]}
    assert table["winner"] == min(means, key=means.get)  # both satisfy the latency constraint in the tiny run
    assert parent.data.metrics["confirm/dev/error_mean"] == pytest.approx(means[table["winner"]])
    mv = c.get_model_version(job["cfg"].model_name, "2")
    run_id = mv.run_id or mv.tags["dlops.run_id"]
    assert run_id == by_id[table["winner"]].info.run_id == s.best_run_id  # the registered model is the winner's


@pytest.mark.slow
def test_a_search_whose_first_stage_is_gp_runs_through_the_cli(tmp_path: Path, local_ray):
    """``method: gp`` on the first stage: its first trials take Sobol points (nothing has ended
    yet), the rest come from the model; the CLI exits 0 and every trial ends FINISHED. (Click's
    runner, in this process, on the module's local Ray.)"""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = ["run", str(EXAMPLE), "--tracking-uri", uri,
            "--set", "search.stages=[{trials: 4, epochs: 1, method: gp}]", "--set", "pretrain.epochs=1",
            "--set", "ray.num_cpus=2", "--set", "search.confirm=null", "--set", "ensemble.enabled=false",
            "--set", "report.reporters=[]"]
    p = invoke_cli(args, tmp_path)
    assert p.exit_code == 0, (p.output[-3000:], p.exception)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("digits-transfer")
    trials = [r for r in client.search_runs([exp.experiment_id], max_results=100)
              if r.data.tags.get("dlops.kind") == "trial"]
    assert len(trials) == 4 and all(r.info.status == "FINISHED" for r in trials)
    assert len({(r.data.params["lr"], r.data.params["momentum"]) for r in trials}) == 4
