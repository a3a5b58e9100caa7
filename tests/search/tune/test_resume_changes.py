"""`dlops run FILE --resume` with a changed project file: a change that would alter the search is
refused (exit 2, keys named, search run left as it was) before Ray starts; safe changes are
accepted and recorded. Real MLflow (SQLite in tmp_path); no Ray is needed for the refusal."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from dlops.search.resume import ResumePoint, check_resume_changes, classify_changes, project_changes
from engine_helpers import tiny_overrides


def test_project_changes_names_nested_and_list_keys() -> None:
    old = {"seed": 0, "search": {"space": {"lr": {"low": 1e-4}}, "stages": [{"trials": 2, "epochs": 1}] * 2}}
    new = {"seed": 0, "search": {"space": {"lr": {"low": 1e-3}}, "stages": [{"trials": 2, "epochs": 1},
                                                                            {"trials": 2, "epochs": 5}]}}
    assert project_changes(old, new) == [("search.space.lr.low", 1e-4, 1e-3), ("search.stages[1].epochs", 1, 5)]
    assert project_changes(old, old) == []
    grown = {**old, "search": {**old["search"], "stages": old["search"]["stages"] * 2}}
    assert [k for k, _, _ in project_changes(old, grown)] == ["search.stages"]  # a list that changed length


def test_classify_changes_accepts_only_safe_keys() -> None:
    changes = [(k, 0, 1) for k in ("search.space.lr.low", "search.stages[0].epochs", "search.stages[1].epochs",
                                   "search.max_failures", "report.reporters", "data.train_per_class",
                                   "search.stages[1].trials", "search.metric")]
    refused, accepted = classify_changes(changes, started_stages=1)
    assert accepted == ["search.stages[1].epochs", "search.max_failures", "report.reporters"]
    assert refused == ["search.space.lr.low", "search.stages[0].epochs", "data.train_per_class",
                       "search.stages[1].trials", "search.metric"]
    assert classify_changes(changes[:2], started_stages=0) == (["search.space.lr.low"], ["search.stages[0].epochs"])


def _interrupted_search(project: Path, tmp: Path, overrides: list[str]) -> tuple[str, str]:
    """A search run as a Ctrl-C leaves it (KILLED, project.json logged, one stage-0 trial run)."""
    from mlflow import MlflowClient

    from dlops.config import load_config
    from dlops.job.records import log_project
    from dlops.job.run import load_data
    from dlops.tracking.store import ensure_experiment

    cfg = load_config(project, overrides)
    uri = f"sqlite:///{tmp / 'm.db'}"
    client = MlflowClient(uri)
    exp = ensure_experiment(client, cfg.experiment_name, uri, str(tmp / "art"))
    rid = client.create_run(exp, tags={"dlops.kind": "search", "dlops.search_id": "abc123"}).info.run_id
    log_project(cfg, load_data(cfg), client, rid)
    t = client.create_run(exp, tags={"dlops.kind": "trial", "dlops.search_id": "abc123", "dlops.stage": "0",
                                     "dlops.trial_id": "t0", "mlflow.parentRunId": rid}).info.run_id
    client.set_terminated(t, "KILLED")
    client.set_terminated(rid, "KILLED")
    return uri, rid


def test_resume_refuses_a_changed_space_with_exit_2_and_accepts_safe_changes(project_file: Path,
                                                                             tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from dlops.cli import main
    from dlops.config import load_config
    from dlops.search.resume import record_resume_changes

    base = tiny_overrides(tmp_path)
    uri, rid = _interrupted_search(project_file, tmp_path, base)
    # the store named explicitly: an earlier in-process mlflow.set_tracking_uri leaves MLFLOW_TRACKING_URI
    # in os.environ, which the CLI's --tracking-uri option would otherwise read
    args = ["run", str(project_file), "--tracking-uri", uri] + [x for o in base for x in ("--set", o)]
    res = CliRunner().invoke(main, args + ["--set", "search.space.lr.low=0.001", "--set", "search.max_failures=3",
                                           "--resume"])
    assert res.exit_code == 2, res.output
    assert "search.space.lr.low: 0.0001 -> 0.001" in res.output
    assert "search.max_failures" not in res.output.split("(safe to change")[0]  # a safe key is not named as refused
    assert "Traceback" not in res.output
    client = MlflowClient(uri)
    run = client.get_run(rid)
    assert run.info.status == "KILLED" and "dlops.resumes" not in run.data.tags

    # safe: more epochs for the stage no trial has reached, a bigger failure budget
    later = load_config(project_file, base + ["search.stages=[{trials: 2, epochs: 1}, {trials: 2, epochs: 4}]",
                                              "search.max_failures=2"])
    point = ResumePoint(rid, "abc123", "KILLED", str(tmp_path / "x"), False, 0)
    changes = check_resume_changes(client, point, later.model_dump(mode="json"))
    assert [(c["key"], c["old"], c["new"]) for c in changes] == [("search.max_failures", None, 2),
                                                                 ("search.stages[1].epochs", 1, 4)]
    client.set_tag(rid, "dlops.resumes", "1")
    record_resume_changes(client, rid, changes)
    tag = json.loads(client.get_run(rid).data.tags["dlops.resume_changes"])
    assert [c["key"] for c in tag] == ["search.max_failures", "search.stages[1].epochs"] and tag[0]["resume"] == 1


def test_interrupt_message_gives_the_exact_resume_command() -> None:
    from dlops.cli import resume_command

    cmd = resume_command("my project.yaml", ("search.stages=[{trials: 2}]",), "sqlite:///m.db", None)
    assert cmd == "dlops run 'my project.yaml' --set 'search.stages=[{trials: 2}]' --tracking-uri sqlite:///m.db --resume"
