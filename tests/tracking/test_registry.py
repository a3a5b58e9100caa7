"""The registry commands against a real SQLite store: the gate with stored specs and fingerprints,
aliases, the history, promote / rollback / models through the CLI, bad input (exit 2, nothing
changed). One tiny logged model is registered as many versions (the content does not matter to
the gate)."""

from __future__ import annotations

import json

import pytest

from dlops.search.space import Constraint
from dlops.tracking.promotion import fingerprint

FP = fingerprint("classification", ["0", "1", "2"], "dev0", "test0", "dev/error", "min")
CONS = (Constraint("latency_ms", "<=", 50.0),)


@pytest.fixture(scope="module", autouse=True)
def fast_settle():
    """The gate's settle wait (for concurrent registrations) is tested by the race of two dlops runs in
    tests/deployments/test_mlflow_server.py."""
    from dlops.tracking import registry

    old, registry.SETTLE_S = registry.SETTLE_S, 0.01
    yield
    registry.SETTLE_S = old


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    import mlflow
    import torch
    from mlflow import MlflowClient

    d = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{d}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    exp = client.create_experiment("reg", artifact_location=(d / "art").as_uri())
    with mlflow.start_run(experiment_id=exp):
        # pip_requirements given: MLflow would otherwise infer them in a subprocess (most of this fixture's time)
        info = mlflow.pytorch.log_model(torch.nn.Linear(2, 3), name="model", serialization_format="pickle",
                                        pip_requirements=["torch"])
    return {"dir": d, "uri": uri, "client": client, "model_uri": info.model_uri}


def _reg(store, name, err, fp=FP, lat=1.0, baseline=None):
    from dlops.tracking.registry import register_and_promote

    return register_and_promote(store["client"], store["model_uri"], name, {"dev/error": err, "latency_ms": lat},
                                "dev/error", "min", CONS, tags={"dlops.project": "p"}, fingerprint=fp,
                                baseline=baseline)


def _alias(store, name, alias):
    from dlops.tracking.registry import alias_version

    return alias_version(store["client"], name, alias)


def _cli(store, *args):
    """The CLI in-process (click's runner): exit code, stdout, stderr."""
    from click.testing import CliRunner

    from dlops.cli import main

    return CliRunner().invoke(main, [*args, "--tracking-uri", store["uri"]], catch_exceptions=False)


def test_gate_aliases_and_history_in_the_registry(store):
    from dlops.tracking.registry import history

    p1 = _reg(store, "m", 0.10)
    assert p1.aliases == ("challenger", "champion")
    p2 = _reg(store, "m", 0.20)  # worse: challenger only
    assert p2.aliases == ("challenger",) and _alias(store, "m", "champion") == p1.version
    p3 = _reg(store, "m", 0.01, lat=99.0)  # breaks a constraint: no alias at all
    assert p3.aliases == () and _alias(store, "m", "challenger") == p2.version
    p4 = _reg(store, "m", 0.0, fp=dict(FP, classes=["a", "b"]))  # 2 classes, error 0: not comparable
    assert p4.aliases == () and "2 classes vs 3" in p4.reason  # nor challenger: the same rule as promote
    assert _alias(store, "m", "champion") == p1.version and _alias(store, "m", "challenger") == p2.version
    # every registration its own version; spec and fingerprint stored on it
    mv = store["client"].get_model_version("m", p2.version)
    assert json.loads(mv.tags["dlops.gate"]) == {"metric": "dev/error", "mode": "min",
                                                  "constraints": ["latency_ms <= 50"]}
    assert json.loads(mv.tags["dlops.fingerprint"])["classes"] == ["0", "1", "2"]
    # the history, read back with MLflow's own client from registered-model tags
    ev = history(store["client"], "m")
    moves = [(e.alias, e.from_version, e.to_version) for e in ev]
    assert moves == [("challenger", None, p1.version), ("champion", None, p1.version),
                     ("challenger", p1.version, p2.version)]
    assert all(e.user and e.time.endswith("+00:00") for e in ev)


