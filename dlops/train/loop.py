"""The fit / evaluate loop, single-label classification (softmax + cross-entropy).

Errors are fractions in [0, 1]; latency in milliseconds; sizes in MB (10**6 bytes).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or inf (learning rate too high?)."""


class ImageDataset(Dataset):
    """(N, H, W, C) uint8 images and (N,) labels through a transform to (C, H, W) tensors."""

    def __init__(self, x: np.ndarray, y: np.ndarray, transform: Callable[[np.ndarray], torch.Tensor]) -> None:
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Any]:
        y = self.y[i]
        # class index (single-label) or a (L,) float vector with NaN for missing labels (multi-label)
        return self.transform(self.x[i]), (int(y) if np.ndim(y) == 0 else torch.as_tensor(y, dtype=torch.float32))


def stack_eval(x: np.ndarray, transform: Callable[[np.ndarray], torch.Tensor]) -> torch.Tensor:
    """Apply the evaluation transform to every image: (N, H, W, C) -> (N, C, H', W') float32."""
    if not len(x):
        return torch.empty(0)
    batched = getattr(transform, "batch", None)
    if batched is not None:
        return batched(np.asarray(x))
    return torch.stack([transform(im) for im in x])


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch and numpy; returns a torch generator for DataLoader shuffling."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def fit_epoch(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    device: torch.device | str = "cpu",
    loss_fn: Callable[..., torch.Tensor] | None = None,
    settings: Any = None,
) -> float:
    """One epoch of SGD; returns the mean training loss (per example).

    Args:
        settings: a :class:`dlops.train.device.DeviceSettings` (autocast dtype, ``channels_last``);
            default :func:`dlops.train.device.device_settings` of ``device`` for a model without
            convolutions (bf16 autocast on CUDA where supported; fp32 on the CPU).

    Raises:
        NonFiniteLossError: a batch loss is NaN or inf.
    """
    from dlops.train.device import device_settings

    loss_fn = loss_fn or nn.functional.cross_entropy
    if settings is None:
        settings = device_settings(str(device), conv=False)
    model.train()
    total, n = 0.0, 0
    dtype = getattr(torch, settings.autocast_dtype) if settings.autocast_dtype else None
    for xb, yb in loader:
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        if settings.channels_last and xb.dim() == 4:
            xb = xb.contiguous(memory_format=torch.channels_last)
        optimizer.zero_grad(set_to_none=True)
        # mixed precision on CUDA where bf16 is supported (no loss scaling needed); fp32 otherwise
        with torch.autocast("cuda", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            out = model(xb)
        loss = loss_fn(out.float(), yb)
        value = float(loss.item())  # one host sync per step, also for the NaN check
        if not math.isfinite(value):
            raise NonFiniteLossError(f"training loss is {value} (learning rate too high?)")
        loss.backward()
        optimizer.step()
        total += value * len(yb)
        n += len(yb)
    return total / max(n, 1)


@torch.no_grad()
def predict_proba(model: nn.Module, x: torch.Tensor, device: torch.device | str = "cpu", batch_size: int = 512,
                  task: str = "classification") -> np.ndarray:
    """Probabilities for inputs (N, C_in, H, W), in eval mode: (N, C) softmax for
    ``classification``, (N, L) per-label sigmoid for ``multilabel``."""
    model.eval()
    out = []
    act = (lambda z: torch.sigmoid(z)) if task == "multilabel" else (lambda z: torch.softmax(z, dim=1))
    for i in range(0, len(x), batch_size):
        out.append(act(model(x[i : i + batch_size].to(device)).float()).cpu())
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(out).numpy()


@dataclass
class SplitEval:
    error: float  # fraction in [0, 1]
    loss: float  # mean cross-entropy (nats)
    f1: float  # macro F1, fraction


def evaluate_proba(prob: np.ndarray, y: np.ndarray) -> SplitEval:
    """Top-1 error, mean cross-entropy and macro F1 from probabilities (N, C) and labels (N,).

    Macro F1 = mean over classes of 2 / (1/precision + 1/recall) (classes with no support and no
    prediction are left out).
    """
    if len(y) == 0:
        return SplitEval(float("nan"), float("nan"), float("nan"))
    pred = prob.argmax(1)
    err = float(np.mean(pred != y))
    p = np.clip(prob[np.arange(len(y)), y], 1e-12, 1.0)
    loss = float(-np.mean(np.log(p)))
    f1s = []
    for c in range(prob.shape[1]):
        tp = float(np.sum((pred == c) & (y == c)))
        fp = float(np.sum((pred == c) & (y != c)))
        fn = float(np.sum((pred != c) & (y == c)))
        if tp + fp + fn == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return SplitEval(err, loss, float(np.mean(f1s)) if f1s else float("nan"))


def evaluate_task(prob: np.ndarray, y: np.ndarray, task: str = "classification",
                  thresholds: float | Any = 0.5) -> SplitEval:
    """:func:`evaluate_proba` for ``classification``; for ``multilabel`` (probabilities and
    targets (N, L), NaN = missing label, left out): mean per-label error at ``thresholds``, mean
    binary cross-entropy over the observed labels, and mean per-label F1."""
    if task != "multilabel":
        return evaluate_proba(prob, y)
    from dlops.train.multilabel import multilabel_metrics

    if len(y) == 0:
        return SplitEval(float("nan"), float("nan"), float("nan"))
    m = multilabel_metrics(prob, y, thresholds=thresholds)
    obs = ~np.isnan(y)
    p = np.clip(prob[obs], 1e-7, 1 - 1e-7)
    t = y[obs]
    loss = float(-np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))) if obs.any() else float("nan")
    return SplitEval(float(m["error"]), loss, float(m["f1"]))


