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
