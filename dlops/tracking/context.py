"""What the MLflow UI shows about a search besides its metrics: the experiment kind, the source,
git commit and user tags, and the splits as MLflow datasets (the Dataset column).

* :data:`EXPERIMENT_KIND_TAG` = ``custom_model_development``: MLflow 3.x opens an experiment
  without this tag in the GenAI view when it cannot infer the kind; ``custom_model_development``
  is the value for model training (``genai_development`` the GenAI one; see the tag's use in
  ``mlflow/assistant/skills/mlflow-onboarding/SKILL.md`` of MLflow 3.17).
* :func:`context_tags`: ``mlflow.source.name`` (the project file), ``mlflow.source.type``
  (``LOCAL``), ``mlflow.user`` and, when the project file is in a git work tree,
  ``mlflow.source.git.commit`` (of that work tree, not of the dlops install).
* :func:`split_datasets`: each split as ``mlflow.data.from_numpy(images, targets=labels)`` with
  its digest and the context ``train`` / ``train_dev`` / ``dev`` / ``test``.

MLflow's private part used here: ``Dataset._to_mlflow_entity()`` (what ``mlflow.log_input``
calls itself): ``MlflowClient.log_inputs`` takes ``DatasetInput`` entities and MLflow offers no
public conversion from an ``mlflow.data`` dataset; ``mlflow.log_input`` needs an active fluent
run, which the driver's explicit-client run tree does not have. ``tests/tracking/test_context.py``
fails when the installed MLflow lacks it.
"""

from __future__ import annotations

import getpass
import os
import subprocess
from pathlib import Path
from typing import Any, Mapping, Optional

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"

#: the split names and their MLflow dataset context (``mlflow.data.context`` input tag)
SPLIT_CONTEXTS = {"train": "train", "train_dev": "train_dev", "dev": "dev", "test": "test"}


def git_commit(path: Optional[str]) -> Optional[str]:
    """The HEAD commit of the git work tree that holds ``path`` (None outside one, or without git)."""
    if not path:
        return None
    d = Path(path).resolve().parent
    try:
        r = subprocess.run(["git", "-C", str(d), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = r.stdout.strip()
    return sha if r.returncode == 0 and len(sha) == 40 else None


def context_tags(project_file: Optional[str]) -> dict[str, str]:
    """The source, user and git tags of a search's runs (MLflow's ``mlflow.source.*`` and
    ``mlflow.user`` system tags, filled as ``mlflow.start_run`` would for a script)."""
    from mlflow.utils.mlflow_tags import (MLFLOW_GIT_COMMIT, MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE,
                                          MLFLOW_USER)

    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in this environment (a container without passwd)
        user = os.environ.get("USER", "unknown")
    tags = {MLFLOW_SOURCE_TYPE: "LOCAL", MLFLOW_USER: user}
    if project_file:
        tags[MLFLOW_SOURCE_NAME] = str(project_file)
    sha = git_commit(project_file)
    if sha:
        tags[MLFLOW_GIT_COMMIT] = sha
    return tags


def set_experiment_kind(client: Any, experiment_id: str) -> None:
    """Tag the experiment as model training unless it already has a kind (a user's choice stays)."""
    exp = client.get_experiment(experiment_id)
    if EXPERIMENT_KIND_TAG not in (exp.tags or {}):
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)


def split_datasets(splits: Mapping[str, Any], name: str, source: str) -> list[Any]:
    """The splits as MLflow dataset inputs.

    Args:
        splits: ``{split: object with .x (N, H, W, C) uint8 images and .y labels}``.
        name: the dataset name prefix (the project name): ``<name>-<split>``.
        source: where the data come from (a folder, a list file, ``sklearn.datasets.load_digits``).

    Returns:
        ``[mlflow.entities.DatasetInput]`` with the digest MLflow computes and the input tag
        ``mlflow.data.context`` = the split.
    """
    import warnings

    import mlflow.data
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    out = []
    for split, ctx in SPLIT_CONTEXTS.items():
        s = splits.get(split)
        if s is None:
            continue
        with warnings.catch_warnings():  # a source that is not a URI MLflow knows: it says so, it is kept as text
            warnings.simplefilter("ignore")
            ds = mlflow.data.from_numpy(s.x, targets=s.y, source=source, name=f"{name}-{split}")
        out.append(DatasetInput(dataset=ds._to_mlflow_entity(),  # private: see the module docstring
                                tags=[InputTag(key=MLFLOW_DATASET_CONTEXT, value=ctx)]))
    return out