@torch.no_grad()
def latency_ms(model: nn.Module, example: torch.Tensor, repeats: int = 30, device: torch.device | str = "cpu") -> float:
    """Median wall time of a single-image forward pass, in milliseconds.

    Args:
        example: one input (1, C, H, W).
    """
    model.eval()
    x = example.to(device)
    for _ in range(3):
        model(x)
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available() and str(device).startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(x)
        if torch.cuda.is_available() and str(device).startswith("cuda"):
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1000.0)
    return float(statistics.median(times))


def size_mb(model: nn.Module) -> float:
    """Parameter and buffer size in MB (10**6 bytes)."""
    n = sum(p.numel() * p.element_size() for p in model.parameters())
    n += sum(b.numel() * b.element_size() for b in model.buffers())
    return n / 1e6


class BatchedImageDataset(Dataset):
    """:class:`ImageDataset` fetched a batch at a time: ``ds[indices]`` applies ``transform.batch``
    to ``x[indices]`` in one go, (B, C, H', W'), and returns the labels as the default collate
    would (int64 class indices, or float32 (B, L) multi-label targets)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_transform: Callable[[np.ndarray], torch.Tensor],
                 pretransformed: torch.Tensor | None = None) -> None:
        self.x, self.y, self.batch_transform = x, y, batch_transform
        self.pre = pretransformed
        y_a = np.asarray(y)
        self.yt = torch.as_tensor(y_a, dtype=torch.int64 if y_a.ndim == 1 else torch.float32)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        it = torch.as_tensor(idx, dtype=torch.int64)
        if self.pre is not None:  # the images went through this very transform once already
            return self.pre[it], self.yt[it]
        return self.batch_transform(self.x[it.numpy()]), self.yt[it]


class PretransformedBatches:
    """Batches of an already transformed tensor, in exactly the order a ``DataLoader`` with
    ``shuffle=True, generator=g`` would give them (it draws its base seed from ``g``, then
    ``randperm(n, generator=g)``), without the DataLoader's per-batch machinery.

    Yields ``(x (B, C, H, W) float32, y (B,) int64 or (B, L) float32)``.
    """

    def __init__(self, xt: torch.Tensor, y: np.ndarray, batch_size: int, shuffle: bool, generator: torch.Generator,
                 drop_last: bool = False):
        y_a = np.asarray(y)
        self.xt, self.bs, self.shuffle, self.g = xt, int(batch_size), shuffle, generator
        self.yt = torch.as_tensor(y_a, dtype=torch.int64 if y_a.ndim == 1 else torch.float32)
        self.drop_last = bool(drop_last)

    def __len__(self) -> int:
        return len(self.yt) // self.bs if self.drop_last else (len(self.yt) + self.bs - 1) // self.bs

    def __iter__(self):
        n = len(self.yt)
        torch.empty((), dtype=torch.int64).random_(generator=self.g)  # the DataLoader's base-seed draw
        perm = torch.randperm(n, generator=self.g) if self.shuffle else torch.arange(n)
        for b in range(len(self)):
            idx = perm[b * self.bs : (b + 1) * self.bs]
            yield self.xt[idx], self.yt[idx]


def make_loader(x: np.ndarray, y: np.ndarray, transform: Callable[[np.ndarray], torch.Tensor], batch_size: int,
                shuffle: bool, seed: int, num_workers: int = 0, worker_init_fn: Any = None,
                pretransformed: torch.Tensor | None = None) -> DataLoader:
    """A DataLoader over images; deterministic shuffling for ``seed``.

    A transform without per-image augmentation (``transform.batch`` set, see
    :func:`dlops.data.transforms.build_transform`) is applied a batch at a time: the same batches,
    in the same order, as the per-image path, without its per-image overhead. ``pretransformed``
    (N, C, H', W'): ``transform`` already applied to every image (a trial computes it once, not
    once per epoch); used only on that augmentation-free path.

    A shuffled (training) loader drops a last batch of exactly one example
    (:func:`dlops.data.loader.drop_last_batch`: BatchNorm cannot train on one example).
    """
    from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler

    from dlops.data.loader import drop_last_batch

    g = torch.Generator()
    g.manual_seed(seed)
    drop = bool(shuffle) and drop_last_batch(len(y), int(batch_size))
    batched = getattr(transform, "batch", None)
    if batched is not None and pretransformed is not None and num_workers == 0:
        return PretransformedBatches(pretransformed, y, batch_size, shuffle, g, drop_last=drop)  # type: ignore[return-value]
    if batched is not None:
        ds = BatchedImageDataset(x, y, batched, pretransformed)
        sampler = RandomSampler(ds, generator=g) if shuffle else SequentialSampler(ds)
        # batch_size=None: each sampler item (a list of indices) is one fetch; the loader draws its
        # base seed from ``g`` before the permutation, as the per-image loader does
        return DataLoader(ds, batch_size=None, sampler=BatchSampler(sampler, batch_size, drop_last=drop),
                          generator=g, num_workers=num_workers, worker_init_fn=worker_init_fn)
    return DataLoader(ImageDataset(x, y, transform), batch_size=batch_size, shuffle=shuffle, generator=g,
                      num_workers=num_workers, worker_init_fn=worker_init_fn, drop_last=drop)


def finite(v: float) -> bool:
    return v is not None and math.isfinite(v)
