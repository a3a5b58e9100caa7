"""The registry's gate spec, metric fingerprints and promotion history: pure functions, no MLflow.

What is stored, and where (all of it in the registry itself, readable with ``MlflowClient``):

* version tag ``dlops.gate``: the gate spec the version was registered with, JSON
  ``{"metric": "dev/error", "mode": "min", "constraints": ["latency_ms <= 50"]}`` (the optimizing
  metric, its direction, the satisficing constraints). ``dlops promote`` gates with the
  candidate's own spec, so it needs no project file.
* version tag ``dlops.fingerprint``: what the version's metric means, JSON ``{"task", "classes",
  "dev_split", "test_split", "metric", "mode"}`` (``*_split``: a SHA-256 of the split's manifest,
  first 16 hex digits). Versions whose fingerprints differ are never compared by the gate.
* version tags ``dlops.metric.<name>``: the version's metrics (:mod:`dlops.tracking.registry`).
* registered-model tags ``dlops.history.<ms>-<hex>``: one promotion event each (an alias move),
  JSON ``{"time": ISO-8601 UTC, "user", "alias", "from": version or null, "to": version,
  "decision": "gate" | "forced" | "rollback", "reason", "command"}``. ``<ms>`` is the time in
  milliseconds since the epoch (13 digits), ``<hex>`` random: events are appended without a
  read-modify-write, so two writers never overwrite each other, and sort by time.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from dlops.search.space import Constraint

GATE_TAG = "dlops.gate"
FINGERPRINT_TAG = "dlops.fingerprint"
HISTORY_PREFIX = "dlops.history."

#: the parts of a fingerprint, in the order a difference is reported
FINGERPRINT_PARTS = ("task", "classes", "metric", "mode", "dev_split", "test_split")

_CONSTRAINT = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(<=|>=|<|>)\s*([-+0-9.eEinfINFna]+)\s*$")


@dataclass(frozen=True)
class GateSpec:
    """The optimizing metric (``metric``, ``mode`` ``min`` or ``max``) and the satisficing constraints."""

    metric: str
    mode: str
    constraints: tuple[Constraint, ...] = ()

    def to_json(self) -> str:
        return json.dumps({"metric": self.metric, "mode": self.mode,
                           "constraints": [str(c) for c in self.constraints]}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "GateSpec":
        """Parse a ``dlops.gate`` tag.

        Raises:
            ValueError: not the JSON :meth:`to_json` writes (the message quotes it).
        """
        try:
            raw = json.loads(text)
            mode = str(raw["mode"])
            if mode not in ("min", "max"):
                raise ValueError(f"mode {mode!r}")
            return cls(str(raw["metric"]), mode, tuple(parse_constraint(c) for c in raw.get("constraints", [])))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"not a dlops gate spec: {text[:200]!r} ({exc})") from None


def parse_constraint(text: str) -> Constraint:
    """``"latency_ms <= 50"`` -> :class:`Constraint` (the inverse of ``str(Constraint)``).

    Raises:
        ValueError: not ``METRIC OP NUMBER`` with OP one of ``<= < >= >``.
    """
    m = _CONSTRAINT.match(str(text))
    if not m:
        raise ValueError(f"not a constraint 'METRIC OP NUMBER': {text!r}")
    return Constraint(m.group(1), m.group(2), float(m.group(3)))  # type: ignore[arg-type]


def split_digest(part: Any) -> str:
    """First 16 hex digits of the SHA-256 of ``part`` as canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(part, sort_keys=True, default=str).encode()).hexdigest()[:16]


def split_digests(manifest: Mapping[str, Any], seed: int, data: Mapping[str, Any]) -> tuple[str, str]:
    """(dev digest, test digest) of a data manifest (``data_manifest.json``).

    Every source's manifest lists the examples of each split (``splits.dev``, ``splits.test``:
    file paths for image folders and CSV lists, indices into scikit-learn's digits for the digits
    package) and the ``class_map``; each digest hashes its own split's examples with the class
    map, so dev and test digests differ whenever dev and test hold different examples. A
    manifest without ``splits`` (none that dlops writes) is hashed whole, with the seed and the
    data section that determine the split, and the split's name (it cannot tell the members
    apart, but never reports dev and test as one split).
    """
    if isinstance(manifest.get("splits"), Mapping):
        sp, cmap = manifest["splits"], manifest.get("class_map")
        return (split_digest({"dev": sp.get("dev"), "class_map": cmap}),
                split_digest({"test": sp.get("test"), "class_map": cmap}))
    whole = {k: v for k, v in manifest.items() if k != "skipped"}
    dev, test = (split_digest({"split": n, "manifest": whole, "seed": seed, "data": data}) for n in ("dev", "test"))
    return dev, test


