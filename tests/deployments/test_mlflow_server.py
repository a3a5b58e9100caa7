"""deployments/mlflow-server.sh, tested as a team runs it: PostgreSQL (the Debian ``postgresql``
package: ``initdb`` in a temp dir, listening on 127.0.0.1), the server with the artifact proxy
(artifacts in a temp folder), a small ``dlops run`` from another working directory, then
``promote`` / ``rollback`` / ``ensemble`` / ``serve`` against it; a registered model loads from a
third directory through the server alone, and nothing lands in a local ``mlruns/``,
``mlartifacts/`` or ``mlflow.db``. Also: two processes registering at once never leave champion
on the worse version, and a server whose artifact root is a server-local ``file://`` folder is
refused before training."""

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
        env = dict(subprocess_env(), MLFLOW_PORT=str(self.port), MLFLOW_WORKERS=str(workers), **env)
        cmd = ["bash", str(REPO / "deployments" / "mlflow-server.sh")] if args is None else \
            ["mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(workers), *args]
        self.log = open(cwd / "server.log", "w")
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        t0 = time.time()
        while time.time() - t0 < 180:
            assert self.proc.poll() is None, (cwd / "server.log").read_text()[-3000:]
            try:
                if urllib.request.urlopen(self.uri + "/health", timeout=2).status == 200:
                    return
            except OSError:
                time.sleep(1)
        raise AssertionError("the MLflow server did not answer /health in 180 s")

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


@pytest.fixture(scope="module")
def team_run(server, tmp_path_factory):
    """One small dlops run from its own working directory against the server."""
    work = tmp_path_factory.mktemp("client")
    r = run_dlops(["run", str(EXAMPLE), "--tracking-uri", server["uri"], *sum((["--set", s] for s in RUN), []),
                   "--set", f"ray.storage_path={work}/ray_results"], cwd=work, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return {"work": work, "out": r.stdout, "err": r.stderr}


def _cli(uri: str, *args: str):
    from click.testing import CliRunner

    from dlops.cli import main

    return CliRunner().invoke(main, [*args, "--tracking-uri", uri], catch_exceptions=False)


def test_a_run_against_the_server_leaves_nothing_local_and_loads_from_a_third_dir(server, team_run, tmp_path):
    work = team_run["work"]
    assert "models:/digits-transfer@champion" in team_run["out"]
    for local in ("mlruns", "mlartifacts", "mlflow.db"):
        assert not (work / local).exists(), local
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


_RACER = """
import sys, time
from pathlib import Path
import mlflow
from mlflow import MlflowClient
from dlops.tracking.registry import register_and_promote
from dlops.tracking.promotion import fingerprint
uri, model_uri, err, barrier = sys.argv[1], sys.argv[2], float(sys.argv[3]), Path(sys.argv[4])
names = sys.argv[5:]
mlflow.set_tracking_uri(uri)
c = MlflowClient(uri)
fp = fingerprint("classification", ["a", "b"], "d", "t", "dev/error", "min")
print("ready", flush=True)
while not barrier.exists():
    time.sleep(0.005)
for n in names:
    p = register_and_promote(c, model_uri, n, {"dev/error": err}, "dev/error", "min", fingerprint=fp)
    print(n, p.version, p.aliases, flush=True)
"""


def test_two_processes_registering_together_leave_champion_on_the_better(server, tmp_path):
    """Two registrations finishing together (the end of two `dlops run`s of one project): each
    gets its own version, and champion ends on the better one, for every one of three models."""
    import mlflow
    import torch
    from mlflow import MlflowClient

    uri = server["uri"]
    mlflow.set_tracking_uri(uri)
    c = MlflowClient(uri)
    exp = c.create_experiment("race")
    with mlflow.start_run(experiment_id=exp):
        model_uri = mlflow.pytorch.log_model(torch.nn.Linear(2, 2), name="model",
                                             serialization_format="pickle").model_uri
    names = [f"race{i}" for i in range(3)]
    barrier = tmp_path / "go"
    env = dict(subprocess_env(), PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, "-c", _RACER, uri, model_uri, err, str(barrier), *names], cwd=tmp_path,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for err in ("0.3", "0.1")]
    for p in procs:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()[-2000:]
    barrier.touch()
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    for n in names:
        versions = c.search_model_versions(f"name = '{n}'")
        assert len(versions) == 2
        better = [m for m in versions if m.tags["dlops.metric.dev/error"] == repr(0.1)][0]
        assert c.get_model_version_by_alias(n, "champion").version == better.version, n


def test_a_server_local_file_artifact_root_is_refused_before_training(tmp_path):
    """``mlflow server --default-artifact-root file://...`` without the artifact proxy: a client would
    write its models to its own disk; dlops says so and trains nothing."""
    d = tmp_path / "srv"
    d.mkdir()
    srv = MlflowServer(d, {}, ["--backend-store-uri", f"sqlite:///{d}/mlflow.db", "--default-artifact-root",
                               (d / "server-only").as_uri(), "--no-serve-artifacts"], workers=1)
    try:
        work = tmp_path / "client"
        work.mkdir()
        r = run_dlops(["run", str(EXAMPLE), "--tracking-uri", srv.uri, *sum((["--set", s] for s in RUN), []),
                       "--set", f"ray.storage_path={work}/ray_results"], cwd=work, timeout=600)
        assert r.returncode == 2, r.stderr[-2000:]
        assert "artifact location" in r.stderr and "--serve-artifacts" in r.stderr
        assert "[search]" not in r.stderr and not (d / "server-only").exists()
    finally:
        srv.stop()
