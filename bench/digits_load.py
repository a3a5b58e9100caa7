"""How long ``dlops run`` spends loading the demo's data before Ray starts: the digits read from
``dlops/data/digits.npz`` (now) against ``sklearn.datasets.load_digits`` (before: importing
scikit-learn was most of it), both followed by the same split (:func:`load_task` of the demo).

Each measurement is a fresh interpreter that has already imported what the CLI imports first
(``dlops.cli``, ``dlops.config``, numpy); it times the load of the data and the split (s), then
exits. Paired, interleaved repetitions (``--reps``, default 10); the LAST line is one JSON object:
medians (s), their ratio and the paired geometric mean with a 95% t-interval (bench/paired.py).
Usage: .venv/bin/python bench/digits_load.py [--reps 10]
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "examples" / "digits-transfer.yaml"

SCRIPT = r"""
import sys, time
import numpy as np
import dlops.cli, dlops.config
from dlops.config import load_config
cfg = load_config(sys.argv[2])
import dlops.data.digits as digits
if sys.argv[1] == "sklearn":  # the loader as it was: scikit-learn's load_digits
    def raw():
        from sklearn.datasets import load_digits
        d = load_digits()
        return d.images, d.target
    digits.load_raw_digits = raw
t0 = time.perf_counter()
from dlops.data.sources import load_task
data = load_task(cfg.data, cfg.seed, cfg.task)
print(time.perf_counter() - t0, len(data.train), len(data.dev), flush=True)
"""


def once(variant: str) -> tuple[float, str]:
    r = subprocess.run([sys.executable, "-c", SCRIPT, variant, str(DEMO)], capture_output=True, text=True, check=True)
    s, *sizes = r.stdout.split()
    return float(s), " ".join(sizes)


def main() -> None:
    from paired import paired_summary

    reps = int(sys.argv[sys.argv.index("--reps") + 1]) if "--reps" in sys.argv else 10
    w: dict[str, list[float]] = {"npz": [], "sklearn": []}
    once("npz")  # warm-up: the page cache
    for rep in range(reps):
        sizes = set()
        for v in (("npz", "sklearn") if rep % 2 == 0 else ("sklearn", "npz")):
            s, n = once(v)
            w[v].append(s)
            sizes.add(n)
        assert len(sizes) == 1, sizes  # both loaders give the same splits
        print(f"rep {rep}: data load {w['npz'][-1]:.3f} s from digits.npz, {w['sklearn'][-1]:.3f} s via scikit-learn",
              flush=True)
    out = paired_summary("load_s_npz", w["npz"], "load_s_sklearn", w["sklearn"], digits=4)
    print(f"demo data load: {out['load_s_npz']} s from digits.npz, {out['load_s_sklearn']} s via scikit-learn "
          f"({out['ratio']}x; paired {out['paired_geomean']} {out['ci95']})")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
