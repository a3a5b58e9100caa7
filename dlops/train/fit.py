"""Train one configuration outside a search (no Ray, no MLflow): for reporters that train, such
as the ``data_curve`` reporter (dev error against the training-set size).

It uses the same pieces as a search trial (:mod:`dlops.train.trial`): the trial's model spec,
the source features copied and the freeze policy applied, SGD with the trial's learning rate and
momentum, the same transforms, the same epoch seeds.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np


def fit_predict(train: tuple[np.ndarray, np.ndarray], evals: Mapping[str, np.ndarray], config: Mapping[str, Any],
                spec: Mapping[str, Any], source_state: Optional[Mapping[str, Any]], freeze: str, seed: int,
                epochs: int, policy: str = "none", magnitude: float = 0.0, threads: int = 1) -> dict[str, np.ndarray]:
    """Train ``config`` on ``train`` for ``epochs`` epochs on the CPU and predict ``evals``.

    Args:
        train: ``(x, y)``: images (N, H, W, C) uint8, labels (N,) int class indices.
        evals: ``{name: images}`` to predict after training, e.g. ``{"dev": x_dev}``.
        config: the trial's hyperparameters (``lr``, ``momentum``, ``weight_decay``,
            ``batch_size``, ``hidden``, ...), as :func:`dlops.train.trial.train_trial` reads them.
        spec: the base model spec (:func:`dlops.models.transfer.build_model`).
        source_state: the source network's state dict (transfer), or None (from scratch).
        freeze: the freeze policy (``"none"`` when training from scratch).
        seed: the training seed (epoch ``e`` shuffles with ``seed + e``).
        epochs: epochs to train.
        policy, magnitude: the augmentation policy (see :mod:`dlops.data.policy`).
        threads: torch threads.

    Returns:
        ``{name: (M, C) class probabilities}``.

    Raises:
        dlops.train.loop.NonFiniteLossError: the loss became NaN or inf.
    """
    import torch

    from dlops.data.transforms import build_transform
    from dlops.train.loop import fit_epoch, make_loader, predict_proba, seed_everything, stack_eval
    from dlops.train.trial import TrialPayload, _Trial

    torch.set_num_threads(max(1, int(threads)))
    seed_everything(int(seed))
    x, y = train
    empty = (x[:0], y[:0])
    payload = TrialPayload(train=train, train_dev=empty, dev=empty, spec=spec, freeze=freeze, policy=policy,
                           magnitude=magnitude, seed=int(seed), default_epochs=int(epochs), gpu=0.0,
                           source_state=source_state)
    trial = _Trial(config, payload)
    size = trial.spec.get("image_size")
    t_train = build_transform(str(config.get("policy", policy)), float(config.get("magnitude", magnitude)), size,
                              trial.spec["mean"], trial.spec["std"], train=True)
    t_eval = build_transform("none", 0.0, size, trial.spec["mean"], trial.spec["std"], train=False)
    pre = stack_eval(x, t_eval) if getattr(t_train, "batch", None) is not None else None
    bs = int(config.get("batch_size", 32))
    for epoch in range(int(epochs)):
        if trial.unfreeze_epoch is not None and epoch + 1 == trial.unfreeze_epoch:
            trial.unfreeze()
        loader = make_loader(x, y, t_train, bs, shuffle=True, seed=int(seed) + epoch, pretransformed=pre)
        fit_epoch(trial.model, loader, trial.opt, trial.device, loss_fn=trial.loss_fn)
    return {k: predict_proba(trial.model, stack_eval(v, t_eval), trial.device, task=trial.task)
            for k, v in evals.items()}
