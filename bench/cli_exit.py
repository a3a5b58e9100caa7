"""How long a ``dlops`` process takes to exit once its work is done, with and without
``dlops.cli``'s :func:`gc.freeze` at exit (the interpreter's final garbage collection skipped).

Each run is a fresh interpreter that imports what ``dlops run`` loads (``dlops.cli``, torch,
torchvision, MLflow with its SQLite store, Ray Tune, the demo's digits), builds a small model
and a store, prints ``READY`` and returns; the time from ``READY`` to the process's exit is
measured (s). ``without`` unregisters the handler (``atexit.unregister``), so the same code runs
either way. Paired, interleaved repetitions (``--reps``, default 8); the LAST line is one JSON
object: medians (s), the ratio, and the paired geometric mean with a 95% t-interval.

A whole tiny ``dlops run`` (5 trials) measured the same way: 3.70 s from its summary to its exit
before, 0.37 s after (one run each, py-spy showed the 3.5 s in ``gc_collect_main``).
Usage: .venv/bin/python bench/cli_exit.py [--reps 8]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time

SCRIPT = r"""
import atexit, sys
import dlops.cli
if sys.argv[1] == "without":
    atexit.unregister(dlops.cli._skip_the_final_collection)
import mlflow, ray.tune, torch, torchvision
from dlops.data.digits import load_digits_arrays
x, y = load_digits_arrays()
m = torchvision.models.resnet18(num_classes=10)
c = mlflow.MlflowClient(f"sqlite:///{sys.argv[2]}/m.db")
c.search_experiments()
print("READY", flush=True)
"""


def once(variant: str, d: str) -> float:
    p = subprocess.Popen([sys.executable, "-c", SCRIPT, variant, d], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True)
    assert p.stdout is not None
    line = p.stdout.readline()
    t0 = time.perf_counter()
    p.wait()
    assert line.strip() == "READY" and p.returncode == 0, (line, p.returncode)
    return time.perf_counter() - t0


def main() -> None:
    from paired import paired_summary

    reps = int(sys.argv[sys.argv.index("--reps") + 1]) if "--reps" in sys.argv else 8
    w: dict[str, list[float]] = {"with": [], "without": []}
    with tempfile.TemporaryDirectory() as d:
        once("with", d)  # warm-up: the store's schema, the page cache
        for rep in range(reps):
            for v in (("with", "without") if rep % 2 == 0 else ("without", "with")):
                w[v].append(once(v, d))
            print(f"rep {rep}: exit with gc.freeze {w['with'][-1]:.2f} s, without {w['without'][-1]:.2f} s", flush=True)
    out = paired_summary("exit_s_with_freeze", w["with"], "exit_s_without", w["without"])
    print(f"exit after the work: {out['exit_s_with_freeze']} s with gc.freeze at exit, {out['exit_s_without']} s "
          f"without ({out['ratio']}x; paired {out['paired_geomean']} {out['ci95']})")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
