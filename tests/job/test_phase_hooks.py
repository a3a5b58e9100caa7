"""The lifecycle hooks of the main job fire around every phase and the search, with typed
arguments, from a real third-party plugin (entry point) on a real run (real Ray, MLflow SQLite)."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

from dlops_testing import EXAMPLE, TINY

pytestmark = pytest.mark.slow

RECORDER = """
    from dlops import hookimpl

    CALLS = []

    @hookimpl
    def dlops_before_phase(phase, context):
        CALLS.append(("before_phase", phase, context))

    @hookimpl
    def dlops_after_phase(phase, context):
        CALLS.append(("after_phase", phase, context))

    @hookimpl
    def dlops_on_phase_error(phase, context, error):
        CALLS.append(("on_phase_error", phase, context, error))

    @hookimpl
    def dlops_before_search(config, parent_run_id):
        CALLS.append(("before_search", config, parent_run_id))

    @hookimpl
    def dlops_after_search(config, parent_run_id, best):
        CALLS.append(("after_search", config, parent_run_id, best))

    @hookimpl
    def dlops_on_search_error(config, parent_run_id, error):
        CALLS.append(("on_search_error", config, parent_run_id, error))
"""


@pytest.fixture
def recorder(tmp_path, monkeypatch):
    """The recording plugin installed as a distribution with a ``dlops`` entry point."""
    from dlops.plugins import get_registry

    site = tmp_path / "site"
    info = site / "recorder_dist-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: recorder-dist\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[dlops]\nrecorder = dlops_recorder_plugin\n")
    (site / "dlops_recorder_plugin.py").write_text(textwrap.dedent(RECORDER))
    monkeypatch.syspath_prepend(str(site))
    get_registry.cache_clear()
    import dlops_recorder_plugin

    assert "recorder" in {p.name for p in get_registry().plugins}
    yield dlops_recorder_plugin.CALLS
    sys.modules.pop("dlops_recorder_plugin", None)
    get_registry.cache_clear()


def _cfg(tmp_path, extra=()):
    from dlops.config import load_config

    return load_config(EXAMPLE, TINY + [f"tracking.uri=sqlite:///{tmp_path}/m.db", f"ray.storage_path={tmp_path}/rr",
                                        "ray.num_cpus=2", "ensemble.enabled=false", *extra])


def test_every_phase_and_the_search_fire_their_hooks(recorder, tmp_path, monkeypatch, local_ray):
    from dlops.job import JobContext, run_project
    from dlops.job.phases import PHASES

    monkeypatch.chdir(tmp_path)
    cfg = _cfg(tmp_path)
    summary = run_project(cfg, out=lambda s: None)
    phase_calls = [(c[0], c[1]) for c in recorder if c[0].endswith("_phase")]
    assert phase_calls == [(kind, name) for name, _ in PHASES for kind in ("before_phase", "after_phase")]
    contexts = {id(c[2]) for c in recorder if c[0].endswith("_phase")}
    assert len(contexts) == 1  # one context for the whole job
    ctx = next(c[2] for c in recorder if c[0] == "after_phase" and c[1] == "register")
    assert isinstance(ctx, JobContext) and ctx.config is cfg
    assert ctx.search_run_id == summary.search_run_id and ctx.best_model is not None
    before = [c for c in recorder if c[0] == "before_search"]
    after = [c for c in recorder if c[0] == "after_search"]
    assert len(before) == len(after) == 1
    assert before[0][1] is cfg and before[0][2] == summary.search_run_id
    assert after[0][3].trial_id == summary.best_trial_id
    # the search hooks fire inside the search phase
    names = [c[0] if not c[0].endswith("_phase") else f"{c[0]}:{c[1]}" for c in recorder]
    assert names.index("before_phase:search") < names.index("before_search") < names.index("after_search") \
        < names.index("after_phase:search")
    assert not [c for c in recorder if "error" in c[0]]


def test_a_failing_search_fires_the_error_hooks_with_the_before_arguments(recorder, tmp_path, monkeypatch, local_ray):
    from mlflow import MlflowClient

    from dlops.errors import TooManyFailuresError
    from dlops.job import run_project

    monkeypatch.chdir(tmp_path)
    cfg = _cfg(tmp_path, ["search.space.lr={scale: choice, choices: [1.0e+30]}", "search.max_failures=0",
                          "search.stages=[{trials: 2, epochs: 1, method: sobol}]"])
    with pytest.raises(TooManyFailuresError) as info:
        run_project(cfg, out=lambda s: None)
    errs = [c for c in recorder if c[0] == "on_phase_error"]
    assert [(c[1], c[3]) for c in errs] == [("search", info.value)]
    before_search_phase = next(c for c in recorder if c[0] == "before_phase" and c[1] == "search")
    assert errs[0][2] is before_search_phase[2]  # the before-hook's arguments plus the error
    search_errs = [c for c in recorder if c[0] == "on_search_error"]
    assert len(search_errs) == 1 and search_errs[0][1] is cfg and search_errs[0][3] is info.value
    assert not [c for c in recorder if c[0] == "after_phase" and c[1] == "search"]
    assert not [c for c in recorder if c[0] == "before_phase" and c[1] == "register"]
    run = MlflowClient(f"sqlite:///{tmp_path}/m.db").get_run(search_errs[0][2])
    assert run.info.status == "FAILED" and "TooManyFailuresError" in run.data.tags["dlops.error"]
