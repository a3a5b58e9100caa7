"""Ray's internal GCS protocol, used in one place: telling whether a cluster uses token
authentication before joining it.

Why: Ray 2.59+ clusters started with ``ray start`` use token authentication when a token exists,
and ``ray.init(address=...)`` only sends the token with ``RAY_AUTH_MODE=token``, so dlops sets it
when a token is on this machine (:func:`dlops.cluster.use_local_token`). Against a cluster that
runs *without* authentication that is wrong in a way Ray does not report: the driver's own gRPC
server then refuses the cluster's unauthenticated calls ("Missing authorization header"), and every
trial actor dies before it starts (``ActorDiedError``: "cancelled before it started running").
Ray has no public API that tells a cluster's authentication mode, so :func:`gcs_auth_mode` asks the
GCS one harmless question (``NodeInfoGcsService/GetClusterId``, an empty request) without a token:
a token cluster answers ``UNAUTHENTICATED``, an open one answers. One round trip on 127.0.0.1.

If a Ray version renames the method, the answer is ``UNIMPLEMENTED`` and :func:`gcs_auth_mode`
returns None (unknown), and dlops keeps its earlier rule (send the token).
``tests/test_cluster.py::test_gcs_auth_mode_tells_an_open_cluster_from_a_token_one`` fails then.
Checked on Ray 2.60.
"""

from __future__ import annotations

from typing import Optional

#: the GCS method asked (full gRPC path; Ray's ``gcs_service.proto``)
GCS_PROBE_METHOD = "/ray.rpc.NodeInfoGcsService/GetClusterId"


def gcs_auth_mode(address: str, timeout_s: float = 5.0) -> Optional[str]:
    """``"token"`` when the GCS at ``address`` (``host:port``) refuses an unauthenticated call,
    ``"disabled"`` when it answers one, None when it cannot tell (no answer within ``timeout_s``
    seconds, another error, or an address that is not a GCS ``host:port``: ``auto``, ``ray://``)."""
    if "://" in address or address in ("auto", "local") or ":" not in address:
        return None
    import grpc

    channel = grpc.insecure_channel(address)
    try:
        call = channel.unary_unary(GCS_PROBE_METHOD, request_serializer=lambda b: b,
                                   response_deserializer=lambda b: b)
        call(b"", timeout=timeout_s)
        return "disabled"
    except grpc.RpcError as exc:
        return "token" if exc.code() == grpc.StatusCode.UNAUTHENTICATED else None
    finally:
        channel.close()
