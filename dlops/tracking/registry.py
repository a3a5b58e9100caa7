"""Model registry: register a version, gate it, move the aliases, and keep the promotion history.

The promotion gate uses the single optimizing metric plus the satisficing constraints (Ng,
*Structuring ML Projects*: one optimizing metric, N-1 satisficing ones). Aliases, not the
deprecated stages; versions are taken from the object that ``register_model`` returns, never
"latest". What each alias means (for a model and for its ``-ensemble`` model alike):

* ``champion``: the version that won the gate: a finite optimizing metric, every satisficing
  constraint met, the same fingerprint (task, classes, dev/test split, metric) as the champion
  it replaced and a strictly better optimizing metric; an ensemble must also beat its best
  member strictly. It moves only through the gate (``dlops run``, ``dlops ensemble``,
  ``dlops promote``), ``dlops promote --force`` or ``dlops rollback``, each recorded.
* ``challenger``: the newest version that is *eligible*: a finite optimizing metric, every
  constraint met, (ensembles) better than its best member, and comparable with the champion
  (the same fingerprint; the rule of ``dlops promote --alias challenger``). It may be worse than the
  champion (that is what a challenger is: the next candidate to compare against it), but it
  never points at a version that breaks a constraint or, for an ensemble, loses to a member.
  A version that is not eligible gets no alias at all. ``dlops promote --alias challenger``
  moves it to an eligible version comparable with the champion (it need not beat either).

An ensemble's ``latency_ms`` and ``size_mb`` are measured as a single model's
(:func:`dlops.job.ensemble.measure`), so the satisficing constraints gate it the same way.

Each version carries its metrics as tags ``dlops.metric.<name>``, its gate spec as ``dlops.gate``
and its fingerprint as ``dlops.fingerprint``; the history is kept as registered-model tags
``dlops.history.*`` (see :mod:`dlops.tracking.promotion` for the formats).
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Optional, Sequence

from dlops.errors import GateRefusedError, RegistryError
from dlops.search.space import Constraint
from dlops.tracking.promotion import (FINGERPRINT_TAG, GATE_TAG, Candidate, Event, GateSpec, decide,
                                      decide_challenger, eligible, history_key, parse_fingerprint, parse_history,
                                      rollback_target)

CHALLENGER = "challenger"
CHAMPION = "champion"
METRIC_TAG = "dlops.metric."
KIND_TAG = "dlops.kind"  # registered-model tag: "model" | "ensemble" (what dlops made)
#: seconds the gate waits after moving ``champion`` before it checks that no concurrent
#: registration moved it to a worse version (two ``dlops run`` finishing together)
SETTLE_S = 1.0


def parse_model_uri(uri: str) -> tuple[str, str, str]:
    """``models:/NAME@ALIAS`` -> ``(NAME, "@", ALIAS)``; ``models:/NAME/VERSION`` -> ``(NAME, "/",
    VERSION)`` (VERSION may be MLflow's ``latest``).

    Raises:
        ValueError: not one of those forms, or an empty name, alias or version.
    """
    rest = uri[len("models:/"):] if uri.startswith("models:/") else ""
    name, sep, tail = rest.partition("@") if "@" in rest else rest.rpartition("/")
    if not (sep and name and tail):
        raise ValueError(f"{uri!r} is not models:/NAME@ALIAS or models:/NAME/VERSION")
    return name, sep, tail


def get_model_version(client: Any, uri: str) -> Any:
    """The ``ModelVersion`` behind ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``.

    Raises:
        LookupError: not such a URI (:func:`parse_model_uri`), or no such model, alias or version
            in the client's registry (the message names the URI and MLflow's reason).
    """
    try:
        name, sep, tail = parse_model_uri(uri)
    except ValueError as exc:
        raise LookupError(str(exc)) from None
    try:
        if sep == "@":
            return client.get_model_version_by_alias(name, tail)
        if tail == "latest":  # MLflow's models:/NAME/latest: the highest version number
            versions = client.search_model_versions(f"name = '{name}'", max_results=1000)
            if not versions:
                raise LookupError(f"{name} has no versions")
            return max(versions, key=lambda v: int(v.version))
        return client.get_model_version(name, tail)
    except Exception as exc:  # noqa: BLE001  (MlflowException, or a REST error)
        raise LookupError(f"no registered model version {uri!r} ({exc})") from None


@dataclass(frozen=True)
class Promotion:
    """What the gate decided."""

    name: str
    version: str
    aliases: tuple[str, ...]
    previous_champion: Optional[str]
    reason: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def version_metrics(mv: Any) -> dict[str, float]:
    """The ``dlops.metric.*`` tags of a model version as floats."""
    out = {}
    for k, v in (mv.tags or {}).items():
        if k.startswith(METRIC_TAG):
            try:
                out[k[len(METRIC_TAG):]] = float(v)
            except ValueError:
                continue
    return out


def current_user() -> str:
    """Who is moving an alias: ``$MLFLOW_TRACKING_USERNAME``, else the login name."""
    import getpass
    import os

    try:
        return os.environ.get("MLFLOW_TRACKING_USERNAME") or getpass.getuser()
    except Exception:  # noqa: BLE001  (no login name in some containers)
        return "unknown"


def _now() -> tuple[int, str]:
    import datetime
    import time

    ms = int(time.time() * 1000)
    iso = datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).isoformat(timespec="milliseconds")
    return ms, iso


def record_event(client: Any, name: str, alias: str, from_version: Optional[str], to_version: str,
                 decision: str, reason: str, command: str) -> Event:
    """Append one alias move to ``name``'s promotion history (a registered-model tag)."""
    import uuid

    ms, iso = _now()
    ev = Event(iso, current_user(), alias, from_version, str(to_version), decision, reason, command)
    key = history_key(ms, uuid.uuid4().hex[:8])
    client.set_registered_model_tag(name, key, ev.to_json())
    return Event(**{**ev.__dict__, "key": key})


