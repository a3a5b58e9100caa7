"""Connecting to a Ray cluster, or starting a local Ray that exposes nothing to the network."""

from __future__ import annotations

import os
from typing import Any, Optional


def init_ray(address: Optional[str], num_cpus: Optional[int], num_gpus: Optional[float]) -> bool:
    """Connect to ``address`` or start a local Ray that listens on 127.0.0.1 only, without the
    dashboard (Ray has no authentication; an open dashboard or Jobs API is a known attack path).

    Args:
        address: ``ray://host:10001``, ``auto`` or a head's GCS address; None for a local Ray.
        num_cpus, num_gpus: the local Ray's resources (None: what the machine has).

    Returns:
        True when this call started or connected Ray (the caller shuts it down), False when Ray
        was already initialised in this process.
    """
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
        return True
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    kwargs: dict[str, Any] = {}
    if num_cpus is not None:
        kwargs["num_cpus"] = num_cpus
    if num_gpus is not None:
        kwargs["num_gpus"] = num_gpus
    # address="local": a new instance; None would join the cluster last written to
    # /tmp/ray/ray_current_cluster (any `ray start` or test cluster on this machine)
    ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             configure_logging=True, logging_level="ERROR", **kwargs)
    return True
