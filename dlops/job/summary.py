"""What ``dlops run`` did (:class:`RunSummary`) and the summary it prints (no torch, ray or mlflow imports)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional


@dataclass
class RunSummary:
    """What the main job did; times in seconds, errors as fractions in [0, 1]."""

    tracking_uri: str
    experiment_id: str
    search_run_id: str
    pretrain_run_id: Optional[str] = None
    best_trial_id: Optional[str] = None
    best_run_id: Optional[str] = None
    best_config: dict[str, Any] = field(default_factory=dict)
    best_metrics: dict[str, float] = field(default_factory=dict)
    model_uri: Optional[str] = None
    model_aliases: tuple[str, ...] = ()
    promotion_reason: str = ""
    ensemble_uri: Optional[str] = None
    ensemble_metrics: dict[str, float] = field(default_factory=dict)  # dev/error, test/error, dev/f1, ...
    gate_metric: str = "dev/error"  # the optimizing metric the gate compares (search.metric)
    ensemble_members: list[str] = field(default_factory=list)
    report_summaries: dict[str, str] = field(default_factory=dict)
    phase_s: dict[str, float] = field(default_factory=dict)
    train_s: float = 0.0  # seconds spent inside training loops (pretrain + trials)
    n_trials: int = 0
    n_failed: int = 0
    warnings: list[str] = field(default_factory=list)
    split_counts: dict[str, int] = field(default_factory=dict)  # examples per split (intervals)

    @property
    def wall_s(self) -> float:
        """The sum of the phases' times (Ray's start included), in seconds."""
        return sum(self.phase_s.values())

    @property
    def ensemble_test_error(self) -> Optional[float]:
        """The registered ensemble's test error (fraction), None when no ensemble was evaluated."""
        return self.ensemble_metrics.get("test/error")


def shown_alias(aliases: tuple[str, ...]) -> str:
    """The alias to show for a registered version: ``champion`` when it holds it, else ``challenger``."""
    return "champion" if "champion" in aliases else "challenger"


def _metric_name(metric: str) -> str:
    """``dev/error`` -> ``dev error``, ``train_dev/error`` -> ``train-dev error``."""
    return metric.replace("_", "-").replace("/", " ")


def ensemble_comparison(gate_metric: str, ensemble: dict[str, float], single: dict[str, float]) -> str:
    """The ensemble against the best single model, the way the gate compared them (its optimizing
    metric, a dev metric) and then on test, e.g. ``dev error 0.0345 vs best single 0.0517 (the
    gate's comparison); test error 0.0661 vs 0.0661``."""
    nan = float("nan")
    parts = [f"{_metric_name(gate_metric)} {ensemble.get(gate_metric, nan):.4f} vs best single "
             f"{single.get(gate_metric, nan):.4f} (the gate's comparison)"]
    if gate_metric != "test/error":
        parts.append(f"test error {ensemble.get('test/error', nan):.4f} vs {single.get('test/error', nan):.4f}")
    return "; ".join(parts)


def _interval(m: dict[str, float], split: str, n: Optional[int]) -> str:
    """``dev [0.0177, 0.0557] n=348``: a split's error interval (Wilson 1927, 95%)."""
    from dlops.reporting.stats import error_interval

    e = m.get(f"{split}/error", float("nan"))
    if n is None or e != e:
        return f"{split.replace('_', '-')} n/a"
    ci = error_interval(e, n)
    return f"{split.replace('_', '-')} [{ci.low:.4f}, {ci.high:.4f}] n={n}"


def format_summary(s: RunSummary) -> str:
    """The short summary printed at the end of ``dlops run``."""
    from dlops.tracking.store import is_local_store

    lines = ["", "== dlops run: summary =="]
    cfg = ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in s.best_config.items())
    lines.append(f"best trial     {s.best_trial_id}  {cfg}")
    m = s.best_metrics
    if m:
        lines.append(f"errors         train {m.get('train/error', float('nan')):.4f}  train-dev "
                     f"{m.get('train_dev/error', float('nan')):.4f}  dev {m.get('dev/error', float('nan')):.4f}  "
                     f"test {m.get('test/error', float('nan')):.4f}")
        if s.split_counts:
            lines.append("  95% (Wilson)  " + "  ".join(_interval(m, k, s.split_counts.get(k)) for k in
                                                       ("train", "train_dev", "dev", "test")))
    lines.append(f"model          {s.model_uri}  (aliases: {', '.join(s.model_aliases)}; {s.promotion_reason})")
    if s.ensemble_uri:
        lines.append(f"ensemble       {s.ensemble_uri}  {ensemble_comparison(s.gate_metric, s.ensemble_metrics, m)} "
                     f"({len(s.ensemble_members)} members)")
    for name, text in s.report_summaries.items():
        lines.append(f"{name:<14} {text}")
    lines.append(f"trials         {s.n_trials} ({s.n_failed} failed)")
    lines.append("time           " + "  ".join(f"{k} {v:.1f}s" for k, v in s.phase_s.items()) + f"  total {s.wall_s:.1f}s")
    for w in s.warnings:
        lines.append(f"warning        {w}")
    if is_local_store(s.tracking_uri):
        import shutil
        import sys

        exe = Path(sys.executable).parent / "mlflow"
        mlflow_cmd = "mlflow" if shutil.which("mlflow") == str(exe) or not exe.exists() else str(exe)
        lines.append(f"MLflow UI      {mlflow_cmd} ui --backend-store-uri {s.tracking_uri} --host 127.0.0.1")
    else:
        lines.append(f"MLflow UI      {s.tracking_uri}")
    return "\n".join(lines)
