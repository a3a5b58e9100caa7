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
    mlflow.pytorch.save_model(net, str(tmp_path / "m"), metadata={"model_spec": SPEC},
                              serialization_format="pickle")
    model, spec = load_member(str(tmp_path / "m"))
    assert spec == SPEC
    x = torch.zeros(3, 1, 8, 8)
    assert torch.equal(model(x), net.eval()(x))
