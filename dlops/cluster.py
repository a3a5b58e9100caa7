"""Connecting to a Ray cluster, or starting a local Ray that exposes nothing to the network."""

from __future__ import annotations

import os
import sys
from typing import Any, Optional

from dlops.errors import ClusterError


#: seconds to wait for a TCP connection to a cluster address before giving up
CONNECT_TIMEOUT_S = 5.0


def probe_address(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast when nothing listens at ``address`` (``host:port`` or ``ray://host:port``; ``auto``
    and other forms are left to Ray), instead of Ray's minutes of retries.

    Raises:
        ClusterError: naming the address, when a TCP connection is refused or times out.
    """
    import socket

    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ClusterError(f"--ray-address: nothing answers at {address} ({exc.strerror or exc}); "
                           "is the Ray head running there (ray start --head)?") from None


def use_local_token(address: Optional[str] = None) -> bool:
    """Send this machine's Ray token when the cluster asks for one. Ray >= 2.59 starts clusters
    with token authentication when a token exists
    (https://docs.ray.io/en/latest/ray-security/token-auth.html), but ``ray.init`` and the Jobs
    client only send it with ``RAY_AUTH_MODE=token``; without it they fail with a bare
    ``ConnectionError`` or 401. When ``RAY_AUTH_MODE`` is unset and a token exists
    (``$RAY_AUTH_TOKEN``, ``$RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``), set it to ``token``
    for this process, unless ``address`` (a GCS ``host:port``) is a cluster that answers without
    a token (:func:`dlops._private.gcs_auth_mode`): a driver in token mode refuses such a cluster's
    calls and its trials die before they start. ``dlops run``, ``validate`` and ``serve`` (through
    :func:`init_ray`) and ``dlops submit`` all call it. Returns True when it set it."""
    from pathlib import Path

    if os.environ.get("RAY_AUTH_MODE"):
        return False
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if not (os.environ.get("RAY_AUTH_TOKEN") or path.is_file()):
        return False
    if address:
        from dlops._private import gcs_auth_mode

        if gcs_auth_mode(address) == "disabled":
            return False
    os.environ["RAY_AUTH_MODE"] = "token"
    return True


def init_ray(address: Optional[str], num_cpus: Optional[int], num_gpus: Optional[float]) -> bool:
    """Connect to ``address`` or start a local Ray that listens on 127.0.0.1 only, without the
    dashboard (Ray has no authentication; an open dashboard or Jobs API is a known attack path).

    Args:
        address: ``ray://host:10001``, ``auto`` or a head's GCS address; None for a local Ray.
        num_cpus, num_gpus: the local Ray's resources (None: what the machine has).

    Returns:
        True when this call started or connected Ray (the caller shuts it down), False when Ray
        was already initialised in this process.

    Raises:
        ClusterError: nothing answers at ``address`` (after :data:`CONNECT_TIMEOUT_S` seconds), or
            Ray refuses the connection (e.g. a token-authenticated cluster and no token on this
            machine, or ``RAY_AUTH_MODE=disabled``); the message says where the token goes.
    """
    loaded = sys.modules.get("ray")  # not imported yet: Ray's core reads RAY_AUTH_MODE once, on import
    if loaded is not None and loaded.is_initialized():
        return False
    if address:
        probe_address(address)  # nothing listens: one line in 5 s, not Ray's minutes of retries
        use_local_token(address)
    import ray

    if address:
        try:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        except Exception as exc:  # noqa: BLE001  (ConnectionError, RuntimeError, auth errors ...)
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if os.environ.get("RAY_AUTH_MODE") == "token":
                hint = ("; the token this machine sent (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) "
                        "may not be the cluster's: compare with `ray get-auth-token` on the head")
            else:
                hint = ("; if the cluster uses token authentication (Ray >= 2.59), put its token in "
                        "~/.ray/auth_token (`ray get-auth-token` on the head prints it) or RAY_AUTH_TOKEN")
            raise ClusterError(f"--ray-address: cannot connect to the Ray cluster at {address}: "
                               f"{type(exc).__name__}: {text[:300]}{hint}") from None
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
