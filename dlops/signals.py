"""SIGTERM handled like Ctrl-C while ``dlops run`` works.

``timeout``, systemd and Kubernetes stop a process with SIGTERM. Ray's driver installs a native
handler for it at ``ray.init`` that aborts the process with a stack trace (exit 134), so the
search's MLflow runs ended FAILED with ``SystemExit`` instead of KILLED. :func:`install` (called
after ``ray.init``) turns SIGTERM into SIGINT for this process: Ray Tune then stops the search as
on Ctrl-C (it saves its experiment state, so ``dlops run --resume`` continues it), open runs are
marked KILLED, and :func:`received` tells the CLI to exit 143 (128 + SIGTERM) rather than 130.
A second SIGTERM is a second Ctrl-C (Tune stops at once).
"""

from __future__ import annotations

import signal
import threading
from typing import Any

_received = threading.Event()


def _on_sigterm(signum: int, frame: Any) -> None:
    _received.set()
    signal.raise_signal(signal.SIGINT)  # the current SIGINT handler: Tune's graceful stop, or KeyboardInterrupt


def install() -> Any:
    """Handle SIGTERM as SIGINT from now on (main thread only; elsewhere a no-op). Returns the
    previous handler, for :func:`restore`; None when nothing was installed."""
    if threading.current_thread() is not threading.main_thread():
        return None
    _received.clear()
    return signal.signal(signal.SIGTERM, _on_sigterm)


def restore(previous: Any) -> None:
    """Put back the SIGTERM handler :func:`install` replaced (None: nothing to do)."""
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)


def received() -> bool:
    """Whether a SIGTERM arrived since :func:`install`."""
    return _received.is_set()
