"""SIGTERM while ``dlops run`` works: the open MLflow runs end KILLED and the process exits 143.

``timeout``, systemd and Kubernetes stop a process with SIGTERM; ``timeout`` and systemd send it
to every process of the group or cgroup at once, Ray's own processes included. Ray's driver
installs a native SIGTERM handler at ``ray.init`` that aborts with a stack trace (exit 134), and
once Ray's processes are gone any call into Ray blocks for a minute and then aborts, so no
clean-up that goes through Ray (or Tune's graceful stop) can be relied on. :func:`install` (called
after ``ray.init``) replaces that handler: on SIGTERM it runs the clean-up set with
:func:`set_cleanup` (MLflow only: the open runs end KILLED), prints one line and exits 143 (128 +
SIGTERM) at once, without touching Ray. Tune's experiment state is at most
``TUNE_GLOBAL_CHECKPOINT_S`` (1 s, longer when a snapshot takes over 50 ms: see
:mod:`dlops.search.tune.runtime`) old, so ``dlops run --resume`` continues the search as after a
``kill -9``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any, Callable, Optional

_cleanup: Optional[Callable[[], None]] = None
_once = threading.Lock()

#: exit status after SIGTERM (128 + 15), as a shell reports a process SIGTERM ended
EXIT_SIGTERM = 143


def _terminate() -> None:
    """Clean up, say so and exit 143; runs once, in whichever thread gets there first."""
    if not _once.acquire(blocking=False):
        return
    try:
        if _cleanup is not None:
            _cleanup()
        msg = "terminated (SIGTERM): open MLflow runs were marked KILLED; dlops run --resume continues the search"
    except BaseException as exc:  # noqa: BLE001 - exit anyway, and say what was not done
        msg = f"terminated (SIGTERM): could not mark the open MLflow runs KILLED: {type(exc).__name__}: {exc}"
    try:
        sys.stdout.flush()
        sys.stderr.write(msg + "\n")
        sys.stderr.flush()
    finally:
        os._exit(EXIT_SIGTERM)


def _on_sigterm(signum: int, frame: Any) -> None:
    _terminate()


def _watch(r: int) -> None:
    """Thread: Python's C-level signal handler writes each caught signal's number to the wakeup
    fd at once; on SIGTERM, terminate from here. The main thread runs Python signal handlers only
    between bytecodes, and it may sit in a call into Ray while a SIGTERM sent to the whole group
    takes Ray's processes down, after which Ray's driver exits the process on its own (exit 1,
    runs left RUNNING)."""
    try:
        while True:
            data = os.read(r, 64)
            if not data:  # restore() closed the write end
                return
            if signal.SIGTERM in data:
                _terminate()
    except OSError:
        return
    finally:
        try:
            os.close(r)
        except OSError:
            pass


def install() -> Any:
    """Handle SIGTERM as described above from now on (main thread only; elsewhere a no-op).
    Returns what :func:`restore` needs to undo it; None when nothing was installed."""
    if threading.current_thread() is not threading.main_thread():
        return None
    set_cleanup(None)
    r, w = os.pipe()
    os.set_blocking(w, False)
    previous_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    threading.Thread(target=_watch, args=(r,), name="dlops-sigterm", daemon=True).start()
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    return previous, previous_fd, w


def set_cleanup(fn: Optional[Callable[[], None]]) -> None:
    """What SIGTERM runs before the exit (MLflow only, no Ray): e.g. end the open MLflow runs.
    It may run on a thread of its own while the main thread goes on."""
    global _cleanup
    _cleanup = fn


def restore(installed: Any) -> None:
    """Undo :func:`install` (None: nothing to do): the previous SIGTERM handler and wakeup fd."""
    set_cleanup(None)
    if installed is None or threading.current_thread() is not threading.main_thread():
        return
    previous, previous_fd, w = installed
    signal.signal(signal.SIGTERM, previous)
    signal.set_wakeup_fd(previous_fd)
    os.close(w)  # the watcher thread sees end of file and exits