def history(client: Any, name: str) -> list[Event]:
    """``name``'s promotion history, oldest first.

    Raises:
        RegistryError: no registered model ``name``.
    """
    return parse_history(get_registered_model(client, name).tags or {})


def get_registered_model(client: Any, name: str) -> Any:
    """The ``RegisteredModel`` ``name``.

    Raises:
        RegistryError: no such registered model (the message names it).
    """
    try:
        return client.get_registered_model(name)
    except Exception:  # noqa: BLE001  (MlflowException RESOURCE_DOES_NOT_EXIST, or a REST error)
        raise RegistryError(f"no registered model {name!r}") from None


def resolve_version(client: Any, name: str, version: Any) -> Any:
    """The ``ModelVersion`` ``version`` of ``name``, checked to exist and to belong to ``name``.

    Raises:
        RegistryError: no model ``name``; ``version`` is not a positive integer; no such version of
            ``name`` (deleted, or a version of another model): the message names both.
    """
    get_registered_model(client, name)
    v = str(version).strip()
    if not v.isdigit() or int(v) < 1:
        raise RegistryError(f"{name}: version {version!r} is not a version number (1, 2, ...)")
    try:
        return client.get_model_version(name, v)
    except Exception:  # noqa: BLE001
        raise RegistryError(f"{name} has no version {v}") from None


