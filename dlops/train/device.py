"""Where and how a trial trains: the device rule and the CUDA settings (pure where it can be).

* **Device** (:func:`select_device`): a trial whose file asks for GPUs (``search.resources.gpu > 0``)
  trains on ``cuda`` (device 0 of the process: Ray sets ``CUDA_VISIBLE_DEVICES`` to the GPU it
  assigned the trial, for fractional requests too). It never falls back to the CPU silently:
  without CUDA, or without a GPU assigned by Ray, it raises :class:`~dlops.errors.ResourceError`
  unless ``search.resources.allow_cpu`` is true.
* **Settings** (:func:`device_settings`): on CUDA, bf16 autocast where the device supports it
  (``torch.cuda.is_bf16_supported()``; no loss scaling needed; fp32 otherwise), ``channels_last``
  memory format for models with 2-D convolutions, ``torch.backends.cudnn.benchmark = True`` and
  pinned host memory for the DataLoader. On the CPU: none of them (fp32, contiguous NCHW), so CPU
  results stay what they were.
* **Memory** (:func:`gpu_mem_mb`): the peak memory torch allocated on the device in the trial's
  process, in MB = 10**6 bytes (like ``size_mb``); a fractional trial is its own process, so this is
  the trial's own use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from dlops.errors import ResourceError

__all__ = ["DeviceSettings", "apply_settings", "device_settings", "gpu_mem_mb", "has_conv2d",
           "reset_gpu_peak", "select_device"]


def select_device(gpu: float, allow_cpu: bool, cuda_available: Optional[bool] = None,
                  assigned_gpus: Optional[Sequence[Any]] = None) -> str:
    """The device a trial trains on: ``"cuda"`` or ``"cpu"``.

    Args:
        gpu: GPUs the trial asked for (``search.resources.gpu``; a fraction allowed).
        allow_cpu: ``search.resources.allow_cpu``: may a GPU trial train on the CPU.
        cuda_available: default ``torch.cuda.is_available()``.
        assigned_gpus: the GPU ids Ray assigned the trial (``ray.get_gpu_ids()``); None: not
            checked (outside Ray).

    Returns:
        ``"cuda"`` when ``gpu > 0`` and CUDA is usable (and Ray assigned a GPU); ``"cpu"`` when
        ``gpu == 0``, or when the GPU is missing and ``allow_cpu``.

    Raises:
        ResourceError: ``gpu > 0``, no usable GPU, and ``allow_cpu`` is false (names the keys).
    """
    if gpu <= 0:
        return "cpu"
    if cuda_available is None:
        import torch

        cuda_available = bool(torch.cuda.is_available())
    missing = None
    if not cuda_available:
        missing = "CUDA is not available on this node"
    elif assigned_gpus is not None and len(assigned_gpus) == 0:
        missing = "Ray assigned this trial no GPU"
    if missing is None:
        return "cuda"
    if not allow_cpu:
        raise ResourceError(f"search.resources.gpu is {gpu:g} but {missing}, and search.resources.allow_cpu "
                            "is false; run on GPU nodes or set allow_cpu: true to train on the CPU")
    return "cpu"


@dataclass(frozen=True)
class DeviceSettings:
    """How a trial uses its device.

    Attributes:
        device: ``"cuda"`` or ``"cpu"``.
        autocast_dtype: ``"bfloat16"`` for bf16 autocast of the forward pass, None for fp32.
        channels_last: model and batches in ``torch.channels_last`` memory format.
        cudnn_benchmark: set ``torch.backends.cudnn.benchmark`` (autotuned conv kernels).
        pin_memory: the DataLoader pins host memory (faster, asynchronous host-to-device copies).
    """

    device: str
    autocast_dtype: Optional[str] = None
    channels_last: bool = False
    cudnn_benchmark: bool = False
    pin_memory: bool = False


def device_settings(device: str, conv: bool, bf16_supported: Optional[bool] = None) -> DeviceSettings:
    """The settings for ``device`` (the rule in the module docstring; pure given its arguments).

    Args:
        device: ``"cuda"`` (or ``"cuda:N"``) or ``"cpu"``.
        conv: the model has 2-D convolutions (:func:`has_conv2d`): ``channels_last`` helps them.
        bf16_supported: default ``torch.cuda.is_bf16_supported()`` on CUDA (not asked on the CPU).
    """
    if not str(device).startswith("cuda"):
        return DeviceSettings(device=str(device))
    if bf16_supported is None:
        import torch

        bf16_supported = bool(torch.cuda.is_bf16_supported())
    return DeviceSettings(device=str(device), autocast_dtype="bfloat16" if bf16_supported else None,
                          channels_last=bool(conv), cudnn_benchmark=True, pin_memory=True)


def has_conv2d(model: Any) -> bool:
    """Whether ``model`` (a ``torch.nn.Module``) holds a ``Conv2d``."""
    from torch import nn

    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def apply_settings(model: Any, settings: DeviceSettings) -> Any:
    """Move ``model`` to the device in its memory format and set cuDNN's autotuner; returns it."""
    import torch

    if settings.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    model.to(settings.device)
    if settings.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def reset_gpu_peak(device: str) -> None:
    """Start the peak-memory count of ``device`` afresh (no-op on the CPU)."""
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()


def gpu_mem_mb(device: str) -> Optional[float]:
    """Peak memory torch allocated on ``device`` since :func:`reset_gpu_peak`, in MB (10**6 bytes);
    None on the CPU. (``torch.cuda.max_memory_allocated``: tensors only, not the caching
    allocator's reserve or the CUDA context.)"""
    if not str(device).startswith("cuda"):
        return None
    import torch

    return float(torch.cuda.max_memory_allocated()) / 1e6
