"""Bad project files: one clear message naming the key and the value, exit code 2, nothing logged."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dlops.config import ConfigError, load_config

from dlops_testing import EXAMPLE


def _dlops(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlops.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_example_is_valid():
    cfg = load_config(EXAMPLE)
    assert cfg.search.metric == "dev/error"
    assert len(cfg.search.stages) >= 2
    assert {"lr", "momentum", "batch_size", "hidden"} <= set(cfg.search.space)
    assert cfg.search.space["lr"].scale == "log"
    assert cfg.search.space["momentum"].scale == "one_minus_log"


def test_set_overrides_any_key():
    cfg = load_config(EXAMPLE, ["search.space.lr.low=1e-5", "ensemble.top_k=5", "tracking.uri=sqlite:///x.db",
                                "search.stages.1.trials=3"])
    assert cfg.search.stages[1].trials == 3
    assert cfg.search.space["lr"].low == pytest.approx(1e-5)
    assert cfg.ensemble.top_k == 5
    assert cfg.tracking.uri == "sqlite:///x.db"


@pytest.mark.parametrize(
    "override, key, value",
    [
        ("search.spcae={}", "search.spcae", "unknown key"),
        ("pretrain.epochs=many", "pretrain.epochs", "many"),
        ("search.space.lr.low=0", "search.space.lr.low", "0"),
        ("search.space.lr.low=-1e-3", "search.space.lr.low", "-0.001"),
        ("search.metric=dev/accuracy", "search.metric", "dev/accuracy"),
        ("search.constraints=[{metric: gpu_hours, threshold: 1}]", "search.constraints[0].metric", "gpu_hours"),
        ("model.name=resnet9000", "model.name", "resnet9000"),
        ("augmentation.policy=sparkles", "augmentation.policy", "sparkles"),
        ("search.space.momentum.high=1.5", "search.space.momentum", "1.5"),
        ("search.stages=[]", "search.stages", "at least one stage"),
        ("search.space.wd={scale: log, low: 1.0e-6, high: 0.01}", "search.space.wd", "weight_decay"),
        ("model.freeze=sometimes", "model.freeze", "sometimes"),
        ("model.freeze=until:layer2", "model.freeze", "layer2"),
        ("model.weights=/no/such/weights.pt", "model.weights", "/no/such/weights.pt"),
        ("data.target_classes=[5, 5, 6]", "target_classes", "twice"),
        ("seed=true", "seed", "True"),
        ("ensemble.tta=mirror", "ensemble.tta", "mirror"),
        ("ensemble.crop_fraction=0", "ensemble.crop_fraction", "0"),
        ("search.stages=[{trials: 2, method: gpp}]", "search.stages.0.method", "gpp"),
        ("search.stages=[{trials: 2, method: gp, perturb: 0.3}]", "search.stages.0", "anchored"),
    ],
)
def test_bad_file_exit_2_names_key_and_nothing_logged(tmp_path: Path, override: str, key: str, value: str):
    r = _dlops(["run", str(EXAMPLE), "--set", override, "--tracking-uri", f"sqlite:///{tmp_path}/m.db"], tmp_path)
    assert r.returncode == 2, r.stderr
    assert key in r.stderr, r.stderr
    assert value in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    # nothing started or logged: no store, no Ray results, no artifacts
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_bad_yaml_and_missing_file(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsearch: [unclosed\n")
    r = _dlops(["run", str(bad)], tmp_path)
    assert r.returncode == 2 and "bad.yaml" in r.stderr and "YAML" in r.stderr
    r = _dlops(["run", str(tmp_path / "nope.yaml")], tmp_path)
    assert r.returncode == 2 and "nope.yaml" in r.stderr
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config(EXAMPLE, ["no-equals-sign"])


def test_validate_command_ok(tmp_path: Path):
    r = _dlops(["validate", str(EXAMPLE)], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout


def test_bad_data_exit_2_names_folder_and_nothing_logged(tmp_path: Path):
    """An empty class folder is bad input: one message naming it, exit 2, no store, no Ray results."""
    import numpy as np
    from PIL import Image

    data = tmp_path / "images"
    for cls in ("cat", "dog"):
        (data / cls).mkdir(parents=True)
        Image.fromarray(np.full((8, 8, 3), 128, dtype=np.uint8)).save(data / cls / "x.png")
    (data / "bird").mkdir()  # empty class folder
    work = tmp_path / "work"
    work.mkdir()
    example = EXAMPLE.parent / "imagefolder-transfer.yaml"
    r = _dlops(["run", str(example), "--set", f"data.target_dir={data}", "--set", "data.source_dir=null",
                "--set", "model.weights=null", "--tracking-uri", f"sqlite:///{work}/m.db"], work)
    assert r.returncode == 2, r.stderr
    assert str(data / "bird") in r.stderr and "Traceback" not in r.stderr
    assert list(work.iterdir()) == []


def test_missing_registered_source_model_exit_2_and_no_store(tmp_path: Path):
    r = _dlops(["run", str(EXAMPLE), "--set", "model.weights=models:/nope@champion",
                "--tracking-uri", f"sqlite:///{tmp_path}/m.db"], tmp_path)
    assert r.returncode == 2, r.stderr
    assert "models:/nope@champion" in r.stderr and "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_resume_with_nothing_to_resume_exits_2_before_ray_starts(tmp_path: Path):
    """No store, or a store without the project's experiment: exit 2 naming ``--resume``, and
    nothing created, Ray's session folder included (``RAY_TMPDIR`` points into ``tmp_path``):
    found before Ray starts."""
    import os

    uri = f"sqlite:///{tmp_path}/m.db"
    env = dict(os.environ, RAY_TMPDIR=str(tmp_path / "ray"), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    env.pop("MLFLOW_TRACKING_URI", None)
    r = subprocess.run([sys.executable, "-m", "dlops.cli", "run", str(EXAMPLE), "--resume", "--tracking-uri", uri],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2, r.stderr
    assert "--resume: there is no store at" in r.stderr and "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []  # no store, no Ray session folder
    from mlflow import MlflowClient

    MlflowClient(uri).create_experiment("another-project")  # a store, but not this project's experiment
    r = subprocess.run([sys.executable, "-m", "dlops.cli", "run", str(EXAMPLE), "--resume", "--tracking-uri", uri],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2, r.stderr
    assert "has no experiment 'digits-transfer'" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "ray").exists()
    assert MlflowClient(uri).get_experiment_by_name("digits-transfer") is None  # nothing half-written


def test_unreachable_or_wrong_tracking_server_exits_2_at_once(tmp_path: Path):
    """MLflow's client retries an unreachable server for minutes; dlops checks ``/health`` first
    and exits 2 naming the URI, before Ray starts or anything is written."""
    import http.server
    import socket
    import threading
    import time

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"

    class NotMlflow(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(404)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), NotMlflow)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    other = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        for uri, needle in [(closed, "no MLflow tracking server answers"), (other, "HTTP 404")]:
            for args in (["run", str(EXAMPLE)], ["report", "some-run-id"], ["serve", "models:/m@champion"]):
                t0 = time.time()
                r = _dlops([*args, "--tracking-uri", uri], tmp_path)
                assert r.returncode == 2, (args, r.stderr)
                assert uri in r.stderr and needle in r.stderr and "Traceback" not in r.stderr, r.stderr
                assert time.time() - t0 < 60, "it must not wait for MLflow's retries"
    finally:
        srv.shutdown()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_dumped_project_loads_again_with_every_default_written_out():
    """``project.json`` on the search run is ``model_dump``: every default is in it (``perturb`` on
    every stage, too), and ``dlops report`` / ``--resume`` validate it again."""
    from dlops.config import ProjectConfig

    cfg = load_config(EXAMPLE, [])
    again = ProjectConfig.model_validate(cfg.model_dump(mode="json"))
    assert again.model_dump(mode="json") == cfg.model_dump(mode="json")


def test_tracking_uri_precedence_flag_then_file_then_environment(tmp_path: Path, monkeypatch):
    """``--tracking-uri`` > the file's ``tracking.uri`` > ``$MLFLOW_TRACKING_URI`` (README), read
    off the store ``dlops run --resume`` names when there is nothing to resume (before Ray)."""
    from click.testing import CliRunner

    from dlops.cli import main

    monkeypatch.chdir(tmp_path)
    env_uri, file_uri, flag_uri = (f"sqlite:///{tmp_path}/{n}.db" for n in ("env", "file", "flag"))
    runner = CliRunner(env={"MLFLOW_TRACKING_URI": env_uri})
    cases = [(["--set", f"tracking.uri={file_uri}"], file_uri),
             (["--set", f"tracking.uri={file_uri}", "--tracking-uri", flag_uri], flag_uri),
             ([], env_uri)]
    for extra, want in cases:
        r = runner.invoke(main, ["run", str(EXAMPLE), "--resume", *extra])
        assert r.exit_code == 2, (extra, r.output)
        assert f"there is no store at {want} " in r.stderr, (extra, r.stderr)
    assert list(tmp_path.iterdir()) == []


def test_ray_address_precedence_flag_then_environment_then_file(tmp_path: Path, monkeypatch):
    """``--ray-address`` > ``$RAY_ADDRESS`` > the file's ``ray.address`` (README: Ray Jobs sets the
    variable for a submitted job's driver), for the CLI and for ``run_project`` alike; read off the
    address named by the error when nothing listens there (before Ray starts or any run)."""
    from click.testing import CliRunner

    from dlops.cli import main
    from dlops.errors import DlopsError
    from dlops.job.run import run_project
    from dlops_testing import TINY, free_port

    monkeypatch.chdir(tmp_path)
    env_a, file_a, flag_a = (f"127.0.0.1:{free_port()}" for _ in range(3))
    sets = [*TINY, f"tracking.uri=sqlite:///{tmp_path}/m.db", f"ray.address={file_a}"]
    runner = CliRunner(env={"RAY_ADDRESS": env_a})
    args = ["run", str(EXAMPLE)] + [a for s in sets for a in ("--set", s)]
    for extra, want in ((["--ray-address", flag_a], flag_a), ([], env_a)):
        r = runner.invoke(main, args + extra)
        assert r.exit_code == 2, (extra, r.output)
        assert f"nothing answers at {want}" in r.stderr, (extra, r.stderr)
    monkeypatch.setenv("RAY_ADDRESS", env_a)
    cfg = load_config(EXAMPLE, sets)
    with pytest.raises(DlopsError, match=f"nothing answers at {env_a}"):
        run_project(cfg, out=lambda s: None)
    monkeypatch.delenv("RAY_ADDRESS")
    with pytest.raises(DlopsError, match=f"nothing answers at {file_a}"):
        run_project(cfg, out=lambda s: None)
    assert not (tmp_path / "m.db").exists()