def why_missing(client: Any, uri: str) -> str:
    """Why ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` resolves to nothing, in one
    sentence: no such registered model; an alias that is not set (naming those that are); an
    alias whose version was deleted (MLflow drops the alias with it: the promotion history
    remembers); a version that does not exist (naming the latest). Never raises."""
    try:
        name, sep, tail = parse_model_uri(uri)
    except ValueError as exc:
        return str(exc)
    at, alias, version = sep == "@", tail, tail
    try:
        rm = client.get_registered_model(name)
    except Exception:  # noqa: BLE001
        return f"no registered model named {name!r}"
    try:
        if at:
            aliases = _aliases(client, rm)
            lost = _lost_aliases(client, rm, aliases)
            if alias in lost:
                return (f"@{alias} pointed at version {lost[alias]}, which was deleted (MLflow dropped the alias "
                        f"with it; dlops promote {name} VERSION --alias {alias} sets it again)")
            if alias in aliases and aliases[alias]["dangling"]:
                return f"@{alias} points at version {aliases[alias]['version']}, which was deleted"
            have = ", ".join(f"@{a} (version {e['version']})" for a, e in aliases.items()) or "none"
            return f"{name} has no alias @{alias}; its aliases: {have}"
        latest = max((int(v.version) for v in client.search_model_versions(f"name = '{name}'", max_results=1000)),
                     default=None)
        if latest is None:
            return f"{name} has no versions"
        # MLflow numbers versions 1, 2, ...: one below the latest existed once; so did one the
        # promotion history moved an alias to
        moved = {e.to_version for e in parse_history(rm.tags or {})}
        if (str(version).isdigit() and 1 <= int(version) < latest) or version in moved:
            return f"version {version} of {name} was deleted (latest: {latest})"
        return f"{name} has no version {version} (latest: {latest})"
    except Exception:  # noqa: BLE001  (a best-effort explanation)
        return f"{name} has no {'alias @' + alias if at else 'version ' + str(version)}"


def alias_version(client: Any, name: str, alias: str) -> Optional[str]:
    """The version ``alias`` of ``name`` points at, None when it points nowhere (never set, or
    the version it pointed at was deleted: a dangling alias is never followed)."""
    try:
        mv = client.get_model_version_by_alias(name, alias)
    except Exception:  # noqa: BLE001
        return None
    try:
        client.get_model_version(name, str(mv.version))
    except Exception:  # noqa: BLE001  (the alias outlived its version)
        return None
    return str(mv.version)


def gate_spec(mv: Any) -> GateSpec:
    """The gate spec the version was registered with (tag ``dlops.gate``).

    Raises:
        RegistryError: the version has no (valid) ``dlops.gate`` tag: not registered by dlops.
    """
    text = (mv.tags or {}).get(GATE_TAG)
    if not text:
        raise RegistryError(f"{mv.name} version {mv.version} has no {GATE_TAG} tag (not registered by this dlops); "
                            "use --force --reason TEXT to move the alias anyway")
    try:
        return GateSpec.from_json(text)
    except ValueError as exc:
        raise RegistryError(f"{mv.name} version {mv.version}: {exc}") from None


def candidate(mv: Any) -> Candidate:
    """A model version as the gate sees it."""
    return Candidate(str(mv.version), version_metrics(mv), parse_fingerprint((mv.tags or {}).get(FINGERPRINT_TAG)))


def baseline_of(mv: Any) -> Optional[dict[str, float]]:
    """An ensemble version's best member metrics (tags ``dlops.baseline.<name>``), else None."""
    out = {k[len(BASELINE_TAG):]: float(v) for k, v in (mv.tags or {}).items() if k.startswith(BASELINE_TAG)}
    return out or None


BASELINE_TAG = "dlops.baseline."


@dataclass(frozen=True)
class Move:
    """What ``promote`` / ``rollback`` decided (and did, unless ``dry_run``)."""

    name: str
    alias: str
    from_version: Optional[str]
    to_version: str
    moved: bool
    decision: str  # gate | forced | rollback | refused | unchanged
    reason: str


def move_alias(client: Any, name: str, alias: str, to_version: str, from_version: Optional[str], decision: str,
               reason: str, command: str) -> Event:
    """Point ``alias`` at ``to_version`` (one call) and append the event to the history. When the
    history cannot be written, the alias is put back where it was and the error re-raised.

    Two clients setting the same alias at once can make the store refuse one of them (a unique
    constraint on the alias row): the call is retried up to 4 more times, 0.2-1 s apart."""
    import time

    for attempt in range(5):
        try:
            client.set_registered_model_alias(name, alias, str(to_version))
            break
        except Exception:  # noqa: BLE001  (IntegrityError behind an MlflowException / REST error)
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))
    try:
        return record_event(client, name, alias, from_version, to_version, decision, reason, command)
    except BaseException:
        try:
            if from_version is None:
                client.delete_registered_model_alias(name, alias)
            else:
                client.set_registered_model_alias(name, alias, from_version)
        finally:
            raise


