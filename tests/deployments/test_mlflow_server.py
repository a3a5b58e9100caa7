"""deployments/mlflow-server.sh, tested as a team runs it: PostgreSQL (the Debian ``postgresql``
package: ``initdb`` in a temp dir, listening on 127.0.0.1), the server with the artifact proxy
(artifacts in a temp folder), two small ``dlops run``s of the same project racing from their own
working directories (a barrier plugin makes them register at the same moment: each gets its own
version, champion ends on the better), then ``promote`` / ``rollback`` / ``ensemble`` / ``serve``
against it; a registered model loads from a third directory through the server alone, and
nothing lands in a local ``mlruns/``, ``mlartifacts/`` or ``mlflow.db``. Also: a server whose
artifact root is a server-local ``file://`` folder is refused before training."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from dlops_testing import EXAMPLE, REPO, free_port, run_dlops, subprocess_env

pytestmark = pytest.mark.slow

PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
RUN = ["search.stages=[{trials: 2, epochs: 1, method: sobol}]", "pretrain.epochs=1", "ensemble.top_k=2",
       "report.reporters=[]", "ray.num_cpus=2", "search.confirm=null"]


def _as_postgres() -> list[str]:
    """initdb refuses to run as root: run the server's commands as the package's ``postgres`` user."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server of its own in a temp dir on 127.0.0.1; stopped and removed after."""
    if not PG_BIN:
        pytest.skip("PostgreSQL is not installed (.ci/run installs the Debian package postgresql)")
    pg = Path(PG_BIN[-1])
    d = Path(tempfile.mkdtemp(prefix="dlops-pg-"))
    if os.geteuid() == 0:
        import pwd

        pw = pwd.getpwnam("postgres")
        os.chown(d, pw.pw_uid, pw.pw_gid)
    port = free_port()
    run = lambda *a: subprocess.run(_as_postgres() + [str(x) for x in a], check=True, capture_output=True,  # noqa: E731
                                    text=True, timeout=120)
    run(pg / "initdb", "-D", d / "data", "-A", "trust", "-U", "postgres", "-E", "UTF8")
    run(pg / "pg_ctl", "-D", d / "data", "-l", d / "log", "-w", "-t", "60",
        "-o", f"-h 127.0.0.1 -p {port} -k {d}", "start")
    try:
        run(pg / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "mlflow")
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/mlflow"  # SQLAlchemy 2.1 defaults to psycopg 3
    finally:
        subprocess.run(_as_postgres() + [str(pg / "pg_ctl"), "-D", str(d / "data"), "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=120)
        shutil.rmtree(d, ignore_errors=True)


class MlflowServer:
    """``deployments/mlflow-server.sh`` (or ``mlflow server ARGS``) in its own process group."""

    def __init__(self, cwd: Path, env: dict[str, str], args: list[str] | None = None, workers: int = 2) -> None:
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        # a loaded CI machine answers uvicorn's 5 s worker health check late: uvicorn would kill workers forever
        env = dict(subprocess_env(), MLFLOW_PORT=str(self.port), MLFLOW_WORKERS=str(workers),
                   MLFLOW_UVICORN_OPTS="--timeout-worker-healthcheck 120", **env)
        cmd = ["bash", str(REPO / "deployments" / "mlflow-server.sh")] if args is None else \
            ["mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(workers),
             "--uvicorn-opts", env["MLFLOW_UVICORN_OPTS"], *args]
        self.log = open(cwd / "server.log", "w")
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        t0 = time.time()
        while time.time() - t0 < 300:
            if self.proc.poll() is not None:
                self.log.close()
                raise AssertionError((cwd / "server.log").read_text()[-3000:])
            try:
                if urllib.request.urlopen(self.uri + "/health", timeout=2).status == 200:
                    return
            except OSError:
                time.sleep(1)
        self.stop()  # never leave a server behind
        raise AssertionError("the MLflow server did not answer /health in 300 s")

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory):
    d = tmp_path_factory.mktemp("server")
    art = d / "artifacts"
    srv = MlflowServer(d, {"MLFLOW_DB_URI": postgres, "MLFLOW_ARTIFACTS": art.as_uri()})
    yield {"uri": srv.uri, "artifacts": art, "dir": d}
    srv.stop()


#: the two runs of the race: the same project (same data, split and metric: comparable), one
#: search space whose learning rates barely move the new head in one epoch, one that fits it
RACERS = {"slow_lr": ["search.space.lr={scale: log, low: 1.0e-4, high: 2.0e-4, tier: 1}"],
          "good_lr": ["search.space.lr={scale: log, low: 0.05, high: 0.2, tier: 1}"]}


def barrier_site(d: Path) -> Path:
    """A site folder with tests/resources/dlops_barrier_plugin.py installed as an entry-point
    plugin (group ``dlops``), for a subprocess's ``PYTHONPATH``."""
    site = d / "site"
    info = site / "dlops_barrier_plugin-0.1.0.dist-info"
    info.mkdir(parents=True)
    shutil.copy(REPO / "tests" / "resources" / "dlops_barrier_plugin.py", site)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dlops-barrier-plugin\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[dlops]\nbarrier = dlops_barrier_plugin\n")
    return site


@pytest.fixture(scope="module")
def team_run(server, tmp_path_factory):
    """Two whole ``dlops run``s of the same project, each from its own working directory, racing
    against the server: a barrier plugin holds each before its register phase until both are
    there, so their promotion gates (and then their ensembles') run at the same moment."""
    d = tmp_path_factory.mktemp("race")
    env = dict(subprocess_env(), PYTHONPATH=str(barrier_site(d)), DLOPS_TEST_BARRIER=str(d / "barrier"),
               DLOPS_TEST_BARRIER_N="2")
    (d / "barrier").mkdir()
    procs = {}
    for label, extra in RACERS.items():
        work = d / label
        work.mkdir()
        args = ["run", str(EXAMPLE), "--tracking-uri", server["uri"],
                *sum((["--set", s] for s in RUN + extra + [f"ray.storage_path={work}/ray_results"]), [])]
        # the run likely to be worse gates 1 s after the other: with a champion read early (not right
        # before the move), it would still see none and overwrite the better one
        run_env = dict(env, DLOPS_TEST_BARRIER_DELAY_S="1.0" if label == "slow_lr" else "0")
        for _attempt in range(2):
            p = subprocess.Popen([sys.executable, "-m", "dlops.cli", *args], cwd=work, env=run_env,
                                 stdout=open(work / "out.txt", "w"), stderr=open(work / "err.txt", "w"))
            procs[label] = (work, p)
            # one Ray starting at a time: Ray gives a raylet 30 s to register, little for two on a busy machine
            t0 = time.time()
            while not (d / "barrier" / f"setup-{p.pid}").exists() and p.poll() is None and time.time() - t0 < 300:
                time.sleep(0.2)
            if p.poll() is None or "timed out during startup" not in (work / "err.txt").read_text():
                break  # started (or failed for another reason, reported below); else start it once more
    t0 = time.time()
    while any(p.poll() is None for _, p in procs.values()) and time.time() - t0 < 900:
        failed = [lab for lab, (_, p) in procs.items() if p.poll() not in (None, 0)]
        if failed:  # the other run would wait at the barrier for nothing
            break
        time.sleep(0.5)
    for _, p in procs.values():
        if p.poll() is None:
            p.terminate()
            p.wait(60)
    out = {}
    # a run that failed by itself first (the other may have been stopped at the barrier for it)
    for label, (work, p) in sorted(procs.items(), key=lambda kv: kv[1][1].returncode < 0):
        e = (work / "err.txt").read_text()
        assert p.returncode == 0, f"{label} exited {p.returncode}: {e[-3000:]}"
        out[label] = {"work": work, "out": (work / "out.txt").read_text(), "err": e}
    assert len(list((d / "barrier").glob("register-*"))) == 2  # both reached the register phase and met there
    return {"work": out["good_lr"]["work"], "runs": out}


def _cli(uri: str, *args: str):
    from click.testing import CliRunner

    from dlops.cli import main

    return CliRunner().invoke(main, [*args, "--tracking-uri", uri], catch_exceptions=False)


def test_a_run_against_the_server_leaves_nothing_local_and_loads_from_a_third_dir(server, team_run, tmp_path):
    for label, r in team_run["runs"].items():
        assert "models:/digits-transfer" in r["out"], label
        for local in ("mlruns", "mlartifacts", "mlflow.db"):
            assert not (r["work"] / local).exists(), (label, local)
    assert any(server["artifacts"].rglob("MLmodel"))  # the model is in the server's artifact folder
    from mlflow import MlflowClient

    mv = MlflowClient(server["uri"]).get_model_version_by_alias("digits-transfer", "champion")
    fp = json.loads(mv.tags["dlops.fingerprint"])  # what the metric means, stored by dlops run
    assert fp["classes"] == ["5", "6", "7", "8", "9"] and fp["metric"] == "dev/error" and fp["mode"] == "min"
    assert json.loads(mv.tags["dlops.gate"])["constraints"] == ["latency_ms <= 50"]
    code = ("import mlflow, numpy as np; m = mlflow.pyfunc.load_model('models:/digits-transfer@champion'); "
            "print(np.asarray(m.predict(np.zeros((2, 1, 8, 8), np.float32))).shape)")
    env = dict(subprocess_env(), MLFLOW_TRACKING_URI=server["uri"])
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().endswith("(2, 5)")
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlartifacts").exists()


def test_two_runs_finishing_together_each_get_a_version_and_champion_is_the_better(server, team_run):
    """The two racing ``dlops run``s: each registration its own version (no "latest"), for the
    model and for its ensemble, and champion on the better of the two by the optimizing metric."""
    from mlflow import MlflowClient

    c = MlflowClient(server["uri"])
    versions = c.search_model_versions("name = 'digits-transfer'")
    assert len(versions) == 2  # the fixture's two runs, before any other test adds one
    assert len({v.tags["dlops.search_run_id"] for v in versions}) == 2  # one version per run
    for label, r in team_run["runs"].items():  # each run names the version it registered
        mine = [v for v in versions if f"registered digits-transfer version {v.version} " in r["out"] + r["err"]]
        assert len(mine) == 1, (label, r["out"][-2000:])
    err = {v.version: float(v.tags["dlops.metric.dev/error"]) for v in versions}
    assert len(set(err.values())) == 2, err  # the two search spaces must not tie, or "better" means nothing
    better = min(err, key=err.get)
    assert c.get_model_version_by_alias("digits-transfer", "champion").version == better, err
    ens = c.search_model_versions("name = 'digits-transfer-ensemble'")
    assert len(ens) == 2 and len({v.tags["dlops.search_run_id"] for v in ens}) == 2
    by_search = {v.tags["dlops.search_run_id"]: v for v in versions}
    for v in ens:  # an ensemble's latency and size are measured and gated like a single model's
        assert float(v.tags["dlops.metric.latency_ms"]) > 0 and float(v.tags["dlops.metric.size_mb"]) > 0
        assert json.loads(v.tags["dlops.gate"])["constraints"] == ["latency_ms <= 50"]
        # its members: the run's registered best model by URI, the other trial as a checkpoint only
        single = by_search[v.tags["dlops.search_run_id"]]
        uris, ids = json.loads(v.tags["dlops.member_uris"]), json.loads(v.tags["dlops.members"])
        assert uris == [f"models:/digits-transfer/{single.version}" if t == single.tags["dlops.trial_id"] else None
                        for t in ids] and uris.count(None) == 1
        assert "1 of 2 members are trial checkpoints only" in v.tags["dlops.member_note"]
    from dlops.tracking.registry import alias_version

    champ = alias_version(c, "digits-transfer-ensemble", "champion")
    if champ is not None:  # an ensemble holds champion only if it beat its best member; then the better one
        e = {v.version: float(v.tags["dlops.metric.dev/error"]) for v in ens
             if float(v.tags["dlops.metric.dev/error"]) < float(v.tags["dlops.baseline.dev/error"])}
        assert e[champ] == min(e.values()), e


def test_promote_rollback_ensemble_and_serve_against_the_server(server, team_run, tmp_path):
    """A second version (the first's model, 0.05 worse: another search), refused, forced, rolled
    back; an ensemble of both registered and served."""
    import mlflow
    from mlflow import MlflowClient

    uri, name = server["uri"], "digits-transfer"
    mlflow.set_tracking_uri(uri)
    c = MlflowClient(uri)
    v1 = c.get_model_version_by_alias(name, "champion")
    tags = dict(v1.tags, **{"dlops.metric.dev/error": repr(float(v1.tags["dlops.metric.dev/error"]) + 0.05)})
    v2 = mlflow.register_model(f"models:/{name}/{v1.version}", name, tags=tags)
    r = _cli(uri, "promote", name, v2.version)
    assert r.exit_code == 1 and "does not beat champion" in r.stderr
    r = _cli(uri, "promote", name, v2.version, "--force", "--reason", "team decision")
    assert r.exit_code == 0, r.stderr
    assert c.get_model_version_by_alias(name, "champion").version == v2.version
    r = _cli(uri, "rollback", name)
    assert r.exit_code == 0, r.stderr
    assert c.get_model_version_by_alias(name, "champion").version == v1.version
    hist = json.loads(_cli(uri, "models", "show", name, "--json").stdout)["history"]
    assert [h["decision"] for h in hist[-2:]] == ["forced", "rollback"] and hist[-2]["reason"].count("team decision")
    r = _cli(uri, "ensemble", name, "--versions", f"{v1.version},{v2.version}")
    assert r.exit_code == 0, r.stderr
    assert "evaluated on the members' common split" in r.stderr and "registered digits-transfer-ensemble" in r.stdout
    assert "already exists" not in r.stderr and "Created version" not in r.stderr  # MLflow's chatter is dropped
    ens = max(c.search_model_versions(f"name = '{name}-ensemble'"), key=lambda m: int(m.version))
    assert json.loads(ens.tags["dlops.member_uris"]) == [f"models:/{name}/{v1.version}", f"models:/{name}/{v2.version}"]
    port = free_port()
    env = dict(subprocess_env(), MLFLOW_TRACKING_URI=uri)
    proc = subprocess.Popen([sys.executable, "-m", "dlops.cli", "serve", f"models:/{name}-ensemble/{ens.version}",
                             "--port", str(port)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        t0, got = time.time(), None
        while time.time() - t0 < 240 and got is None:
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            try:
                got = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read())
            except OSError:
                time.sleep(1)
        assert got is not None and got["kind"] == "ensemble" and got["version"] == str(ens.version)
        body = json.dumps({"inputs": [[[[0.0] * 8] * 8]]}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        pred = json.loads(urllib.request.urlopen(req, timeout=60).read())
        assert len(pred["probabilities"][0]) == 5
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlartifacts").exists()


def test_a_server_local_file_artifact_root_is_refused_before_training(postgres, tmp_path):
    """``mlflow server --default-artifact-root file://...`` without the artifact proxy: a client would
    write its models to its own disk; dlops says so and trains nothing, and leaves no experiment.
    (The server reuses the module's database, its schema already migrated: a fresh store would
    spend most of this test migrating; the experiment is a new one, so it gets the file:// root.)"""
    from mlflow import MlflowClient

    d = tmp_path / "srv"
    d.mkdir()
    srv = MlflowServer(d, {}, ["--backend-store-uri", postgres, "--default-artifact-root",
                               (d / "server-only").as_uri(), "--no-serve-artifacts"], workers=1)
    try:
        work = tmp_path / "client"
        work.mkdir()
        r = run_dlops(["run", str(EXAMPLE), "--tracking-uri", srv.uri, *sum((["--set", s] for s in RUN), []),
                       "--set", "tracking.experiment=file-root-check", "--set", f"ray.storage_path={work}/ray_results"],
                      cwd=work, timeout=600)
        assert r.returncode == 2, r.stderr[-2000:]
        assert "artifact location" in r.stderr and "--serve-artifacts" in r.stderr
        assert "[search]" not in r.stderr and not (d / "server-only").exists()
        exp = MlflowClient(srv.uri).get_experiment_by_name("file-root-check")
        assert exp is None or exp.lifecycle_stage == "deleted"  # nothing half-written
    finally:
        srv.stop()