def test_ensemble_that_loses_to_its_best_member_gets_no_alias(store):
    bad = _reg(store, "m-ensemble", 0.86, baseline={"dev/error": 0.05})
    assert bad.aliases == () and "best member" in bad.reason
    good = _reg(store, "m-ensemble", 0.03, baseline={"dev/error": 0.05})
    assert good.aliases == ("challenger", "champion")
    worse = _reg(store, "m-ensemble", 0.90, baseline={"dev/error": 0.05})
    assert worse.aliases == () and _alias(store, "m-ensemble", "challenger") == good.version


def test_promote_refuses_forces_and_rolls_back_through_the_cli(store):
    a = _reg(store, "cli", 0.10)
    b = _reg(store, "cli", 0.30)
    r = _cli(store, "promote", "cli", b.version)
    assert r.exit_code == 1, r.stderr
    assert "refused" in r.stderr and "does not beat champion" in r.stderr
    assert _alias(store, "cli", "champion") == a.version
    r = _cli(store, "promote", "cli", b.version, "--dry-run")
    assert r.exit_code == 1 and _alias(store, "cli", "champion") == a.version
    r = _cli(store, "promote", "cli", b.version, "--force")  # --force needs a reason
    assert r.exit_code == 2 and "--reason" in r.stderr
    r = _cli(store, "promote", "cli", b.version, "--force", "--reason", "canary looked better")
    assert r.exit_code == 0, r.stderr
    assert _alias(store, "cli", "champion") == b.version
    r = _cli(store, "models", "show", "cli", "--json")
    assert r.exit_code == 0, r.stderr
    info = json.loads(r.stdout)
    last = info["history"][-1]
    assert last["decision"] == "forced" and "canary looked better" in last["reason"] and last["from"] == a.version
    assert [v["version"] for v in info["versions"]] == [b.version, a.version]  # newest first
    assert info["versions"][0]["satisficing"] == {"latency_ms <= 50": 1.0}
    r = _cli(store, "rollback", "cli")
    assert r.exit_code == 0, r.stderr
    assert _alias(store, "cli", "champion") == a.version
    r = _cli(store, "rollback", "cli")  # the first champion had no predecessor
    assert r.exit_code == 2 and "no earlier version" in r.stderr
    assert _alias(store, "cli", "champion") == a.version
    r = _cli(store, "models", "list")
    assert r.exit_code == 0 and "cli" in r.stdout and f"@champion -> v{a.version} dev/error=0.1" in r.stdout


@pytest.mark.parametrize("args,named", [
    (["promote", "nope", "1"], "nope"),
    (["promote", "gate2", "99"], "no version 99"),
    (["promote", "gate2", "x1"], "'x1'"),
    (["rollback", "gate2", "--alias", "shadow"], "shadow"),
    (["promote", "gate2", "1", "--alias", "nosuch"], "nosuch"),  # no new alias is made up
    (["models", "show", "nope"], "nope"),
])
def test_bad_input_exits_2_naming_it_and_changes_nothing(store, args, named):
    if _alias(store, "gate2", "champion") is None:
        _reg(store, "gate2", 0.1)
        _reg(store, "other", 0.1)
        _reg(store, "other", 0.05)
    before = store["client"].get_registered_model("gate2").tags
    r = _cli(store, *args)
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert named in r.stderr and "Traceback" not in r.stderr
    assert store["client"].get_registered_model("gate2").tags == before


def test_a_version_of_another_model_is_refused(store):
    from dlops.errors import RegistryError
    from dlops.tracking.registry import promote

    if _alias(store, "gate2", "champion") is None:
        _reg(store, "gate2", 0.1)
    o = _reg(store, "other2", 0.2)
    _reg(store, "other2", 0.3)
    # gate2 has one version; other2's version 2 is not one of gate2's
    with pytest.raises(RegistryError, match="gate2 has no version 2"):
        promote(store["client"], "gate2", "2", force=True, reason="x")
    assert o.version == "1"