def promote(client: Any, name: str, version: Any, alias: str = CHAMPION, force: bool = False,
            reason: Optional[str] = None, dry_run: bool = False, command: str = "promote") -> Move:
    """Gate ``name`` version ``version`` with its stored gate spec and fingerprint, and move
    ``alias`` to it when it passes.

    The gate for ``champion`` (:func:`dlops.tracking.promotion.decide`): eligible (finite
    optimizing metric, every satisficing constraint met, an ensemble beating its best member),
    comparable with the version ``champion`` points at (the same fingerprint) and strictly better
    than it. For ``challenger`` (:func:`dlops.tracking.promotion.decide_challenger`): eligible and
    comparable with the *champion*; it need not beat the champion nor the current challenger.
    The version the gate compares with is re-read immediately before the alias is moved.

    Args:
        force: move even when the gate refuses (needs ``reason``; recorded as ``forced``).
        dry_run: decide only; nothing is written.

    Raises:
        RegistryError: unknown model or version, an empty alias, ``force`` without ``reason``,
            a stored gate spec missing (without ``force``). Nothing is changed.
        GateRefusedError: the gate refused and ``force`` is off (nothing is changed); with
            ``dry_run`` too, so that a script sees the decision in the exit code.
    """
    if not alias or not alias.strip():
        raise RegistryError("--alias: empty")
    if force and not (reason and reason.strip()):
        raise RegistryError("--force needs --reason TEXT (recorded in the promotion history)")
    mv = resolve_version(client, name, version)
    v = str(mv.version)
    current = alias_version(client, name, alias)
    if current == v:
        return Move(name, alias, current, v, False, "unchanged", f"{name}@{alias} is already version {v}")

    def judge(spec: GateSpec) -> tuple[bool, str]:
        if alias == CHALLENGER:
            champ = alias_version(client, name, CHAMPION)
            ref = candidate(client.get_model_version(name, champ)) if champ is not None else None
            return decide_challenger(candidate(mv), ref, spec, baseline_of(mv))
        now = alias_version(client, name, alias)
        holder = candidate(client.get_model_version(name, now)) if now is not None else None
        return decide(candidate(mv), holder, spec, baseline_of(mv))

    if force:
        try:
            _, said = judge(gate_spec(mv))
        except RegistryError as exc:
            said = str(exc)
        why = f"forced by {current_user()}: {reason.strip()} (the gate said: {said})"  # type: ignore[union-attr]
        if not dry_run:
            move_alias(client, name, alias, v, current, "forced", why, command)
        return Move(name, alias, current, v, not dry_run, "forced", why)
    spec = gate_spec(mv)
    ok, why = judge(spec)
    if not ok:
        would = "would be refused (dry run, nothing changed)" if dry_run else "refused"
        raise GateRefusedError(f"{name} version {v} -> @{alias} {would}: {why}")
    if not dry_run:
        # re-read what the gate compares with immediately before the move: another client may have moved it
        ok, why = judge(spec)
        if not ok:
            raise GateRefusedError(f"{name} version {v} -> @{alias} refused: {why}")
        current = alias_version(client, name, alias)
        if reason and reason.strip():  # a reason given without --force is kept too
            why = f"{why}; {current_user()}: {reason.strip()}"
        move_alias(client, name, alias, v, current, "gate", why, command)
    return Move(name, alias, current, v, not dry_run, "gate", why)


def rollback(client: Any, name: str, alias: str = CHAMPION, dry_run: bool = False) -> Move:
    """Point ``alias`` back at the version it pointed at before its last move (from the history;
    see :func:`dlops.tracking.promotion.rollback_target`).

    Raises:
        RegistryError: unknown model; no earlier version in the history; that version was deleted
            (a dangling target is never followed). Nothing is changed.
    """
    events = history(client, name)
    if not any(e.alias == alias for e in events):
        raise RegistryError(f"{name}@{alias}: no promotion history for alias {alias!r}; nothing to roll back")
    target = rollback_target(events, alias)
    if target is None:
        raise RegistryError(f"{name}@{alias}: the history has no earlier version to roll back to")
    try:
        client.get_model_version(name, target)
    except Exception:  # noqa: BLE001
        raise RegistryError(f"{name}@{alias}: the earlier version {target} was deleted; nothing to roll back to") \
            from None
    current = alias_version(client, name, alias)
    was = f"version {current}" if current is not None else "no version (its version was deleted)"
    why = f"rolled back by {current_user()} from {was} to {target}"
    if not dry_run:
        move_alias(client, name, alias, target, current, "rollback", why, "rollback")
    return Move(name, alias, current, target, not dry_run, "rollback", why)


