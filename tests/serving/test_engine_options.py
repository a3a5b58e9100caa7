"""The serving engine's pure parts: deployment options (file + flags, Ray Serve's names and
schema), the capped body reader on a real Starlette request, and the replica error line. No Ray
start (the served paths are in tests/test_serve.py)."""

from __future__ import annotations

import asyncio

import pytest

from dlops.errors import ServeError
from dlops.serving.options import DEFAULT_MAX_QUEUED, ServeOptions, load_serve_options


def test_options_file_then_flags_with_ray_serve_names(tmp_path):
    f = tmp_path / "serve.yaml"
    f.write_text("autoscaling_config: {min_replicas: 1, max_replicas: 3, target_ongoing_requests: 4}\n"
                 "max_queued_requests: 10\nmax_batch_size: 16\nray_actor_options: {num_cpus: 0.5}\n")
    o = load_serve_options(str(f), max_batch_size=8, num_cpus=2, num_replicas=None)
    assert o.max_batch_size == 8 and o.max_queued_requests == 10  # the flag wins, the file fills the rest
    kw = o.deployment_kwargs()
    assert kw["autoscaling_config"]["max_replicas"] == 3 and "num_replicas" not in kw
    assert kw["ray_actor_options"] == {"num_cpus": 2} and kw["max_queued_requests"] == 10
    d = ServeOptions().deployment_kwargs()
    assert d["num_replicas"] == 1 and d["max_queued_requests"] == DEFAULT_MAX_QUEUED > 0  # bounded by default


@pytest.mark.parametrize("text,flags,needle", [
    ("max_queued_requests: 0\n", {}, "max_queued_requests"),
    ("max_ongoing_request: 4\n", {}, "max_ongoing_request"),  # a typo is named, not ignored
    ("autoscaling_config: {min_replicas: 1, max_replicas: 0}\n", {}, "max_replicas"),  # Ray Serve's own schema
    ("autoscaling_config: {max_replicas: 2}\n", {"num_replicas": 2}, "exclude each other"),
    ("autoscaling_config: {min_replicas: 1, max_replicas: 4, target_ongoing_request: 8}\n", {},
     "unknown key.*target_ongoing_request "),  # Ray's schema would ignore the typo
    ("- 1\n", {}, "mapping"),
    ("max_batch_size: [\n", {}, "not valid YAML"),
    ("", {"batch_wait_timeout_s": -1}, "^--batch-wait-timeout-s: "),  # a flag's value: the flag is named
    ("", {"max_batch_size": 0}, "^--max-batch-size: .*greater than or equal to 1"),
    ("", {"num_replicas": 0}, "^--replicas: "),
    ("max_batch_sise: 8\n", {}, "unknown key 'max_batch_sise' .*max_batch_size"),
    ("ray_actor_options: {num_cpus: 0}\n", {}, "num_cpus"),
    ("ray_actor_options: {num_cpu: 1}\n", {}, "ray_actor_options: .*'num_cpu'"),  # Ray Serve's own check, before Ray
])
def test_bad_options_name_the_key(tmp_path, text, flags, needle):
    f = tmp_path / "serve.yaml"
    f.write_text(text)
    with pytest.raises(ServeError, match=needle) as e:
        load_serve_options(str(f), **flags)
    assert str(f) in str(e.value) or not text


def test_missing_options_file_is_named(tmp_path):
    with pytest.raises(ServeError, match="--serve-config: cannot read .*nope.yaml"):
        load_serve_options(str(tmp_path / "nope.yaml"))


def _request(chunks: list[bytes], length: bool) -> object:
    from starlette.requests import Request

    headers = [(b"content-type", b"application/json")]
    if length:
        headers.append((b"content-length", str(sum(map(len, chunks))).encode()))
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    read: list[int] = []

    async def receive() -> dict:
        read.append(1)
        return messages[len(read) - 1] if len(read) <= len(messages) else {"type": "http.disconnect"}

    req = Request({"type": "http", "method": "POST", "path": "/", "headers": headers, "query_string": b""}, receive)
    req.read_count = read  # type: ignore[attr-defined]
    return req


@pytest.mark.parametrize("length", [True, False])
def test_body_cap_drains_an_oversized_body(length):
    from dlops.serving.body import read_body_capped

    chunks = [b"x" * 1000] * 20
    req = _request(chunks, length)
    assert asyncio.run(read_body_capped(req, cap=5000)) is None
    assert len(req.read_count) == 20  # every chunk read (drained), so the client can read the 413
    req = _request(chunks, length)
    assert asyncio.run(read_body_capped(req, cap=5000, drain_limit=8000)) is None
    assert len(req.read_count) == 9  # beyond the drain limit it stops reading
    req = _request([b'{"a": ', b"1}"], length)
    assert asyncio.run(read_body_capped(req, cap=5000)) == b'{"a": 1}'


def test_replica_error_line():
    from dlops.serving.app import _last_error

    text = ("The deployment failed to start 1 times in a row.\nTraceback (most recent call last):\n"
            '  File "x.py", line 3, in <module>\n    load()\n_pickle.UnpicklingError: invalid load key, \'n\'.\n')
    assert _last_error(text) == "_pickle.UnpicklingError: invalid load key, 'n'."
    assert _last_error("something odd happened") == "something odd happened"
