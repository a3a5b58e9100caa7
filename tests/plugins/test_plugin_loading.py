"""Plugin loading: a third-party plugin installed with pip, and broken plugins that must not take
the others down. Real pluggy and real entry points (dist-info directories on sys.path)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dlops.plugins import build_registry

TEST_PLUGIN = Path(__file__).resolve().parents[1] / "resources" / "dlops-test-plugin"


def _dist(tmp: Path, dist: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    """A minimal installed distribution: ``<dist>-0.1.dist-info`` plus top-level modules."""
    info = tmp / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[dlops]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
    for mod, src in modules.items():
        (tmp / f"{mod}.py").write_text(textwrap.dedent(src))


GOOD = """
    from dlops import hookimpl

    @hookimpl
    def dlops_augment_policies():
        return {"fake_identity": lambda magnitude, image_size, train: (lambda img: img)}
"""
RAISES = """
    raise RuntimeError("this plugin is broken on purpose")
"""
WRONG_SHAPE = """
    from dlops import hookimpl

    @hookimpl
    def dlops_reporters():
        return ["not", "a", "dict"]
"""
BAD_REPORTER = """
    from dlops import hookimpl

    @hookimpl
    def dlops_reporters():
        return {"fake_no_report": object()}
"""
BAD_POLICY = """
    from dlops import hookimpl

    @hookimpl
    def dlops_augment_policies():
        return {"fake_not_callable": 42}
"""


@pytest.fixture
def fake_plugins(tmp_path, monkeypatch):
    mods = {"fake_good_plugin": GOOD, "fake_raises_plugin": RAISES, "fake_wrong_shape_plugin": WRONG_SHAPE,
            "fake_bad_reporter_plugin": BAD_REPORTER, "fake_bad_policy_plugin": BAD_POLICY}
    _dist(tmp_path, "fake_dlops_plugins", {
        "fake_good": "fake_good_plugin", "fake_raises": "fake_raises_plugin",
        "fake_wrong_shape": "fake_wrong_shape_plugin", "fake_bad_reporter": "fake_bad_reporter_plugin",
        "fake_bad_policy": "fake_bad_policy_plugin",
    }, mods)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for m in mods:
        sys.modules.pop(m, None)


def test_broken_plugins_are_named_and_the_rest_loads(fake_plugins):
    reg = build_registry()
    assert set(reg.errors) == {"fake_raises", "fake_wrong_shape", "fake_bad_reporter", "fake_bad_policy"}
    assert "fake_raises" in reg.errors["fake_raises"] and "failed to load" in reg.errors["fake_raises"]
    assert "RuntimeError: this plugin is broken on purpose" in reg.errors["fake_raises"]
    assert "wrong shape" in reg.errors["fake_wrong_shape"] and "dlops_reporters() must return a dict" in reg.errors[
        "fake_wrong_shape"]
    assert "report(context)" in reg.errors["fake_bad_reporter"]
    assert "fake_not_callable" in reg.errors["fake_bad_policy"]
    # the good third-party plugin and every built-in still load
    assert "fake_identity" in reg.augment_policies
    assert {"standard", "tv2_randaugment"} <= set(reg.augment_policies)
    assert {"bias_variance", "error_analysis", "learning_curves"} <= set(reg.reporters)
    assert "fake_no_report" not in reg.reporters
    loaded = {i.name for i in reg.plugins}
    assert "fake_good" in loaded and not loaded & set(reg.errors)
    assert reg.manager.get_plugin("fake_wrong_shape") is None  # unregistered from pluggy too


def test_third_party_plugin_installed_with_pip(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(TEST_PLUGIN, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                        "--no-index", "--quiet", "--target", str(site), str(src)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert list(site.glob("dlops_test_plugin-0.1.0.dist-info"))
    probe = textwrap.dedent("""
        import json, numpy as np
        from dlops.plugins import build_registry
        from dlops.reporting import ReportContext
        reg = build_registry()
        pol = reg.get("augment_policies", "test_invert")(magnitude=1.0, image_size=None, train=True)
        img = np.zeros((2, 2, 1), np.uint8)
        rep = reg.get("reporters", "test_split_count").report(ReportContext(errors={}, out_dir="."))
        info = next(i for i in reg.plugins if i.name == "test_plugin")
        print(json.dumps({"errors": reg.errors, "inverted": int(pol(img).max()), "metrics": rep.metrics,
                          "source": info.source, "provides": info.provides}))
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["errors"] == {}
    assert out["inverted"] == 255
    assert out["metrics"] == {"test_split_count/n_splits": 0.0}
    assert out["source"] == "entry point (dlops-test-plugin 0.1.0)"
    assert out["provides"] == {"augment_policies": ["test_invert"], "reporters": ["test_split_count"]}