def register_and_promote(
    client: Any,
    model_uri: str,
    name: str,
    metrics: Mapping[str, float],
    metric: str,
    mode: str,
    constraints: Sequence[Constraint] = (),
    tags: Optional[Mapping[str, str]] = None,
    description: Optional[str] = None,
    baseline: Optional[Mapping[str, float]] = None,
    fingerprint: Optional[Mapping[str, Any]] = None,
    kind: str = "model",
    command: str = "run",
) -> Promotion:
    """Register ``model_uri`` as a new version of ``name`` (with its metrics, gate spec and
    fingerprint as tags, in the same call), then let the gate move the aliases (see the module
    docstring for what they mean) and append each move to the history.

    ``baseline``: metrics the candidate must also beat to become champion or challenger (an
    ensemble must beat the best single model it is made of: otherwise serving that model is
    cheaper and better); stored as ``dlops.baseline.<name>`` tags.

    The champion is re-read immediately before the alias is moved (one call); after
    :data:`SETTLE_S` seconds it is read again, and when a version registered concurrently took
    it although this one is better (two runs finishing together), it is moved back and recorded.

    Nothing is half-written: if tagging or aliasing fails, the new version is deleted again and
    the error re-raised.

    Raises:
        mlflow.exceptions.MlflowException: the registry refused (the new version is removed).
    """
    import mlflow

    spec = GateSpec(metric, mode, tuple(constraints))
    all_tags = {METRIC_TAG + k: repr(float(v)) for k, v in metrics.items()
                if isinstance(v, (int, float)) and math.isfinite(float(v))}
    all_tags.update({BASELINE_TAG + k: repr(float(v)) for k, v in (baseline or {}).items()
                     if isinstance(v, (int, float)) and math.isfinite(float(v))})
    all_tags[GATE_TAG] = spec.to_json()
    if fingerprint is not None:
        all_tags[FINGERPRINT_TAG] = json.dumps(dict(fingerprint), sort_keys=True)
    all_tags.update({k: str(v) for k, v in (tags or {}).items()})
    try:
        client.get_registered_model(name)
    except Exception:  # noqa: BLE001
        try:
            client.create_registered_model(name, tags={KIND_TAG: kind})
        except Exception:  # noqa: BLE001  (created concurrently by another run)
            pass
    with _quiet_registration():
        mv = mlflow.register_model(model_uri, name, tags=all_tags)  # the ModelVersion created: no "latest"
    v = str(mv.version)
    me = Candidate(v, dict(metrics), dict(fingerprint) if fingerprint is not None else None)
    try:
        if description:
            client.update_model_version(name, v, description=description)
        aliases: list[str] = []
        # challenger: the same rule as ``dlops promote --alias challenger`` (eligible, better than
        # its best member for an ensemble, comparable with the champion): a client on @challenger
        # never gets a model whose metric means something else
        current = alias_version(client, name, CHAMPION)
        ok, why = decide_challenger(me, candidate(client.get_model_version(name, current)) if current else None,
                                    spec, baseline)
        if ok:
            prev_ch = alias_version(client, name, CHALLENGER)
            move_alias(client, name, CHALLENGER, v, prev_ch, "gate", f"newest eligible version ({why})", command)
            aliases.append(CHALLENGER)
        previous = alias_version(client, name, CHAMPION)  # re-read immediately before the move
        holder = candidate(client.get_model_version(name, previous)) if previous is not None else None
        promote_, reason = decide(me, holder, spec, baseline)
        if promote_:
            move_alias(client, name, CHAMPION, v, previous, "gate", reason, command)
            aliases.append(CHAMPION)
            _settle(client, name, me, spec, baseline, previous, command)
            if alias_version(client, name, CHAMPION) != v:
                aliases.remove(CHAMPION)
                reason += "; then a concurrent, better version took champion"
    except BaseException:
        try:
            client.delete_model_version(name, v)
        finally:
            raise
    return Promotion(name, v, tuple(aliases), previous, reason)


