"""The augmentation-policy contract, shared by the core and every augmentation plugin: the policy
object, seeding, and its description (what the main job logs to MLflow).

A policy factory (``dlops_augment_policies`` hook) has the signature
``factory(magnitude: float, image_size: int | None, train: bool) -> Policy`` and the policy is a
callable ``(H, W, C) uint8 numpy -> (H', W', C) uint8 numpy`` (``H' = W' = image_size`` when the
policy crops, else the input size; :func:`dlops.data.transforms.build_transform` resizes after it).

Seeding (why it matters): albumentations 2 keeps its random state inside ``Compose`` (numpy and
Python generators seeded once, at construction); ``np.random.seed``, ``random.seed`` and
``torch.manual_seed`` do not reach it. A ``DataLoader`` forks its workers from the main process, so
every worker, and every epoch (non-persistent workers are forked anew per epoch), would start
from the same copied state and produce the *same* augmentations. :class:`Policy` therefore
reseeds itself whenever the process or ``torch.initial_seed()`` changes: a DataLoader worker runs
``torch.manual_seed(base_seed + worker_id)`` with a ``base_seed`` drawn from the main process's
torch generator for each epoch. Consequences: augmentations differ across workers and epochs, and
two runs started with the same ``torch.manual_seed`` give the same sequence, with no
``worker_init_fn`` required. :func:`worker_init_fn` does the same explicitly (and also seeds
``random`` and ``numpy``'s global state) for code that wants it spelled out.

torchvision.transforms.v2 draws from torch's global generator, which torch already seeds per
worker and per epoch, so the tv2 backend needs nothing more.
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
import weakref
import zlib
from pathlib import Path
from typing import Any, Mapping

import numpy as np

#: MLflow's limit on one param value (characters).
MLFLOW_PARAM_LIMIT = 6000

_LIVE: "weakref.WeakSet[Policy]" = weakref.WeakSet()


def check_magnitude(magnitude: float) -> float:
    """Return ``magnitude`` as a float.

    Raises:
        ValueError: not a number in [0, 1].
    """
    try:
        m = float(magnitude)
    except (TypeError, ValueError):
        raise ValueError(f"augmentation magnitude must be a number in [0, 1], got {magnitude!r}") from None
    if not (0.0 <= m <= 1.0):
        raise ValueError(f"augmentation magnitude must be in [0, 1], got {m}")
    return m


def _torch_seed() -> int | None:
    torch = sys.modules.get("torch")
    if torch is None:
        try:
            import torch  # noqa: F401  (cheap once torch is loaded anywhere)
        except ImportError:  # pragma: no cover - torch is a dependency
            return None
        torch = sys.modules["torch"]
    return int(torch.initial_seed())


class Policy:
    """Base class of an augmentation policy (a callable on one image).

    Subclasses implement :meth:`_apply` and :meth:`_pipeline_description`, and may override
    :meth:`_set_rng` when their backend keeps its own random state.

    Attributes:
        name: the policy's registry name.
        magnitude: strength in [0, 1] (0: identity or close to it).
        image_size: output side in pixels, or None (keep the input size).
        train: training policy (evaluation policies are identities).
        seed: optional extra seed mixed with ``torch.initial_seed()``.
    """

    backend = "none"

    def __init__(self, name: str, magnitude: float, image_size: int | None, train: bool,
                 seed: int | None = None) -> None:
        self.name = name
        self.magnitude = check_magnitude(magnitude)
        if image_size is not None and int(image_size) < 1:
            raise ValueError(f"image_size must be a positive number of pixels or None, got {image_size!r}")
        self.image_size = None if image_size is None else int(image_size)
        self.train = bool(train)
        self.seed = seed
        self._seed_key: tuple[int, int | None] | None = None
        self._last_shape: tuple[int, int, int] | None = None
        _LIVE.add(self)

    def __setstate__(self, state: dict[str, Any]) -> None:  # unpickled in a spawned worker
        self.__dict__.update(state)
        self._seed_key = None
        _LIVE.add(self)

    # -- seeding ----------------------------------------------------------------------------
    def _derive_seed(self, torch_seed: int | None) -> np.random.SeedSequence:
        entropy = [zlib.crc32(self.name.encode()), 0 if self.seed is None else int(self.seed)]
        if torch_seed is not None:
            entropy.append(torch_seed)
        return np.random.SeedSequence(entropy)

    def reseed(self, seed: int | None = None) -> None:
        """Restart the random stream: from ``seed`` if given, else from ``torch.initial_seed()``."""
        ts = _torch_seed() if seed is None else int(seed)
        ss = self._derive_seed(ts)
        state = ss.generate_state(2)
        self._set_rng(np.random.default_rng(ss), random.Random(int(state[0]) << 32 | int(state[1])))
        self._seed_key = (os.getpid(), _torch_seed())

    def _ensure_seeded(self) -> None:
        key = (os.getpid(), _torch_seed())
        if key != self._seed_key:
            self.reseed()

    def _set_rng(self, rng: np.random.Generator, py: random.Random) -> None:
        """Give the backend its random state (default: nothing to do)."""

    # -- applying ---------------------------------------------------------------------------
    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Augment one image.

        Args:
            image: (H, W, C) or (H, W) uint8.

        Returns:
            (H', W', C) uint8 (C as given; a 2-D input comes back with C = 1).

        Raises:
            TypeError: not a uint8 array.
        """
        img = np.asarray(image)
        if img.dtype != np.uint8:
            raise TypeError(f"augmentation policies take uint8 images, got {img.dtype} (use to_uint8)")
        if img.ndim == 2:
            img = img[:, :, None]
        if img.ndim != 3:
            raise TypeError(f"augmentation policies take (H, W, C) images, got shape {img.shape}")
        self._last_shape = (int(img.shape[0]), int(img.shape[1]), int(img.shape[2]))
        if not self.train:
            return img
        self._ensure_seeded()
        out = self._apply(np.ascontiguousarray(img))
        if out.ndim == 2:
            out = out[:, :, None]
        return out

    def _apply(self, image: np.ndarray) -> np.ndarray:
        return image

    # -- describing -------------------------------------------------------------------------
    def _default_shape(self, shape: tuple[int, int, int] | None) -> tuple[int, int, int]:
        if shape is not None:
            return (int(shape[0]), int(shape[1]), int(shape[2]) if len(shape) > 2 else 1)
        if self.image_size is not None:
            return (self.image_size, self.image_size, 3)
        if self._last_shape is not None:
            return self._last_shape
        raise ValueError(
            f"policy {self.name!r} has image_size=None and has seen no image: pass the input shape"
        )

    def _pipeline_description(self, shape: tuple[int, int, int]) -> Any:
        return []

    def describe(self, shape: tuple[int, int, int] | None = None) -> dict[str, Any]:
        """A JSON-serialisable description of the exact pipeline, for an MLflow artifact.

        Args:
            shape: (H, W, C) input shape the pipeline is built for (default: ``image_size`` x
                ``image_size`` x 3, else the last image seen).

        Returns:
            ``{"policy", "magnitude", "image_size", "train", "backend", "backend_version",
            "input_shape", "pipeline"}``; for albumentations ``pipeline`` is
            ``albumentations.to_dict(compose)`` (``albumentations.from_dict`` rebuilds it).

        Raises:
            ValueError: ``image_size`` is None, no image was seen and no shape is given.
        """
        s = self._default_shape(shape)
        return {
            "policy": self.name,
            "magnitude": self.magnitude,
            "image_size": self.image_size,
            "train": self.train,
            "backend": self.backend,
            "backend_version": self._backend_version(),
            "input_shape": list(s),
            "pipeline": self._pipeline_description(s) if self.train else [],
        }

    def _backend_version(self) -> str:
        return ""

    @property
    def serialized(self) -> dict[str, Any] | None:
        """:meth:`describe` for the default shape (None while that shape is unknown)."""
        try:
            return self.describe()
        except ValueError:
            return None

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, magnitude={self.magnitude}, "
                f"image_size={self.image_size}, train={self.train})")


