"""The main job: pretrain -> search -> register -> report -> ensemble.

1. Pretrain the source network on the source task; logged as its own run and model.
2. Coarse-to-fine search on Ray Tune (one ``Tuner``, a :class:`~dlops.search.searcher.StagedSearcher`);
   MLflow tree search -> stage -> trial, written from the driver.
3. Register the best trial's model (optimizing metric, satisficing constraints met, NaN never
   best) with the pytorch flavor, a signature and the class index map; alias ``challenger``,
   and ``champion`` when the gate says so.
4. Reports (bias/variance and any other reporter plugin) for the registered model.
5. An ensemble of the top-k trials (average of class probabilities), logged and registered as a
   pyfunc model.

Every run ends FINISHED, FAILED or KILLED, also on Ctrl-C or an exception.
"""

from __future__ import annotations

from dlops.errors import DataError  # noqa: F401  (the kind lives in dlops.errors)
import json
import math
import os
import tempfile
import time
import uuid
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from dlops.config import ProjectConfig
from dlops.console import quiet_libraries
from dlops.search.resources import ResourceError, check_resources  # noqa: F401  (re-exported)
from dlops.tracking.store import TAG_KIND, TAG_PARENT, TAG_SEARCH



PHASES = ("ray_start", "setup", "pretrain", "search", "register", "report", "ensemble")


@dataclass
class RunSummary:
    """What the main job did; times in seconds."""

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
    ensemble_test_error: Optional[float] = None
    ensemble_members: list[str] = field(default_factory=list)
    report_summaries: dict[str, str] = field(default_factory=dict)
    phase_s: dict[str, float] = field(default_factory=dict)
    train_s: float = 0.0  # seconds spent inside training loops (pretrain + trials)
    n_trials: int = 0
    n_failed: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def wall_s(self) -> float:
        return sum(self.phase_s.values())


@contextmanager
def _phase(summary: RunSummary, name: str, out: Callable[[str], None]) -> Iterator[None]:
    out(f"[{name}] ...")
    t0 = time.perf_counter()
    try:
        yield
    finally:
        summary.phase_s[name] = time.perf_counter() - t0
        out(f"[{name}] {summary.phase_s[name]:.1f} s")


# ------------------------------------------------------------------------------------------------
# Ray
# ------------------------------------------------------------------------------------------------


def init_ray(address: Optional[str], num_cpus: Optional[int], num_gpus: Optional[float]) -> bool:
    """Connect to ``address`` or start a local Ray that listens on 127.0.0.1 only, without the
    dashboard (Ray has no authentication). Returns True when this call started Ray."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
        return True
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    kwargs: dict[str, Any] = {}
    if num_cpus is not None:
        kwargs["num_cpus"] = num_cpus
    if num_gpus is not None:
        kwargs["num_gpus"] = num_gpus
    # address="local": a new instance; None would join the cluster last written to
    # /tmp/ray/ray_current_cluster (any `ray start` or test cluster on this machine)
    ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             configure_logging=True, logging_level="ERROR", **kwargs)
    return True


# ------------------------------------------------------------------------------------------------
# The job
# ------------------------------------------------------------------------------------------------


def _pip_requirements() -> list[str]:
    import importlib.metadata as md

    reqs = []
    for pkg in ("torch", "numpy", "mlflow"):
        try:
            reqs.append(f"{pkg}=={md.version(pkg)}")
        except md.PackageNotFoundError:
            reqs.append(pkg)
    return reqs


def _flat_params(cfg: ProjectConfig) -> dict[str, str]:
    d = cfg.model_dump(mode="json")
    out: dict[str, str] = {}

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, dict) and v and prefix.count(".") < 2:
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else k, x)
        else:
            s = json.dumps(v) if not isinstance(v, str) else v
            out[prefix] = s if len(s) <= 6000 else s[:5990] + "...[cut]"

    walk("", d)
    return out


def _search_params(cfg: ProjectConfig) -> list[Any]:
    from dlops.search.space import Param

    return [
        Param(name=n, scale=p.scale, low=p.low, high=p.high,
              choices=tuple(p.choices) if p.choices is not None else None, value=p.value, q=p.q,
              tier=p.tier, default=p.default)
        for n, p in cfg.search.space.items()
    ]


def build_plan(cfg: ProjectConfig) -> Any:
    """The :class:`StagedPlan` of the project's search section."""
    from dlops.search.plan import Stage, StagedPlan
    from dlops.search.space import Constraint
    from dlops.search.zoom import ZoomRule

    s = cfg.search
    return StagedPlan(
        _search_params(cfg),
        [Stage(st.trials, st.epochs, st.method, st.tiers, st.perturb) for st in s.stages],
        s.metric,
        s.mode,
        [Constraint(c.metric, c.op, c.threshold) for c in s.constraints],
        ZoomRule(kind=s.zoom.kind, top_k=s.zoom.top_k, top_fraction=s.zoom.top_fraction, margin=s.zoom.margin,
                 shrink=s.zoom.shrink, min_width=s.zoom.min_width, use_history=s.zoom.use_history,
                 tie_break=s.zoom.tie_break, tie_tolerance=s.zoom.tie_tolerance, keep_choices=s.zoom.keep_choices),
        seed=cfg.seed,
    )