#: what ``mlflow.register_model`` prints on stderr for every registration (dlops prints its own line)
_MLFLOW_CHATTER = ("Successfully registered model ", "Registered model ", "Created version ")


@contextmanager
def _quiet_registration() -> Iterator[None]:
    """Drop MLflow's per-registration stderr lines (``Registered model 'm' already exists. Creating
    a new version...``, ``Created version '3' ...``); anything else it writes is passed on."""
    import io
    import sys

    buf = io.StringIO()
    try:
        with redirect_stderr(buf):
            yield
    finally:
        rest = "".join(line for line in buf.getvalue().splitlines(keepends=True)
                       if not line.startswith(_MLFLOW_CHATTER))
        if rest:
            sys.stderr.write(rest)


def _settle(client: Any, name: str, me: Candidate, spec: GateSpec, baseline: Optional[Mapping[str, float]],
            previous: Optional[str], command: str, rounds: int = 3) -> None:
    """After moving champion to ``me``: a version registered after ``previous`` (concurrently)
    that moved it since must beat ``me``, or champion is moved back to ``me`` (recorded)."""
    import time

    for _ in range(rounds):
        time.sleep(SETTLE_S)
        now = alias_version(client, name, CHAMPION)
        if now is None or now == me.version:
            return
        if previous is not None and int(now) <= int(previous):
            return  # a rollback or a forced move by a person: not a concurrent registration
        other = candidate(client.get_model_version(name, now))
        beats, why = decide(me, other, spec, baseline)
        if not beats:
            return
        move_alias(client, name, CHAMPION, me.version, now, "gate",
                   f"{why} (version {now} was registered concurrently and took champion first)", command)


def list_models(client: Any) -> list[dict[str, Any]]:
    """Every registered model dlops made (tag ``dlops.kind``), each ``{"name", "kind", "aliases":
    {alias: {"version", "metric", "value", "dangling"}}}``. ``dangling``: the alias points at a
    deleted version, or (MLflow drops an alias with its version) the history's last move of it
    went to a version that was deleted since; such an alias is never followed."""
    out = []
    for rm in _all_registered_models(client):
        kind = (rm.tags or {}).get(KIND_TAG)
        if kind is None:
            continue
        aliases = _aliases(client, rm)
        for alias, v in _lost_aliases(client, rm, aliases).items():
            aliases[alias] = {"version": v, "dangling": True}
        out.append({"name": rm.name, "kind": kind, "aliases": dict(sorted(aliases.items()))})
    return out


def _lost_aliases(client: Any, rm: Any, aliases: Mapping[str, Any]) -> dict[str, str]:
    """alias -> version for the aliases the history last moved to a version that was deleted
    since: MLflow drops an alias with its version, so only the history remembers it."""
    last: dict[str, str] = {}
    for e in parse_history(rm.tags or {}):
        last[e.alias] = e.to_version
    out = {}
    for alias, v in last.items():
        if alias in aliases:
            continue
        try:
            client.get_model_version(rm.name, v)
        except Exception:  # noqa: BLE001  (deleted)
            out[alias] = v
    return out


def _all_registered_models(client: Any) -> list[Any]:
    out, token = [], None
    while True:
        page = client.search_registered_models(max_results=100, page_token=token)
        out.extend(page)
        token = getattr(page, "token", None)
        if not token:
            return out


