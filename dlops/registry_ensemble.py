"""``dlops ensemble NAME``: an ensemble of already-registered versions of a model.

The members are registered pytorch models (possibly from different searches and of different
architectures). They must share their preprocessing (input size, channels, mean, std), task and
classes: otherwise the ensemble is refused and the message names the difference. When they share
a dev/test split (equal fingerprints: the same split manifests, metric and direction), the data
are rebuilt from the first member's ``project.json`` (as ``dlops report`` does), the ensemble is
evaluated on dev and test, registered as a version of ``NAME-ensemble`` (its members' URIs in
tag ``dlops.member_uris`` and metadata ``members``) and gated against its best member and the
ensemble's champion. Without a common split it is registered unevaluated, with no alias, and
the output says so.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

from dlops.errors import RegistryError

#: the spec keys that decide how an input is preprocessed; members must agree on them
PREPROCESSING = ("image_size", "in_channels", "mean", "std", "input_layout")


def member_difference(specs: list[dict[str, Any]], labels: list[str]) -> Optional[str]:
    """None when the members' specs agree on task, classes and preprocessing, else the first
    difference, naming the two members and the key. Pure."""
    first = specs[0]
    for sp, lab in zip(specs[1:], labels[1:]):
        for key in ("task", "class_names") + PREPROCESSING:
            if sp.get(key) != first.get(key):
                what = "classes" if key == "class_names" else ("task" if key == "task" else f"preprocessing ({key})")
                return f"{labels[0]} and {lab} differ in {what}: {first.get(key)!r} vs {sp.get(key)!r}"
    return None


def parse_versions(text: str) -> list[str]:
    """``"3,5,8"`` -> ``["3", "5", "8"]``.

    Raises:
        RegistryError: an empty list, a repeated version, or fewer than two versions.
    """
    vs = [v.strip() for v in str(text).split(",") if v.strip()]
    if len(set(vs)) != len(vs):
        raise RegistryError(f"--versions {text!r}: a version is repeated")
    if len(vs) < 2:
        raise RegistryError(f"--versions {text!r}: an ensemble needs at least two versions")
    return vs


def top_k_versions(client: Any, name: str, k: int, out: Callable[[str], Any] = print) -> list[Any]:
    """The ``k`` best versions of ``name`` (by their stored optimizing metric) that meet their own
    satisficing constraints and are comparable with the champion when it is among them, else with
    the best one (the same fingerprint: task, classes, dev/test split, metric). Says through ``out`` which versions it skipped, and why
    (not comparable with the best, breaks a constraint, an ensemble, not registered by dlops).

    Raises:
        RegistryError: no model ``name``, or fewer than two such versions.
    """
    from dlops.tracking.promotion import GateSpec, eligible, fingerprint_diff
    from dlops.tracking.registry import CHAMPION, alias_version, candidate, get_registered_model

    get_registered_model(client, name)
    scored, skipped = [], []
    for mv in sorted(client.search_model_versions(f"name = '{name}'", max_results=1000), key=lambda m: int(m.version)):
        if "dlops.members" in (mv.tags or {}):
            skipped.append(f"{mv.version} (an ensemble)")
            continue
        try:
            spec = GateSpec.from_json((mv.tags or {}).get("dlops.gate", ""))
        except ValueError:
            skipped.append(f"{mv.version} (no dlops.gate tag)")
            continue
        c = candidate(mv)
        ok, why = eligible(c.metrics, spec)
        if not ok:
            skipped.append(f"{mv.version} ({why})")
            continue
        v = float(c.metrics[spec.metric])
        scored.append((v if spec.mode == "min" else -v, int(mv.version), mv, c.fingerprint))
    scored.sort(key=lambda t: (t[0], t[1]))
    champ = alias_version(client, name, CHAMPION)
    anchor = next((t for t in scored if str(t[1]) == str(champ)), None)
    if scored:  # the champion's fingerprint when it qualifies (an easier task never ranks above it), else the best's
        best_v, fp = (anchor[1], anchor[3]) if anchor is not None else (scored[0][1], scored[0][3])
        what = "the champion" if anchor is not None else "the best"
        comparable = []
        for t in scored:
            d = fingerprint_diff(t[3], fp) if t[3] is not None and fp is not None else (
                None if t[3] == fp else "no fingerprint")
            if d is None:
                comparable.append(t)
            else:
                skipped.append(f"{t[1]} (not comparable with {what}, version {best_v}: {d})")
        scored = comparable
    if skipped:
        out(f"  --top-k skipped versions {'; '.join(sorted(skipped, key=lambda x: int(x.split()[0])))}")
    if len(scored) < 2:
        raise RegistryError(f"--top-k {k}: {name} has {len(scored)} comparable version(s) that meet their "
                            "constraints; an ensemble needs at least two")
    if len(scored) < k:
        out(f"  --top-k {k}: only {len(scored)} versions qualify; the ensemble has {len(scored)} members")
    return [t[2] for t in scored[:k]]


def build_registry_ensemble(client: Any, name: str, versions: Optional[str] = None, top_k: Optional[int] = None,
                            method: str = "average", tta: str = "none", crop_fraction: float = 0.875,
                            ensemble_name: Optional[str] = None, out: Callable[[str], Any] = print) -> str:
    """Build, evaluate, register and gate the ensemble (see the module docstring); returns one
    line: the registered version, its URI, aliases and the gate's reason.

    Raises:
        RegistryError: neither or both of ``versions`` / ``top_k``; an unknown model or version;
            a member that is not a single pytorch model; members that differ in task, classes or
            preprocessing. Nothing is registered.
        dlops.errors.PluginError: no installed plugin provides ``method``.
    """
    import os

    import mlflow

    from dlops.plugins import get_registry
    from dlops.predict import check_tta

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bars per member download
    from dlops.tracking.registry import resolve_version

    if (versions is None) == (top_k is None):
        raise RegistryError("give exactly one of --versions V1,V2,... or --top-k K")
    try:
        check_tta(tta, crop_fraction)
    except ValueError as exc:
        raise RegistryError(f"--tta/--crop-fraction: {exc}") from None
    ens_method = get_registry().get("ensemble_methods", method)
    mvs = ([resolve_version(client, name, v) for v in parse_versions(versions)] if versions is not None
           else top_k_versions(client, name, int(top_k), out))  # type: ignore[arg-type]
    uris = [f"models:/{name}/{mv.version}" for mv in mvs]
    specs = []
    for mv, uri in zip(mvs, uris):
        if "dlops.members" in (mv.tags or {}):
            raise RegistryError(f"{uri} is an ensemble; members must be single models")
        info = mlflow.models.get_model_info(uri)
        if "pytorch" not in info.flavors or not (info.metadata or {}).get("model_spec"):
            raise RegistryError(f"{uri} is not a pytorch model logged by dlops (no model_spec metadata)")
        specs.append(dict(info.metadata["model_spec"]))
    diff = member_difference(specs, uris)
    if diff:
        raise RegistryError(f"cannot ensemble: {diff}")
    ens_name = ensemble_name or f"{name}-ensemble"
    return _register(client, name, ens_name, mvs, uris, specs, ens_method, method, tta, crop_fraction, out)


def _common_split(mvs: list[Any]) -> tuple[Optional[dict[str, Any]], str]:
    """(the members' shared fingerprint, "") or (None, why they share no split)."""
    from dlops.tracking.promotion import fingerprint_diff
    from dlops.tracking.registry import candidate

    fps = [candidate(mv).fingerprint for mv in mvs]
    for mv, fp in zip(mvs[1:], fps[1:]):
        d = fingerprint_diff(fp, fps[0])
        if d is not None:
            return None, f"versions {mvs[0].version} and {mv.version} share no test split ({d})"
    return dict(fps[0]), ""  # type: ignore[arg-type]


def _register(client: Any, name: str, ens_name: str, mvs: list[Any], uris: list[str], specs: list[dict[str, Any]],
              ens_method: Any, method: str, tta: str, crop_fraction: float, out: Callable[[str], Any]) -> str:
    import mlflow
    import numpy as np
    from dlops.ensemble import EnsemblePyfunc
    from dlops.serving.pyfunc import model_signature
    from dlops.job.ensemble import common_spec, gate_constraints, measure
    from dlops.tracking.models import active_run, pip_requirements
    from dlops.tracking.registry import gate_spec, register_and_promote, version_metrics
    from dlops.tracking.store import TAG_KIND

    fp, why_not = _common_split(mvs)
    spec0 = gate_spec(mvs[0])
    metrics: dict[str, float] = {}
    x_example = None
    models = [mlflow.pytorch.load_model(u, map_location="cpu").eval() for u in uris]
    if fp is not None:
        metrics, x_example = _evaluate(client, mvs, uris, specs, models, fp, ens_method, tta, crop_fraction, out)
        if not metrics:
            fp = None
    else:
        out(f"  not evaluated: {why_not}; registered without an alias")
    if x_example is None:
        sp = specs[0]
        size, ch = int(sp.get("image_size") or 8), int(sp.get("in_channels") or 1)
        x_example = np.zeros((2, ch, size, size), dtype=np.float32)
    import torch

    # latency_ms and size_mb as a single model's, so the satisficing constraints apply to the ensemble too
    cost = measure(models, torch.as_tensor(x_example[:1]), specs[0].get("task", "classification"), tta,
                   crop_fraction, ens_method)
    evaluated = bool(metrics)
    metrics.update(cost)
    member_metrics = [version_metrics(mv) for mv in mvs]
    best = None
    for m in member_metrics:
        v = m.get(spec0.metric)
        if v is not None and (best is None or (v < best if spec0.mode == "min" else v > best)):
            best = v
    exp_id = client.get_run(mvs[0].run_id).info.experiment_id if mvs[0].run_id else "0"
    run = client.create_run(exp_id, run_name=f"ensemble-{name}", tags={TAG_KIND: "ensemble"})
    rid = run.info.run_id
    mc = {"tta": tta, "crop_fraction": crop_fraction, "method": method}
    try:
        with tempfile.TemporaryDirectory() as td:
            artifacts = {}
            for i, uri in enumerate(uris):
                artifacts[f"member_{i}"] = mlflow.artifacts.download_artifacts(artifact_uri=uri,
                                                                               dst_path=str(Path(td) / f"m{i}"))
            pyf = EnsemblePyfunc()
            sig = model_signature(len(specs[0].get("class_names", [])))  # outputs only: the pyfunc checks inputs
            class_index = {str(i): c for i, c in enumerate(specs[0].get("class_names", []))}
            with active_run(rid):
                mlflow.log_params({"members": json.dumps(uris)[:6000], "method": method, "tta": tta,
                                   "crop_fraction": str(crop_fraction)})
                if metrics:
                    mlflow.log_metrics(metrics)
                info = mlflow.pyfunc.log_model(
                    name="ensemble", python_model=pyf, artifacts=artifacts, signature=sig,
                    pip_requirements=pip_requirements(), model_config=mc,
                    metadata={"model_spec": common_spec(specs), "class_index": class_index, "members": uris,
                              "member_specs": specs, **mc})
        constraints, unchecked = gate_constraints(list(spec0.constraints), metrics)
        if evaluated and unchecked:
            out(f"  not gated on {', '.join(unchecked)}: not measured for an ensemble")
        promo = register_and_promote(
            client, info.model_uri, ens_name, metrics, spec0.metric, spec0.mode, constraints,
            tags={"dlops.members": json.dumps(uris), "dlops.member_uris": json.dumps(uris),
                  "dlops.ensemble_method": method, "dlops.run_id": rid,
                  "dlops.project": (mvs[0].tags or {}).get("dlops.project", ""),
                  "dlops.search_run_id": (mvs[0].tags or {}).get("dlops.search_run_id", ""),
                  **({"dlops.unchecked_constraints": json.dumps(unchecked)} if unchecked else {})},
            baseline={spec0.metric: best} if best is not None else None, fingerprint=fp, kind="ensemble",
            command="ensemble")
        client.set_terminated(rid, "FINISHED")
    except BaseException:
        client.set_terminated(rid, "FAILED")
        raise
    where = (f"models:/{promo.name}@{'champion' if 'champion' in promo.aliases else 'challenger'}"
             if promo.aliases else promo.uri)
    shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
    shown = shown if evaluated else f"not evaluated ({shown})"
    return (f"registered {promo.name} version {promo.version} ({where}) of {', '.join(uris)}: {shown}; "
            f"aliases {list(promo.aliases)} ({promo.reason})"
            + ("" if promo.aliases else f"; no alias: serve it as {promo.uri}, or keep serving models:/{name}@champion"))


def _evaluate(client: Any, mvs: list[Any], uris: list[str], specs: list[dict[str, Any]], models: list[Any],
              fp: dict[str, Any], ens_method: Any, tta: str, crop_fraction: float,
              out: Callable[[str], Any]) -> tuple[dict[str, float], Any]:
    """The ensemble's dev/test metrics on the members' common split (rebuilt from the first
    member's project.json and checked against the fingerprint), and two example inputs."""
    from dlops.data.transforms import build_transform
    from dlops.predict import member_probabilities
    from dlops.reporting.recompute import load_project, rebuild_data
    from dlops.tracking.promotion import split_digests
    from dlops.train.loop import evaluate_task, stack_eval

    search_id = (mvs[0].tags or {}).get("dlops.search_run_id")
    if not search_id:
        out(f"  not evaluated: {uris[0]} names no search run (tag dlops.search_run_id)")
        return {}, None
    cfg = load_project(client, uris[0], search_id)
    data = rebuild_data(cfg, uris[0])
    dev_d, test_d = split_digests(data.manifest or {}, cfg.seed, cfg.data.model_dump(mode="json"))
    if (dev_d, test_d) != (fp.get("dev_split"), fp.get("test_split")):
        out(f"  not evaluated: the data rebuilt from {uris[0]}'s project.json differ from the members' split")
        return {}, None
    sp = specs[0]
    t_eval = build_transform("none", 0.0, sp.get("image_size"), sp["mean"], sp["std"], train=False)
    task = sp.get("task", "classification")
    metrics: dict[str, float] = {}
    x_dev = None
    for split, part in (("dev", data.dev), ("test", data.test)):
        x = stack_eval(part.x, t_eval)
        if split == "dev":
            x_dev = x[:2].numpy()
        probs = ens_method.combine(member_probabilities(models, x, task, tta, crop_fraction))
        ev = evaluate_task(probs, part.y, task)
        metrics[f"{split}/error"] = float(ev.error)
        if split == "dev":
            metrics["dev/f1"] = float(ev.f1)
    out(f"  evaluated on the members' common split (dev {len(data.dev)}, test {len(data.test)} examples)")
    return metrics, x_dev
