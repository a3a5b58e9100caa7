"""`dlops ensemble`'s pure checks, and the ensemble pyfunc loading an MLflow pytorch model as a member."""

from __future__ import annotations

import pytest

from dlops.errors import RegistryError
from dlops.registry_ensemble import member_difference, parse_versions

SPEC = {"name": "small_cnn", "task": "classification", "class_names": ["5", "6"], "image_size": 8,
        "in_channels": 1, "mean": [0.5], "std": [0.5], "input_layout": "NCHW"}


def test_members_of_different_architectures_are_allowed_but_not_different_preprocessing_or_classes():
    assert member_difference([SPEC, dict(SPEC, name="resnet18", hidden=99)], ["a", "b"]) is None
    d = member_difference([SPEC, dict(SPEC, image_size=16)], ["models:/m/1", "models:/m/2"])
    assert d == "models:/m/1 and models:/m/2 differ in preprocessing (image_size): 8 vs 16"
    assert "differ in classes" in member_difference([SPEC, dict(SPEC, class_names=["cat", "dog"])], ["a", "b"])
    assert "differ in preprocessing (mean)" in member_difference([SPEC, SPEC, dict(SPEC, mean=[0.4])], ["a", "b", "c"])


@pytest.mark.parametrize("text,msg", [("3", "at least two"), ("3,3", "repeated"), ("", "at least two")])
def test_parse_versions_refuses_what_is_not_an_ensemble(text, msg):
    with pytest.raises(RegistryError, match=msg):
        parse_versions(text)
    assert parse_versions(" 3, 5,8 ") == ["3", "5", "8"]


def test_a_member_can_be_an_mlflow_pytorch_model_dir(tmp_path):
    import mlflow.pytorch
    import torch

    from dlops.ensemble import load_member

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    mlflow.pytorch.save_model(net, str(tmp_path / "m"), metadata={"model_spec": SPEC}, pip_requirements=["torch"],
                              serialization_format="pickle")
    model, spec = load_member(str(tmp_path / "m"))
    assert spec == SPEC
    x = torch.zeros(3, 1, 8, 8)
    assert torch.equal(model(x), net.eval()(x))


def test_ensemble_constraints_and_member_uris_of_a_run_ensemble():
    from dlops.job.ensemble import gate_constraints, member_uris
    from dlops.search.space import Constraint

    cons = [Constraint("latency_ms", "<=", 50.0), Constraint("train/error", "<=", 0.2), Constraint("size_mb", "<", 3)]
    kept, unchecked = gate_constraints(cons, {"dev/error": 0.1, "latency_ms": 2.0, "size_mb": 1.0})
    assert kept == [cons[0], cons[2]] and unchecked == ["train/error <= 0.2"]
    uris, note = member_uris(["t1", "t2", "t3"], "t2", "models:/m/7")
    assert uris == [None, "models:/m/7", None]
    assert "2 of 3 members are trial checkpoints only" in note and "t1, t3" in note
    assert member_uris(["t1"], "t1", "models:/m/1") == (["models:/m/1"], "every member is a registered model")


def test_ensemble_latency_times_every_member_over_every_view_and_size_adds_the_members():
    """measure() times the whole prediction per image: M members x V test-time views."""
    import time

    import torch

    from dlops.ensemble import ensemble_method
    from dlops.job.ensemble import measure
    from dlops.train.loop import size_mb

    class Slow(torch.nn.Module):  # at least 1 ms per image it sees (a sleep: never shorter), however batched
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(64, 2)

        def forward(self, x):
            time.sleep(0.001 * x.shape[0])
            return self.lin(x.flatten(1))

    avg = ensemble_method("average")
    members = [Slow(), Slow()]
    x = torch.zeros(1, 1, 8, 8)
    plain = measure(members, x, "classification", "none", 0.875, avg)
    five = measure(members, x, "classification", "five_crop", 0.875, avg)
    assert plain["latency_ms"] >= 2 * 1.0  # both members
    assert five["latency_ms"] >= 2 * 5 * 1.0  # both members, each over 5 crops (one batched forward of 5)
    assert plain["size_mb"] == pytest.approx(sum(size_mb(m) for m in members)) and plain["size_mb"] > 0
