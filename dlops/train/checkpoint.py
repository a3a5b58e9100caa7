"""The checkpoint of one trial: the files a trial writes each epoch and how to load them back.

A trial checkpoint is a directory with

* ``state.pt`` (:data:`CHECKPOINT_FILE`): ``{"model": state_dict, "optimizer": state_dict, "epoch": int}``
  (``epoch``: the number of epochs done, 1-based);
* ``spec.json`` (:data:`SPEC_FILE`): the model spec that :func:`dlops.models.transfer.build_model`
  builds the network from;
* ``history.json`` (:data:`HISTORY_FILE`): the metrics of every epoch so far (a list of dicts).

The trial (:mod:`dlops.train.trial`) writes it, the ensemble plugin and ``dlops report`` read it
(:func:`load_checkpoint_model`). torch is imported only inside the functions.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

CHECKPOINT_FILE = "state.pt"
SPEC_FILE = "spec.json"
HISTORY_FILE = "history.json"  # the metrics of every epoch so far


@dataclass
class TrialState:
    """What a checkpoint directory holds, read back (:func:`read_checkpoint`).

    Attributes:
        model: the network's state dict.
        optimizer: the optimizer's state dict.
        epoch: epochs done (1-based count).
        history: the metrics of every epoch so far; None when the checkpoint has no history file.
    """

    model: dict[str, Any]
    optimizer: dict[str, Any]
    epoch: int
    history: Optional[list[dict[str, float]]] = field(default=None)


def save_checkpoint(directory: str, model_state: Mapping[str, Any], optimizer_state: Mapping[str, Any],
                    epoch: int, spec: Mapping[str, Any], history: list[dict[str, float]]) -> None:
    """Write a trial checkpoint into ``directory`` (which must exist).

    Args:
        directory: the checkpoint directory.
        model_state, optimizer_state: ``state_dict()`` of the network and of its optimizer.
        epoch: epochs done (1-based count).
        spec: the model spec (JSON-serialisable).
        history: every epoch's metrics so far (JSON-serialisable numbers).
    """
    import torch

    torch.save({"model": model_state, "optimizer": optimizer_state, "epoch": int(epoch)},
               os.path.join(directory, CHECKPOINT_FILE))
    with open(os.path.join(directory, SPEC_FILE), "w") as f:
        json.dump(dict(spec), f)
    with open(os.path.join(directory, HISTORY_FILE), "w") as f:
        json.dump(history, f)


def read_checkpoint(directory: str, device: str = "cpu") -> TrialState:
    """Read a trial checkpoint written by :func:`save_checkpoint` (tensors mapped to ``device``).

    Raises:
        FileNotFoundError: ``directory`` has no :data:`CHECKPOINT_FILE`.
    """
    import torch

    st = torch.load(os.path.join(directory, CHECKPOINT_FILE), map_location=device, weights_only=True)
    history = None
    hp = os.path.join(directory, HISTORY_FILE)
    if os.path.exists(hp):
        with open(hp) as f:
            history = json.load(f)
    return TrialState(st["model"], st.get("optimizer", {}), int(st.get("epoch", 0)), history)


def load_checkpoint_model(checkpoint_dir: str) -> tuple[Any, dict[str, Any]]:
    """Rebuild the network of a trial checkpoint (CPU, eval mode).

    Returns:
        ``(model, spec)``: the ``torch.nn.Module`` with the checkpoint's weights, and its spec.

    Raises:
        FileNotFoundError: the directory lacks :data:`SPEC_FILE` or :data:`CHECKPOINT_FILE`.
    """
    import torch

    from dlops.models.transfer import build_model

    with open(os.path.join(checkpoint_dir, SPEC_FILE)) as f:
        spec = json.load(f)
    model = build_model(spec)
    st = torch.load(os.path.join(checkpoint_dir, CHECKPOINT_FILE), map_location="cpu", weights_only=True)
    model.load_state_dict(st["model"])
    model.eval()
    return model, spec
