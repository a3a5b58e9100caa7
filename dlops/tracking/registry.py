"""Model registry: register a version, alias it ``challenger``, and promote it to ``champion``.

The promotion gate uses the single optimizing metric plus the satisficing constraints (Ng,
*Structuring ML Projects*: one optimizing metric, N-1 satisficing ones): a challenger becomes
champion when there is no champion yet, or when it meets every constraint and beats the
champion's optimizing metric strictly. Aliases, not the deprecated stages; versions are taken
from the object that ``register_model`` returns, never "latest".

Each version carries its metrics as tags ``dlops.metric.<name>`` so the gate reads the
champion's numbers without guessing which run or step they came from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from dlops.search.space import Constraint

CHALLENGER = "challenger"
CHAMPION = "champion"
METRIC_TAG = "dlops.metric."


def get_model_version(client: Any, uri: str) -> Any:
    """The ``ModelVersion`` behind ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``.

    Raises:
        LookupError: not such a URI, or no such model, alias or version in the client's registry
            (the message names the URI and MLflow's reason).
    """
    rest = uri[len("models:/"):] if uri.startswith("models:/") else ""
    if not rest or ("@" not in rest and "/" not in rest):
        raise LookupError(f"{uri!r} is not models:/NAME@ALIAS or models:/NAME/VERSION")
    try:
        if "@" in rest:
            name, alias = rest.split("@", 1)
            return client.get_model_version_by_alias(name, alias)
        name, version = rest.rsplit("/", 1)
        return client.get_model_version(name, version)
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


def gate(
    challenger: Mapping[str, float],
    champion: Optional[Mapping[str, float]],
    metric: str,
    mode: str,
    constraints: Sequence[Constraint] = (),
) -> tuple[bool, str]:
    """Should the challenger become champion? Pure; returns (decision, reason).

    A challenger whose optimizing metric is NaN/missing or that breaks a constraint never wins.
    """
    v = challenger.get(metric)
    if v is None or not math.isfinite(float(v)):
        return False, f"challenger has no finite {metric}"
    broken = [str(c) for c in constraints if not c.holds(challenger)]
    if broken:
        return False, f"challenger breaks {', '.join(broken)}"
    if champion is None:
        return True, "first champion: there was none before"
    cv = champion.get(metric)
    if cv is None or not math.isfinite(float(cv)):
        return True, f"champion has no finite {metric}"
    better = float(v) < float(cv) if mode == "min" else float(v) > float(cv)
    if better:
        return True, f"{metric} {float(v):.4g} beats champion's {float(cv):.4g}"
    return False, f"{metric} {float(v):.4g} does not beat champion's {float(cv):.4g}"


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
) -> Promotion:
    """Register ``model_uri`` as a new version of ``name``, tag it, alias it, gate it.

    ``baseline``: metrics the challenger must also beat to become champion (an ensemble must beat
    the best single model it is made of: otherwise serving one model is cheaper and better).

    Nothing is half-written: if tagging or aliasing fails, the new version is deleted again and
    the error re-raised (the champion alias is moved last, in one call).

    Raises:
        mlflow.exceptions.MlflowException: the registry refused (the new version is removed).
    """
    import mlflow

    mv = mlflow.register_model(model_uri, name)  # returns the ModelVersion created: no "latest"
    try:
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and math.isfinite(float(v)):
                client.set_model_version_tag(name, mv.version, METRIC_TAG + k, repr(float(v)))
        for k, v in (tags or {}).items():
            client.set_model_version_tag(name, mv.version, k, str(v))
        if description:
            client.update_model_version(name, mv.version, description=description)
        previous = None
        champ_metrics = None
        try:
            champ = client.get_model_version_by_alias(name, CHAMPION)
            previous = str(champ.version)
            champ_metrics = version_metrics(champ)
        except Exception:  # no champion alias yet
            champ = None
        promote, reason = gate(metrics, champ_metrics, metric, mode, constraints)
        if promote and baseline is not None:
            beats, why = gate(metrics, baseline, metric, mode, constraints)
            if not beats:
                promote, reason = False, f"{why.replace('champion', 'best single model')}"
        client.set_registered_model_alias(name, CHALLENGER, mv.version)
        aliases = [CHALLENGER]
        if promote:
            client.set_registered_model_alias(name, CHAMPION, mv.version)
            aliases.append(CHAMPION)
    except BaseException:
        try:
            client.delete_model_version(name, mv.version)
        finally:
            raise
    return Promotion(name, str(mv.version), tuple(aliases), previous, reason)