def fingerprint(task: str, classes: Sequence[str], dev_split: str, test_split: str, metric: str,
                mode: str) -> dict[str, Any]:
    """What a version's optimizing metric means: two versions are comparable iff these are equal."""
    return {"task": task, "classes": list(classes), "dev_split": dev_split, "test_split": test_split,
            "metric": metric, "mode": mode}


def fingerprint_diff(a: Optional[Mapping[str, Any]], b: Optional[Mapping[str, Any]]) -> Optional[str]:
    """None when ``a`` (the candidate's) and ``b`` (the champion's) are comparable, else which part
    differs, e.g. ``"classes differ (2 classes vs 10)"``."""
    if a is None or b is None:
        return f"{'the candidate' if a is None else 'the champion'} has no fingerprint ({FINGERPRINT_TAG})"
    for part in FINGERPRINT_PARTS:
        x, y = a.get(part), b.get(part)
        if x == y:
            continue
        if part == "classes":
            x, y = list(x or []), list(y or [])
            if len(x) != len(y):
                return f"classes differ ({len(x)} classes vs {len(y)})"
            diff = [f"{p!r} vs {q!r}" for p, q in zip(x, y) if p != q][:3]
            return f"classes differ ({'; '.join(diff)})"
        if part.endswith("_split"):
            return f"the {part.split('_')[0]} split differs (manifest {x} vs {y})"
        return f"{part} differs ({x!r} vs {y!r})"
    return None


def parse_fingerprint(text: Optional[str]) -> Optional[dict[str, Any]]:
    """A ``dlops.fingerprint`` tag as a dict; None when absent or not JSON."""
    if not text:
        return None
    try:
        raw = json.loads(text)
    except ValueError:
        return None
    return raw if isinstance(raw, dict) else None


@dataclass(frozen=True)
class Candidate:
    """A version as the gate sees it: its metrics, its fingerprint, and its version number."""

    version: str
    metrics: Mapping[str, float]
    fingerprint: Optional[Mapping[str, Any]] = None


def eligible(metrics: Mapping[str, float], spec: GateSpec) -> tuple[bool, str]:
    """A version may hold an alias a client serves from only with a finite optimizing metric
    and every satisficing constraint met. Returns (ok, reason)."""
    v = metrics.get(spec.metric)
    try:
        finite = v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        finite = False
    if not finite:
        return False, f"no finite {spec.metric}"
    broken = [str(c) for c in spec.constraints if not c.holds(metrics)]
    if broken:
        return False, f"breaks {', '.join(broken)}"
    return True, "meets every constraint"


def decide(candidate: Candidate, champion: Optional[Candidate], spec: GateSpec,
           baseline: Optional[Mapping[str, float]] = None) -> tuple[bool, str]:
    """Should ``candidate`` become champion? Pure; returns (decision, reason).

    It must be eligible (:func:`eligible`), beat ``baseline`` strictly when given (an ensemble's
    best member), and, when there is a champion, have the champion's fingerprint and beat its
    optimizing metric strictly. A champion with no finite metric is replaced by any eligible
    comparable candidate.
    """
    refused, why = _refuse_before_champion(candidate, spec, baseline)
    if refused:
        return False, why
    v = float(candidate.metrics[spec.metric])
    if champion is None:
        return True, "no version held champion"
    if champion.version == candidate.version:
        return False, f"version {candidate.version} is already champion"
    diff = fingerprint_diff(candidate.fingerprint, champion.fingerprint)
    if diff is not None:
        return False, f"not comparable with champion version {champion.version}: {diff}"
    cv = champion.metrics.get(spec.metric)
    if cv is None or not math.isfinite(float(cv)):
        return True, f"champion version {champion.version} has no finite {spec.metric}"
    if _better(v, float(cv), spec.mode):
        return True, f"{spec.metric} {v:.4g} beats champion version {champion.version}'s {float(cv):.4g}"
    return False, f"{spec.metric} {v:.4g} does not beat champion version {champion.version}'s {float(cv):.4g}"