class IdentityPolicy(Policy):
    """Policy ``none``: returns the image unchanged."""

    backend = "none"


def worker_init_fn(worker_id: int) -> None:
    """``DataLoader(worker_init_fn=...)``: seed this worker's augmentation state.

    Seeds Python's ``random`` and numpy's global state from ``torch.initial_seed()`` (which torch
    sets to ``base_seed + worker_id``) and reseeds every live :class:`Policy` in the worker.
    Optional: policies reseed themselves on first use in a new worker (see the module docstring).

    Args:
        worker_id: the DataLoader worker index (unused beyond torch's own seed).
    """
    seed = _torch_seed() or 0
    random.seed(seed)
    np.random.seed(seed % 2**32)
    for p in list(_LIVE):
        p.reseed()


def describe_policy(name: str, magnitude: float = 0.5, image_size: int | None = None,
                    channels: int = 3, input_size: int | None = None, registry: Any = None) -> dict[str, Any]:
    """Describe policy ``name`` as it would run, for logging to MLflow as a JSON artifact.

    Args:
        name: policy name in the registry (any backend, third-party included).
        magnitude: strength in [0, 1].
        image_size: output side in pixels (None: keep the input size).
        channels: image channels C the pipeline is built for (1 for digits, 3 for RGB).
        input_size: input side in pixels (default: ``image_size``).
        registry: a :class:`dlops.plugins.PluginRegistry` (default: the process one).

    Returns:
        The dict of :meth:`Policy.describe`; for a third-party callable that is no
        :class:`Policy`, ``{"policy", "magnitude", "image_size", "repr"}``.

    Raises:
        dlops.plugins.PluginError: unknown policy.
        ValueError: bad magnitude, or neither ``image_size`` nor ``input_size`` given.
    """
    if registry is None:
        from dlops.plugins import get_registry

        registry = get_registry()
    check_magnitude(magnitude)
    factory = registry.get("augment_policies", name)
    policy = factory(magnitude=magnitude, image_size=image_size, train=True)
    side = input_size if input_size is not None else image_size
    if side is None:
        raise ValueError("describe_policy needs image_size or input_size to build the pipeline")
    if hasattr(policy, "describe"):
        return policy.describe((int(side), int(side), int(channels)))
    # no memory address (" at 0x7f..."): the param must be the same in every process (--resume re-logs it)
    return {"policy": name, "magnitude": float(magnitude), "image_size": image_size,
            "repr": re.sub(r" at 0x[0-9a-fA-F]+", "", repr(policy))}


