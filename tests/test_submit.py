"""`dlops submit`: the main job submitted through Ray's Jobs API to a real Ray head started with
`ray start --head` on this machine (loopback, dashboard on 127.0.0.1), into a real MLflow store
(SQLite). Bad input exits 2 before anything is submitted; the pure rules (tracking URI, outputs,
entrypoint) are checked directly."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from dlops.submit import (SubmitError, build_entrypoint, exit_code, is_loopback_address, job_tracking_uri,
                          local_outputs, submission_id)
from dlops_testing import EXAMPLE, TINY, free_port, run_dlops, subprocess_env


def test_loopback_addresses():
    assert is_loopback_address("http://127.0.0.1:8265") and is_loopback_address("localhost:8265")
    assert is_loopback_address("http://[::1]:8265")
    assert not is_loopback_address("http://head.example:8265") and not is_loopback_address("http://10.0.0.5:8265")


def test_tracking_uri_rules():
    assert job_tracking_uri("http://mlflow:5000", "http://head:8265") == "http://mlflow:5000"
    assert job_tracking_uri("sqlite:////abs/m.db", "http://127.0.0.1:8265") == "sqlite:////abs/m.db"
    with pytest.raises(SubmitError, match="--tracking-uri.*cannot reach"):
        job_tracking_uri("sqlite:////abs/m.db", "http://head:8265")
    with pytest.raises(SubmitError, match="relative"):
        job_tracking_uri("sqlite:///m.db", "http://127.0.0.1:8265")


def test_entrypoint_quotes_overrides_and_ids_are_unique():
    e = build_entrypoint("p.yaml", ["search.stages=[{trials: 2}]", "seed=1"], "http://m:5000", resume=True)
    assert shlex.split(e) == ["python", "-m", "dlops.cli", "run", "p.yaml", "--set", "search.stages=[{trials: 2}]",
                              "--set", "seed=1", "--tracking-uri", "http://m:5000", "--resume"]
    a, b = submission_id("my project", 0.0), submission_id("my project", 0.0)
    assert a.startswith("dlops-my-project-19700101-000000-") and a != b
    assert [exit_code(s) for s in ("SUCCEEDED", "FAILED", "STOPPED")] == [0, 1, 130]


def test_probe_answer_is_parsed_and_the_entrypoint_takes_the_interpreter():
    from dlops.submit import parse_probe

    logs = ("Running entrypoint for job x\ndlops-probe: RAY /opt/venv/bin/python\n"
            "dlops-probe: NO /opt/venv/bin/python: ModuleNotFoundError: No module named 'dlops'\n"
            "dlops-probe: OK /usr/local/bin/python3\n")
    got = parse_probe(logs)
    assert (got.python, got.ray_python) == ("/usr/local/bin/python3", "/opt/venv/bin/python")
    assert got.failed == ["/opt/venv/bin/python: ModuleNotFoundError: No module named 'dlops'"]
    assert parse_probe("dlops-probe: NO python: boom\n").python is None
    e = build_entrypoint("p.yaml", [], "http://m:5000", python="/opt/my env/bin/python")
    assert shlex.split(e)[:3] == ["/opt/my env/bin/python", "-m", "dlops.cli"]


def test_local_outputs_stay_in_the_working_directory(tmp_path):
    from dlops.config import load_config

    cfg = load_config(EXAMPLE, [])
    got = local_outputs(cfg, "sqlite:////x/m.db", "http://127.0.0.1:8265", cwd=tmp_path)
    assert got == [f"ray.storage_path={tmp_path / 'ray_results'}",
                   f"tracking.artifact_location={(tmp_path / 'mlartifacts').as_uri()}"]
    assert local_outputs(cfg, "http://m:5000", "http://head:8265", cwd=tmp_path) == []
    cfg2 = load_config(EXAMPLE, ["ray.storage_path=s3://bucket/rr"])
    assert local_outputs(cfg2, "http://m:5000", "http://127.0.0.1:8265", cwd=tmp_path) == []


def test_input_paths_absolute_for_a_local_head_refused_outside_for_a_remote_one(tmp_path):
    from dlops.config import load_config
    from dlops.submit import input_paths

    proj = tmp_path / "cfg"
    proj.mkdir()
    (tmp_path / "images").mkdir()
    (proj / "inside").mkdir()
    f = proj / "project.yaml"
    shutil.copy(EXAMPLE, f)
    cfg = load_config(f, ["data.target_dir=../images"])
    assert input_paths(cfg, proj, "http://127.0.0.1:8265") == [f"data.target_dir={tmp_path / 'images'}"]
    with pytest.raises(SubmitError, match="data.target_dir.*outside the project folder"):
        input_paths(cfg, proj, "http://head:8265")
    inside = load_config(f, ["data.target_dir=inside"])
    assert input_paths(inside, proj, "http://head:8265") == []  # uploaded with the folder


def test_a_relative_file_store_is_made_absolute_for_a_local_head(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert job_tracking_uri("./mlruns", "http://127.0.0.1:8265") == str(tmp_path / "mlruns")
    with pytest.raises(SubmitError, match="cannot reach"):
        job_tracking_uri("./mlruns", "http://head:8265")


@pytest.mark.parametrize("args,needle", [
    (["--set", "search.spcae={}"], "search.spcae"),
    (["--tracking-uri", "sqlite:////tmp/x.db", "--address", "http://head.example:8265"], "--tracking-uri"),
    (["--address", "http://127.0.0.1:9"], "cannot reach"),
])
def test_bad_input_exits_2_and_submits_nothing(tmp_path, args, needle):
    proj = tmp_path / "project.yaml"
    shutil.copy(EXAMPLE, proj)
    base = ["--address", "http://127.0.0.1:9", "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]
    r = run_dlops(["submit", str(proj), *base, *args], tmp_path, timeout=120)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project.yaml"]


@pytest.mark.slow
def test_submit_runs_the_main_job_on_a_ray_head(tmp_path, tmp_path_factory):
    """The head is started as a new user would: `.venv/bin/ray start --head` from a shell whose first
    `python` (and `python3`) on PATH lacks dlops; the job must run with the Python of the head's Ray."""
    from mlflow import MlflowClient

    proj = tmp_path / "project.yaml"
    shutil.copy(EXAMPLE, proj)
    bare = tmp_path_factory.mktemp("bare-bin")  # outside the project folder, which is uploaded
    system_python = shutil.which("python3", path="/usr/bin:/bin") or "/usr/bin/python3"
    for name in ("python", "python3"):
        (bare / name).symlink_to(system_python)
    head_env = dict(subprocess_env(), PATH=f"{bare}{os.pathsep}/usr/bin{os.pathsep}/bin")
    gcs, dash, agent = free_port(), free_port(), free_port()
    ray_cli = str(Path(sys.executable).parent / "ray")
    head = subprocess.Popen([ray_cli, "start", "--head", f"--port={gcs}", "--num-cpus=2", "--include-dashboard=true",
                             "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
                             f"--dashboard-agent-listen-port={agent}", "--disable-usage-stats", "--block"],
                            cwd=tmp_path, env=head_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    auth_mode = os.environ.get("RAY_AUTH_MODE")
    address = f"http://127.0.0.1:{dash}"
    try:
        t0 = time.time()
        while True:  # the Jobs API answers once the dashboard is up
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=2)
                break
            except urllib.error.HTTPError:  # it answers (401 without the token): it is up
                break
            except Exception:  # noqa: BLE001
                assert head.poll() is None, head.stdout.read()[-3000:]
                assert time.time() - t0 < 120, "the Ray head did not come up"
                time.sleep(1)
        uri = f"sqlite:///{tmp_path}/mlflow.db"
        sets = []
        for s in TINY:
            sets += ["--set", s]
        r = run_dlops(["submit", str(proj), "--address", address, "--tracking-uri", uri, *sets], tmp_path, timeout=600)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert "SUCCEEDED" in r.stderr and "== dlops run: summary ==" in r.stdout  # the job's logs, followed
        # the job ran with the Python of the head's Ray (this venv's), not the first `python` on its PATH
        assert f"{shlex.quote(sys.executable)} -m dlops.cli run project.yaml" in r.stderr, r.stderr[-2000:]
        c = MlflowClient(tracking_uri=uri, registry_uri=uri)
        exp = c.get_experiment_by_name("digits-transfer")
        runs = c.search_runs([exp.experiment_id])
        assert runs and {x.info.status for x in runs} == {"FINISHED"}
        assert c.get_model_version_by_alias("digits-transfer", "champion").version is not None
        # outputs where `dlops run` would put them, not in the job's uploaded copy of the folder
        assert exp.artifact_location == (tmp_path / "mlartifacts").as_uri()
        assert (tmp_path / "ray_results").is_dir() and (tmp_path / "mlartifacts").is_dir()
        # `dlops run`/`validate --ray-address` reach the token-authenticated head with no
        # RAY_AUTH_MODE in the environment, as `dlops submit` does; an explicit RAY_AUTH_MODE=disabled
        # is refused by the head: one line naming the address and the token, exit 2
        # (an earlier in-process init_ray of the suite may have set RAY_AUTH_MODE in os.environ)
        no_mode = {k: v for k, v in subprocess_env().items() if k != "RAY_AUTH_MODE"}
        validate = [sys.executable, "-m", "dlops.cli", "validate", str(proj), "--ray-address", f"127.0.0.1:{gcs}"]
        rv = subprocess.run(validate, cwd=tmp_path, env=no_mode, capture_output=True, text=True, timeout=180)
        assert rv.returncode == 0 and f"resources fit 127.0.0.1:{gcs}" in rv.stdout, rv.stderr[-2000:]
        rd = subprocess.run(validate, cwd=tmp_path, env=dict(no_mode, RAY_AUTH_MODE="disabled"),
                            capture_output=True, text=True, timeout=180)
        assert rd.returncode == 2 and "Traceback" not in rd.stderr, rd.stderr[-2000:]
        last = rd.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: --ray-address: cannot connect to the Ray cluster at 127.0.0.1:{gcs}")
        assert "token" in last
        # --no-wait prints the submission id and returns at once
        r2 = run_dlops(["submit", str(proj), "--address", address, "--tracking-uri", uri, "--no-wait",
                     "--set", "search.stages=[{trials: 1, epochs: 1}]", "--set", "ensemble.enabled=false"], tmp_path)
        assert r2.returncode == 0, r2.stderr
        sid = r2.stdout.strip().splitlines()[-1]
        assert sid.startswith("dlops-digits-transfer-")
        from ray.job_submission import JobStatus, JobSubmissionClient

        from dlops.submit import find_job_python, use_local_token

        use_local_token()
        client = JobSubmissionClient(address)
        # it returned while the job still runs (a whole `dlops run` takes 20 s or more); `wait`,
        # which follows a job to its end, ran for the first submission: this one is stopped
        assert client.get_job_status(sid) in (JobStatus.PENDING, JobStatus.RUNNING)
        client.stop_job(sid)
        t0 = time.time()
        while client.get_job_status(sid) not in (JobStatus.STOPPED, JobStatus.FAILED, JobStatus.SUCCEEDED):
            assert time.time() - t0 < 120, "the --no-wait job did not stop"
            time.sleep(1)
        # a cluster whose Pythons lack the module: one clear SubmitError naming each interpreter
        # tried and what to install, and only the probe job was submitted
        with pytest.raises(SubmitError) as err:
            find_job_python(client, address, {}, "dlops-missing-check", module="dlops_not_installed")
        msg = str(err.value)
        assert f"install dlops into the Python that runs Ray there ({sys.executable} -m pip install dlops)" in msg
        assert "python3: ModuleNotFoundError: No module named 'dlops_not_installed'" in msg
        ids = {j.submission_id for j in client.list_jobs()}
        assert "dlops-missing-check-probe" in ids and "dlops-missing-check" not in ids
    finally:
        if auth_mode is None:
            os.environ.pop("RAY_AUTH_MODE", None)  # use_local_token() set it for this process
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