def decide_challenger(candidate: Candidate, champion: Optional[Candidate], spec: GateSpec,
                      baseline: Optional[Mapping[str, float]] = None) -> tuple[bool, str]:
    """May ``candidate`` hold ``challenger`` (``dlops promote --alias challenger``)? Pure; returns
    (decision, reason).

    A challenger is the next candidate to compare against the champion, so it must be eligible
    (:func:`eligible`), beat ``baseline`` strictly when given (an ensemble's best member), and be
    comparable with the champion (the same fingerprint) when there is one. It need not beat the
    champion, nor the version that holds ``challenger`` now.
    """
    refused, why = _refuse_before_champion(candidate, spec, baseline)
    if refused:
        return False, why
    if champion is None:
        return True, f"eligible ({why}); no champion to be comparable with"
    if champion.version == candidate.version:
        return True, f"eligible ({why}); it is the champion itself"
    diff = fingerprint_diff(candidate.fingerprint, champion.fingerprint)
    if diff is not None:
        return False, f"not comparable with champion version {champion.version}: {diff}"
    return True, f"eligible ({why}) and comparable with champion version {champion.version}"


def _refuse_before_champion(candidate: Candidate, spec: GateSpec,
                            baseline: Optional[Mapping[str, float]]) -> tuple[bool, str]:
    """(refused, reason) of the checks both aliases share: eligibility, then beating ``baseline``
    (an ensemble's best member) strictly when it has a finite optimizing metric. When not refused,
    the reason is :func:`eligible`'s."""
    ok, why = eligible(candidate.metrics, spec)
    if not ok:
        return True, f"version {candidate.version} {why}"
    v = float(candidate.metrics[spec.metric])
    if baseline is not None and spec.metric in baseline and math.isfinite(float(baseline[spec.metric])):
        b = float(baseline[spec.metric])
        if not _better(v, b, spec.mode):
            return True, f"{spec.metric} {v:.4g} does not beat the best member's {b:.4g}"
    return False, why


def _better(v: float, ref: float, mode: str) -> bool:
    return v < ref if mode == "min" else v > ref


@dataclass(frozen=True)
class Event:
    """One alias move in the promotion history."""

    time: str
    user: str
    alias: str
    from_version: Optional[str]
    to_version: str
    decision: str  # gate | forced | rollback
    reason: str
    command: str = ""
    key: str = field(default="", compare=False)

    def to_json(self) -> str:
        return json.dumps({"time": self.time, "user": self.user, "alias": self.alias, "from": self.from_version,
                           "to": self.to_version, "decision": self.decision, "reason": self.reason[:2000],
                           "command": self.command}, sort_keys=True)


def history_key(ms: int, token: str) -> str:
    """The registered-model tag key of an event at ``ms`` (milliseconds since the epoch)."""
    return f"{HISTORY_PREFIX}{int(ms):013d}-{token}"


def parse_history(tags: Mapping[str, str]) -> list[Event]:
    """The events among a registered model's tags, oldest first; tags that do not parse are skipped."""
    out = []
    for k in sorted(k for k in tags if k.startswith(HISTORY_PREFIX)):
        try:
            raw = json.loads(tags[k])
            out.append(Event(str(raw["time"]), str(raw.get("user", "")), str(raw["alias"]),
                             None if raw.get("from") is None else str(raw["from"]), str(raw["to"]),
                             str(raw.get("decision", "")), str(raw.get("reason", "")), str(raw.get("command", "")),
                             key=k))
        except (ValueError, KeyError, TypeError):
            continue
    return out


def rollback_target(events: Sequence[Event], alias: str) -> Optional[str]:
    """The version ``alias`` pointed at before its last move that a rollback has not undone yet.

    The history of ``alias`` is read as a stack: a move (``gate``, ``forced``) pushes the version
    it moved away from, a ``rollback`` pops one; the answer is the top (None: nothing to roll
    back to, e.g. the first champion, or every move already rolled back).
    """
    stack: list[Optional[str]] = []
    for e in events:
        if e.alias != alias:
            continue
        if e.decision == "rollback":
            if stack:
                stack.pop()
        else:
            stack.append(e.from_version)
    return stack[-1] if stack else None