def _constraints(cfg: ProjectConfig) -> list[Any]:
    from dlops.search.space import Constraint

    return [Constraint(c.metric, c.op, c.threshold) for c in cfg.search.constraints]


def train_source_network(cfg: ProjectConfig, data: Any, spec: dict[str, Any],
                         on_epoch: Optional[Callable[[int, float, float], None]] = None) -> tuple[Any, dict[str, Any]]:
    """Train the source network on the source task (``data.source``), with ``cfg.pretrain``'s
    SGD settings; no MLflow. ``on_epoch(epoch, train_loss, train_error)`` is called after each
    epoch (errors as fractions).

    Returns:
        (the network in eval mode, its model spec).
    """
    import torch

    from dlops.data.transforms import build_transform
    from dlops.models.transfer import build_model
    from dlops.train.loop import evaluate_proba, fit_epoch, make_loader, predict_proba, seed_everything, stack_eval

    p = cfg.pretrain
    src_spec = dict(spec, num_classes=len(data.source_classes), class_names=[str(c) for c in data.source_classes])
    seed_everything(cfg.seed)
    model = build_model(src_spec)
    t = build_transform("none", 0.0, spec.get("image_size"), spec["mean"], spec["std"], train=False)
    loader = make_loader(data.source.x, data.source.y, t, p.batch_size, shuffle=True, seed=cfg.seed)
    xs = stack_eval(data.source.x, t) if on_epoch is not None else None
    opt = torch.optim.SGD(model.parameters(), lr=p.lr, momentum=p.momentum)
    for epoch in range(p.epochs):
        loss = fit_epoch(model, loader, opt)
        if on_epoch is not None:
            on_epoch(epoch + 1, loss, evaluate_proba(predict_proba(model, xs), data.source.y).error)
    model.eval()
    return model, src_spec


