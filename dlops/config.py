"""The project file: pydantic models and :func:`load_config`.

A project file is YAML. Every key is validated before anything starts (no Ray, no MLflow run):
unknown keys, wrong types, bad search bounds, a metric or constraint that no trial reports, an
unknown model or augmentation policy all raise :class:`ConfigError`, whose message names the key
and the value. ``--set key.path=value`` overrides (YAML-parsed values) are applied before
validation.
"""

from __future__ import annotations

from dlops.errors import ConfigError  # noqa: F401  (the kind lives in dlops.errors)
import math
import os
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

#: metrics every trial reports, per epoch (fractions for errors, ms for latency, MB for size)
REPORTED_METRICS = (
    "train/error",
    "train/loss",
    "train_dev/error",
    "train_dev/loss",
    "dev/error",
    "dev/loss",
    "dev/f1",
    "latency_ms",
    "size_mb",
)


#: hyperparameters the trial reads from its config (dlops.train.trial.train_trial)
TRIAL_HYPERPARAMETERS = ("lr", "momentum", "weight_decay", "batch_size", "hidden", "policy", "magnitude",
                         "backbone_lr_mult", "unfreeze_epoch")




class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TrackingConfig(_Model):
    """Where MLflow logs. ``uri`` None: ``$MLFLOW_TRACKING_URI`` or ``sqlite:///mlflow.db`` (cwd)."""

    uri: Optional[str] = None
    experiment: Optional[str] = None  # default: the project name
    artifact_location: Optional[str] = None  # default (local store): ./mlartifacts


class RayConfig(_Model):
    """Where trials run. ``$RAY_ADDRESS``, when set, comes before ``address`` (Ray Jobs sets it
    for a job's driver); ``address`` None and no ``$RAY_ADDRESS``: a local Ray on 127.0.0.1."""

    address: Optional[str] = None
    num_cpus: Optional[int] = Field(default=None, ge=1)
    num_gpus: Optional[float] = Field(default=None, ge=0)
    storage_path: str = "ray_results"
    autoscaler: bool = False  # the cluster grows on demand: do not fail on unmet resources


class DataConfig(_Model):
    """Data of the task.

    ``digits`` (the embedded default, scikit-learn's handwritten digits, 8x8): ``source_classes``
    is the source task (pretraining, all its examples); ``target_classes`` the target task, of
    which ``train_per_class`` labelled examples per class are for training,
    ``train_dev_per_class`` more per class are carved out of the training distribution as the
    train-dev set, and the rest is split into dev and test (``dev_fraction`` to dev).

    ``imagefolder`` / ``list``: ``target_dir`` / ``target_csv`` is the distribution the system must
    work on (dev and test come only from it); ``source_dir`` / ``source_csv`` optional training
    data from another distribution. ``target_train_share`` of the target data goes to train
    (default 0 with a source, 0.6 without), ``train_dev_share`` of the training pool to train-dev,
    ``dev_share`` of the target data to dev (default: half of the target data that does not go to
    train, so 0.5 with a source and 0.2 without), the rest to test. Images are converted to
    ``channels`` and resized to ``image_size`` pixels.
    """

    source: Literal["digits", "imagefolder", "list"] = "digits"
    source_classes: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4])
    target_classes: list[int] = Field(default_factory=lambda: [5, 6, 7, 8, 9])
    train_per_class: int = Field(default=30, ge=1)
    train_dev_per_class: int = Field(default=10, ge=1)
    dev_fraction: float = Field(default=0.5, gt=0, lt=1)
    source_dir: Optional[str] = None
    target_dir: Optional[str] = None
    source_csv: Optional[str] = None
    target_csv: Optional[str] = None
    target_train_share: Optional[float] = Field(default=None, ge=0, lt=1)
    train_dev_share: float = Field(default=0.1, gt=0, lt=1)
    dev_share: Optional[float] = Field(default=None, gt=0, lt=1)  # default: half the target not trained on
    image_size: Optional[int] = Field(default=None, ge=4)  # default: 32 for files, 8 for digits
    channels: Literal[1, 3] = 3
    # DataLoader worker processes per trial; None: the trial's CPUs minus one (dlops.data.loader)
    num_workers: Optional[int] = Field(default=None, ge=0)
    # decoded, resized images: auto | memory | disk (dlops.data.cache); disk beside ray.storage_path
    cache: Literal["auto", "memory", "disk"] = "auto"
    cache_dir: Optional[str] = None  # default: <ray.storage_path>/dlops_cache (local), else ~/.cache/dlops
    cache_memory_mb: float = Field(default=256.0, ge=0)  # auto: disk above this decoded size (MB = 10**6 B)

    @model_validator(mode="after")
    def _check(self) -> "DataConfig":
        if self.source == "digits":
            for k in ("source_classes", "target_classes"):
                bad = [c for c in getattr(self, k) if not 0 <= c <= 9]
                if bad:
                    raise ValueError(f"{k}: digits classes are 0..9, got {bad}")
            for k in ("source_classes", "target_classes"):
                v = getattr(self, k)
                if len(set(v)) != len(v):
                    raise ValueError(f"{k}: a class appears twice in {v}")
            both = set(self.source_classes) & set(self.target_classes)
            if both:
                raise ValueError(f"source_classes and target_classes overlap: {sorted(both)}")
            if len(self.target_classes) < 2:
                raise ValueError("target_classes: at least 2 classes are needed")
            return self
        key = "target_dir" if self.source == "imagefolder" else "target_csv"
        val = getattr(self, key)
        if not val:
            raise ValueError(f"{key}: data.source {self.source!r} needs {key}")
        for k in (("target_dir", "source_dir") if self.source == "imagefolder" else ("target_csv", "source_csv")):
            v = getattr(self, k)
            if v is not None and not Path(v).exists():
                raise ValueError(f"{k}: {v!r} does not exist")
        return self


