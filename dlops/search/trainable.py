"""The Ray Tune trainable of a transfer trial (runs on a Ray worker; logs nothing to MLflow).

Each epoch it reports ``train/loss``, ``train/error``, ``train_dev/error``, ``train_dev/loss``,
``dev/error``, ``dev/loss``, ``dev/f1``, ``latency_ms`` (median single-image forward pass, ms),
``size_mb``, ``epoch`` and ``node_id`` (the Ray node, a string) with ``ray.tune.report`` and a checkpoint, so that an interrupted trial
resumes from its last epoch. The MLflow logging happens in the driver
(:class:`dlops.tracking.callback.MlflowTreeCallback`): one writer for the store.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Mapping

from dlops.train.checkpoint import CHECKPOINT_FILE, HISTORY_FILE, SPEC_FILE, load_checkpoint_model  # noqa: F401
REPLAY_KEY = "dlops_replay"  # result key: JSON list of the epochs before a restore


def trial_spec(base_spec: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """The model spec of a trial: the base spec with the trial's architecture hyperparameters."""
    spec = dict(base_spec)
    if "hidden" in config:
        spec["hidden"] = int(config["hidden"])
    return spec


def select_device(gpu: float, allow_cpu: bool) -> str:
    """``cuda`` when the trial asked for a GPU and CUDA is there; else ``cpu`` if allowed.

    Raises:
        RuntimeError: a GPU was asked for, CUDA is absent and ``allow_cpu`` is false.
    """
    import torch

    if gpu > 0:
        if torch.cuda.is_available():
            return "cuda"
        if not allow_cpu:
            raise RuntimeError("search.resources.gpu > 0 but CUDA is not available on this node "
                               "and search.resources.allow_cpu is false")
    return "cpu"


