"""The model spec of a project, and the source network: trained on the source task and logged
as the run ``pretrain`` with its model (``model.weights: pretrain``)."""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Optional

from dlops.config import ProjectConfig
from dlops.tracking.store import TAG_KIND


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
    """Train the source network on the source task; log it as run ``pretrain`` with its model
    (metrics ``source/train/loss``, ``source/train/error`` per epoch). The run ends FINISHED, or
    FAILED / KILLED (Ctrl-C) when training raises.

    Returns:
        (state_dict of the source network, run id).
    """
    import mlflow
    from mlflow.entities import Metric, Param

    from dlops.tracking.models import active_run, pip_requirements

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
        with active_run(rid):
            mlflow.pytorch.log_model(model, name="model", pip_requirements=pip_requirements(),
                                     serialization_format="pickle", metadata={"model_spec": src_spec})
        client.set_terminated(rid, "FINISHED")
    except BaseException as exc:
        client.set_terminated(rid, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, rid
