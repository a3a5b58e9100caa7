"""The reporter contract (scopes) and the runner, on a real MLflow SQLite store.

A reporter declares the scopes it runs in (``trial``, ``search``, ``model``; default ``model``);
the runner runs each configured reporter in its scopes and logs each report to the run of that
scope: trial -> the trial's run, search -> the parent run, model -> the runs given.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dlops.errors import PluginError
from dlops.reporting import (
    DEFAULT_SCOPES,
    SCOPES,
    Report,
    ReportContext,
    SplitPredictions,
    reporter_scopes,
)

REPO = Path(__file__).resolve().parents[1]


class _Reporter:
    def __init__(self, scopes=None):
        if scopes is not None:
            self.scopes = scopes

    def report(self, context):
        return Report()


def test_reporter_scopes_default_and_declared():
    assert DEFAULT_SCOPES == ("model",)
    assert SCOPES == ("trial", "search", "model")
    assert reporter_scopes(_Reporter()) == ("model",)
    assert reporter_scopes(_Reporter(("trial", "model"))) == ("trial", "model")
    assert reporter_scopes(_Reporter(["search", "search"])) == ("search",)


@pytest.mark.parametrize("scopes, match", [
    (("trial", "epoch"), r"mine.*unknown scope 'epoch'"),
    ("trial", r"mine.*must be a tuple"),
    ((), r"mine.*empty"),
    (3, r"mine.*must be a tuple"),
])
def test_reporter_scopes_rejects_bad_declarations(scopes, match):
    with pytest.raises(PluginError, match=match):
        reporter_scopes(_Reporter(scopes), "mine")


def test_builtin_reporters_declare_their_scopes():
    from dlops.plugins import build_registry

    reg = build_registry()
    assert reporter_scopes(reg.get("reporters", "bias_variance")) == ("trial", "search", "model")
    assert reporter_scopes(reg.get("reporters", "learning_curves")) == ("trial", "search", "model")
    assert reporter_scopes(reg.get("reporters", "error_analysis")) == ("model",)


def test_reporting_package_imports_no_heavy_library_and_the_core_no_plugin():
    code = ("import sys, dlops.reporting as r; r.SPLITS; "
            "heavy = [m for m in ('torch', 'mlflow', 'ray', 'dlops_plugins') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    for f in sorted((REPO / "dlops" / "reporting").glob("*.py")):
        text = f.read_text()
        assert "dlops_plugins" not in text, f
        for builtin in ("bias_variance", "learning_curves", "error_analysis"):
            assert builtin not in text, (f, builtin)


def test_one_definition_of_the_split_names():
    from dlops.data import sources
    from dlops.reporting import SPLITS, contract

    assert sources.SPLITS is SPLITS is contract.SPLITS


class _Probe:
    """Records the scope and the context of every call; declares trial and search."""

    scopes = ("trial", "search")

    def __init__(self):
        self.calls = []

    def report(self, context):
        self.calls.append(context)
        out = Path(context.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"probe_{context.scope}.txt").write_text(context.title)
        return Report(metrics={"probe/n_trials": float(len(context.trials))}, artifacts=[out / f"probe_{context.scope}.txt"])


@pytest.fixture()
def store(tmp_path):
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("reporting", artifact_location=str(tmp_path / "artifacts"))
    parent = client.create_run(exp).info.run_id
    trials = []
    for i, (tr, td, dv) in enumerate([(0.10, 0.12, 0.20), (0.05, 0.09, 0.15)]):
        rid = client.create_run(exp, tags={"mlflow.parentRunId": parent}).info.run_id
        client.log_batch(rid, metrics=[Metric(k, v * (3 - e) / 2, 0, e) for e in (1, 2)
                                       for k, v in (("train/error", tr), ("train_dev/error", td), ("dev/error", dv))])
        trials.append({"trial_id": f"t{i}", "run_id": rid, "params": {"lr": 0.1 * (i + 1)},
                       "metrics": {"train/error": tr, "train_dev/error": td, "dev/error": dv}})
    failed = client.create_run(exp).info.run_id
    trials.append({"trial_id": "t2", "run_id": failed, "params": {"lr": 1.0}, "metrics": {}})
    return {"client": client, "parent": parent, "trials": trials, "dir": tmp_path}


def _arts(client, run_id):
    return {a.path for a in client.list_artifacts(run_id, "reports")}


def test_each_scope_runs_its_reporters_and_logs_to_its_run(store):
    from dlops.plugins import build_registry
    from dlops.reporting import report_model, report_search

    c, parent, trials = store["client"], store["parent"], store["trials"]
    reg = build_registry()
    probe = _Probe()
    reg.reporters["probe"] = probe
    names = ["bias_variance", "learning_curves", "error_analysis", "probe"]
    search_reps = report_search(c, reg, parent, trials, 0.01, names)
    assert set(search_reps) == {"bias_variance", "learning_curves", "probe"}  # error_analysis: model only
    # trial scope: each finished trial's own run, with its own errors and history
    for t in trials[:2]:
        m = c.get_run(t["run_id"]).data.metrics
        assert m["bias_variance/avoidable_bias"] == pytest.approx(t["metrics"]["train/error"] - 0.01)
        assert m["learning_curves/best_epoch"] == 2
        assert {"reports/bias_variance.md", "reports/bias_variance.png", "reports/learning_curves.png",
                "reports/probe_trial.txt"} <= _arts(c, t["run_id"])
        assert "reports/error_analysis.md" not in _arts(c, t["run_id"])
    assert _arts(c, trials[2]["run_id"]) == set()  # a failed trial: nothing to report
    # search scope: the parent run gets the table over the finished trials and every trial's row
    parent_arts = _arts(c, parent)
    assert {"reports/bias_variance_trials.md", "reports/trials.csv", "reports/probe_search.txt"} == parent_arts
    table = Path(c.download_artifacts(parent, "reports/bias_variance_trials.md", str(store["dir"]))).read_text()
    assert "| t0 |" in table and "| t1 |" in table and "| t2 |" not in table and "all trials" in table
    csv = Path(c.download_artifacts(parent, "reports/trials.csv", str(store["dir"]))).read_text().splitlines()
    assert len(csv) == 1 + len(trials)
    assert c.get_run(parent).data.metrics["learning_curves/n_trials"] == 3
    assert [ctx.scope for ctx in probe.calls] == ["trial", "trial", "search"]
    assert len(probe.calls[-1].trials) == 3 and probe.calls[-1].errors == {"human": 0.01}

    # model scope: only reporters that declare it (not the probe), logged to every run given
    probe.calls.clear()
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 30)
    prob = rng.dirichlet(np.ones(3), 30)
    ctx = ReportContext(errors={"human": 0.01, "train": 0.05, "train_dev": 0.09, "dev": 0.15, "test": 0.2},
                        out_dir=store["dir"] / "model", predictions={"dev": SplitPredictions(y, prob)},
                        class_names=["a", "b", "c"], title="m v1", trials=trials)
    (store["dir"] / "model").mkdir()
    reps = report_model(c, reg, [parent, trials[1]["run_id"]], names, ctx)
    assert list(reps) == ["bias_variance", "learning_curves", "error_analysis"] and not probe.calls
    for rid in (parent, trials[1]["run_id"]):
        assert {"reports/bias_variance.md", "reports/error_analysis.md", "reports/confusion_matrix.csv"} <= _arts(c, rid)
        assert c.get_run(rid).data.metrics["bias_variance/overfitting_to_dev"] == pytest.approx(0.05)
    with pytest.raises(PluginError, match="no_such_reporter"):
        report_model(c, reg, [parent], ["no_such_reporter"], ctx)


def test_a_bad_declared_scope_is_named_when_run(store):
    from dlops.plugins import build_registry
    from dlops.reporting import report_search

    reg = build_registry()
    reg.reporters["broken"] = _Reporter(("trial", "weekly"))
    with pytest.raises(PluginError, match="broken.*'weekly'"):
        report_search(store["client"], reg, store["parent"], store["trials"], 0.0, ["broken"])


class _WritesWithoutMkdir:
    """Writes into ``context.out_dir`` as the contract says, without creating it."""

    scopes = ("trial", "model")

    def report(self, context):
        path = Path(context.out_dir) / "plain.md"
        path.write_text(context.title)
        return Report(metrics={"plain/ok": 1.0}, artifacts=[path], summary="ok")


class _Raises:
    scopes = ("trial", "model")

    def report(self, context):
        raise ZeroDivisionError("a bug in a third-party reporter")


def test_out_dir_exists_and_a_raising_reporter_is_named_and_skipped(store):
    from dlops.plugins import build_registry
    from dlops.reporting import report_model, report_search

    c, parent, trials = store["client"], store["parent"], store["trials"]
    reg = build_registry()
    reg.reporters["plain"] = _WritesWithoutMkdir()
    reg.reporters["raises"] = _Raises()
    with pytest.warns(RuntimeWarning, match="reporter 'raises' failed in the trial scope: ZeroDivisionError"):
        report_search(c, reg, parent, trials, 0.0, ["raises", "plain"])
    for t in trials[:2]:  # the reporter after the broken one still ran and was logged
        assert "reports/plain.md" in _arts(c, t["run_id"])
        assert c.get_run(t["run_id"]).data.metrics["plain/ok"] == 1.0
    ctx = ReportContext(errors={"human": 0.0, "dev": 0.1}, out_dir=store["dir"] / "not-made-yet", title="m")
    with pytest.warns(RuntimeWarning, match="reporter 'raises' failed in the model scope"):
        reps = report_model(c, reg, [parent], ["raises", "plain", "bias_variance"], ctx)
    assert reps["raises"].summary.startswith("FAILED (ZeroDivisionError") and not reps["raises"].metrics
    assert reps["plain"].summary == "ok" and "bias_variance" in reps
    assert "reports/plain.md" in _arts(c, parent)