def _summary(desc: Mapping[str, Any]) -> str:
    """``name(m=0.5,albumentations): HorizontalFlip(p=0.5) > Affine(p=0.7) > ...``."""

    def walk(node: Any) -> list[str]:
        if isinstance(node, Mapping):
            if "transform" in node and isinstance(node["transform"], Mapping):
                return walk(node["transform"])
            cls = str(node.get("__class_fullname__", node.get("class", "?"))).rsplit(".", 1)[-1]
            kids = node.get("transforms")
            p = node.get("p")
            head = f"{cls}(p={p:g})" if isinstance(p, (int, float)) else cls
            if isinstance(kids, list) and kids:
                inner = [s for k in kids for s in walk(k)]
                if cls == "Compose":
                    return inner
                return [f"{head}[{' | '.join(inner)}]"]
            return [head]
        if isinstance(node, list):
            return [s for k in node for s in walk(k)]
        return [str(node)]

    steps = walk(desc.get("pipeline", []))
    return (f"{desc.get('policy', '?')}(m={desc.get('magnitude', '?')},{desc.get('backend', '?')}): "
            + " > ".join(steps))


def policy_param(desc: Mapping[str, Any] | Policy, limit: int = MLFLOW_PARAM_LIMIT) -> str:
    """A short MLflow param value for a policy description (at most ``limit`` characters).

    The compact JSON of the description when it fits; else a one-line summary of the steps
    (``name(m=..,backend): Step(p=..) > ...``); else that summary cut to ``limit`` characters
    with a ``...[truncated]`` marker (never mid-character: Python strings are sliced by code point).
    The exact pipeline belongs in the JSON artifact (:func:`write_policy_json`).

    Args:
        desc: a :meth:`Policy.describe` dict, or a policy.
        limit: maximum length in characters (MLflow's param limit is 6000).

    Raises:
        ValueError: ``limit`` below 32.
    """
    if limit < 32:
        raise ValueError(f"limit must be at least 32 characters, got {limit}")
    d = desc.describe() if isinstance(desc, Policy) else desc
    full = json.dumps(d, separators=(",", ":"), sort_keys=True, default=str)
    if len(full) <= limit:
        return full
    s = _summary(d)
    if len(s) <= limit:
        return s
    marker = "...[truncated]"
    return s[: limit - len(marker)] + marker


def write_policy_json(desc: Mapping[str, Any], out_dir: str | Path, filename: str = "augment_policy.json") -> Path:
    """Write a policy description as indented JSON (for ``mlflow.log_artifact``); returns the path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / filename
    path.write_text(json.dumps(desc, indent=2, sort_keys=True, default=str) + "\n")
    return path