class PretrainConfig(_Model):
    """Pretraining of the source network on the source task."""

    enabled: bool = True
    epochs: int = Field(default=8, ge=1)
    lr: float = Field(default=0.05, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    batch_size: int = Field(default=32, ge=1)


class ModelConfig(_Model):
    """The network to fine-tune. ``weights``: ``pretrain`` (the source network of this job),
    None (from scratch), a local state_dict file, or ``models:/NAME@ALIAS``."""

    name: str = "small_cnn"
    weights: Optional[str] = "pretrain"
    freeze: str = "backbone"
    hidden: int = Field(default=64, ge=1)  # default hidden units of the new head


class AugmentationConfig(_Model):
    policy: str = "none"
    magnitude: float = Field(default=0.5, ge=0, le=1)


class ParamConfig(_Model):
    """One hyperparameter; see :mod:`dlops.search.space` for the scales."""

    scale: Literal["linear", "log", "one_minus_log", "int", "log_int", "choice", "const"]
    low: Optional[float] = None
    high: Optional[float] = None
    choices: Optional[list[Any]] = None
    value: Any = None
    q: Optional[float] = None
    tier: int = Field(default=1, ge=1, le=3)
    default: Any = None


class StageConfig(_Model):
    trials: int = Field(ge=1)
    epochs: Optional[int] = Field(default=None, ge=1)
    method: Literal["random", "sobol", "anchored", "gp"] = "random"
    tiers: Optional[int] = Field(default=None, ge=1, le=3)
    perturb: float = Field(default=0.5, gt=0, le=1)  # anchored: share of coordinates redrawn

    @model_validator(mode="after")
    def _perturb_only_when_anchored(self) -> "StageConfig":
        # a value other than the default: a logged project.json (every default written out) still loads
        if self.method != "anchored" and self.perturb != type(self).model_fields["perturb"].default:
            raise ValueError(f"perturb is used by method 'anchored' only; this stage's method is {self.method!r}")
        return self


class ZoomConfig(_Model):
    kind: Literal["shrink", "box", "adaptive"] = "shrink"
    top_k: int = Field(default=3, ge=1)
    top_fraction: Optional[float] = Field(default=None, gt=0, le=1)
    margin: float = Field(default=0.25, ge=0)
    shrink: float = Field(default=0.5, gt=0, le=1)
    min_width: float = Field(default=0.05, ge=0, le=1)
    use_history: bool = True  # centre on the best trial of all stages so far (inside the box)
    tie_break: Optional[str] = None  # a second metric ordering trials whose optimizing values tie (e.g. dev/loss)
    tie_tolerance: float = Field(default=0.0, ge=0)  # optimizing values this close count as tied (zoom only)
    keep_choices: bool = False  # categorical choices stay open until the last stage


class ConstraintConfig(_Model):
    """A satisficing metric, e.g. ``{metric: latency_ms, op: "<=", threshold: 10}``."""

    metric: str
    op: Literal["<=", "<", ">=", ">"] = "<="
    threshold: float


class ResourcesConfig(_Model):
    """Per trial: CPUs and GPUs (fractional GPUs allowed). ``allow_cpu``: may a GPU trial fall
    back to CPU when CUDA is absent on its node."""

    cpu: float = Field(default=1, gt=0)
    gpu: float = Field(default=0, ge=0)
    allow_cpu: bool = True


class ConfirmConfig(_Model):
    """Confirmation on a noisy objective (``search.confirm``): after the last stage the ``top_k``
    best feasible configurations are trained again with ``seeds`` fresh seeds each (Tune trials
    of a last stage, ``confirm``, tagged ``dlops.confirm``), and the winner is the configuration
    with the best mean optimizing metric over those seeds (the satisficing constraints apply to
    the means; :mod:`dlops.search.confirm`). The registered model is the winner's first trial."""

    top_k: int = Field(default=3, ge=1)
    seeds: int = Field(default=2, ge=1)


class SearchConfig(_Model):
    metric: str = "dev/error"
    mode: Literal["min", "max"] = "min"
    constraints: list[ConstraintConfig] = Field(default_factory=list)
    space: dict[str, ParamConfig]
    stages: list[StageConfig]
    zoom: ZoomConfig = Field(default_factory=ZoomConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    max_concurrent: Optional[int] = Field(default=None, ge=1)
    # failed trials (raised, or a non-finite optimizing metric) are FAILED in MLflow and the search
    # goes on; None: no limit; N: the search stops once more than N trials have failed
    max_failures: Optional[int] = Field(default=None, ge=0)
    scheduler: Optional[Literal["asha"]] = None
    default_epochs: int = Field(default=5, ge=1)
    confirm: Optional[ConfirmConfig] = None  # None: the best trial of the stages wins (no re-evaluation)

    @field_validator("stages")
    @classmethod
    def _some_stage(cls, v: list[StageConfig]) -> list[StageConfig]:
        if not v:
            raise ValueError("at least one stage is needed")
        return v


class RegistryConfig(_Model):
    model_name: Optional[str] = None  # default: the project name
    ensemble_name: Optional[str] = None  # default: <model_name>-ensemble


class EnsembleConfig(_Model):
    """The ensemble of the ``top_k`` best feasible trials, combined by ``method`` (an ensemble
    method a plugin provides, ``dlops_ensemble_methods``; built-in ``average``: the mean of the
    class probabilities), with optional test-time augmentation: ``tta`` one of ``none``, ``flip``,
    ``five_crop``, ``ten_crop`` (see :mod:`dlops.predict`), ``crop_fraction`` the crop side over
    the image side."""

    enabled: bool = True
    method: str = "average"
    top_k: int = Field(default=3, ge=1, le=15)
    tta: Literal["none", "flip", "five_crop", "ten_crop"] = "none"
    crop_fraction: float = Field(default=0.875, gt=0, le=1)


class ReportConfig(_Model):
    reporters: list[str] = Field(default_factory=lambda: ["bias_variance"])


class ProjectConfig(_Model):
    """The whole project file."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: int = Field(default=0, strict=True)
    task: Literal["classification", "multilabel"] = "classification"  # multilabel: one sigmoid per label
    human_level_error: float = Field(default=0.0, ge=0, le=1)  # fraction, not percent
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    augmentation: AugmentationConfig = Field(default_factory=AugmentationConfig)
    search: SearchConfig
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    ensemble: EnsembleConfig = Field(default_factory=EnsembleConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    _source_file: Optional[str] = PrivateAttr(default=None)  # the file load_config read (absolute)

    @model_validator(mode="after")
    def _cache_beside_storage(self) -> "ProjectConfig":
        # the image cache (dlops.data.cache) lives beside ray.storage_path unless data.cache_dir says
        if self.data.cache_dir is None:
            from dlops.data.cache import default_cache_dir

            self.data.cache_dir = default_cache_dir(self.ray.storage_path)
        return self

    # resolved names ---------------------------------------------------------------------------
    @property
    def experiment_name(self) -> str:
        return self.tracking.experiment or self.name

    @property
    def model_name(self) -> str:
        return self.registry.model_name or self.name

    @property
    def ensemble_name(self) -> str:
        return self.registry.ensemble_name or f"{self.model_name}-ensemble"


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------


def _set_path(d: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in nested mappings; a numeric part indexes a list (``search.stages.0.trials``)."""
    keys = dotted.split(".")
    cur: Any = d
    for i, k in enumerate(keys):
        last = i == len(keys) - 1
        where = ".".join(keys[:i]) or "(top level)"
        if isinstance(cur, list):
            if not k.isdigit() or int(k) >= len(cur):
                raise ConfigError(f"--set {dotted}: {where} is a list of {len(cur)}; {k!r} is not an index in it")
            if last:
                cur[int(k)] = value
            else:
                cur = cur[int(k)]
        elif isinstance(cur, dict):
            if last:
                cur[k] = value
            else:
                cur = cur.setdefault(k, {})
        else:
            raise ConfigError(f"--set {dotted}: {where} is not a mapping")


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides; values are parsed as YAML (``1e-3``, ``[1, 2]``, ``null``).

    Raises:
        ConfigError: an override without ``=`` or with an empty key.
    """
    for o in overrides:
        if "=" not in o:
            raise ConfigError(f"--set {o!r}: expected key.path=value")
        key, val = o.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set {o!r}: empty key")
        try:
            parsed = yaml.safe_load(val) if val.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key}: value {val!r} is not valid YAML: {exc}") from None
        _set_path(raw, key, parsed)
    return raw


def _format_validation_error(path: str, err: ValidationError) -> str:
    lines = [f"{path}: invalid project file"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        value = e.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"  {key}: {msg}{shown}")
    return "\n".join(lines)


def validate_semantics(cfg: ProjectConfig, path: str = "project file") -> None:
    """Checks that need more than field types: the search space bounds, metric names, known
    models and policies.

    Raises:
        ConfigError: naming the key and the value.
    """
    from dlops.search.space import Param

    s = cfg.search
    for name, p in s.space.items():
        try:
            Param(
                name=name, scale=p.scale, low=p.low, high=p.high,
                choices=tuple(p.choices) if p.choices is not None else None,
                value=p.value, q=p.q, tier=p.tier, default=p.default,
            )
        except ValueError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        if any(st.tiers is not None for st in s.stages) and p.tier > 1 and p.default is None and p.scale != "const":
            raise ConfigError(
                f"{path}: search.space.{name}.default: a 'tiers' stage holds tier-{p.tier} parameters "
                "at their default; give one"
            )
    known = set(REPORTED_METRICS)
    if s.metric not in known:
        raise ConfigError(
            f"{path}: search.metric: no trial reports {s.metric!r}; trials report {sorted(known)}"
        )
    if s.zoom.tie_break is not None and s.zoom.tie_break not in known:
        raise ConfigError(f"{path}: search.zoom.tie_break: no trial reports {s.zoom.tie_break!r}; "
                          f"trials report {sorted(known)}")
    for i, c in enumerate(s.constraints):
        if c.metric not in known:
            raise ConfigError(
                f"{path}: search.constraints[{i}].metric: no trial reports {c.metric!r}; "
                f"trials report {sorted(known)}"
            )
        if not math.isfinite(c.threshold):
            raise ConfigError(f"{path}: search.constraints[{i}].threshold must be finite")
    if cfg.model.weights == "pretrain" and cfg.data.source != "digits":
        raise ConfigError(
            f"{path}: model.weights: 'pretrain' pretrains on the digits source task and needs "
            f"data.source: digits (got {cfg.data.source!r}); give a state_dict file, models:/NAME@ALIAS, "
            "a torchvision weights name (online only) or null"
        )
    if cfg.task == "multilabel" and cfg.data.source != "list":
        raise ConfigError(f"{path}: task: multilabel needs data.source: list (a CSV with a 'labels' column), "
                          f"got {cfg.data.source!r}")
    unknown = sorted(set(s.space) - set(TRIAL_HYPERPARAMETERS))
    if unknown:
        raise ConfigError(
            f"{path}: search.space.{unknown[0]}: not a hyperparameter that trials read; "
            f"known: {list(TRIAL_HYPERPARAMETERS)}"
        )
    from dlops.models.freeze import parse_freeze_policy

    try:
        fp = parse_freeze_policy(cfg.model.freeze)
    except ValueError as exc:
        raise ConfigError(f"{path}: model.freeze: {exc}") from None
    if fp.block is not None:  # until:<block> must name a block of this architecture
        from dlops.models import available_models as _names

        if cfg.model.name in _names():
            from dlops.models import create_model
            from dlops.models.freeze import apply_freeze

            try:
                apply_freeze(create_model(cfg.model.name, 2, in_channels=cfg.data.channels
                                          if cfg.data.source != "digits" else 1), fp)
            except ValueError as exc:
                raise ConfigError(f"{path}: model.freeze: {exc}") from None
    w = cfg.model.weights
    if w:
        from dlops.models.weights import parse_weights_ref

        try:
            ref = parse_weights_ref(w)
        except ValueError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        if ref.kind == "file" and not Path(w).is_file():
            raise ConfigError(f"{path}: model.weights: no such file {w!r} (a state_dict saved with torch.save, "
                              "models:/NAME@ALIAS, a torchvision weights name such as DEFAULT, pretrain or null)")
    from dlops.models import available_models

    models = available_models()
    if cfg.model.name not in models:
        raise ConfigError(f"{path}: model.name: unknown model {cfg.model.name!r}; available: {models}")
    from dlops.plugins import get_registry

    reg = get_registry()
    policies = sorted(set(reg.augment_policies) | {"none"})
    if cfg.augmentation.policy not in policies:
        raise ConfigError(
            f"{path}: augmentation.policy: unknown policy {cfg.augmentation.policy!r}; available: {policies}"
        )
    if "policy" in s.space and s.space["policy"].choices:
        for ch in s.space["policy"].choices:
            if ch not in policies:
                raise ConfigError(
                    f"{path}: search.space.policy.choices: unknown policy {ch!r}; available: {policies}"
                )
    for i, r in enumerate(cfg.report.reporters):
        if r not in reg.reporters:
            raise ConfigError(
                f"{path}: report.reporters[{i}]: unknown reporter {r!r}; available: {sorted(reg.reporters)}"
            )
    if cfg.ensemble.method not in reg.ensemble_methods:
        raise ConfigError(f"{path}: ensemble.method: unknown ensemble method {cfg.ensemble.method!r}; "
                          f"available: {sorted(reg.ensemble_methods)}")
    for k in ("batch_size", "hidden"):
        p = s.space.get(k)
        if p is not None and p.scale in ("linear", "log", "one_minus_log"):
            raise ConfigError(f"{path}: search.space.{k}.scale: {k} is a whole number; use int, log_int or choice")


#: keys whose relative paths are resolved against the project file's folder
PATH_KEYS = (("data", "source_dir"), ("data", "target_dir"), ("data", "source_csv"), ("data", "target_csv"))


def _resolve_paths(raw: dict[str, Any], base: Path) -> None:
    """Relative data paths (and a relative ``model.weights`` file that exists there) are taken
    from the project file's folder, so a project file runs from any working directory."""
    for section, key in PATH_KEYS:
        sec = raw.get(section)
        if isinstance(sec, dict) and isinstance(sec.get(key), str) and not Path(sec[key]).is_absolute():
            sec[key] = str(base / sec[key])
    model = raw.get("model")
    if isinstance(model, dict) and isinstance(model.get("weights"), str):
        from dlops.models.weights import parse_weights_ref

        try:
            ref = parse_weights_ref(model["weights"], base=base)
        except ValueError:
            ref = None  # reported by the validation, with the file's name
        if ref is not None and ref.kind == "file":
            model["weights"] = ref.value


def load_config(path: Union[str, os.PathLike[str]], overrides: Optional[list[str]] = None) -> ProjectConfig:
    """Read, override and validate a project file.

    Args:
        path: the YAML file.
        overrides: ``key.path=value`` strings (``--set``), applied in order.

    Returns:
        The validated :class:`ProjectConfig`.

    Raises:
        ConfigError: missing/unreadable file, bad YAML, unknown key, wrong type or value; the
            message names the file, the key and the value.
    """
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the project file: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: the project file must be a mapping of keys, got {type(raw).__name__}")
    raw = apply_overrides(raw, list(overrides or []))
    _resolve_paths(raw, p.resolve().parent)
    try:
        cfg = ProjectConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(str(p), exc)) from None
    validate_semantics(cfg, str(p))
    cfg._source_file = str(p.resolve())  # tag mlflow.source.name of the search run (dlops.tracking.context)
    return cfg
