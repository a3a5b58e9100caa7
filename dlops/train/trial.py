"""One trial's training: the Ray Tune trainable of a transfer trial (runs on a Ray worker; logs
nothing to MLflow).

Each epoch it reports ``train/loss``, ``train/error``, ``train_dev/error``, ``train_dev/loss``,
``dev/error``, ``dev/loss``, ``dev/f1``, ``latency_ms`` (median single-image forward pass, ms),
``size_mb`` (MB), ``gpu_mem_mb`` (CUDA only: peak memory torch allocated in the trial, MB = 10**6
bytes), ``epoch`` (1-based) and ``node_id`` (the Ray node, a string) with
``ray.tune.report`` and a checkpoint (:mod:`dlops.train.checkpoint`), so that an interrupted
trial resumes from its last epoch. The MLflow logging happens in the driver
(:class:`dlops.tracking.callback.MlflowTreeCallback`): one writer for the store.

What every trial shares (data, model spec, source weights, defaults, resources) is one
:class:`TrialPayload`, sent once through Ray's object store (``tune.with_parameters``); what
varies per trial is Tune's ``config`` (the hyperparameters of
:data:`dlops.config.TRIAL_HYPERPARAMETERS`, plus ``epochs`` and ``stage`` from the plan).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import numpy as np

from dlops.train.checkpoint import read_checkpoint, save_checkpoint
from dlops.train.device import select_device  # noqa: F401  (re-exported: the device rule's old home)

REPLAY_KEY = "dlops_replay"  # result key: JSON list of the epochs before a restore

#: one split: images ``x`` (N, H, W) or (N, H, W, C), labels ``y`` (N,) int or (N, L) multi-label
Split = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class TrialPayload:
    """What every trial of a search shares (sent once to the workers).

    Attributes:
        train, train_dev, dev: ``(x, y)`` of each split; ``x`` images as the data source gives them
            (``(N, H, W)`` or ``(N, H, W, C)``), ``y`` class indices ``(N,)`` or multi-label 0/1 ``(N, L)``.
        spec: the base model spec (:func:`dlops.models.transfer.build_model`); a trial's ``hidden``
            overrides it (:func:`trial_spec`).
        source_state: state dict of the source network whose features are copied; None: none.
        freeze: the freeze policy string (:mod:`dlops.models.freeze`).
        policy, magnitude: the augmentation policy and its magnitude (a fraction, 0..1), unless the
            trial's config sets them.
        seed: the training seed (epoch ``e`` shuffles and augments with ``seed + e``).
        default_epochs: epochs of a trial whose config has no ``epochs``.
        gpu: GPUs per trial (a fraction allowed); > 0 trains on CUDA.
        allow_cpu: train on the CPU when a GPU is asked for and CUDA is absent.
        threads: the trial's CPUs; its workers and threads are planned within them
            (:func:`dlops.data.loader.thread_plan`).
        num_workers: DataLoader worker processes (0: in the trial's process); None: the trial's
            CPUs minus one, used only when an augmentation policy works per image.
        backbone_lr_mult: learning rate of unfrozen backbone layers relative to the head's, unless
            the trial's config sets it.
        unfreeze_epoch: gradual unfreezing: the frozen layers are unfrozen from this epoch on
            (1-based), unless the trial's config sets it; None: never.
    """

    train: Split
    train_dev: Split
    dev: Split
    spec: Mapping[str, Any]
    freeze: str
    policy: str
    magnitude: float
    seed: int
    default_epochs: int
    gpu: float = 0.0
    allow_cpu: bool = True
    threads: int = 1
    num_workers: Optional[int] = None
    source_state: Optional[Mapping[str, Any]] = None
    backbone_lr_mult: float = 1.0
    unfreeze_epoch: Optional[int] = None


def trial_spec(base_spec: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """The model spec of a trial: the base spec with the trial's architecture hyperparameters."""
    spec = dict(base_spec)
    if "hidden" in config:
        spec["hidden"] = int(config["hidden"])
    return spec


def _ray_gpu_ids() -> Optional[list[Any]]:
    """The GPUs Ray assigned this process (None outside a Ray worker)."""
    try:
        import ray

        if not ray.is_initialized():
            return None
        return list(ray.get_gpu_ids())
    except Exception:  # noqa: BLE001  (not in a Ray worker: nothing assigned to check)
        return None


class _Trial:
    """The state of one running trial: model, optimizer factory, evaluation tensors, history."""

    def __init__(self, config: Mapping[str, Any], payload: TrialPayload) -> None:
        import torch

        from dlops.models.transfer import apply_freeze, build_model, transfer_features

        self.config, self.payload = config, payload
        self.seed = int(config.get("seed", payload.seed))  # a confirmation trial: a fresh seed (dlops.search.confirm)
        from dlops.train.device import apply_settings, device_settings, has_conv2d

        self.device = select_device(float(payload.gpu), bool(payload.allow_cpu), assigned_gpus=_ray_gpu_ids())
        self.spec = trial_spec(payload.spec, config)
        self.task = self.spec.get("task", "classification")
        self.model = build_model(self.spec)
        if payload.source_state is not None:
            transfer_features(self.model, payload.source_state)
        apply_freeze(self.model, payload.freeze)
        self.settings = device_settings(self.device, conv=has_conv2d(self.model))
        apply_settings(self.model, self.settings)
        self.lr = float(config["lr"])
        self.mult = float(config.get("backbone_lr_mult", payload.backbone_lr_mult))
        ue = config.get("unfreeze_epoch", payload.unfreeze_epoch)
        self.unfreeze_epoch: Optional[int] = None if ue is None else int(ue)
        self.opt = self.make_optimizer()
        self.start = 0  # epochs done before this run (a restored trial)
        self.history: list[dict[str, float]] = []  # every epoch's metrics, kept in the checkpoint
        self.replay = False  # the next report carries the history (the trial was restored)
        if self.task == "multilabel":
            from dlops.train.multilabel import masked_bce_with_logits as loss_fn
        else:
            loss_fn = torch.nn.functional.cross_entropy
        self.loss_fn: Callable[..., Any] = loss_fn

    def make_optimizer(self) -> Any:
        """SGD over the trainable parameters (backbone groups at ``lr * backbone_lr_mult``)."""
        import torch

        from dlops.models.freeze import param_groups

        return torch.optim.SGD(param_groups(self.model, self.lr, self.mult), lr=self.lr,
                               momentum=float(self.config.get("momentum", 0.0)),
                               weight_decay=float(self.config.get("weight_decay", 0.0)))

    def unfreeze(self) -> None:
        """Unfreeze the frozen layers (gradual unfreezing) and rebuild the optimizer over them."""
        from dlops.models.freeze import unfreeze_at_epoch

        assert self.unfreeze_epoch is not None
        unfreeze_at_epoch(self.model, self.unfreeze_epoch, {self.unfreeze_epoch: "none"})
        self.opt = self.make_optimizer()  # the optimizer now holds the unfrozen parameters too

    def restore(self, directory: str) -> None:
        """Continue from a checkpoint directory: weights, optimizer, epochs done, history."""
        st = read_checkpoint(directory, self.device)
        if st.history is not None:
            self.history, self.replay = st.history, True
        self.start = st.epoch
        if self.unfreeze_epoch is not None and self.start >= self.unfreeze_epoch:
            self.unfreeze()
        self.model.load_state_dict(st.model)
        self.opt.load_state_dict(st.optimizer)


def _eval_sets(payload: TrialPayload, t_eval: Any) -> dict[str, tuple[Any, np.ndarray]]:
    """Each split's images as one evaluation tensor ``(N, C, H, W)`` with its labels."""
    from dlops.train.loop import stack_eval

    return {split: (stack_eval(x, t_eval), y)
            for split, (x, y) in (("train", payload.train), ("train_dev", payload.train_dev), ("dev", payload.dev))}


def _epoch_metrics(trial: _Trial, ev: Mapping[str, tuple[Any, np.ndarray]], train_loss: float,
                   epoch: int) -> dict[str, Any]:
    """One epoch's metrics: ``train/loss``, ``<split>/error`` (fractions), ``train_dev/loss``,
    ``dev/loss``, ``dev/f1``, ``latency_ms`` (ms), ``size_mb`` (MB), ``epoch`` (1-based)."""
    from dlops.train.loop import evaluate_task, latency_ms, predict_proba, size_mb

    metrics: dict[str, Any] = {"train/loss": train_loss, "epoch": epoch}
    for split, (x, y) in ev.items():
        e = evaluate_task(predict_proba(trial.model, x, trial.device, task=trial.task), y, trial.task)
        metrics[f"{split}/error"] = e.error
        if split != "train":
            metrics[f"{split}/loss"] = e.loss
        if split == "dev":
            metrics["dev/f1"] = e.f1
    metrics["latency_ms"] = latency_ms(trial.model, ev["dev"][0][:1], device=trial.device)
    metrics["size_mb"] = size_mb(trial.model)
    from dlops.train.device import gpu_mem_mb

    mem = gpu_mem_mb(trial.device)
    if mem is not None:  # peak since the trial started, MB = 10**6 bytes (CUDA only)
        metrics["gpu_mem_mb"] = mem
    return metrics


def _report(trial: _Trial, metrics: dict[str, Any], epoch: int, node_id: str) -> None:
    """Add the epoch to the history, write the checkpoint and report both to Tune.

    The first report after a restore carries the epochs before it (:data:`REPLAY_KEY`): a driver
    killed with results still queued for MLflow loses none of them (the callback logs what is
    missing).
    """
    from ray import tune

    if trial.replay:
        metrics[REPLAY_KEY] = json.dumps(trial.history)
        trial.replay = False
    trial.history.append({k: float(v) for k, v in metrics.items()
                          if k != REPLAY_KEY and isinstance(v, (int, float))})
    metrics["node_id"] = node_id  # which Ray node ran it (a tag in MLflow)
    with tempfile.TemporaryDirectory() as d:
        save_checkpoint(d, trial.model.state_dict(), trial.opt.state_dict(), epoch, trial.spec, trial.history)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def train_trial(config: dict[str, Any], payload: TrialPayload) -> None:
    """Fine-tune one trial (the Tune trainable; ``tune.with_parameters(train_trial, payload=...)``).

    Hyperparameters read from ``config``: ``lr``, ``momentum``, ``weight_decay``, ``batch_size``
    (default 32), ``hidden`` (small CNN head), ``policy``/``magnitude`` (augmentation),
    ``backbone_lr_mult``, ``unfreeze_epoch`` (1-based), ``epochs``; those not in ``config`` come
    from ``payload``.

    Raises:
        dlops.train.loop.NonFiniteLossError: the loss became NaN/inf (the trial is FAILED).
        dlops.errors.ResourceError: a GPU was asked for, none is usable and ``payload.allow_cpu``
            is false (:func:`dlops.train.device.select_device`).
    """
    import ray
    from ray import tune

    from dlops.data.loader import TrainLoader, cap_threads, thread_plan
    from dlops.data.transforms import build_transform, eval_transform
    from dlops.train.device import reset_gpu_peak
    from dlops.train.loop import fit_epoch, seed_everything

    cap_threads(max(1, int(payload.threads)))  # narrowed to the plan's below, once the transform is known
    seed_everything(int(config.get("seed", payload.seed)))
    trial = _Trial(config, payload)
    reset_gpu_peak(trial.device)
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            trial.restore(d)
    spec, seed = trial.spec, trial.seed
    policy = str(config.get("policy", payload.policy))
    magnitude = float(config.get("magnitude", payload.magnitude))
    size = spec.get("image_size")
    t_train = build_transform(policy, magnitude, size, spec["mean"], spec["std"], train=True)
    t_eval = eval_transform(spec)  # the one eval transform (report and serving use it too)
    ev = _eval_sets(payload, t_eval)
    epochs = int(config.get("epochs", payload.default_epochs))
    node_id = ray.get_runtime_context().get_node_id()
    bs = int(config.get("batch_size", 32))
    xtr, ytr = payload.train
    augments = getattr(t_train, "batch", None) is None  # per-image work: a policy augments
    plan = thread_plan(float(payload.threads), payload.num_workers, per_image_work=augments)
    cap_threads(plan.main_threads)  # workers cap themselves (dlops.data.loader.WorkerInit)
    # built once: workers persist across epochs; epoch e reseeds them (a resumed trial repeats the
    # uninterrupted sequence)
    loader = TrainLoader(xtr, ytr, t_train, bs, seed, plan, pin_memory=trial.settings.pin_memory,
                         pretransformed=None if augments else ev["train"][0], batch_tail=getattr(t_eval, "batch", None))
    try:
        for epoch in range(trial.start, epochs):
            if trial.unfreeze_epoch is not None and epoch + 1 == trial.unfreeze_epoch:
                trial.unfreeze()
            train_loss = fit_epoch(trial.model, loader.epoch(epoch), trial.opt, trial.device, loss_fn=trial.loss_fn,
                                   settings=trial.settings)
            _report(trial, _epoch_metrics(trial, ev, train_loss, epoch + 1), epoch + 1, node_id)
    finally:
        loader.close()
