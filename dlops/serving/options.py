"""The options of ``dlops serve`` that shape the Ray Serve deployment: replicas, autoscaling, the
bounded queue and request batching, with Ray Serve's own names.

They come from ``--serve-config FILE`` (YAML, the keys below) and the command-line flags (a flag
that is given wins over the file). Validated here with pydantic, and ``autoscaling_config`` with
Ray Serve's own schema (``ray.serve.config.AutoscalingConfig``), before Ray starts: a bad value
is a :class:`~dlops.errors.ServeError` naming the key (exit 2).

Keys (Ray Serve's ``@serve.deployment`` / ``@serve.batch`` arguments):

* ``num_replicas`` (int >= 1, default 1): fixed replica count; not with ``autoscaling_config``.
* ``autoscaling_config`` (mapping, default none): Ray Serve's autoscaling, e.g.
  ``{min_replicas: 1, max_replicas: 4, target_ongoing_requests: 8}``.
* ``max_ongoing_requests`` (int >= 1, default :data:`DEFAULT_MAX_ONGOING`): requests a replica
  works on at once (being batched or computed).
* ``max_queued_requests`` (int >= 1, or -1 for no limit; default :data:`DEFAULT_MAX_QUEUED`):
  requests waiting at the HTTP proxy for a replica; beyond it the client gets HTTP 503 at once
  (Ray Serve's back-pressure, ``BackPressureError``).
* ``max_batch_size`` (int >= 1, default :data:`DEFAULT_MAX_BATCH`): the most images (not
  requests) one forward takes; requests from several clients are batched up to it; a request
  with more images runs as its own batch.
* ``batch_wait_timeout_s`` (seconds >= 0, default :data:`DEFAULT_BATCH_WAIT_S`): how long the
  first request of a batch waits for others.
* ``ray_actor_options`` (mapping, default ``{num_cpus: 1}``): each replica's resources.
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dlops.errors import ServeError

#: a replica's concurrent requests (Ray Serve's default is 5, too few to batch across clients)
DEFAULT_MAX_ONGOING = 32
#: requests queued at the proxy beyond max_ongoing_requests * replicas before a 503
DEFAULT_MAX_QUEUED = 64
#: images per forward
DEFAULT_MAX_BATCH = 32
#: seconds the first request of a batch waits for more
DEFAULT_BATCH_WAIT_S = 0.005


class ServeOptions(BaseModel):
    """The deployment options (see the module docstring for each key)."""

    model_config = ConfigDict(extra="forbid")

    num_replicas: Optional[int] = Field(None, ge=1)
    autoscaling_config: Optional[dict[str, Any]] = None
    max_ongoing_requests: int = Field(DEFAULT_MAX_ONGOING, ge=1)
    max_queued_requests: int = Field(DEFAULT_MAX_QUEUED, ge=-1)
    max_batch_size: int = Field(DEFAULT_MAX_BATCH, ge=1)
    batch_wait_timeout_s: float = Field(DEFAULT_BATCH_WAIT_S, ge=0.0, le=60.0)
    ray_actor_options: dict[str, Any] = Field(default_factory=lambda: {"num_cpus": 1.0})

    @field_validator("max_queued_requests")
    @classmethod
    def _not_zero(cls, v: int) -> int:
        if v == 0:
            raise ValueError("0 would refuse every request; use >= 1, or -1 for no limit")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "ServeOptions":
        if self.autoscaling_config is not None and self.num_replicas is not None:
            raise ValueError("num_replicas and autoscaling_config exclude each other (Ray Serve: give one)")
        cpus = self.ray_actor_options.get("num_cpus", 1.0)
        if not isinstance(cpus, (int, float)) or isinstance(cpus, bool) or cpus <= 0:
            raise ValueError(f"ray_actor_options.num_cpus must be a number > 0, got {cpus!r}")
        return self

    def deployment_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``serve.deployment`` (Ray Serve's names)."""
        kw: dict[str, Any] = {"max_ongoing_requests": self.max_ongoing_requests,
                              "max_queued_requests": self.max_queued_requests,
                              "ray_actor_options": dict(self.ray_actor_options)}
        if self.autoscaling_config is not None:
            kw["autoscaling_config"] = dict(self.autoscaling_config)
        else:
            kw["num_replicas"] = self.num_replicas or 1
        return kw


