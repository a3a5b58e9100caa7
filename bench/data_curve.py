"""Data curve on digits: dev error against training-set size, transfer vs training from scratch.

The ``data_curve`` reporter (:mod:`dlops_plugins.reporters.data_curve`) through its public API,
without Ray or MLflow: the digits example (``examples/digits-transfer.yaml``), a source network
pretrained on digits 0-4 as ``dlops run`` does, then the same configuration (SGD, ``--lr``,
momentum 0.9, batch 16, ``--epochs`` epochs, frozen backbone for transfer, everything trained
from scratch) on 1/8, 1/4, 1/2 and all of the training pool (``--train-per-class`` labelled
examples per class), scored on dev with Wilson 95% intervals.

Writes ``data_curve.png``, ``data_curve.md`` and ``data_curve.csv`` under ``--out``. The last line
printed is one JSON object: dev error per size for each curve, the power-law exponents and
whether each curve is still falling.

Usage: ``python bench/data_curve.py [--out /tmp/data_curve] [--train-per-class 100] [--epochs 8]
[--lr 0.05]``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/dlops-data-curve")
    ap.add_argument("--train-per-class", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=0.05)
    args = ap.parse_args()

    from dlops.config import load_config
    from dlops.job.run import load_data
    from dlops.job.source import make_spec, train_source_network
    from dlops.reporting import ReportContext
    from dlops.reporting.contract import TrainContext
    from dlops_plugins.reporters.data_curve import DataCurveReporter

    t0 = time.perf_counter()
    cfg = load_config(ROOT / "examples" / "digits-transfer.yaml", [f"data.train_per_class={args.train_per_class}"])
    data = load_data(cfg)
    spec = make_spec(cfg, data)
    net, _ = train_source_network(cfg, data, spec)
    tc = TrainContext(config={"lr": args.lr, "momentum": 0.9, "batch_size": 16, "epochs": args.epochs}, data=data,
                      spec=spec, source_state=net.state_dict(), freeze=cfg.model.freeze, seed=cfg.seed,
                      weights="pretrain")
    out = Path(args.out)
    rep = DataCurveReporter().report(ReportContext(errors={}, out_dir=out, train_context=tc, title="digits"))
    print((out / "data_curve.md").read_text(), file=sys.stderr)
    m = rep.metrics
    res = {"train_pool": len(data.train), "dev": len(data.dev), "png": str(out / "data_curve.png"),
           "seconds": round(time.perf_counter() - t0, 1)}
    for c in ("transfer", "scratch"):
        res[c] = {k.split("/")[-1]: round(v, 4) for k, v in m.items()
                  if k.startswith(f"data_curve/{c}/dev_error/") and "_ci_" not in k}
        res[f"{c}_exponent"] = round(m.get(f"data_curve/{c}/exponent", float("nan")), 3)
        res[f"{c}_still_falling"] = bool(m.get(f"data_curve/{c}/still_falling"))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
