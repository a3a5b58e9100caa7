"""Resources per trial, checked against the Ray cluster before the first trial (or the first run).

A trial asks for ``search.resources.cpu`` CPUs and ``search.resources.gpu`` GPUs (fractional
GPUs allowed: ``gpu: 0.5`` packs two trials on one GPU). Tune would leave a request that no node
can hold PENDING forever; :func:`check_resources` fails at once instead, with a message that
names the request and the largest node, unless ``ray.autoscaler: true`` (an autoscaler may add a
node that fits). The CLI turns :class:`ResourceError` into exit code 2.
"""

from __future__ import annotations

from dlops.errors import ResourceError  # noqa: F401  (the kind lives in dlops.errors)
from dataclasses import dataclass
from typing import Any, Optional, Sequence




@dataclass(frozen=True)
class NodeResources:
    """What one alive node offers: ``cpu`` cores and ``gpu`` devices (Ray's logical resources)."""

    node_id: str
    cpu: float
    gpu: float


def alive_nodes() -> list[NodeResources]:
    """The alive nodes of the connected Ray cluster (``ray.init`` must have run)."""
    import ray

    return [
        NodeResources(str(n.get("NodeID", "")), float(n["Resources"].get("CPU", 0)), float(n["Resources"].get("GPU", 0)))
        for n in ray.nodes()
        if n.get("Alive")
    ]


def validate_request(cpu: float, gpu: float) -> None:
    """A request must be positive CPUs and either a fraction of one GPU or whole GPUs.

    Raises:
        ResourceError: e.g. ``gpu: 1.5`` (Ray places fractions only inside one device).
    """
    if cpu <= 0:
        raise ResourceError(f"search.resources.cpu must be > 0, got {cpu:g}")
    if gpu < 0:
        raise ResourceError(f"search.resources.gpu must be >= 0, got {gpu:g}")
    if gpu > 1 and abs(gpu - round(gpu)) > 1e-9:
        raise ResourceError(
            f"search.resources.gpu: {gpu:g} is more than one GPU but not a whole number; Ray shares a GPU "
            "only as a fraction of one device (use e.g. 0.5, 1 or 2)"
        )


def fitting_nodes(cpu: float, gpu: float, nodes: Sequence[NodeResources]) -> list[NodeResources]:
    """The nodes that can hold one trial of ``cpu`` CPUs and ``gpu`` GPUs (pure)."""
    eps = 1e-9
    return [n for n in nodes if n.cpu + eps >= cpu and n.gpu + eps >= gpu]


def check_resources(cpu: float, gpu: float, autoscaler: bool,
                    nodes: Optional[Sequence[NodeResources]] = None) -> list[NodeResources]:
    """Fail at once when no node of the cluster can hold one trial (instead of pending forever).

    Args:
        cpu, gpu: the per-trial request (fractional GPUs allowed).
        autoscaler: the cluster grows on demand; only the shape of the request is checked.
        nodes: the cluster's nodes (default: :func:`alive_nodes` of the connected cluster).

    Returns:
        The nodes that fit (empty with ``autoscaler`` when none does yet).

    Raises:
        ResourceError: naming the request and the largest node, unless ``autoscaler``.
    """
    validate_request(cpu, gpu)
    nodes = list(alive_nodes() if nodes is None else nodes)
    fits = fitting_nodes(cpu, gpu, nodes)
    if fits or autoscaler:
        return fits
    best_cpu = max((n.cpu for n in nodes), default=0)
    best_gpu = max((n.gpu for n in nodes), default=0)
    raise ResourceError(
        f"search.resources: a trial asks for cpu={cpu:g}, gpu={gpu:g} but no node of the Ray cluster "
        f"has that much ({len(nodes)} alive nodes; largest: CPU={best_cpu:g}, GPU={best_gpu:g}); lower the "
        "request, add nodes, or set ray.autoscaler: true if an autoscaler adds them"
    )


def trial_resources(cpu: float, gpu: float) -> dict[str, Any]:
    """The ``tune.with_resources`` dict of one trial (no ``gpu`` key when no GPU is asked for)."""
    out: dict[str, Any] = {"cpu": cpu}
    if gpu > 0:
        out["gpu"] = gpu
    return out
