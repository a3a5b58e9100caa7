"""Every use of Ray Serve internals in dlops, in one module (each with the reason; the test of
``dlops serve`` checks their effect on the installed Ray version)."""

from __future__ import annotations

from typing import Any


def loopback_replica_grpc() -> None:
    """Bind this replica's inter-deployment gRPC server to loopback (a local, 127.0.0.1 cluster).

    Ray Serve 2.x (``ray/serve/_private/replica.py``, ``_on_initialized``) starts each replica's
    inter-deployment gRPC server on ``[::]:0``, every interface, whatever the node address
    (ray-project/ray#59908; a configurable bind is discussed in #64623). On a one-machine cluster
    the replicas only talk over loopback, so :class:`ModelServer`'s constructor, which Serve runs
    before it starts that server, calls this to rebind it to ``127.0.0.1``. A no-op when the Ray
    version has no such call (the test of ``dlops serve`` checks that nothing listens beyond
    loopback).
    """
    try:
        import ray.serve._private.replica as replica
    except Exception:  # noqa: BLE001  (another Ray layout: leave it)
        return
    orig = getattr(replica, "add_port_to_grpc_server", None)
    if orig is None or getattr(orig, "_dlops_loopback", False):
        return

    def bind(server: Any, address: str) -> Any:
        if address.startswith("[::]:") or address.startswith("0.0.0.0:"):
            address = "127.0.0.1:" + address.rsplit(":", 1)[1]
        return orig(server, address)

    bind._dlops_loopback = True  # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = bind
