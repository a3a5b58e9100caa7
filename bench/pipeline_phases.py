"""Benchmark: the default example end to end, time per phase and the share that is not training.

Phases: ray_start (a local Ray), setup, pretrain, search, register, report, ensemble.

Runs ``examples/digits-transfer.yaml`` (the exact file ``make demo`` runs) in a temp directory
with a fresh SQLite store, once or ``--repeat`` times, and prints per phase (setup, pretrain,
search, register, report, ensemble) the wall time in seconds, the share of the wall time spent
outside training loops (pretraining and the Tuner's fit), and the issue's 4-minute target.
The last line is one JSON object with the headline figures.

Usage: python bench/pipeline_phases.py [--repeat N] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "digits-transfer.yaml"
TARGET_S = 240.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()

    from dlops.config import load_config
    from dlops.job import run_project

    runs = []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="dlops-bench-") as d:
            old = os.getcwd()
            os.chdir(d)
            try:
                cfg = load_config(EXAMPLE, args.overrides)
                t0 = time.perf_counter()
                s = run_project(cfg, out=lambda _line: None)
                wall = time.perf_counter() - t0
            finally:
                os.chdir(old)
        runs.append({"wall_s": wall, "phase_s": s.phase_s, "train_s": s.train_s, "trials": s.n_trials,
                     "dev_error": s.best_metrics.get("dev/error"), "test_error": s.best_metrics.get("test/error"),
                     "ensemble_test_error": s.ensemble_test_error})
        print(f"run {i + 1}: wall {wall:.1f} s  " + "  ".join(f"{k} {v:.1f}s" for k, v in s.phase_s.items()),
              file=sys.stderr)

    wall = statistics.median(r["wall_s"] for r in runs)
    phases = {k: statistics.median(r["phase_s"][k] for r in runs) for k in runs[0]["phase_s"]}
    train = statistics.median(r["train_s"] for r in runs)
    print(f"{'phase':<10} {'seconds':>8} {'share':>7}")
    for k, v in phases.items():
        print(f"{k:<10} {v:>8.2f} {v / wall:>7.1%}")
    other = wall - sum(phases.values())
    print(f"{'other':<10} {other:>8.2f} {other / wall:>7.1%}   (MLflow store start-up, Ray shutdown, imports)")
    print(f"{'wall':<10} {wall:>8.2f}")
    not_training = (wall - train) / wall
    print(f"time outside training loops (pretrain + Tuner.fit): {not_training:.1%} of the wall time")
    print(json.dumps({
        "bench": "pipeline_phases", "example": EXAMPLE.name, "repeat": args.repeat, "wall_s": round(wall, 2),
        "phase_s": {k: round(v, 2) for k, v in phases.items()}, "other_s": round(other, 2), "train_s": round(train, 2),
        "share_not_training": round(not_training, 3), "target_s": TARGET_S, "target_met": wall <= TARGET_S,
        "trials": runs[0]["trials"], "dev_error": runs[0]["dev_error"], "test_error": runs[0]["test_error"],
        "ensemble_test_error": runs[0]["ensemble_test_error"],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
