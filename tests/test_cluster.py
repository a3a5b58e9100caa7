"""dlops.cluster: which Ray token rule `dlops run`, `serve` and `submit` share."""

from __future__ import annotations

import pytest

from dlops.cluster import use_local_token


@pytest.fixture
def no_auth_env(monkeypatch, tmp_path):
    for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token of this machine
    return monkeypatch


def test_a_token_file_turns_token_mode_on(no_auth_env, tmp_path):
    import os

    assert use_local_token() is False and "RAY_AUTH_MODE" not in os.environ  # no token anywhere
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("x" * 32)
    assert use_local_token() is True and os.environ["RAY_AUTH_MODE"] == "token"


def test_a_token_path_or_value_turns_it_on_and_an_explicit_mode_is_kept(no_auth_env, tmp_path):
    import os

    tok = tmp_path / "tok"
    tok.write_text("y" * 32)
    no_auth_env.setenv("RAY_AUTH_TOKEN_PATH", str(tok))
    assert use_local_token() is True and os.environ["RAY_AUTH_MODE"] == "token"
    no_auth_env.delenv("RAY_AUTH_TOKEN_PATH")
    no_auth_env.setenv("RAY_AUTH_MODE", "disabled")  # the user's choice wins
    no_auth_env.setenv("RAY_AUTH_TOKEN", "z" * 32)
    assert use_local_token() is False and os.environ["RAY_AUTH_MODE"] == "disabled"


@pytest.fixture(scope="module")
def heads(tmp_path_factory):
    """Two real Ray heads on 127.0.0.1 (``ray.cluster_utils``, in child processes): one without
    authentication, one with token authentication (a token of its own in a temp HOME)."""
    import os

    from dlops_testing import child_cluster

    home = tmp_path_factory.mktemp("home")
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text("t" * 32)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")}
    head = {"num_cpus": 0, "include_dashboard": False}
    gens = [child_cluster(head, [], dict(env, HOME=str(home), RAY_AUTH_MODE=mode)) for mode in ("disabled", "token")]
    try:
        addrs = {mode: next(g)["address"] for mode, g in zip(("disabled", "token"), gens)}
        yield addrs
    finally:
        for g in gens:
            g.close()


def test_gcs_auth_mode_tells_an_open_cluster_from_a_token_one(heads):
    """Fails when the installed Ray renames the GCS method dlops._private asks (then: None)."""
    from dlops._private import gcs_auth_mode

    assert gcs_auth_mode(heads["disabled"]) == "disabled"
    assert gcs_auth_mode(heads["token"]) == "token"
    assert gcs_auth_mode("auto") is None and gcs_auth_mode("ray://127.0.0.1:10001") is None


def test_gcs_auth_mode_of_something_that_is_not_a_gcs_is_unknown():
    import socket
    import threading

    from dlops._private import gcs_auth_mode

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def close_each():  # accepts and hangs up: not a gRPC server
        for _ in range(5):
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=close_each, daemon=True).start()
    try:
        assert gcs_auth_mode(f"127.0.0.1:{srv.getsockname()[1]}", timeout_s=3) is None
    finally:
        srv.close()


def test_a_token_is_not_sent_to_a_cluster_that_runs_without_one(no_auth_env, tmp_path, heads):
    """A driver in token mode refuses an open cluster's calls (its trials die before they start),
    so a token on this machine is sent only where the cluster asks for one."""
    import os

    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("x" * 32)
    assert use_local_token(heads["disabled"]) is False and "RAY_AUTH_MODE" not in os.environ
    assert use_local_token(heads["token"]) is True and os.environ["RAY_AUTH_MODE"] == "token"
