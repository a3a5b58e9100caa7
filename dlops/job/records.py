"""What the main job writes to the search run besides the run tree: the project as params and
``project.json``, the data manifest, and the exact augmentation pipelines (search and trials)."""

from __future__ import annotations

import json
from typing import Any

from dlops.config import ProjectConfig

#: MLflow's limit on one param value (characters)
PARAM_LIMIT = 6000


def flat_params(cfg: ProjectConfig) -> dict[str, str]:
    """The project file as MLflow params: keys up to three levels deep (``search.zoom.kind``),
    values as JSON text cut to :data:`PARAM_LIMIT` characters."""
    d = cfg.model_dump(mode="json")
    out: dict[str, str] = {}

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, dict) and v and prefix.count(".") < 2:
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else k, x)
        else:
            s = json.dumps(v) if not isinstance(v, str) else v
            out[prefix] = s if len(s) <= PARAM_LIMIT else s[:PARAM_LIMIT - 10] + "...[cut]"

    walk("", d)
    return out


def log_project(cfg: ProjectConfig, data: Any, client: Any, run_id: str) -> None:
    """The project's params (first 100), ``project.json`` (what ``dlops report`` rebuilds the data
    from), ``data_manifest.json`` (the split, with every skipped file and its reason)."""
    from mlflow.entities import Param

    client.log_batch(run_id, params=[Param(k, v) for k, v in flat_params(cfg).items()][:100])
    client.log_text(run_id, json.dumps(cfg.model_dump(mode="json"), indent=2), "project.json")
    client.log_dict(run_id, data.manifest, "data_manifest.json")
    if data.skipped:
        client.set_tag(run_id, "dlops.skipped_files", str(len(data.skipped)))


def _describe(name: str, magnitude: float, spec: dict[str, Any]) -> dict[str, Any]:
    from dlops.data.policy import describe_policy

    return describe_policy(name, magnitude, spec.get("image_size"), channels=int(spec.get("in_channels", 3)))


def log_augmentation(cfg: ProjectConfig, spec: dict[str, Any], client: Any, run_id: str) -> None:
    """Log the exact pipeline of every augmentation policy the search may use: a short param
    ``augment.<policy>`` (<= 6,000 characters) and the full JSON as ``augment/<policy>.json``."""
    from mlflow.entities import Param

    from dlops.data.policy import policy_param

    names = {cfg.augmentation.policy}
    sp = cfg.search.space.get("policy")
    if sp is not None and sp.choices:
        names |= set(sp.choices)
    for name in sorted(n for n in names if n != "none"):
        try:
            desc = _describe(name, cfg.augmentation.magnitude, spec)
        except Exception as exc:  # a third-party policy may not describe itself
            client.set_tag(run_id, f"augment.{name}", f"not describable: {exc}"[:5000])
            continue
        client.log_batch(run_id, params=[Param(f"augment.{name}", policy_param(desc))])
        client.log_dict(run_id, desc, f"augment/{name}.json")


def log_trial_augmentation(cfg: ProjectConfig, spec: dict[str, Any], client: Any, plan: Any,
                           trial_runs: dict[str, str]) -> None:
    """Each trial run gets param ``augment.pipeline``: the exact pipeline its policy and magnitude
    ran (albumentations serialisation, <= 6,000 characters)."""
    from mlflow.entities import Param

    from dlops.data.policy import policy_param

    cache: dict[tuple[str, float], str] = {}
    for tid, conf in plan.suggested.items():
        rid = trial_runs.get(tid)
        if rid is None:
            continue
        key = (str(conf.get("policy", cfg.augmentation.policy)), float(conf.get("magnitude", cfg.augmentation.magnitude)))
        if key[0] == "none":
            continue
        if key not in cache:
            try:
                cache[key] = policy_param(_describe(key[0], key[1], spec))
            except Exception as exc:  # a third-party policy may not describe itself
                cache[key] = f"not describable: {exc}"[:PARAM_LIMIT]
        try:
            client.log_batch(rid, params=[Param("augment.pipeline", cache[key])])
        except Exception:  # already logged with this value (resume): nothing to do
            pass
