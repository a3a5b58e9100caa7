"""The GPU code path, checked on the CPU: device selection, the CPU fallback rule, autocast off on
the CPU, channels_last (dlops.train.device). The GPU itself: bench/gpu_check.py."""

from __future__ import annotations

import pytest
import torch

from dlops.errors import ResourceError
from dlops.train.device import (DeviceSettings, apply_settings, device_settings, gpu_mem_mb, has_conv2d,
                                select_device)
from dlops.train.loop import fit_epoch


def test_select_device_and_the_cpu_fallback_rule():
    assert select_device(0, False, cuda_available=True) == "cpu"  # no GPU asked for
    assert select_device(1, False, cuda_available=True, assigned_gpus=[0]) == "cuda"
    assert select_device(0.25, False, cuda_available=True, assigned_gpus=["0"]) == "cuda"
    assert select_device(1, False, cuda_available=True) == "cuda"  # outside Ray: nothing to check
    assert select_device(1, True, cuda_available=False) == "cpu"
    assert select_device(0.5, True, cuda_available=True, assigned_gpus=[]) == "cpu"
    with pytest.raises(ResourceError, match="CUDA is not available.*allow_cpu is false"):
        select_device(1, False, cuda_available=False)
    with pytest.raises(ResourceError, match="Ray assigned this trial no GPU"):
        select_device(0.25, False, cuda_available=True, assigned_gpus=[])
    if not torch.cuda.is_available():  # this machine: the real check says the same
        with pytest.raises(ResourceError):
            select_device(1, False)


def test_device_settings_rule():
    assert device_settings("cpu", conv=True) == DeviceSettings("cpu")  # fp32, NCHW, nothing pinned
    on = device_settings("cuda", conv=True, bf16_supported=True)
    assert (on.autocast_dtype, on.channels_last, on.cudnn_benchmark, on.pin_memory) == ("bfloat16", True, True, True)
    old = device_settings("cuda:0", conv=False, bf16_supported=False)  # e.g. a V100: fp32, no channels_last
    assert (old.autocast_dtype, old.channels_last, old.cudnn_benchmark) == (None, False, True)
    assert gpu_mem_mb("cpu") is None


def _conv():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(4, 2))


def test_autocast_is_off_on_the_cpu():
    model = _conv()
    seen = []
    model[4].register_forward_hook(lambda m, i, o: seen.append((o.dtype, torch.is_autocast_enabled("cuda"),
                                                               torch.is_autocast_enabled("cpu"))))
    batches = [(torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 0, 1]))]
    fit_epoch(model, batches, torch.optim.SGD(model.parameters(), lr=0.1), "cpu",
              settings=device_settings("cpu", conv=has_conv2d(model)))
    fit_epoch(model, batches, torch.optim.SGD(model.parameters(), lr=0.1), "cpu")  # default settings
    assert seen == [(torch.float32, False, False)] * 2


def test_channels_last_on_the_cpu_gives_the_same_training_step():
    assert has_conv2d(_conv()) and not has_conv2d(torch.nn.Linear(2, 2))
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 0, 1])
    results = []
    for cl in (False, True):
        model = apply_settings(_conv(), DeviceSettings("cpu", channels_last=cl))
        assert model[0].weight.is_contiguous(memory_format=torch.channels_last) == cl
        loss = fit_epoch(model, [(x, y)], torch.optim.SGD(model.parameters(), lr=0.1), "cpu",
                         settings=DeviceSettings("cpu", channels_last=cl))
        results.append((loss, model[0].weight.detach().contiguous()))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-5)
