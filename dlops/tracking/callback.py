"""The MLflow run tree of a search, written from the driver by a Ray Tune callback.

Tree: search (parent) -> stage k (nested) -> trial (nested under its stage). Parent links are
explicit (``mlflow.parentRunId`` tags set through :class:`mlflow.MlflowClient`), the tracking URI
is the driver's, and the only writer is the driver process (SQLite takes one writer well). Ray's
own ``MLflowLoggerCallback`` neither nests runs nor carries the tracking URI to workers reliably.

Each trial run has its hyperparameters as params, every reported metric per epoch with
``step = epoch``, and ends FINISHED (completed), FAILED (raised, or ended with a non-finite
optimizing metric; the error is in tag ``dlops.error`` and artifact ``error.txt``) or KILLED
(search interrupted, or stopped by the failure budget: tag ``dlops.stopped``).

On resume (``dlops run --resume``) a trial keeps its one run: it is found by its
``dlops.trial_id`` tag; its params are logged again (same values: a no-op), it is tagged
``dlops.resumed`` and ``dlops.resumed_first_epoch`` (the first epoch it reported after the
resume: > 1 when it continued from a checkpoint), and results at or below the last step already
logged are not logged twice. :meth:`MlflowTreeCallback.reconcile` ends what is still RUNNING
once the search is over.

A trial that a scheduler (ASHA) stopped before its stage's epochs ends FINISHED: it ran as the
search meant it to, and its last result is what the zoom used. It is tagged
``dlops.early_stopped = true`` and ``dlops.last_epoch`` (the epochs it ran).

Writes are off Tune's driver loop: every MLflow call of the callback runs on one background
writer thread (so the store still has one writer). Creating a trial's (and a stage's) run, its
params, per-epoch metrics, tags and run ends are all queued and the Tune hook returns at once: a
queued write finds the run id its creation stored (``trial_runs`` / ``stage_runs`` fill in on the
writer thread; read them after a flush). The writer takes everything queued at once and merges a
run's consecutive batches (params, metrics, tags) into one ``log_batch`` within MLflow's per-call
limits (1000 metrics, 100 params, 100 tags): per trial that is three store calls when the writer
is behind (create with its tags; params and epochs' metrics and tags; end), at most one more per
epoch when it keeps up. A run's own writes land in the order they were queued; writes of different
runs may land in another order, except around a queued function (``_submit``), which keeps its
place. Only the resume path reads the store from the hook (and waits for the queue). A fresh
search's stage-0 run is created when Tune sets the experiment up (while the first trial actors
start). :meth:`MlflowTreeCallback.flush` waits for every queued write and re-raises the first
failed one; :func:`dlops.search.tune.run_search` calls it before it returns or raises (Ctrl-C and
failure budget included), and :meth:`open_run_ids`, :meth:`reconcile` and :meth:`end_stages`
flush first.
"""

from __future__ import annotations

import json
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Optional

from ray.tune import Callback

from dlops.search.confirm import CONFIRM_KEY
from dlops.search.plan import EPOCHS_KEY, STAGE_KEY
from dlops.tracking.store import TAG_KIND, TAG_PARENT, TAG_SEARCH, TAG_STAGE, TAG_STAGE_METHOD, TAG_TRIAL

#: result keys that are logged as MLflow metrics (everything else is Tune bookkeeping)
def is_logged_metric(key: str) -> bool:
    return "/" in key or key in ("latency_ms", "size_mb", "gpu_mem_mb")


try:  # MLflow's per-call limits of log_batch (its client splits bigger batches into several calls)
    from mlflow.utils.validation import (MAX_ENTITIES_PER_BATCH, MAX_METRICS_PER_BATCH,
                                         MAX_PARAMS_TAGS_PER_BATCH)
except ImportError:  # pragma: no cover - older / newer layouts
    MAX_ENTITIES_PER_BATCH, MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH = 1000, 1000, 100


class _Op:
    """One queued MLflow write: ``call`` (any function; keeps its place in the queue), or, for the
    run keyed ``run`` (``("trial", tid)`` / ``("stage", k)``), its ``create`` (function), a
    ``batch`` (metrics, params, tags) or its ``end`` (``status``)."""

    __slots__ = ("kind", "run", "fn", "metrics", "params", "tags", "status", "time_ms", "future")

    def __init__(self, kind: str, run: Any = None, fn: Optional[Callable[[], Any]] = None, metrics: Any = (),
                 params: Any = (), tags: Any = (), status: Optional[str] = None,
                 time_ms: Optional[int] = None) -> None:
        self.kind, self.run, self.fn, self.status, self.time_ms = kind, run, fn, status, time_ms
        self.metrics, self.params, self.tags = metrics, params, tags
        self.future: Future = Future()


