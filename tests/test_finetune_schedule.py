"""Lower backbone learning rates and gradual unfreezing are hyperparameters of a real search."""

from __future__ import annotations

import os

import pytest
import torch

from dlops_testing import EXAMPLE

pytestmark = pytest.mark.slow


def test_backbone_lr_mult_and_unfreeze_epoch_are_searched(tmp_path):
    import mlflow
    from mlflow import MlflowClient

    from dlops.config import load_config
    from dlops.job import run_project

    uri = f"sqlite:///{tmp_path}/m.db"
    cfg = load_config(EXAMPLE, [
        f"tracking.uri={uri}", f"ray.storage_path={tmp_path}/ray_results", "ray.num_cpus=2", "pretrain.epochs=2",
        "search.stages=[{trials: 2, epochs: 2}]", "search.confirm=null",
        "search.space.backbone_lr_mult={scale: log, low: 0.01, high: 0.1}",
        "search.space.unfreeze_epoch={scale: const, value: 2}",
        "report.reporters=[bias_variance]",
    ])
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        s = run_project(cfg, out=lambda _: None)
    finally:
        os.chdir(old)
    c = MlflowClient(uri)
    runs = c.search_runs([s.experiment_id], max_results=100)
    assert {r.info.status for r in runs} == {"FINISHED"}
    trials = [r for r in runs if r.data.tags.get("dlops.kind") == "trial"]
    assert len(trials) == 2
    for r in trials:
        assert 0.01 <= float(r.data.params["backbone_lr_mult"]) <= 0.1
        assert r.data.params["unfreeze_epoch"] == "2"
    mlflow.set_tracking_uri(uri)
    source = mlflow.pytorch.load_model(f"runs:/{s.pretrain_run_id}/model").state_dict()
    model = mlflow.pytorch.load_model(f"models:/{cfg.model_name}@champion").state_dict()
    feats = [k for k in model if k.startswith("features.") and model[k].is_floating_point()]
    assert feats
    # frozen in epoch 1, unfrozen from epoch 2 on (with the lower backbone learning rate): the
    # features moved away from the source network's
    assert any(not torch.equal(model[k], source[k]) for k in feats)
