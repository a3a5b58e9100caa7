"""Light commands import neither torch, ray nor mlflow (the lazy-import convention)."""

import json
import subprocess
import sys

HEAVY = ("torch", "ray", "mlflow", "albumentations", "cv2", "matplotlib")


def _imported_after(args: list[str]) -> tuple[list[str], str]:
    code = (
        "import sys, json\n"
        "from click.testing import CliRunner\n"
        "from dlops.cli import main\n"
        f"r = CliRunner().invoke(main, {args!r})\n"
        "assert r.exit_code == 0, r.output\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
        "print(r.output)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    first, _, rest = out.partition("\n")
    return json.loads(first), rest


def test_help_is_light():
    heavy, out = _imported_after(["--help"])
    assert heavy == []
    assert "run" in out and "plugins" in out and "report" in out


def test_plugins_list_is_light_and_lists_builtins():
    heavy, out = _imported_after(["plugins", "list", "--json"])
    assert heavy == []
    names = {p["name"] for p in json.loads(out)["plugins"]}
    assert {"augment", "augment_tv2", "bias_variance", "error_analysis", "learning_curves", "ensemble"} <= names


def test_the_final_garbage_collection_is_skipped_after_every_other_exit_handler():
    """``dlops.cli`` registers its :func:`gc.freeze` at exit when it is imported, before torch,
    MLflow and Ray register theirs, so it runs after them (``atexit`` is last in, first out): a
    handler registered later still sees nothing frozen, and the process exits 0 with its output
    whole."""
    code = ("import atexit, gc, dlops.cli\n"
            "atexit.register(lambda: print('frozen before ours:', gc.get_freeze_count(), flush=True))\n"
            "dlops.cli._skip_the_final_collection(); n = gc.get_freeze_count(); gc.unfreeze()\n"
            "print('frozen by ours:', n > 0)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["frozen by ours: True", "frozen before ours: 0"]