def test_a_deleted_version_is_never_followed(store):
    from dlops.errors import RegistryError
    from dlops.tracking.registry import promote, rollback, show_model

    c = store["client"]
    a = _reg(store, "del", 0.2)
    b = _reg(store, "del", 0.1)
    assert _alias(store, "del", "champion") == b.version
    c.delete_model_version("del", a.version)
    with pytest.raises(RegistryError, match=f"earlier version {a.version} was deleted"):
        rollback(c, "del")
    assert _alias(store, "del", "champion") == b.version
    with pytest.raises(RegistryError, match="no version"):
        promote(c, "del", a.version)
    info = show_model(c, "del")
    assert [h["to_deleted"] for h in info["history"] if h["to"] == a.version] == [True, True]
    c.delete_model_version("del", b.version)  # champion's own version: MLflow drops the alias with it
    info = show_model(c, "del")
    assert info["lost_aliases"] == {"champion": b.version, "challenger": b.version}
    assert _cli(store, "models", "show", "del").output.count("points nowhere") == 2
    listed = {r["name"]: r for r in json.loads(_cli(store, "models", "list", "--json").stdout)}
    assert listed["del"]["aliases"]["champion"] == {"version": b.version, "dangling": True}
    assert f"@champion -> v{b.version} (DANGLING: version deleted)" in _cli(store, "models", "list").stdout
    r = _cli(store, "serve", "models:/del@champion")
    assert r.exit_code == 2 and "del@champion" in r.stderr


def test_promote_challenger_needs_eligible_and_comparable_with_the_champion(store):
    """``--alias challenger``: eligible and comparable with the champion, not better than it."""
    a = _reg(store, "ch", 0.10)
    b = _reg(store, "ch", 0.20)  # challenger now
    c = _reg(store, "ch", 0.40)  # worse than both: also the newest eligible, so challenger
    assert _alias(store, "ch", "challenger") == c.version
    r = _cli(store, "promote", "ch", b.version, "--alias", "challenger")  # worse than the champion: allowed
    assert r.exit_code == 0, r.stderr
    assert _alias(store, "ch", "challenger") == b.version and _alias(store, "ch", "champion") == a.version
    slow = _reg(store, "ch", 0.01, lat=99.0)
    r = _cli(store, "promote", "ch", slow.version, "--alias", "challenger")
    assert r.exit_code == 1 and "breaks latency_ms <= 50" in r.stderr
    other = _reg(store, "ch", 0.0, fp=dict(FP, classes=["a", "b"]))  # not comparable: no alias
    r = _cli(store, "promote", "ch", b.version, "--alias", "challenger")
    assert r.exit_code == 0 and _alias(store, "ch", "challenger") == b.version
    r = _cli(store, "promote", "ch", other.version, "--alias", "challenger")
    assert r.exit_code == 1 and "not comparable with champion version" in r.stderr and "2 classes vs 3" in r.stderr
    assert _alias(store, "ch", "challenger") == b.version and _alias(store, "ch", "champion") == a.version


def test_top_k_takes_comparable_eligible_versions_and_names_those_it_skips(store):
    from dlops.registry_ensemble import top_k_versions

    v = [_reg(store, "topk", 0.10).version, _reg(store, "topk", 0.30).version,
         _reg(store, "topk", 0.01, lat=99.0).version,  # the lowest error, but it breaks the constraint
         _reg(store, "topk", 0.001, fp=dict(FP, classes=["a", "b"])).version,  # best, but an easier task
         _reg(store, "topk", 0.20).version]
    lines: list[str] = []
    got = top_k_versions(store["client"], "topk", 2, out=lines.append)
    assert [str(mv.version) for mv in got] == [v[0], v[4]]
    assert len(lines) == 1
    assert f"{v[2]} (breaks latency_ms <= 50)" in lines[0]
    # anchored on the champion's fingerprint: the easier 2-class task never ranks above it
    assert f"{v[3]} (not comparable with the champion, version {v[0]}: classes differ (2 classes vs 3))" in lines[0]
    assert f" {v[1]} " not in lines[0] and f" {v[4]} " not in lines[0]


def test_member_names_from_an_ensembles_tags():
    """`models show` and `dlops serve`'s GET name an ensemble's members the same way."""
    from dlops.tracking.registry import member_names

    run = {"dlops.members": json.dumps(["t1", "t2"]), "dlops.member_uris": json.dumps(["models:/m/3", None])}
    assert member_names(run) == ["models:/m/3", "trial t2 (checkpoint only)"]
    assert member_names({"dlops.members": json.dumps(["models:/m/1", "models:/m/2"])}) == ["models:/m/1", "models:/m/2"]
    assert member_names({"dlops.members": "not json"}) == [] and member_names({}) == []