def _settle(op: _Op, fn: Callable[[], Any]) -> None:
    try:
        result = fn()
    except BaseException as exc:  # noqa: BLE001 - the caller's flush re-raises it
        op.future.set_exception(exc)
    else:
        op.future.set_result(result)


def _fits(batch: list[_Op], op: _Op) -> bool:
    """Whether ``op`` joins ``batch`` in one ``log_batch`` call (an empty batch takes any op)."""
    if not batch:
        return True
    m = sum(len(b.metrics) for b in batch) + len(op.metrics)
    p = sum(len(b.params) for b in batch) + len(op.params)
    t = sum(len(b.tags) for b in batch) + len(op.tags)
    return (m <= MAX_METRICS_PER_BATCH and p <= MAX_PARAMS_TAGS_PER_BATCH and t <= MAX_PARAMS_TAGS_PER_BATCH
            and m + p + t <= MAX_ENTITIES_PER_BATCH)


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
        metric: the optimizing metric (a trial that ends with a non-finite value of it is FAILED).
        run_tags: tags set on every stage and trial run it creates (source, user, git commit).
        datasets: ``mlflow.entities.DatasetInput`` logged on every trial run it creates (the
            splits: the UI's Dataset column).
        sampling: ``config -> {name: value}`` of extra params per trial (the sampling-scale
            coordinates ``lr.r``; :func:`dlops.search.tune.runtime.sampling_params_fn`).
    """

    def __init__(self, client: Any, experiment_id: str, parent_run_id: str, search_id: str,
                 stage_info: Optional[Callable[[int], dict[str, Any]]] = None,
                 progress: Optional[Callable[[str], None]] = None, metric: Optional[str] = None,
                 run_tags: Optional[dict[str, str]] = None, datasets: Any = (),
                 sampling: Optional[Callable[[dict[str, Any]], dict[str, Any]]] = None) -> None:
        self.client = client
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.search_id = search_id
        self.stage_info = stage_info
        self.progress = progress
        self.metric = metric  # a trial that ends with a non-finite value of it is FAILED
        self.run_tags = dict(run_tags or {})
        self.datasets = list(datasets or ())
        self.sampling = sampling
        self.stage_runs: dict[int, str] = {}
        self.trial_runs: dict[str, str] = {}
        self.n_done = 0
        self.n_failed = 0  # FAILED trial runs of this search, those of a run before a resume included
        self.stopping_reason: Optional[str] = None  # set when the search is stopped (failure budget)
        self.resumed: set[str] = set()  # trial ids whose run existed before this callback
        self._step_floor: dict[str, dict[str, int]] = {}  # run id -> {metric: last step logged} (resumed runs)
        self._logged_step: dict[str, int] = {}  # trial id -> highest step this callback logged
        self._seen: set[str] = set()  # trial ids seen by this callback (params re-logged once)
        self._first_after_resume: set[str] = set()
        self._already_finished: set[str] = set()
        self._placed: set[str] = set()
        self._queued: set[str] = set()  # trial ids whose new run this callback has queued
        self._ended: set[str] = set()  # trial ids whose run end this callback has queued
        self._stage_ready: set[int] = set()  # stages whose run is created / running again (queued)
        self._stage_size: dict[int, int] = {}  # stage -> its number of trials (from stage_info)
        self._stage_infos: dict[int, dict[str, Any]] = {}  # stage -> stage_info(k), asked once
        self._stage_ended: dict[int, set[str]] = {}  # stage -> trial ids this callback ended
        self._writer: Optional[ThreadPoolExecutor] = None
        self._futures: list[Future] = []
        self._ops: list[_Op] = []  # queued, not yet taken by the writer
        self._draining = False  # a drain of _ops is scheduled or running on the writer
        self._lock = threading.RLock()  # re-entrant: the SIGTERM clean-up may flush from inside a hook
        self._find_existing()

    # ---- the writer thread ----------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles the callbacks with the experiment (tuner.pkl); the writer is not picklable
        self.flush()
        d = dict(self.__dict__)
        d["_writer"], d["_futures"], d["_lock"], d["_ops"], d["_draining"] = None, [], None, [], False
        return d

    def __setstate__(self, d: dict[str, Any]) -> None:
        self.__dict__.update(d)
        self._lock = threading.RLock()  # re-entrant: the SIGTERM clean-up may flush from inside a hook

    def _enqueue(self, op: "_Op") -> Future:
        """Queue one write for the writer thread; returns its future."""
        with self._lock:
            if self._writer is None:
                self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dlops-mlflow")
            self._ops.append(op)
            self._futures.append(op.future)
            if len(self._futures) > 256:
                self._futures = [x for x in self._futures if not x.done() or x.exception() is not None]
            if not self._draining:
                self._draining = True
                self._writer.submit(self._drain)
        return op.future

    def _submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        """Queue one MLflow call (any function) on the writer thread, in order; returns its future.
        Writes queued before it land before it, writes queued after it land after it."""
        return self._enqueue(_Op("call", fn=lambda: fn(*args, **kwargs)))

    def _queue_batch(self, run: tuple[str, Any], metrics: Any = (), params: Any = (), tags: Any = ()) -> None:
        """Queue metrics / params / tags for ``run`` (``("trial", tid)`` or ``("stage", k)``);
        merged on the writer with the run's neighbouring queued batches into one ``log_batch``."""
        if metrics or params or tags:
            self._enqueue(_Op("batch", run=run, metrics=list(metrics), params=list(params), tags=list(tags)))

    def _queue_end(self, run: tuple[str, Any], status: str) -> None:
        """Queue the end of ``run``; its end time is now (when Tune ended it), not when the write lands."""
        self._enqueue(_Op("end", run=run, status=status, time_ms=int(time.time() * 1000)))

    def _run_id(self, run: tuple[str, Any]) -> str:
        """The run id behind a queued write's run key (on the writer thread, after its creation)."""
        kind, key = run
        return self.trial_runs[key] if kind == "trial" else self.stage_runs[key]

    def _drain(self) -> None:
        """Writer thread: take every queued write and land it; again until the queue is empty."""
        while True:
            with self._lock:
                ops, self._ops = self._ops, []
                if not ops:
                    self._draining = False
                    return
            try:
                self._write(ops)
            except BaseException as exc:  # noqa: BLE001 - never leave a future unset
                for op in ops:
                    if not op.future.done():
                        op.future.set_exception(exc)

    def _write(self, ops: list["_Op"]) -> None:
        """Land ``ops`` in their order, except that between two ``call`` ops (arbitrary functions,
        which keep their place) each run's creation, batches and end are written run by run (in
        the order the runs first appear; a run's own writes in their order) and the run's
        consecutive batches are merged into one ``log_batch`` within MLflow's per-call limits."""
        segment: list[_Op] = []
        for op in ops:
            if op.kind == "call":
                self._write_runs(segment)
                segment = []
                _settle(op, op.fn)
            else:
                segment.append(op)
        self._write_runs(segment)

    def _write_runs(self, ops: list["_Op"]) -> None:
        by_run: dict[tuple[str, Any], list[_Op]] = {}
        for op in ops:
            by_run.setdefault(op.run, []).append(op)
        for run, run_ops in by_run.items():
            batch: list[_Op] = []
            for op in run_ops:
                if op.kind == "batch" and _fits(batch, op):
                    batch.append(op)
                    continue
                self._log_merged(run, batch)
                batch = [op] if op.kind == "batch" else []
                if op.kind == "create":
                    _settle(op, op.fn)
                elif op.kind == "end":
                    _settle(op, lambda op=op: self.client.set_terminated(self._run_id(run), status=op.status,
                                                                         end_time=op.time_ms))
            self._log_merged(run, batch)

    def _log_merged(self, run: tuple[str, Any], ops: list["_Op"]) -> None:
        """One ``log_batch`` for the queued batches ``ops`` of ``run``. Params first: a param whose
        value changed since the run's first attempt (resume) fails the call before anything is
        written; then the params are logged on their own (kept as they were, tag
        ``dlops.param_warning`` says so) and the metrics and tags after them."""
        if not ops:
            return
        from mlflow.exceptions import MlflowException

        metrics = [m for op in ops for m in op.metrics]
        params = list({p.key: p for op in reversed(ops) for p in reversed(op.params)}.values())  # first wins
        tags = list({t.key: t for op in ops for t in op.tags}.values())  # last wins, as set_tag would

        def write() -> None:
            rid = self._run_id(run)
            try:
                self.client.log_batch(rid, metrics=metrics, params=params, tags=tags)
            except MlflowException:
                if not params:
                    raise
                try:
                    self.client.log_batch(rid, params=params)
                except MlflowException as exc:  # a value changed since the first run: keep the first, say so
                    self.client.set_tag(rid, "dlops.param_warning", str(exc)[:5000])
                if metrics or tags:
                    self.client.log_batch(rid, metrics=metrics, tags=tags)

        try:
            write()
        except BaseException as exc:  # noqa: BLE001 - the caller's flush re-raises it
            for op in ops:
                op.future.set_exception(exc)
        else:
            for op in ops:
                op.future.set_result(None)

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one MLflow call on the writer thread after every queued one; return its result."""
        return self._submit(fn, *args, **kwargs).result()

    def flush(self, timeout: Optional[float] = None) -> None:
        """Wait for every queued MLflow write (at most ``timeout`` seconds in all; None: no limit).

        Raises:
            TimeoutError: ``timeout`` passed with writes still queued (they stay queued).
            Exception: the first queued write that failed (after all have been waited for).
        """
        with self._lock:
            futures, self._futures = self._futures, []
        first: Optional[BaseException] = None
        deadline = None if timeout is None else time.monotonic() + timeout
        for i, f in enumerate(futures):
            try:
                exc = f.exception(None if deadline is None else max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                with self._lock:
                    self._futures[:0] = futures[i:]
                raise TimeoutError(f"MLflow writer: {len(futures) - i} writes still queued after {timeout} s") from None
            if exc is not None and first is None:
                first = exc
        if first is not None:
            raise first

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
                tid = r.data.tags[TAG_TRIAL]
                self.trial_runs[tid] = r.info.run_id
                self.resumed.add(tid)
                if r.info.status == "FAILED":
                    self.n_failed += 1

    def _rid(self, tid: str) -> str:
        """The run id of trial ``tid``; on the writer thread, after its queued creation."""
        return self.trial_runs[tid]

    def _queue_stage_run(self, k: int) -> None:
        """Make sure stage k has a RUNNING run; queued on the writer thread (the driver does not wait)."""
        if k in self._stage_ready:
            return
        self._stage_ready.add(k)
        if k in self.stage_runs:  # a run from before a resume: running again, unless it had finished
            rid = self.stage_runs[k]

            def reopen() -> None:
                # KILLED (Ctrl-C, SIGTERM) or FAILED (failure budget): its trials go on now. FINISHED:
                # all its trials had ended (one that ended after Tune's last snapshot is only replayed)
                if self.client.get_run(rid).info.status in ("KILLED", "FAILED"):
                    self.client.update_run(rid, status="RUNNING")

            self._submit(reopen)
            return
        from mlflow.entities import Param, RunTag

        info = self._stage_info(k)
        params = [Param(key, _param_value(v)) for key, v in info.get("params", {}).items()]
        tags = [RunTag(key, str(v)[:5000]) for key, v in info.get("tags", {}).items()]
        if isinstance(info.get("params", {}).get("trials"), int):
            self._stage_size[k] = info["params"]["trials"]
        start = int(time.time() * 1000)

        name = str(info.get("name", f"stage-{k}"))

        def create() -> None:
            run = self.client.create_run(
                self.experiment_id, start_time=start, run_name=name,
                tags={**self.run_tags, TAG_PARENT: self.parent_run_id, TAG_KIND: "stage", TAG_SEARCH: self.search_id,
                      TAG_STAGE: str(k)})
            self.stage_runs[k] = run.info.run_id

        self._enqueue(_Op("create", run=("stage", k), fn=create))
        self._queue_batch(("stage", k), params=params, tags=tags)

    def _stage_info(self, k: int) -> dict[str, Any]:
        """``stage_info(k)`` (``{}`` without one), asked once per stage: its run's params and tags,
        and the method each of its trials is tagged with."""
        if k not in self._stage_infos:
            self._stage_infos[k] = self.stage_info(k) if self.stage_info else {}
        return self._stage_infos[k]

    def _stage_run(self, k: int) -> str:
        """Stage k's run id (waits for the writer queue)."""
        self._queue_stage_run(k)
        self._call(lambda: None)
        return self.stage_runs[k]

    def _queue_trial_run(self, trial: Any) -> str:
        """Make sure the trial has a run, without waiting: a new run (with its tags) is created on
        the writer thread and its params are queued as a batch; writes queued after it find its
        id. Returns the trial id."""
        tid = trial.trial_id
        if tid in self.resumed or tid in self._queued:
            if tid not in self._seen:
                # a run from before a resume: its stage's run runs again (Ctrl-C or SIGTERM ended it
                # KILLED), and the params are logged again (same values: a no-op for MLflow)
                self._seen.add(tid)
                self._queue_stage_run(int(trial.config.get(STAGE_KEY, 0)))
                self._log_params(tid, trial.config)
            return tid
        self._queued.add(tid)
        self._seen.add(tid)
        k = int(trial.config.get(STAGE_KEY, 0))
        self._queue_stage_run(k)

        start = int(time.time() * 1000)  # when Tune starts the trial, not when the write lands
        extra = {"dlops.confirm": "true"} if CONFIRM_KEY in trial.config else {}
        name = f"confirm-{tid}" if extra else f"stage{k}-{tid}"
        method = self._stage_info(k).get("params", {}).get("method")
        if method is not None:
            extra[TAG_STAGE_METHOD] = str(method)

        def create() -> None:
            run = self.client.create_run(
                self.experiment_id, start_time=start, run_name=name,
                tags={**self.run_tags, TAG_PARENT: self.stage_runs[k], TAG_KIND: "trial", TAG_SEARCH: self.search_id,
                      TAG_STAGE: str(k), TAG_TRIAL: tid, **extra})
            self.trial_runs[tid] = run.info.run_id
            if self.datasets:
                self.client.log_inputs(run.info.run_id, datasets=self.datasets)

        self._enqueue(_Op("create", run=("trial", tid), fn=create))
        self._log_params(tid, trial.config)
        return tid

    def trial_run(self, trial: Any) -> str:
        """The trial's run id, created if needed (waits for the writer queue)."""
        tid = self._queue_trial_run(trial)
        if tid not in self.trial_runs:
            self._call(lambda: None)
        return self.trial_runs[tid]

    def _log_params(self, tid: str, config: dict[str, Any]) -> None:
        """Queue the trial's hyperparameters (merged with its first metrics when the writer is
        behind). A value that changed since the run's first attempt keeps the first value; tag
        ``dlops.param_warning`` says so (see :meth:`_log_merged`)."""
        from mlflow.entities import Param

        values = dict(config)
        if self.sampling is not None:
            values.update(self.sampling(config))
        self._queue_batch(("trial", tid), params=[Param(key, _param_value(v)) for key, v in sorted(values.items())])

    # ---- Tune hooks ---------------------------------------------------------------------------
    def setup(self, **info: Any) -> None:
        if not self.stage_runs and not self.resumed:
            # a fresh search: create stage 0's run now, while Tune starts the first trial actors
            self._queue_stage_run(0)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        tid = self._queue_trial_run(trial)
        if tid not in self.resumed:
            return  # a run this callback creates (queued): RUNNING, nothing logged yet
        rid = self.trial_runs[tid]
        status = self._call(self.client.get_run, rid).info.status
        if status == "FINISHED":
            # finished before the driver died, after Tune's last snapshot: Tune starts it again
            # from its last checkpoint (no epoch left to run); the run stays as it was
            self._already_finished.add(tid)
        elif status != "RUNNING":  # resumed trial: same run again
            self._submit(self.client.update_run, rid, status="RUNNING")
        if rid not in self._step_floor:
            self._step_floor[rid] = self._call(self._last_step, rid)
            self._submit(self.client.set_tag, rid, "dlops.resumed", "true")

    def _last_step(self, rid: str) -> dict[str, int]:
        """Highest step logged to ``rid`` per metric key: a resumed trial logs a (key, step) only
        above it. Per key, because a driver killed in the middle of a write can leave part of an
        epoch's metrics in the store: the resumed trial fills in the rest, and nothing twice."""
        run = self.client.get_run(rid)
        keys = [k for k in run.data.metrics if is_logged_metric(k)]
        return {k: max((int(m.step) for m in self.client.get_metric_history(rid, k)), default=0) for k in keys}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        from mlflow.entities import Metric, RunTag

        tid = self._queue_trial_run(trial)
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        tags: list[Any] = []
        floors = self._step_floor.get(self.trial_runs[tid]) if tid in self.resumed else None
        if floors is not None and tid not in self._first_after_resume:
            # the first epoch a resumed trial reports: > 1 when it continued from a checkpoint
            self._first_after_resume.add(tid)
            tags.append(RunTag("dlops.resumed_first_epoch", str(step)))
        # one value per (key, step) and run, whatever Tune replays (a trial restored twice, say)
        if step <= self._logged_step.get(tid, 0):
            self._queue_batch(("trial", tid), tags=tags)
            return
        self._logged_step[tid] = step
        if tid not in self._placed:
            # where the trial ran: Ray node id (reported by the trainable), host and pid (Tune's)
            self._placed.add(tid)
            tags += [RunTag(f"dlops.{k}", str(result[k])[:5000]) for k in ("node_id", "hostname", "pid") if k in result]
        ts = int(time.time() * 1000)
        metrics = []
        for k, v in result.items():
            if is_logged_metric(k) and isinstance(v, (int, float)) and not isinstance(v, bool):
                if floors is not None and step <= floors.get(k, 0):
                    continue  # logged before the driver died (re-run from an older checkpoint)
                metrics.append(Metric(k, float(v), ts, step))
        replay = result.get("dlops_replay")
        if isinstance(replay, str):
            # epochs before a restore (from the trial's checkpoint): log whatever the store lacks,
            # e.g. results a killed driver still had queued
            done = self._done_steps(tid, floors)
            for entry in json.loads(replay):
                e = int(entry.get("epoch", 0))
                for k, v in entry.items():
                    if is_logged_metric(k) and e > done.get(k, 0) and e < step:
                        metrics.append(Metric(k, float(v), ts, e))
        # this epoch's metrics and the tags that came with it (one log_batch with the run's other
        # queued batches)
        self._queue_batch(("trial", tid), metrics=metrics, tags=tags)

    def _done_steps(self, tid: str, floors: Optional[dict[str, int]]) -> dict[str, int]:
        """Per metric, the highest step already in the store for this trial's run."""
        if floors is not None:
            return floors
        return self._call(self._last_step, self.trial_runs[tid])

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        tid = self._queue_trial_run(trial)
        r = trial.last_result or {}
        if tid in self._already_finished:
            self.n_done += 1
            self._mark_ended(trial, tid)
            return
        if self.metric and self.metric in r and not finite(r[self.metric]):
            self._fail(trial, tid, f"trial reported a non-finite {self.metric}: {r[self.metric]!r}")
            return
        if self.stopping_reason and not _completed(trial, r):
            reason = self.stopping_reason[:5000]

            end = int(time.time() * 1000)

            def end_stopped() -> None:  # stopped by the search while it ran: KILLED
                rid = self._rid(tid)
                if self.client.get_run(rid).info.status == "RUNNING":
                    self.client.set_tag(rid, "dlops.stopped", reason)
                    self.client.set_terminated(rid, status="KILLED", end_time=end)
                else:
                    self.client.set_terminated(rid, status="FINISHED", end_time=end)

            self._submit(end_stopped)
        else:
            epochs = trial.config.get(EPOCHS_KEY)
            if epochs is not None and "epoch" in r and int(r["epoch"]) < int(epochs):
                # stopped by the scheduler (ASHA) inside its stage: it ended as the search meant
                from mlflow.entities import RunTag

                self._queue_batch(("trial", tid), tags=[RunTag("dlops.early_stopped", "true"),
                                                        RunTag("dlops.last_epoch", str(int(r["epoch"])))])
            self._queue_end(("trial", tid), "FINISHED")
        self._mark_ended(trial, tid)
        self.n_done += 1
        if self.progress:
            shown = {k: r.get(k) for k in ("dev/error", "train/error", "latency_ms") if k in r}
            vals = " ".join(f"{k}={v:.4g}" for k, v in shown.items() if isinstance(v, (int, float)))
            self.progress(f"  trial {tid} (stage {trial.config.get(STAGE_KEY)}) done: {vals}")

    def _mark_ended(self, trial: Any, tid: str) -> None:
        """The trial's run end is queued; once every trial of its stage has ended in this session,
        the stage's run ends too (FINISHED, at that time: stage runs compare by duration in the
        MLflow UI). Stages with trials ended before a resume, and every stage once the search is
        being stopped (failure budget), end with the search (:meth:`end_stages`)."""
        self._ended.add(tid)
        k = int(trial.config.get(STAGE_KEY, 0))
        done = self._stage_ended.setdefault(k, set())
        if tid in done:
            return
        done.add(tid)
        if self.stopping_reason:  # the search is being stopped (failure budget): end_stages ends it
            return
        if k in self._stage_ready and len(done) == self._stage_size.get(k, -1):
            self._queue_end(("stage", k), "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        tid = self._queue_trial_run(trial)
        self._fail(trial, tid, _error_text(trial, info.get("error")))

    def _fail(self, trial: Any, tid: str, text: str) -> None:
        # the exception line (last of a traceback) first: a tag holds 5000 characters at most
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        last = lines[-1].strip() if lines else text
        tag = last if len(text) <= len(last) + 1 else f"{last}\n--- traceback (tail) ---\n{text[-4000:]}"

        end = int(time.time() * 1000)

        def write() -> None:
            rid = self._rid(tid)
            self.client.set_tag(rid, "dlops.error", tag[:5000])
            try:
                self.client.log_text(rid, text, "error.txt")
            except Exception:
                pass
            self.client.set_terminated(rid, status="FAILED", end_time=end)

        self._submit(write)
        self._mark_ended(trial, tid)
        self.n_done += 1
        self.n_failed += 1
        if self.progress:
            first = text.strip().splitlines()[-1] if text.strip() else text
            self.progress(f"  trial {trial.trial_id} (stage {trial.config.get(STAGE_KEY)}) FAILED: {first[:200]}")

    def reconcile(self, results: Any = None) -> dict[str, str]:
        """End every trial run of this search that is still RUNNING once the search is over: the
        status Tune ended the trial with (FINISHED / FAILED), KILLED for runs that no trial of this
        Tune experiment continued (e.g. left by a driver killed before Tune saved its state).

        Returns:
            run id -> status, for the runs it ended.
        """
        self.flush()
        ended: dict[str, str] = {}
        by_trial: dict[str, bool] = {}
        for r in results or []:
            tid = (r.metrics or {}).get("trial_id")
            if tid:
                by_trial[tid] = r.error is None
        for tid, rid in self.trial_runs.items():
            if tid in self._ended:  # this callback ended it (and the write landed: flush raises otherwise)
                continue
            if self.client.get_run(rid).info.status != "RUNNING":
                continue
            status = ("FINISHED" if by_trial[tid] else "FAILED") if tid in by_trial else "KILLED"
            self.client.set_terminated(rid, status=status)
            ended[rid] = status
        return ended

    def end_stages(self, status: str = "FINISHED") -> None:
        """End with ``status`` every stage run still RUNNING (those whose trials did not all end in
        this session). A stage that ran all its trials ended FINISHED when its last trial ended,
        also when the search then fails (failure budget): the search's run says why it stopped."""
        self.flush()
        for rid in self.stage_runs.values():
            if self.client.get_run(rid).info.status == "RUNNING":
                self.client.set_terminated(rid, status=status)

    def open_run_ids(self, timeout: Optional[float] = None) -> list[str]:
        """Every run id of this search's stages and trials, after the queued writes (waited for at
        most ``timeout`` s: the ids known then)."""
        try:
            self.flush(timeout)
        except Exception:  # the caller is ending the runs after an error: give it the ids anyway
            pass
        return list(self.trial_runs.values()) + list(self.stage_runs.values())


def finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _error_text(trial: Any, exc: Any = None) -> str:
    """The error of a failed trial: the exception Tune passes, else the error file Tune just wrote
    on the driver (``Trial.get_error`` reads the storage copy, which is synced later)."""
    if exc is not None:
        return str(exc)
    try:
        path = trial.error_file
        if path:
            with open(path) as f:
                return f.read()
    except Exception:
        pass
    try:
        err = trial.get_error()
        if err is not None:
            return str(err)
    except Exception:
        pass
    return "trial failed"


def _completed(trial: Any, result: dict) -> bool:
    """Whether a trial ran all its epochs (a trial stopped early by the search has not)."""
    epochs = trial.config.get(EPOCHS_KEY)
    return epochs is not None and int(result.get("epoch", 0)) >= int(epochs)


__all__ = ["MlflowTreeCallback", "is_logged_metric", "EPOCHS_KEY"]