def _aliases(client: Any, rm: Any) -> dict[str, dict[str, Any]]:
    raw = getattr(rm, "aliases", None) or {}
    if isinstance(raw, list):  # some MLflow versions: a list of RegisteredModelAlias
        raw = {a.alias: a.version for a in raw}
    out = {}
    for alias, version in sorted(raw.items()):
        entry: dict[str, Any] = {"version": str(version), "dangling": False}
        try:
            mv = client.get_model_version(rm.name, str(version))
        except Exception:  # noqa: BLE001
            entry["dangling"] = True
            out[alias] = entry
            continue
        try:
            spec = GateSpec.from_json((mv.tags or {}).get(GATE_TAG, ""))
            entry["metric"], entry["value"] = spec.metric, version_metrics(mv).get(spec.metric)
        except ValueError:
            pass
        out[alias] = entry
    return out


def member_names(tags: Mapping[str, str]) -> list[str]:
    """An ensemble version's members from its tags: ``dlops.members`` as they are (the versions of
    ``dlops ensemble``), or, for a ``dlops run`` ensemble (``dlops.member_uris`` beside its trial
    ids), the registered model URI of each member and ``trial ID (checkpoint only)`` for one that
    is not registered. Empty when the tags are absent or not JSON."""
    try:
        ids = json.loads(tags.get("dlops.members") or "[]")
        uris = json.loads(tags.get("dlops.member_uris") or "null") or ids
        return [u if u else f"trial {t} (checkpoint only)" for u, t in zip(uris, ids)]
    except (ValueError, TypeError):
        return []


def show_model(client: Any, name: str) -> dict[str, Any]:
    """Everything ``dlops models show`` prints about ``name``: its aliases (dangling ones
    marked), its versions newest first (aliases, gate spec, the optimizing and satisficing
    metrics the gate reads, baseline, fingerprint, run, search, project, data manifest, members),
    and the promotion history, oldest first.

    Raises:
        RegistryError: no registered model ``name``.
    """
    rm = get_registered_model(client, name)
    aliases = _aliases(client, rm)
    by_version: dict[str, list[str]] = {}
    for a, e in aliases.items():
        by_version.setdefault(e["version"], []).append(a)
    versions = []
    mvs = client.search_model_versions(f"name = '{name}'", max_results=1000)
    for mv in sorted(mvs, key=lambda m: -int(m.version)):
        tags = mv.tags or {}
        metrics = version_metrics(mv)
        entry: dict[str, Any] = {"version": str(mv.version), "aliases": sorted(by_version.get(str(mv.version), [])),
                                 "run_id": tags.get("dlops.run_id") or mv.run_id, "search_run_id":
                                     tags.get("dlops.search_run_id"), "project": tags.get("dlops.project"),
                                 "fingerprint": parse_fingerprint(tags.get(FINGERPRINT_TAG)), "metrics": metrics,
                                 "baseline": baseline_of(mv)}
        try:
            spec = GateSpec.from_json(tags.get(GATE_TAG, ""))
            entry["gate"] = {"metric": spec.metric, "mode": spec.mode, "constraints": [str(c) for c in spec.constraints]}
            entry["optimizing"] = {spec.metric: metrics.get(spec.metric)}
            entry["satisficing"] = {str(c): metrics.get(c.metric) for c in spec.constraints}
        except ValueError:
            entry["gate"] = None
        if entry["search_run_id"]:
            entry["data_manifest"] = f"runs:/{entry['search_run_id']}/data_manifest.json"
        if "dlops.members" in tags:
            entry["members"] = member_names(tags) or tags["dlops.members"]
            if tags.get("dlops.member_note"):
                entry["member_note"] = tags["dlops.member_note"]
        versions.append(entry)
    present = {v["version"] for v in versions}
    events = [{"time": e.time, "user": e.user, "alias": e.alias, "from": e.from_version, "to": e.to_version,
               "decision": e.decision, "reason": e.reason, "command": e.command,
               "to_deleted": e.to_version not in present} for e in parse_history(rm.tags or {})]
    last: dict[str, str] = {}
    for e in events:
        last[e["alias"]] = e["to"]
    # MLflow drops an alias with its version: name the aliases whose last version was deleted
    lost = {a: v for a, v in last.items() if a not in aliases and v not in present}
    return {"name": name, "kind": (rm.tags or {}).get(KIND_TAG), "aliases": aliases, "versions": versions,
            "history": events, "lost_aliases": lost}