def pretrain(cfg: ProjectConfig, data: Any, spec: dict[str, Any], client: Any, experiment_id: str,
             out: Callable[[str], None]) -> tuple[dict[str, Any], str]:
    """Train the source network on the source task; log it as run ``pretrain`` with its model.

    Returns:
        (state_dict of the source network, run id).
    """
    import mlflow
    from mlflow.entities import Metric, Param

    p = cfg.pretrain
    run = client.create_run(experiment_id, run_name="pretrain", tags={TAG_KIND: "pretrain"})
    rid = run.info.run_id
    last: dict[str, float] = {}

    def log_epoch(epoch: int, loss: float, error: float) -> None:
        ts = int(time.time() * 1000)
        client.log_batch(rid, metrics=[Metric("source/train/loss", loss, ts, epoch),
                                       Metric("source/train/error", error, ts, epoch)])
        last["error"] = error

    try:
        client.log_batch(rid, params=[Param("source_classes", json.dumps(data.source_classes)),
                                      Param("epochs", str(p.epochs)), Param("lr", str(p.lr)),
                                      Param("momentum", str(p.momentum)), Param("batch_size", str(p.batch_size)),
                                      Param("model", spec["name"])])
        model, src_spec = train_source_network(cfg, data, spec, log_epoch)
        out(f"  source task {data.source_classes}: train error {last['error']:.4f} after {p.epochs} epochs")
        with _active_run(rid):
            mlflow.pytorch.log_model(model, name="model", pip_requirements=_pip_requirements(),
                                     serialization_format="pickle", metadata={"model_spec": src_spec})
        client.set_terminated(rid, "FINISHED")
    except BaseException as exc:
        client.set_terminated(rid, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, rid


@contextmanager
def _active_run(run_id: str) -> Iterator[Any]:
    """Make ``run_id`` the active fluent run for a ``log_model`` call, keeping its final status."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    before = client.get_run(run_id).info.status
    with mlflow.start_run(run_id=run_id) as r:
        yield r
    if before != "RUNNING":
        client.set_terminated(run_id, before)


def check_registered_model(client: Any, uri_or_alias: str, tracking_uri: str) -> None:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` must exist before anything starts.

    Raises:
        DataError: naming the model, the alias or version, and the store.
    """
    from dlops.tracking.registry import get_model_version

    if client is None:
        raise DataError(f"model.weights: {uri_or_alias!r}: the store {tracking_uri} does not exist yet")
    try:
        get_model_version(client, uri_or_alias)
    except LookupError:
        raise DataError(f"model.weights: no registered model version {uri_or_alias!r} in {tracking_uri}") from None


def make_spec(cfg: ProjectConfig, data: Any) -> dict[str, Any]:
    """The model spec of the project: architecture, head size, input size and normalisation.

    The small CNN normalises with mean = std = 0.5 per channel; torchvision backbones with
    ImageNet's statistics (RGB) as their pretrained weights expect.
    """
    c = int(data.channels)
    if cfg.model.name != "small_cnn" and c == 3:
        mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    else:
        mean, std = [0.5] * c, [0.5] * c
    return {"name": cfg.model.name, "num_classes": len(data.class_names), "in_channels": c,
            "hidden": cfg.model.hidden, "width": 16, "freeze": cfg.model.freeze, "image_size": int(data.image_size),
            "mean": mean, "std": std, "class_names": list(data.class_names), "task": cfg.task,
            "input_layout": "NCHW float32, pixels scaled to [0,1] then (x-mean)/std"}


def load_source_state(weights: str, spec: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Source network weights from a local state_dict file, ``models:/NAME@ALIAS`` (a model of
    the registry becomes the source network of the next transfer), or a torchvision weights name
    such as ``DEFAULT`` / ``IMAGENET1K_V1`` (downloads: online only).

    Raises:
        ValueError: the file or model cannot be read (the message names it).
    """
    import torch

    if spec is not None and not weights.startswith("models:/") and not Path(weights).exists() \
            and weights.replace("_", "").isalnum() and weights.upper() == weights:
        from dlops.models.backbones import create_model

        try:
            return create_model(spec["name"], int(spec["num_classes"]), weights=weights,
                                in_channels=int(spec.get("in_channels", 3))).state_dict()
        except Exception as exc:
            raise ValueError(f"model.weights: torchvision weights {weights!r} for {spec['name']}: {exc}") from None

    if weights.startswith("models:/"):
        import mlflow

        try:
            return mlflow.pytorch.load_model(weights, map_location="cpu").state_dict()
        except Exception as exc:
            raise ValueError(f"model.weights: cannot load {weights!r}: {exc}") from None
    try:
        sd = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"model.weights: cannot load state_dict file {weights!r}: {exc}") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}


def log_augmentation(cfg: ProjectConfig, spec: dict[str, Any], client: Any, run_id: str) -> None:
    """Log the exact pipeline of every augmentation policy the search may use: a short param
    ``augment.<policy>`` (<= 6,000 characters) and the full JSON as ``augment/<policy>.json``."""
    from mlflow.entities import Param

    names = {cfg.augmentation.policy}
    sp = cfg.search.space.get("policy")
    if sp is not None and sp.choices:
        names |= set(sp.choices)
    try:
        from dlops_plugins.augment.common import describe_policy, policy_param
    except ImportError:  # the built-in augmentation plugin is not installed
        return
    for name in sorted(n for n in names if n != "none"):
        try:
            desc = describe_policy(name, cfg.augmentation.magnitude, spec.get("image_size"),
                                   channels=int(spec.get("in_channels", 3)))
        except Exception as exc:  # a third-party policy may not describe itself
            client.set_tag(run_id, f"augment.{name}", f"not describable: {exc}"[:5000])
            continue
        client.log_batch(run_id, params=[Param(f"augment.{name}", policy_param(desc))])
        client.log_dict(run_id, desc, f"augment/{name}.json")


def log_trial_augmentation(cfg: ProjectConfig, spec: dict[str, Any], client: Any, plan: Any,
                           trial_runs: dict[str, str]) -> None:
    """Each trial run gets param ``augment.pipeline``: the exact pipeline its policy and magnitude
    ran (albumentations serialisation, <= 6,000 characters)."""
    from mlflow.entities import Param

    try:
        from dlops_plugins.augment.common import describe_policy, policy_param
    except ImportError:
        return
    cache: dict[tuple[str, float], str] = {}
    for tid, conf in plan.suggested.items():
        rid = trial_runs.get(tid)
        if rid is None:
            continue
        key = (str(conf.get("policy", cfg.augmentation.policy)), float(conf.get("magnitude", cfg.augmentation.magnitude)))
        if key[0] == "none":
            continue
        if key not in cache:
            try:
                cache[key] = policy_param(describe_policy(key[0], key[1], spec.get("image_size"),
                                                          channels=int(spec.get("in_channels", 3))))
            except Exception as exc:  # a third-party policy may not describe itself
                cache[key] = f"not describable: {exc}"[:6000]
        try:
            client.log_batch(rid, params=[Param("augment.pipeline", cache[key])])
        except Exception:  # already logged with this value (resume): nothing to do
            pass


def common_spec(specs: list[dict[str, Any]]) -> dict[str, Any]:
    """The keys of the members' model specs that every member shares, with their value: an
    ensemble's ``model_spec`` (input size, channels, mean, std, task, classes). What differs
    between members (e.g. the small CNN's ``hidden`` units, a searched hyperparameter) is only in
    the ensemble's ``member_specs``, one spec per member, in member order."""
    if not specs:
        return {}
    first = specs[0]
    return {k: v for k, v in first.items() if all(k in sp and sp[k] == v for sp in specs[1:])}


def run_project(
    cfg: ProjectConfig,
    tracking_uri: Optional[str] = None,
    ray_address: Optional[str] = None,
    out: Callable[[str], None] = print,
    resume: bool = False,
) -> RunSummary:
    """Run the main job (see the module docstring) and return its summary.

    Args:
        cfg: a validated project.
        tracking_uri: overrides ``tracking.uri`` (else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``).
        ray_address: overrides ``ray.address`` (else ``$RAY_ADDRESS``, else a local Ray on 127.0.0.1).
        out: where progress lines go.
        resume: continue the latest unfinished search of the experiment (same parent run,
            same trials; see :mod:`dlops.search.resume`) instead of starting a new one.

    Raises:
        ResourceError: the cluster cannot hold one trial (checked before any run is created).
        NothingToResumeError: ``resume`` and no unfinished search.
        KeyboardInterrupt: re-raised after every open run is marked KILLED (Ctrl-C). On SIGTERM
            the open runs end KILLED and the process exits 143 (:mod:`dlops.signals`).
    """
    import mlflow
    from mlflow import MlflowClient

    from dlops.tracking.store import check_tracking_server, end_open_runs, ensure_experiment, resolve_tracking_uri

    quiet_libraries()
    uri = resolve_tracking_uri(tracking_uri, cfg.tracking.uri)
    check_tracking_server(uri)  # an unreachable server is bad input, found before anything starts
    state: dict[str, Any] = {"callback": None, "started_ray": False, "resume": resume}
    # bad data is bad input: it is found before Ray starts or any run is created
    from dlops.data.sources import load_task

    try:
        data = load_task(cfg.data, cfg.seed, cfg.task)
    except (ValueError, OSError) as exc:
        raise DataError(f"data: {exc}") from None
    # Ray and the resource check come before the store is touched: a request the cluster cannot
    # meet leaves no run (and no new store)
    t_ray = time.perf_counter()
    state["started_ray"] = init_ray(ray_address or cfg.ray.address or os.environ.get("RAY_ADDRESS"),
                                    cfg.ray.num_cpus, cfg.ray.num_gpus)
    t_ray = time.perf_counter() - t_ray
    from dlops import signals

    sigterm = signals.install()  # after ray.init, whose native SIGTERM handler aborts: see dlops.signals
    try:
        check_resources(cfg.search.resources.cpu, cfg.search.resources.gpu, cfg.ray.autoscaler)
        missing_store = uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists()
        if resume and missing_store:
            from dlops.search.resume import NothingToResumeError

            raise NothingToResumeError(f"--resume: there is no store at {uri} to resume from; "
                                       "run without --resume to start a new search")
        w = cfg.model.weights or ""
        if w.startswith("models:/"):
            check_registered_model(MlflowClient(uri) if not missing_store else None, w, uri)
        mlflow.set_tracking_uri(uri)
        os.environ["MLFLOW_TRACKING_URI"] = uri  # reaches Ray workers started from here explicitly
        client = MlflowClient(uri)
        exp_id = ensure_experiment(client, cfg.experiment_name, uri, cfg.tracking.artifact_location)
        mlflow.set_experiment(experiment_id=exp_id)
        if resume:
            from dlops.search.resume import find_resumable, reopen

            point = find_resumable(client, exp_id, cfg.ray.storage_path, cfg.name)
            reopen(client, point)
            parent_id, search_id = point.parent_run_id, point.search_id
            out(f"[resume] search {search_id} (parent run {parent_id}, was {point.status})")
        else:
            search_id = uuid.uuid4().hex[:12]
            parent_id = client.create_run(exp_id, run_name=f"search-{cfg.name}",
                                          tags={TAG_KIND: "search", TAG_SEARCH: search_id}).info.run_id
    except BaseException:
        signals.restore(sigterm)
        if state["started_ray"]:
            import ray

            ray.shutdown()
        raise
    summary = RunSummary(tracking_uri=uri, experiment_id=exp_id, search_run_id=parent_id)
    summary.phase_s["ray_start"] = t_ray
    open_runs: list[str] = [parent_id]

    def end_open(status: str, timeout: Optional[float] = None) -> None:
        """End this search's runs still RUNNING (MLflow only: Ray may be gone)."""
        cb = state["callback"]
        end_open_runs(client, (cb.open_run_ids(timeout) if cb is not None else []) + open_runs, status)

    signals.set_cleanup(lambda: end_open("KILLED", timeout=10.0))  # a SIGTERM: see dlops.signals
    try:
        _run(cfg, data, client, exp_id, parent_id, search_id, summary, open_runs, out, state)
        client.set_terminated(parent_id, "FINISHED")
    except BaseException as exc:
        end_open("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        try:
            from dlops.plugins import get_registry

            get_registry().manager.hook.dlops_on_search_error(config=cfg, parent_run_id=parent_id, error=exc)
        except Exception:  # a plugin's error hook must not hide the original error
            pass
        if not isinstance(exc, KeyboardInterrupt):
            try:
                client.set_tag(parent_id, "dlops.error", f"{type(exc).__name__}: {exc}"[:5000])
            except Exception:
                pass
        raise
    finally:
        signals.restore(sigterm)
        if state["started_ray"]:
            import ray

            ray.shutdown()
    return summary


def _run(cfg: ProjectConfig, data: Any, client: Any, exp_id: str, parent_id: str, search_id: str,
         summary: RunSummary, open_runs: list[str], out: Callable[[str], None], state: dict[str, Any]) -> None:
    import mlflow
    import numpy as np
    import torch
    from mlflow.entities import Metric, Param

    from dlops.plugins import get_registry
    from dlops.search.space import select_top

    with _phase(summary, "setup", out):
        client.log_batch(parent_id, params=[Param(k, v) for k, v in _flat_params(cfg).items()][:100])
        client.log_text(parent_id, json.dumps(cfg.model_dump(mode="json"), indent=2), "project.json")
        client.log_dict(parent_id, data.manifest, "data_manifest.json")
        if data.skipped:
            out(f"  skipped {len(data.skipped)} unusable files (listed in data_manifest.json), e.g. "
                + "; ".join(f"{p}: {r}" for p, r in data.skipped[:3]))
            client.set_tag(parent_id, "dlops.skipped_files", str(len(data.skipped)))
        out(f"  {cfg.task}: {len(data.class_names)} {'labels' if cfg.task == 'multilabel' else 'classes'}; train {len(data.train)}, train-dev "
            f"{len(data.train_dev)}, dev {len(data.dev)}, test {len(data.test)} examples")
        spec = make_spec(cfg, data)
        plan = build_plan(cfg)
        torch.set_num_threads(max(1, os.cpu_count() or 1))
        log_augmentation(cfg, spec, client, parent_id)

    source_state = None
    with _phase(summary, "pretrain", out):
        t0 = time.perf_counter()
        w = cfg.model.weights
        reused = None
        if w == "pretrain" and state.get("resume"):
            from dlops.search.resume import reuse_pretrain

            reused = reuse_pretrain(client, parent_id)
        if reused is not None:
            source_state, summary.pretrain_run_id = reused
            out(f"  source network from pretraining run {summary.pretrain_run_id} (resume)")
        elif w == "pretrain":
            source_state, summary.pretrain_run_id = pretrain(cfg, data, spec, client, exp_id, out)
            client.set_tag(parent_id, "dlops.pretrain_run_id", summary.pretrain_run_id)
        elif w:
            source_state = load_source_state(w, spec)
            out(f"  source weights from {w}")
        summary.train_s += time.perf_counter() - t0

    with _phase(summary, "search", out):
        from dlops.search.run import run_search
        from dlops.search.trainable import train_transfer

        res = cfg.search.resources
        reg = get_registry()
        reg.manager.hook.dlops_before_search(config=cfg, parent_run_id=parent_id)
        payload = {
            "train": (data.train.x, data.train.y), "train_dev": (data.train_dev.x, data.train_dev.y),
            "dev": (data.dev.x, data.dev.y), "spec": spec, "source_state": source_state,
            "freeze": cfg.model.freeze, "policy": cfg.augmentation.policy, "magnitude": cfg.augmentation.magnitude,
            "seed": cfg.seed, "default_epochs": cfg.search.default_epochs, "gpu": res.gpu,
            "allow_cpu": res.allow_cpu, "threads": max(1, int(res.cpu)),
            "num_workers": cfg.data.num_workers,
        }
        t0 = time.perf_counter()
        outcome = run_search(train_transfer, payload, plan, cfg.search, cfg.ray, cfg.name, client, exp_id,
                             parent_id, search_id, out, on_callback=lambda c: state.__setitem__("callback", c),
                             resume=bool(state.get("resume")))
        cb = outcome.callback
        summary.train_s += time.perf_counter() - t0
        summary.n_trials, summary.n_failed = outcome.n_trials, outcome.n_failed
        summary.warnings += outcome.warnings
        ckpts = outcome.checkpoints
        for tid, ck in ckpts.items():  # `dlops report RUN_ID` finds a trial's weights through this tag
            if tid in cb.trial_runs:
                client.set_tag(cb.trial_runs[tid], "dlops.checkpoint", ck.path)
        log_trial_augmentation(cfg, spec, client, plan, cb.trial_runs)
        best = plan.best()
        reg.manager.hook.dlops_after_search(config=cfg, parent_run_id=parent_id, best=best)
        if best is None:
            raise RuntimeError("search: no trial finished with a finite "
                               f"{cfg.search.metric} while meeting the constraints; nothing to register")
        summary.best_trial_id = best.trial_id
        summary.best_run_id = cb.trial_runs.get(best.trial_id)
        summary.best_config = {k: v for k, v in best.config.items()}
        client.set_tag(parent_id, "dlops.best_trial_id", best.trial_id)
        if summary.best_run_id:
            client.set_tag(parent_id, "dlops.best_run_id", summary.best_run_id)

    from dlops.train.checkpoint import load_checkpoint_model
    from dlops.train.loop import evaluate_task, predict_proba, stack_eval
    from dlops.data.transforms import build_transform

    t_eval = build_transform("none", 0.0, spec.get("image_size"), spec["mean"], spec["std"], train=False)
    splits = {"train": data.train, "train_dev": data.train_dev, "dev": data.dev, "test": data.test}
    xs = {k: stack_eval(v.x, t_eval) for k, v in splits.items()}

    def load_member(tid: str) -> tuple[Any, dict[str, Any], str]:
        ck = ckpts.get(tid)
        if ck is None:
            raise RuntimeError(f"trial {tid} has no checkpoint to register")
        path = ck.to_directory(tempfile.mkdtemp(prefix=f"dlops-{tid}-"))
        m, sp = load_checkpoint_model(path)
        return m, sp, path

    with _phase(summary, "register", out):
        from mlflow.models import infer_signature

        from dlops.tracking.registry import register_and_promote

        model, mspec, _ = load_member(best.trial_id)
        task = cfg.task
        probs = {k: predict_proba(model, xs[k], task=task) for k in splits}
        evals = {k: evaluate_task(probs[k], splits[k].y, task) for k in splits}
        metrics = {f"{k}/error": evals[k].error for k in splits}
        metrics["dev/f1"] = evals["dev"].f1
        for key in ("latency_ms", "size_mb"):
            if key in best.metrics:
                metrics[key] = float(best.metrics[key])
        summary.best_metrics = metrics
        class_index = {str(i): c for i, c in enumerate(mspec["class_names"])}
        sig = infer_signature(xs["dev"][:2].numpy(), probs["dev"][:2])
        rid = summary.best_run_id
        assert rid is not None
        ts = int(time.time() * 1000)
        client.log_batch(rid, metrics=[Metric("test/error", metrics["test/error"], ts, 0)])
        with tempfile.TemporaryDirectory() as td:
            ci = Path(td) / "class_index.json"
            ci.write_text(json.dumps(class_index, indent=2))
            with _active_run(rid):
                info = mlflow.pytorch.log_model(
                    model, name="model", signature=sig, extra_files=[str(ci)], pip_requirements=_pip_requirements(),
                    serialization_format="pickle",
                    metadata={"model_spec": mspec, "class_index": class_index},
                )
        promo = register_and_promote(
            client, info.model_uri, cfg.model_name, metrics, cfg.search.metric, cfg.search.mode, _constraints(cfg),
            tags={"dlops.trial_id": best.trial_id, "dlops.search_run_id": parent_id, "dlops.run_id": rid,
                  "dlops.class_index": json.dumps(class_index)},
        )
        summary.model_uri = f"models:/{promo.name}@{CHAMPION_OR(promo)}"
        summary.model_aliases = promo.aliases
        summary.promotion_reason = promo.reason
        client.set_tag(parent_id, "dlops.model_version", f"{promo.name}/{promo.version}")
        out(f"  registered {promo.name} version {promo.version} with aliases {list(promo.aliases)} ({promo.reason})")

    with _phase(summary, "report", out):
        from dlops.reporting import report_model, report_search, run_history
        from dlops.reports import ReportContext, SplitPredictions

        reg = get_registry()
        trials = [{"trial_id": t.trial_id, "run_id": cb.trial_runs[t.trial_id],
                   "params": {k: v for k, v in t.config.items()}, "metrics": dict(t.metrics)}
                  for t in plan.outcomes() if t.trial_id in cb.trial_runs]
        report_search(client, reg, parent_id, trials, cfg.human_level_error, cfg.report.reporters)
        errors = {"human": cfg.human_level_error, **{k: evals[k].error for k in splits}}
        preds = {k: SplitPredictions(splits[k].y, probs[k], images=splits[k].x, tags=data.tags.get(k))
                 for k in splits}
        with tempfile.TemporaryDirectory() as td:
            ctx = ReportContext(errors=errors, out_dir=Path(td), predictions=preds,
                                class_names=mspec["class_names"], history=run_history(client, rid),
                                title=f"{promo.name} v{promo.version}", trials=trials)
            reports = report_model(client, reg, [parent_id, rid], cfg.report.reporters, ctx)
        for name, rep in reports.items():
            summary.report_summaries[name] = rep.summary
            out(f"  {name}: {rep.summary}")

    with _phase(summary, "ensemble", out):
        k = cfg.ensemble.top_k
        top = select_top(plan.outcomes(), cfg.search.metric, cfg.search.mode, _constraints(cfg), k=k)
        if cfg.ensemble.enabled and len(top) >= 2:
            from dlops_plugins.ensemble.average import average_probabilities
            from dlops_plugins.ensemble.tta import predict_tta

            builder = get_registry().get("ensemble_servers", "average")
            members = [load_member(t.trial_id) for t in top]
            tta = {"tta": cfg.ensemble.tta, "crop_fraction": cfg.ensemble.crop_fraction}
            member_probs = {s: np.stack([predict_tta(lambda v, m=m: predict_proba(m, v, task=task), xs[s],
                                                     tta["tta"], tta["crop_fraction"]) for m, _, _ in members])
                            for s in ("dev", "test")}
            ens = {s: evaluate_task(average_probabilities(member_probs[s]), splits[s].y, task) for s in ("dev", "test")}
            erun = client.create_run(exp_id, run_name="ensemble",
                                     tags={TAG_PARENT: parent_id, TAG_KIND: "ensemble", TAG_SEARCH: search_id})
            erid = erun.info.run_id
            open_runs.append(erid)
            ts = int(time.time() * 1000)
            client.log_batch(erid, params=[Param("members", json.dumps([t.trial_id for t in top])),
                                           Param("top_k", str(k)), Param("combine", "mean of class probabilities"),
                                           Param("tta", tta["tta"]), Param("crop_fraction", str(tta["crop_fraction"]))],
                             metrics=[Metric("dev/error", ens["dev"].error, ts, 0),
                                      Metric("test/error", ens["test"].error, ts, 0),
                                      Metric("single_best/test/error", metrics["test/error"], ts, 0)])
            ens_sig = infer_signature(xs["dev"][:2].numpy(), average_probabilities(member_probs["dev"][:, :2]))
            with _active_run(erid):
                einfo = mlflow.pyfunc.log_model(
                    name="ensemble", python_model=builder.python_model(),
                    artifacts={f"member_{i}": p for i, (_, _, p) in enumerate(members)},
                    signature=ens_sig, pip_requirements=_pip_requirements(), model_config=tta,
                    metadata={"model_spec": common_spec([sp for _, sp, _ in members]), "class_index": class_index,
                              "members": [t.trial_id for t in top],
                              "member_specs": [sp for _, sp, _ in members], **tta},
                )
            emetrics = {"dev/error": ens["dev"].error, "test/error": ens["test"].error}
            epromo = register_and_promote(client, einfo.model_uri, cfg.ensemble_name, emetrics, cfg.search.metric,
                                          cfg.search.mode, (), tags={"dlops.search_run_id": parent_id,
                                                                     "dlops.members": json.dumps([t.trial_id for t in top])},
                                          baseline={cfg.search.metric: metrics[cfg.search.metric]}
                                          if cfg.search.metric in metrics else None)
            client.set_terminated(erid, "FINISHED")
            summary.ensemble_uri = f"models:/{epromo.name}@{CHAMPION_OR(epromo)}"
            summary.ensemble_test_error = ens["test"].error
            summary.ensemble_members = [t.trial_id for t in top]
            with_tta = "" if tta["tta"] == "none" else f" with {tta['tta']} TTA"
            out(f"  ensemble of {len(top)}{with_tta}: test error {ens['test'].error:.4f} vs best single {metrics['test/error']:.4f}; "
                f"registered {epromo.name} version {epromo.version} with aliases {list(epromo.aliases)} ({epromo.reason})")
        else:
            out(f"  ensemble skipped ({'disabled' if not cfg.ensemble.enabled else 'fewer than 2 feasible trials'})")

    ts = int(time.time() * 1000)
    client.log_batch(parent_id, metrics=[Metric(f"time/{k}_s", v, ts, 0) for k, v in summary.phase_s.items()]
                     + [Metric(f"best/{k}", v, ts, 0) for k, v in summary.best_metrics.items() if math.isfinite(v)])


def CHAMPION_OR(promo: Any) -> str:
    """The alias to show: ``champion`` when the version holds it, else ``challenger``."""
    return "champion" if "champion" in promo.aliases else "challenger"


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
    lines.append(f"model          {s.model_uri}  (aliases: {', '.join(s.model_aliases)}; {s.promotion_reason})")
    if s.ensemble_uri:
        lines.append(f"ensemble       {s.ensemble_uri}  test error {s.ensemble_test_error:.4f} vs best single "
                     f"{m.get('test/error', float('nan')):.4f} ({len(s.ensemble_members)} members)")
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
