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