MISSPELLED = """
    from dlops import hookimpl

    @hookimpl
    def dlops_reporter():
        return {"never_loaded": object()}
"""
UNDECORATED = """
    def dlops_augment_policy():
        return {}

    def dlops_reporters():
        return {}
"""


def test_a_misspelled_hook_shows_as_broken_with_the_hook_named(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from dlops.cli import main
    from dlops.plugins import get_registry

    mods = {"fake_misspelled_plugin": MISSPELLED, "fake_undecorated_plugin": UNDECORATED}
    _dist(tmp_path, "fake_misspelled", {"fake_misspelled": "fake_misspelled_plugin",
                                        "fake_undecorated": "fake_undecorated_plugin"}, mods)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        reg = build_registry()
        assert set(reg.errors) == {"fake_misspelled", "fake_undecorated"}
        assert "unknown hook dlops_reporter (did you mean dlops_reporters?)" in reg.errors["fake_misspelled"]
        # a dlops_* function without @hookimpl is a hook implementation too (as pytest_* is in pytest)
        assert "dlops_augment_policy (did you mean dlops_augment_policies?)" in reg.errors["fake_undecorated"]
        assert reg.manager.get_plugin("fake_misspelled") is None
        assert "never_loaded" not in reg.reporters and "bias_variance" in reg.reporters
        get_registry.cache_clear()
        r = CliRunner().invoke(main, ["plugins", "list"])
        assert r.exit_code == 0
        broken = [line for line in r.output.splitlines() if "BROKEN" in line]
        assert any(line.startswith("fake_misspelled") and "dlops_reporter" in line for line in broken), r.output
    finally:
        get_registry.cache_clear()
        for m in mods:
            sys.modules.pop(m, None)


def test_an_undecorated_provider_hook_still_provides(tmp_path, monkeypatch):
    src = """
        def dlops_ensemble_methods():
            class Mean:
                def combine(self, probs):
                    return probs.mean(axis=0)
            return {"fake_mean": Mean()}
    """
    _dist(tmp_path, "fake_undecorated_good", {"fake_undec_good": "fake_undec_good_plugin"},
          {"fake_undec_good_plugin": src})
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        reg = build_registry()
        assert "fake_undec_good" not in reg.errors
        assert "fake_mean" in reg.ensemble_methods and "average" in reg.ensemble_methods
        info = next(i for i in reg.plugins if i.name == "fake_undec_good")
        assert info.provides == {"ensemble_methods": ["fake_mean"]}
    finally:
        sys.modules.pop("fake_undec_good_plugin", None)


def test_an_ensemble_method_without_combine_is_the_wrong_shape(tmp_path, monkeypatch):
    src = """
        from dlops import hookimpl

        @hookimpl
        def dlops_ensemble_methods():
            return {"fake_no_combine": object()}
    """
    _dist(tmp_path, "fake_bad_method", {"fake_bad_method": "fake_bad_method_plugin"}, {"fake_bad_method_plugin": src})
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        reg = build_registry()
        assert "combine(probs)" in reg.errors["fake_bad_method"]
        assert "fake_no_combine" not in reg.ensemble_methods
    finally:
        sys.modules.pop("fake_bad_method_plugin", None)


def test_validate_warns_about_a_broken_plugin(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from dlops.cli import main
    from dlops.plugins import get_registry

    _dist(tmp_path, "fake_misspelled2", {"fake_misspelled2": "fake_misspelled2_plugin"},
          {"fake_misspelled2_plugin": MISSPELLED})
    monkeypatch.syspath_prepend(str(tmp_path))
    get_registry.cache_clear()
    try:
        r = CliRunner().invoke(main, ["validate", str(Path(__file__).resolve().parents[2] / "examples" / "digits-transfer.yaml")])
        assert r.exit_code == 0, r.output
        assert "warning: plugin fake_misspelled2 is BROKEN" in r.output and "dlops_reporter" in r.output
    finally:
        get_registry.cache_clear()
        sys.modules.pop("fake_misspelled2_plugin", None)
