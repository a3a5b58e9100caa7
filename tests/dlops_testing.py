"""Constants shared by the top-level tests (import as `from dlops_testing import ...`)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "digits-transfer.yaml"

#: overrides that shrink the default example to a few seconds of training
TINY = [
    "search.stages=[{trials: 3, epochs: 2, method: sobol}, {trials: 2, epochs: 3}]",
    "pretrain.epochs=2",
    "ensemble.top_k=3",
]