def load_serve_options(path: Optional[str] = None, **flags: Any) -> ServeOptions:
    """The options from the YAML file ``path`` (optional) with the flags that are not None on top.

    Args:
        path: a YAML mapping of the keys in the module docstring.
        **flags: the same keys; ``num_cpus`` sets ``ray_actor_options.num_cpus``.

    Raises:
        ServeError: the file is missing or not a YAML mapping, an unknown key, a value out of
            range, or an ``autoscaling_config`` Ray Serve refuses (the message names the file and
            the key).
    """
    import yaml

    where = f"--serve-config {path}" if path else "serve options"
    data: dict[str, Any] = {}
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                loaded = yaml.safe_load(f)
        except OSError as exc:
            raise ServeError(f"--serve-config: cannot read {path} ({exc.strerror or exc})") from None
        except yaml.YAMLError as exc:
            raise ServeError(f"--serve-config: {path} is not valid YAML ({exc})") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ServeError(f"--serve-config: {path} must be a YAML mapping of deployment options, "
                             f"got {type(loaded).__name__}")
        data.update(loaded)
    num_cpus = flags.pop("num_cpus", None)
    data.update({k: v for k, v in flags.items() if v is not None})
    if num_cpus is not None:
        data["ray_actor_options"] = {**dict(data.get("ray_actor_options") or {}), "num_cpus": num_cpus}
    given = {k for k, v in flags.items() if v is not None} | ({"num_cpus"} if num_cpus is not None else set())
    try:
        opts = ServeOptions(**data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [str(p) for p in first.get("loc", ())]
        key = ".".join(loc)
        msg = str(first.get("msg", "")).removeprefix("Value error, ")
        if not key:  # a check across keys: its message names them
            raise ServeError(f"{where}: {msg}") from None
        if first.get("type") == "extra_forbidden":
            raise ServeError(f"{where}: unknown key {key!r} (the keys: "
                             f"{', '.join(sorted(ServeOptions.model_fields))})") from None
        flag = loc[0] if loc[0] in given else ("num_cpus" if loc[-1] == "num_cpus" and "num_cpus" in given else None)
        if flag is not None:  # the value came from the command line: name the flag
            name = {"num_replicas": "--replicas"}.get(flag, "--" + flag.replace("_", "-"))
            raise ServeError(f"{name}: {msg} (got {first.get('input')!r})") from None
        raise ServeError(f"{where}: {key}: {msg} (got {first.get('input')!r})") from None
    try:  # Ray Serve's own check of the deployment options (ray_actor_options keys and values); no Ray start
        from ray import serve

        serve.deployment(_Probe, **opts.deployment_kwargs())
    except ImportError:
        pass  # no Ray Serve: the command says so later
    except (ValueError, TypeError) as exc:
        key = "ray_actor_options: " if "ray_actor_options" in str(exc) else ""
        raise ServeError(f"{where}: {key}{exc}".replace("\n", " ")) from None
    if opts.autoscaling_config is not None:
        try:
            from ray.serve.config import AutoscalingConfig

            fields = getattr(AutoscalingConfig, "model_fields", None) or AutoscalingConfig.__fields__
            unknown = sorted(set(opts.autoscaling_config) - set(fields))
            if unknown:  # Ray's schema ignores extra keys: a typo would silently keep a default
                raise ServeError(f"{where}: autoscaling_config: unknown key(s) {', '.join(unknown)} "
                                 f"(Ray Serve's keys: {', '.join(sorted(fields))})")
            AutoscalingConfig(**opts.autoscaling_config)
        except ImportError:
            pass  # no Ray Serve: the command says so later
        except ServeError:
            raise
        except Exception as exc:  # noqa: BLE001  (Ray's pydantic error, v1 or v2)
            raise ServeError(f"{where}: autoscaling_config: {exc}".replace("\n", " ")) from None
    return opts


class _Probe:
    """A class for Ray Serve's ``serve.deployment`` to check the options against (never run)."""