def train_transfer(config: dict[str, Any], payload: Mapping[str, Any]) -> None:
    """Fine-tune one trial. ``payload`` comes from the pipeline (data arrays, model spec, source
    weights, freeze policy, augmentation, seed, resources).

    Hyperparameters read from ``config``: ``lr``, ``momentum``, ``weight_decay``, ``batch_size``,
    ``hidden`` (small CNN head), ``policy``/``magnitude`` (augmentation), ``backbone_lr_mult``
    (learning rate of unfrozen backbone layers relative to the head's), ``unfreeze_epoch``
    (gradual unfreezing: the frozen layers are unfrozen from this epoch on, 1-based), ``epochs``.

    Raises:
        dlops.train.loop.NonFiniteLossError: the loss became NaN/inf (the trial is FAILED).
    """
    import torch
    from ray import tune

    from dlops.data.transforms import build_transform
    from dlops.models.freeze import param_groups, unfreeze_at_epoch
    from dlops.models.transfer import apply_freeze, build_model, transfer_features
    from dlops.train.loop import (
        evaluate_task,
        fit_epoch,
        latency_ms,
        make_loader,
        predict_proba,
        seed_everything,
        size_mb,
        stack_eval,
    )

    torch.set_num_threads(max(1, int(payload.get("threads", 1))))
    seed = int(payload["seed"])
    seed_everything(seed)
    device = select_device(float(payload["gpu"]), bool(payload["allow_cpu"]))
    spec = trial_spec(payload["spec"], config)
    task = spec.get("task", "classification")
    model = build_model(spec)
    if payload.get("source_state") is not None:
        transfer_features(model, payload["source_state"])
    apply_freeze(model, payload["freeze"])
    model.to(device)
    lr = float(config["lr"])
    mult = float(config.get("backbone_lr_mult", payload.get("backbone_lr_mult", 1.0)))

    def make_opt() -> torch.optim.Optimizer:
        return torch.optim.SGD(param_groups(model, lr, mult), lr=lr, momentum=float(config.get("momentum", 0.0)),
                               weight_decay=float(config.get("weight_decay", 0.0)))

    opt = make_opt()
    unfreeze_epoch = config.get("unfreeze_epoch", payload.get("unfreeze_epoch"))
    start = 0
    ckpt = tune.get_checkpoint()
    history: list[dict[str, float]] = []  # every epoch's metrics, kept in the checkpoint
    replay = False
    if ckpt is not None:
        with ckpt.as_directory() as d:
            st = torch.load(os.path.join(d, CHECKPOINT_FILE), map_location=device, weights_only=True)
            hp = os.path.join(d, HISTORY_FILE)
            if os.path.exists(hp):
                with open(hp) as f:
                    history = json.load(f)
                replay = True
        start = int(st["epoch"])
        if unfreeze_epoch is not None and start >= int(unfreeze_epoch):
            unfreeze_at_epoch(model, int(unfreeze_epoch), {int(unfreeze_epoch): "none"})
            opt = make_opt()
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
    if task == "multilabel":
        from dlops.train.multilabel import masked_bce_with_logits as loss_fn
    else:
        loss_fn = torch.nn.functional.cross_entropy
    policy = str(config.get("policy", payload["policy"]))
    magnitude = float(config.get("magnitude", payload["magnitude"]))
    size = spec.get("image_size")
    t_train = build_transform(policy, magnitude, size, spec["mean"], spec["std"], train=True)
    t_eval = build_transform("none", 0.0, size, spec["mean"], spec["std"], train=False)
    (xtr, ytr), (xtd, ytd), (xdv, ydv) = payload["train"], payload["train_dev"], payload["dev"]
    ev = {"train": (stack_eval(xtr, t_eval), ytr), "train_dev": (stack_eval(xtd, t_eval), ytd),
          "dev": (stack_eval(xdv, t_eval), ydv)}
    epochs = int(config.get("epochs", payload["default_epochs"]))
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    bs = int(config.get("batch_size", 32))
    workers = int(payload.get("num_workers", 0))
    for epoch in range(start, epochs):
        if unfreeze_epoch is not None and epoch + 1 == int(unfreeze_epoch):
            unfreeze_at_epoch(model, epoch + 1, {int(unfreeze_epoch): "none"})
            opt = make_opt()  # the optimizer now holds the unfrozen parameters too
        policy_obj = getattr(t_train, "policy", None)
        if policy_obj is not None and hasattr(policy_obj, "reseed"):
            policy_obj.reseed(seed + epoch)  # a resumed trial repeats the uninterrupted sequence
        pre = ev["train"][0] if getattr(t_train, "batch", None) is not None else None  # no augmentation
        loader = make_loader(xtr, ytr, t_train, bs, shuffle=True, seed=seed + epoch, num_workers=workers,
                             pretransformed=pre)
        train_loss = fit_epoch(model, loader, opt, device, loss_fn=loss_fn)
        metrics: dict[str, Any] = {"train/loss": train_loss, "epoch": epoch + 1}
        for split, (x, y) in ev.items():
            e = evaluate_task(predict_proba(model, x, device, task=task), y, task)
            metrics[f"{split}/error"] = e.error
            if split != "train":
                metrics[f"{split}/loss"] = e.loss
            if split == "dev":
                metrics["dev/f1"] = e.f1
        metrics["latency_ms"] = latency_ms(model, ev["dev"][0][:1], device=device)
        metrics["size_mb"] = size_mb(model)
        if replay:
            # the first report after a restore carries the epochs before it: a driver killed with
            # results still queued for MLflow loses none of them (the callback logs what is missing)
            metrics[REPLAY_KEY] = json.dumps(history)
            replay = False
        history.append({k: float(v) for k, v in metrics.items() if k != REPLAY_KEY and isinstance(v, (int, float))})
        metrics["node_id"] = node_id  # which Ray node ran it (a tag in MLflow)
        with tempfile.TemporaryDirectory() as d:
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1},
                       os.path.join(d, CHECKPOINT_FILE))
            with open(os.path.join(d, SPEC_FILE), "w") as f:
                json.dump(spec, f)
            with open(os.path.join(d, HISTORY_FILE), "w") as f:
                json.dump(history, f)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
