"""The MLflow run tree of a search, written from the driver by a Ray Tune callback.

Tree: search (parent) -> stage k (nested) -> trial (nested under its stage). Parent links are
explicit (``mlflow.parentRunId`` tags set through :class:`mlflow.MlflowClient`), the tracking URI
is the driver's, and the only writer is the driver process (SQLite takes one writer well). Ray's
own ``MLflowLoggerCallback`` neither nests runs nor carries the tracking URI to workers reliably.

Each trial run has its hyperparameters as params, every reported metric per epoch with
``step = epoch``, and ends FINISHED (completed), FAILED (raised or reported NaN; the error is
in tag ``dlops.error`` and artifact ``error.txt``) or KILLED (search interrupted). On resume a
trial keeps its one run: it is found by its ``dlops.trial_id`` tag.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Optional

from ray.tune import Callback

from dlops.search.plan import EPOCHS_KEY, STAGE_KEY
from dlops.tracking.store import TAG_KIND, TAG_PARENT, TAG_SEARCH, TAG_STAGE, TAG_TRIAL

#: result keys that are logged as MLflow metrics (everything else is Tune bookkeeping)
def is_logged_metric(key: str) -> bool:
    return "/" in key or key in ("latency_ms", "size_mb")


def _param_value(v: Any) -> str:
    s = repr(v) if not isinstance(v, str) else v
    return s if len(s) <= 6000 else s[:5990] + "...[cut]"


class MlflowTreeCallback(Callback):
    """Logs every trial of a staged search as a nested MLflow run.

    Args:
        client: an ``mlflow.MlflowClient`` bound to the tracking URI.
        experiment_id: where the runs go.
        parent_run_id: the search run.
        search_id: tag value shared by every run of this search (resume finds runs by it).
        stage_info: ``k -> dict`` of params/tags for stage k's run (e.g. its box), called when the
            stage's first trial starts.
        progress: optional ``print``-like function for one line per finished trial.
    """

    def __init__(self, client: Any, experiment_id: str, parent_run_id: str, search_id: str,
                 stage_info: Optional[Callable[[int], dict[str, Any]]] = None,
                 progress: Optional[Callable[[str], None]] = None) -> None:
        self.client = client
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.search_id = search_id
        self.stage_info = stage_info
        self.progress = progress
        self.stage_runs: dict[int, str] = {}
        self.trial_runs: dict[str, str] = {}
        self.n_done = 0
        self._find_existing()

    # ---- resume: find the runs this search already has ---------------------------------------
    def _find_existing(self) -> None:
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{TAG_SEARCH}` = '{self.search_id}'", max_results=5000
        )
        for r in runs:
            kind = r.data.tags.get(TAG_KIND)
            if kind == "stage":
                self.stage_runs[int(r.data.tags[TAG_STAGE])] = r.info.run_id
            elif kind == "trial":
                self.trial_runs[r.data.tags[TAG_TRIAL]] = r.info.run_id

    def _stage_run(self, k: int) -> str:
        if k in self.stage_runs:
            rid = self.stage_runs[k]
            if self.client.get_run(rid).info.status != "RUNNING":
                self.client.update_run(rid, status="RUNNING")
            return rid
        from mlflow.entities import Param, RunTag

        info = self.stage_info(k) if self.stage_info else {}
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"stage-{k}",
            tags={TAG_PARENT: self.parent_run_id, TAG_KIND: "stage", TAG_SEARCH: self.search_id, TAG_STAGE: str(k)},
        )
        rid = run.info.run_id
        params = [Param(key, _param_value(v)) for key, v in info.get("params", {}).items()]
        tags = [RunTag(key, str(v)[:5000]) for key, v in info.get("tags", {}).items()]
        self.client.log_batch(rid, params=params, tags=tags)
        self.stage_runs[k] = rid
        return rid

    def trial_run(self, trial: Any) -> str:
        tid = trial.trial_id
        if tid in self.trial_runs:
            return self.trial_runs[tid]
        from mlflow.entities import Param

        k = int(trial.config.get(STAGE_KEY, 0))
        srid = self._stage_run(k)
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"stage{k}-{tid}",
            tags={TAG_PARENT: srid, TAG_KIND: "trial", TAG_SEARCH: self.search_id, TAG_STAGE: str(k),
                  TAG_TRIAL: tid},
        )
        rid = run.info.run_id
        params = [Param(key, _param_value(v)) for key, v in sorted(trial.config.items())]
        self.client.log_batch(rid, params=params)
        self.trial_runs[tid] = rid
        return rid

    # ---- Tune hooks ---------------------------------------------------------------------------
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        rid = self.trial_run(trial)
        if self.client.get_run(rid).info.status != "RUNNING":  # resumed trial: same run again
            self.client.update_run(rid, status="RUNNING")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        from mlflow.entities import Metric

        rid = self.trial_run(trial)
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        ts = int(time.time() * 1000)
        metrics = []
        for k, v in result.items():
            if is_logged_metric(k) and isinstance(v, (int, float)) and not isinstance(v, bool):
                metrics.append(Metric(k, float(v), ts, step))
        if metrics:
            self.client.log_batch(rid, metrics=metrics)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        rid = self.trial_run(trial)
        self.client.set_terminated(rid, status="FINISHED")
        self.n_done += 1
        if self.progress:
            r = trial.last_result or {}
            shown = {k: r.get(k) for k in ("dev/error", "train/error", "latency_ms") if k in r}
            vals = " ".join(f"{k}={v:.4g}" for k, v in shown.items() if isinstance(v, (int, float)))
            self.progress(f"  trial {trial.trial_id} (stage {trial.config.get(STAGE_KEY)}) done: {vals}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        rid = self.trial_run(trial)
        err = trial.get_error()
        text = str(err) if err is not None else "trial failed"
        self.client.set_tag(rid, "dlops.error", text[:5000])
        try:
            self.client.log_text(rid, text, "error.txt")
        except Exception:
            pass
        self.client.set_terminated(rid, status="FAILED")
        self.n_done += 1
        if self.progress:
            first = text.strip().splitlines()[-1] if text.strip() else text
            self.progress(f"  trial {trial.trial_id} (stage {trial.config.get(STAGE_KEY)}) FAILED: {first[:200]}")

    def end_stages(self, status: str = "FINISHED") -> None:
        for rid in self.stage_runs.values():
            if self.client.get_run(rid).info.status == "RUNNING":
                self.client.set_terminated(rid, status=status)

    def open_run_ids(self) -> list[str]:
        return list(self.trial_runs.values()) + list(self.stage_runs.values())


def finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


__all__ = ["MlflowTreeCallback", "is_logged_metric", "EPOCHS_KEY"]
