"""The CLI maps every DlopsError to one line and its exit code in one place (real runs, no mocks)."""

from __future__ import annotations

import pytest

from dlops_testing import EXAMPLE, TINY, invoke_cli, run_dlops


def _sets(tmp_path, *extra):
    out = []
    for s in [*TINY, f"tracking.uri=sqlite:///{tmp_path}/m.db", f"ray.storage_path={tmp_path}/rr", "ray.num_cpus=2",
              *extra]:
        out += ["--set", s]
    return out


@pytest.mark.slow
def test_nothing_to_register_is_one_line_and_exit_1(tmp_path, local_ray):
    """Through click's runner in this process (on the module's local Ray: a subprocess would add
    its imports and a Ray start); the exit code and stderr are the CLI's own."""
    from mlflow import MlflowClient

    r = invoke_cli(["run", str(EXAMPLE), *_sets(tmp_path, "search.constraints=[{metric: latency_ms, op: '<=', threshold: 0}]",
                                                "search.stages=[{trials: 2, epochs: 1, method: sobol}]")], tmp_path)
    assert r.exit_code == 1, (r.stderr[-3000:], r.exception)
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "nothing to register" in errors[0], r.stderr[-2000:]
    runs = MlflowClient(f"sqlite:///{tmp_path}/m.db").search_runs(
        [e.experiment_id for e in MlflowClient(f"sqlite:///{tmp_path}/m.db").search_experiments()])
    assert runs and {x.info.status for x in runs} <= {"FINISHED", "FAILED"}
    search = [x for x in runs if x.data.tags.get("dlops.kind") == "search"]
    assert [x.info.status for x in search] == ["FAILED"]
    assert "NothingToRegisterError" in search[0].data.tags["dlops.error"]


def test_bad_weights_file_is_exit_2_before_any_run(tmp_path):
    bad = tmp_path / "weights.pt"
    bad.write_bytes(b"not a state dict")
    r = run_dlops(["run", str(EXAMPLE), *_sets(tmp_path, f"model.weights={bad}")], tmp_path)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("error: model.weights") and str(bad) in lines[-1]
    assert len([line for line in lines if line.startswith("error:")]) == 1
    assert "weights_only" not in lines[-1].replace("torch.load(weights_only=True)", "")  # no unsafe advice
    assert not (tmp_path / "m.db").exists()  # found before Ray started or any run (or store) was created


def test_unknown_ensemble_method_is_a_config_error(tmp_path):
    r = run_dlops(["validate", str(EXAMPLE), "--set", "ensemble.method=median"], tmp_path)
    assert r.returncode == 2
    assert "ensemble.method: unknown ensemble method 'median'" in r.stderr and "average" in r.stderr


def test_a_ray_address_where_nothing_listens_is_exit_2_at_once(tmp_path):
    import time

    from dlops_testing import free_port

    address = f"127.0.0.1:{free_port()}"
    for cmd in (["validate", str(EXAMPLE), "--ray-address", address],
                ["run", str(EXAMPLE), *_sets(tmp_path), "--ray-address", address]):
        t0 = time.monotonic()
        r = run_dlops(cmd, tmp_path, timeout=120)
        assert r.returncode == 2, r.stderr[-2000:]
        assert "Traceback" not in r.stderr and f"nothing answers at {address}" in r.stderr
        assert time.monotonic() - t0 < 60  # not Ray's minutes of retries
    assert not (tmp_path / "m.db").exists()  # dlops run created no store and no run
