"""The job context: what the phases of ``dlops run`` share (the Kedro runner's catalog, in small).

Each phase (:mod:`dlops.job.phases`) reads what earlier phases left here and adds its own; nothing
else is passed between phases. Lifecycle hooks (``dlops_before_phase`` ...) receive it as
``context``.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from dlops.config import ProjectConfig
from dlops.job.summary import RunSummary


@dataclass
class BestModel:
    """The registered best trial: its network and what the register phase measured.

    Attributes:
        model: the torch module (CPU, eval mode).
        spec: its model spec (architecture, classes, input size, normalisation, task).
        run_id: the trial's MLflow run.
        probs: split -> (N, K) probabilities (softmax rows or per-label sigmoids).
        evals: split -> the task's evaluation (``.error`` a fraction in [0, 1], ``.f1``, ``.loss``).
        metrics: what the registry gate reads (``<split>/error``, ``dev/f1``, ``latency_ms``, ``size_mb``).
        class_index: ``{"0": class name, ...}``.
        name, version: the registered model version.
    """

    model: Any
    spec: dict[str, Any]
    run_id: str
    probs: dict[str, Any]
    evals: dict[str, Any]
    metrics: dict[str, float]
    class_index: dict[str, str]
    name: str = ""
    version: str = ""


@dataclass
class JobContext:
    """What the phases of one ``dlops run`` share.

    Attributes:
        config: the validated project.
        data: the task's data (:class:`dlops.data.sources.TaskData`: train / train-dev / dev / test
            splits, class names, manifest, skipped files, tags).
        client: the ``MlflowClient`` of ``tracking_uri`` (the driver is the only writer).
        tracking_uri: the MLflow store.
        experiment_id: the project's experiment.
        search_run_id: the search's parent run (holds stage runs, the ensemble run, reports).
        search_id: the search's short id (tag ``dlops.search``; Tune's experiment folder name).
        summary: what the job did so far (printed at the end).
        out: where progress lines go.
        resume: ``--resume`` (continue the search of ``search_run_id``).
        open_runs: runs this job opened and must end (FINISHED, or FAILED / KILLED on an error),
            besides the trial and stage runs the search's MLflow callback holds.
        callback: the search's MLflow callback once the search started (its open runs).
        spec: the model spec (setup).
        plan: the staged search plan (setup; filled by the search).
        source_state: the source network's state dict (pretrain), or None.
        outcome: the search's :class:`~dlops.search.tune.SearchOutcome` (search).
        best: the best feasible trial (search).
        eval_inputs: split -> (N, C, H, W) tensors with the evaluation transform (register).
        best_model: the registered best trial (register).
        run_tags: source, user and git tags of the search's runs (setup; :mod:`dlops.tracking.context`).
        datasets: the splits as ``mlflow.entities.DatasetInput`` (setup; logged on the search run and trials).
    """

    config: ProjectConfig
    data: Any
    client: Any
    tracking_uri: str
    experiment_id: str
    search_run_id: str
    search_id: str
    summary: RunSummary
    out: Callable[[str], None] = print
    resume: bool = False
    open_runs: list[str] = field(default_factory=list)
    callback: Any = None
    spec: dict[str, Any] = field(default_factory=dict)
    plan: Any = None
    source_state: Optional[dict[str, Any]] = None
    outcome: Any = None
    best: Any = None
    eval_inputs: dict[str, Any] = field(default_factory=dict)
    best_model: Optional[BestModel] = None
    run_tags: dict[str, str] = field(default_factory=dict)
    datasets: list[Any] = field(default_factory=list)

    @property
    def splits(self) -> dict[str, Any]:
        """``{"train", "train_dev", "dev", "test"}`` -> the data's split (``.x`` images, ``.y`` labels)."""
        d = self.data
        return {"train": d.train, "train_dev": d.train_dev, "dev": d.dev, "test": d.test}

    def open_run_ids(self, timeout: Optional[float] = None) -> list[str]:
        """Every run of this job still to be ended: the callback's (waiting at most ``timeout``
        seconds for its writer) and :attr:`open_runs`."""
        held = self.callback.open_run_ids(timeout) if self.callback is not None else []
        return list(held) + list(self.open_runs)

    def load_member(self, trial_id: str) -> tuple[Any, dict[str, Any], str]:
        """A trial's network from its last checkpoint: (model on CPU in eval mode, spec, the
        checkpoint's local directory).

        Raises:
            KeyError: the trial left no checkpoint.
        """
        from dlops.train.checkpoint import load_checkpoint_model

        ck = self.outcome.checkpoints.get(trial_id)
        if ck is None:
            raise KeyError(f"trial {trial_id} has no checkpoint")
        path = ck.to_directory(tempfile.mkdtemp(prefix=f"dlops-{trial_id}-"))
        model, spec = load_checkpoint_model(path)
        return model, spec, path
