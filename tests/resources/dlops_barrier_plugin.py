"""A test plugin that makes several ``dlops run`` processes enter one phase together.

Used by tests/deployments/test_mlflow_server.py, which installs it for its subprocesses only (a
``*.dist-info`` with an entry point in group ``dlops``, on their ``PYTHONPATH``). It does nothing
unless ``DLOPS_TEST_BARRIER`` names a folder: then, before every phase, a process drops a file
``<phase>-<pid>`` there (``setup-<pid>`` tells that its Ray has started), and before phase
``DLOPS_TEST_BARRIER_PHASE`` (default ``register``) it waits until ``DLOPS_TEST_BARRIER_N``
(default 2) processes have reached it, so that their registrations (the promotion gate) run at the
same moment however long their searches took. ``DLOPS_TEST_BARRIER_DELAY_S`` (default 0) makes
a process wait that many seconds more after the others arrived: the test lets the run that is
likely worse gate last, the order in which a gate that does not re-read the champion fails.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from dlops import hookimpl

#: seconds a process waits for the others before it fails its run
TIMEOUT_S = 600.0


@hookimpl
def dlops_before_phase(phase, context):  # noqa: ARG001  (context: the job's, unused)
    folder = os.environ.get("DLOPS_TEST_BARRIER")
    if not folder:
        return
    d = Path(folder)
    (d / f"{phase}-{os.getpid()}").touch()
    if phase != os.environ.get("DLOPS_TEST_BARRIER_PHASE", "register"):
        return
    n = int(os.environ.get("DLOPS_TEST_BARRIER_N", "2"))
    t0 = time.monotonic()
    while len(list(d.glob(f"{phase}-*"))) < n:
        if time.monotonic() - t0 > TIMEOUT_S:
            raise RuntimeError(f"barrier {folder}: {n} processes did not reach phase {phase} in {TIMEOUT_S:.0f} s")
        time.sleep(0.005)
    time.sleep(float(os.environ.get("DLOPS_TEST_BARRIER_DELAY_S", "0")))
