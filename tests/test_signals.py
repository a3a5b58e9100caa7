"""dlops.signals: SIGTERM runs the clean-up once, prints one line and exits 143, also while the
main thread sits in a blocking call; restore() puts the previous handling back. Real signals to
a real subprocess."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from dlops_testing import subprocess_env

CHILD = r"""
import sys, threading, time
from dlops import signals
done = sys.argv[1]
signals.install()
signals.set_cleanup(lambda: open(done, "a").write("cleanup\n"))
print("ready", flush=True)
threading.Event().wait(60)  # the main thread blocked in a lock wait
print("not terminated", flush=True)
"""


def test_sigterm_runs_the_cleanup_once_and_exits_143(tmp_path: Path):
    done = tmp_path / "done.txt"
    p = subprocess.Popen([sys.executable, "-c", CHILD, str(done)], env=subprocess_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    p.send_signal(signal.SIGTERM)  # a second one while the first is handled: still one clean-up
    out, err = p.communicate(timeout=30)
    assert p.returncode == 143, (out, err)
    assert done.read_text() == "cleanup\n"
    assert "terminated (SIGTERM)" in err and "not terminated" not in out


def test_restore_puts_back_the_default_sigterm():
    code = ("import signal, threading; from dlops import signals; s = signals.install(); signals.restore(s); "
            "assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL; "
            "assert signal.set_wakeup_fd(-1) == -1; "
            "import time; time.sleep(0.2); "
            "assert [t.name for t in threading.enumerate()] == ['MainThread'], threading.enumerate()")
    r = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
