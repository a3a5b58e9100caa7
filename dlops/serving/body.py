"""Reading a POST body with a size cap, so that a client always sees the 413.

A server that answers before it has read the body and then closes the connection makes the
client's kernel receive a TCP reset while it is still sending: Python's ``urllib`` and
``requests`` then raise a connection error (``BrokenPipeError`` / ``ConnectionResetError``)
instead of showing the 413. So a body over the cap is drained (read and dropped, up to
:data:`DRAIN_LIMIT_BYTES`) before the 413 goes out, with ``Connection: close``.
"""

from __future__ import annotations

from typing import Any, Optional

#: the most bytes of an oversized body read and dropped before answering 413 (256 MB); beyond
#: it the connection is closed at once (a client sending that much may see a reset)
DRAIN_LIMIT_BYTES = 256 * 10**6


async def read_body_capped(request: Any, cap: int, drain_limit: int = DRAIN_LIMIT_BYTES) -> Optional[bytes]:
    """The request body, or None when it is longer than ``cap`` bytes.

    Args:
        request: a Starlette request.
        cap: the most bytes accepted.
        drain_limit: an oversized body is read and dropped up to this many bytes before
            returning None (see the module docstring).

    Returns:
        The body, or None once it is known to be longer than ``cap`` (from its
        ``Content-Length``, or by counting a chunked upload, which announces no length).
    """
    declared = request.headers.get("content-length")
    over = declared is not None and declared.strip().isdigit() and int(declared) > cap
    chunks, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > cap:
            over = True
        if over:
            if n > drain_limit:
                break
            continue
        chunks.append(chunk)
    return None if over else b"".join(chunks)


def too_large_response(max_request_mb: float) -> Any:
    """HTTP 413 naming the cap, with ``Connection: close``."""
    from starlette.responses import JSONResponse

    return JSONResponse({"error": f"request body: more than {max_request_mb:g} MB (the server's --max-request-mb); "
                                  "send fewer images per request"}, status_code=413, headers={"Connection": "close"})
