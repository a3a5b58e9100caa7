"""Running the members of an ensemble as one batched forward.

When M members share an architecture, their parameters and buffers are stacked along a new
leading axis (``torch.func.stack_module_state``) and one forward of a weightless copy of the
architecture is mapped over that axis (``torch.func.vmap`` of ``torch.func.functional_call``):
PyTorch's batching rules turn M convolutions into one grouped convolution and M matrix products
into one batched product (the "model ensembling" recipe of the ``torch.func`` tutorial,
https://pytorch.org/tutorials/intermediate/ensembling.html). Members of different architectures
form groups of their own; a group of one runs as a plain forward. Outputs equal the loop's up to
float32 rounding (1e-5).

Stacking pays on an accelerator (one kernel launch per layer instead of M). On CPU it does not:
measured on this project's 2-core machine (1 thread, 5 members), the vmapped forward took
1.8-2.5x the loop's time for the small CNN at 8-512 images and ~1.1x for resnet18 (PyTorch's
batching rules for BatchNorm and pooling run as broadcast element-wise ops); only a batch of 1
image was faster stacked (2.2 vs 3.0 ms). So ``stack="auto"`` (the default) stacks when the
members live on a CUDA device and loops on CPU; ``stack=True`` forces it.

Always in eval mode: the members are put in ``eval()`` and run under ``torch.inference_mode``,
so BatchNorm uses its running statistics and no buffer changes.
"""

from __future__ import annotations

from typing import Any, Sequence, Union


def architecture_key(model: Any) -> tuple:
    """What two members must share to be stacked: the module tree (``repr``: layer types and
    their settings) and the names, shapes and dtypes of every parameter and buffer."""
    params = tuple((n, tuple(p.shape), str(p.dtype)) for n, p in model.named_parameters())
    buffers = tuple((n, tuple(b.shape), str(b.dtype)) for n, b in model.named_buffers())
    return (type(model).__qualname__, repr(model), params, buffers)


class StackedMembers:
    """M torch modules (on CPU) run as few forwards as their architectures allow.

    Args:
        models: the members (any ``nn.Module`` taking (N, C, H, W) and returning (N, K)); they
            are put in eval mode and their parameters stop requiring gradients.
        stack: ``True`` stacks members of one architecture; ``False`` runs every member on its
            own (the reference loop); ``"auto"`` stacks when the members are on a CUDA device.

    Attributes:
        groups: lists of member indices that run as one forward (in member order).
    """

    def __init__(self, models: Sequence[Any], stack: Union[bool, str] = "auto") -> None:
        import copy

        import torch

        if not models:
            raise ValueError("StackedMembers: no members")
        self.models = list(models)
        for m in self.models:
            m.eval()
            m.requires_grad_(False)
        if stack == "auto":
            stack = next(self.models[0].parameters(), torch.empty(0)).device.type == "cuda"
        elif not isinstance(stack, bool):
            raise ValueError(f"StackedMembers: stack must be True, False or 'auto', got {stack!r}")
        self.stacked = bool(stack)
        keys: dict[tuple, list[int]] = {}
        for i, m in enumerate(self.models):
            keys.setdefault(architecture_key(m) if stack else (i,), []).append(i)
        self.groups = list(keys.values())
        self._stacked: dict[int, tuple[Any, Any, Any]] = {}
        for g, idx in enumerate(self.groups):
            if len(idx) < 2:
                continue
            members = [self.models[i] for i in idx]
            params, buffers = torch.func.stack_module_state(members)
            base = copy.deepcopy(members[0]).to("meta")  # the architecture only, no weights
            self._stacked[g] = (base, params, buffers)

    def __len__(self) -> int:
        return len(self.models)

    def __call__(self, x: Any) -> Any:
        """Every member's outputs on ``x``.

        Args:
            x: float32 tensor (N, C, H, W).

        Returns:
            Tensor (M, N, K): the raw outputs (logits) of member m in row m.
        """
        import torch
        from torch.func import functional_call, vmap

        out: list[Any] = [None] * len(self.models)
        with torch.inference_mode():
            for g, idx in enumerate(self.groups):
                if g in self._stacked:
                    base, params, buffers = self._stacked[g]

                    def one(p: Any, b: Any, inp: Any, base: Any = base) -> Any:
                        return functional_call(base, (p, b), (inp,))

                    y = vmap(one, in_dims=(0, 0, None))(params, buffers, x)
                    for j, i in enumerate(idx):
                        out[i] = y[j]
                else:
                    for i in idx:
                        out[i] = self.models[i](x)
        return torch.stack(out)
