"""dlops.tracking.context: the experiment kind, source/user/git tags and the splits as MLflow
datasets (real mlflow.data; the one private MLflow call is checked here against the installed MLflow)."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

import numpy as np

from dlops_testing import EXAMPLE, REPO


def test_installed_mlflow_has_what_context_uses() -> None:
    import mlflow.data
    from mlflow.data.dataset import Dataset
    from mlflow.utils import mlflow_tags

    assert callable(getattr(Dataset, "_to_mlflow_entity", None))  # private: dlops.tracking.context says why
    for name in ("MLFLOW_GIT_COMMIT", "MLFLOW_SOURCE_NAME", "MLFLOW_SOURCE_TYPE", "MLFLOW_USER", "MLFLOW_DATASET_CONTEXT"):
        assert hasattr(mlflow_tags, name)
    assert mlflow.data.from_numpy is not None


def test_split_datasets_have_digests_and_contexts() -> None:
    from dlops.tracking.context import split_datasets

    rng = np.random.default_rng(0)
    splits = {k: SimpleNamespace(x=rng.integers(0, 255, (n, 8, 8, 1), dtype=np.uint8), y=np.arange(n) % 5)
              for k, n in (("train", 20), ("train_dev", 6), ("dev", 10), ("test", 10))}
    ds = split_datasets(splits, "proj", "sklearn.datasets.load_digits")
    assert [d.dataset.name for d in ds] == ["proj-train", "proj-train_dev", "proj-dev", "proj-test"]
    assert [d.tags[0].value for d in ds] == ["train", "train_dev", "dev", "test"]
    assert len({d.dataset.digest for d in ds}) == 4  # different data, different digests
    again = split_datasets(splits, "proj", "sklearn.datasets.load_digits")
    assert [d.dataset.digest for d in again] == [d.dataset.digest for d in ds]  # same data, same digest


def test_context_tags_name_the_project_file_and_its_git_commit(tmp_path) -> None:
    from dlops.tracking.context import context_tags

    tags = context_tags(str(EXAMPLE))
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert tags["mlflow.source.name"] == str(EXAMPLE) and tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.source.git.commit"] == head and tags["mlflow.user"]
    outside = tmp_path / "p.yaml"
    outside.write_text("name: x\n")
    assert "mlflow.source.git.commit" not in context_tags(str(outside))  # not in a git work tree
