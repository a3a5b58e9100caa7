"""Driver cost of the ``gp`` stage method: one :func:`dlops.search.model.fit_posterior` call (the GP
fit on every ended trial plus its joint posterior on 256 candidates) and one Thompson draw, against
the number of ended trials, uncapped and with the default cap (:data:`dlops.search.model.MAX_TRIALS`).

A ``gp`` stage refits once per ended trial (a trial asked for after another one ended), so this is
the driver's time per trial of a ``gp`` stage. The fit is O(n^3) in the trials it uses; the cap
keeps a search of thousands of trials at the cost of a 256-trial fit.

Run::

    .venv/bin/python bench/gp_fit_cost.py            # d = 5 and 10, n up to 2,048 (~1 min)
    .venv/bin/python bench/gp_fit_cost.py --reps 3 --sizes 64,256,1024

Prints a table (median ms of ``--reps`` calls per cell, one BLAS thread as the method runs) and,
last, one JSON line with the medians and ``capped_over_256`` (the capped fit at the largest n over
the fit at 256 trials; about 1 when the cap works).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np


def main() -> None:
    from dlops.search.model import MAX_TRIALS, fit_posterior
    from dlops.search.space import Param, TrialOutcome, initial_box, sample_box

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="32,64,128,256,512,1024,2048", help="ended trials, comma-separated")
    ap.add_argument("--dims", default="5,10")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    out: dict[str, dict[str, float]] = {}
    print(f"{'d':>3} {'trials':>7} {'uncapped ms':>12} {'capped ms':>10}  (median of {args.reps}; cap {MAX_TRIALS})")
    for d in (int(x) for x in args.dims.split(",")):
        params = [Param(f"x{i}", "log" if i % 2 == 0 else "one_minus_log", *((1e-4, 1.0) if i % 2 == 0 else (0.9, 0.999)))
                  for i in range(d)]
        box = initial_box(params)
        for n in sizes:
            rng = np.random.default_rng(n)
            cfgs = sample_box(params, box, n, rng, "random")
            trials = [TrialOutcome(f"t{i}", c, {"loss": float(sum((p.to_u(c[p.name]) + 2) ** 2 for p in params))})
                      for i, c in enumerate(cfgs)]
            row = {}
            for label, cap in (("uncapped", n), ("capped", MAX_TRIALS)):
                if label == "uncapped" and n > 1024:
                    continue  # minutes per call: the point is made at 1,024
                ts = []
                for r in range(args.reps):
                    t0 = time.perf_counter()
                    post = fit_posterior(params, box, box, trials, "loss", "min", np.random.default_rng(r), max_trials=cap)
                    post.draw(np.random.default_rng(r))
                    ts.append((time.perf_counter() - t0) * 1e3)
                row[label] = statistics.median(ts)
            out[f"d{d}_n{n}"] = row
            print(f"{d:>3} {n:>7} {row.get('uncapped', float('nan')):>12.1f} {row['capped']:>10.1f}")
    big = max(sizes)
    ratio = {f"d{d}": out[f"d{d}_n{big}"]["capped"] / out[f"d{d}_n256"]["capped"]
             for d in (int(x) for x in args.dims.split(",")) if f"d{d}_n256" in out}
    print(json.dumps({"bench": "gp_fit_cost", "max_trials": MAX_TRIALS, "reps": args.reps, "ms": out,
                      "capped_over_256": ratio}))


if __name__ == "__main__":
    main()
