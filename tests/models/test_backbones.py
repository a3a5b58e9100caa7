"""create_model, the registry, head replacement, first-conv adaptation, weights from files and MLflow."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from dlops.models import create_model, get_model_spec, list_models, register_model
from dlops.models.heads import adapt_first_conv, get_submodule, head_name
from dlops.models.weights import load_weights

REQUIRED = [
    "small_cnn", "resnet18", "resnet34", "resnet50", "mobilenet_v3_small", "mobilenet_v3_large",
    "efficientnet_b0", "convnext_tiny", "densenet121", "vgg11_bn", "vit_b_16",
]
EXPECTED_HEAD = {
    "small_cnn": "head", "resnet18": "fc", "resnet34": "fc", "resnet50": "fc",
    "mobilenet_v3_small": "classifier.3", "mobilenet_v3_large": "classifier.3",
    "efficientnet_b0": "classifier.1", "convnext_tiny": "classifier.2", "densenet121": "classifier",
    "vgg11_bn": "classifier.6", "vit_b_16": "heads.head",
}


def _kwargs(name: str) -> dict:
    return {"image_size": 32} if name == "vit_b_16" else {}


def test_list_models_has_every_required_architecture():
    assert set(REQUIRED) <= set(list_models())
    assert list_models() == sorted(list_models())


@pytest.mark.parametrize("name", REQUIRED)
def test_every_model_gets_a_new_head_of_num_outputs(name):
    torch.manual_seed(0)
    model = create_model(name, 7, in_channels=3, **_kwargs(name))
    assert model.dlops_head == EXPECTED_HEAD[name]
    head = get_submodule(model, model.dlops_head)
    last = head[-1] if isinstance(head, nn.Sequential) else head
    assert isinstance(last, nn.Linear) and last.out_features == 7
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7)
    # every other Linear keeps its own size: only the head was replaced
    assert [m.out_features for m in model.modules() if isinstance(m, nn.Linear)][-1] == 7


def test_unsupported_name_lists_supported_models():
    with pytest.raises(ValueError) as exc:
        create_model("resnet19", 3)
    msg = str(exc.value)
    assert "resnet19" in msg and "resnet18" in msg and "vit_b_16" in msg and "small_cnn" in msg


def test_bad_weights_names_are_refused_without_download():
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):
        create_model("resnet18", 3, weights="IMAGENET9K_V7")
    with pytest.raises(ValueError, match="small_cnn has no torchvision weights"):
        create_model("small_cnn", 3, weights="DEFAULT")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        create_model("resnet18", 3, weights="nope.pt")


def test_num_outputs_must_be_positive():
    with pytest.raises(ValueError, match="num_outputs"):
        create_model("small_cnn", 0)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "vit_b_16"])
def test_adapted_first_conv_on_grey_matches_rgb_of_the_same_grey(name):
    torch.manual_seed(1)
    rgb = create_model(name, 4, **_kwargs(name)).eval()
    grey = create_model(name, 4, **_kwargs(name)).eval()
    grey.load_state_dict(rgb.state_dict())
    conv = adapt_first_conv(grey, 1)
    assert conv.in_channels == 1
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        a, b = rgb(x.repeat(1, 3, 1, 1)), grey(x)
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_in_channels_builds_models_for_one_channel():
    m = create_model("densenet121", 2, in_channels=1).eval()
    assert m.features.conv0.in_channels == 1
    with torch.no_grad():
        assert m(torch.randn(1, 1, 32, 32)).shape == (1, 2)


def test_local_weights_load_with_module_prefix_and_skip_a_head_of_another_size(tmp_path, caplog):
    torch.manual_seed(2)
    src = create_model("resnet18", 10)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(0.01)
        src.bn1.running_mean.add_(0.5)
    path = tmp_path / "resnet18.pt"
    torch.save({f"module.{k}": v for k, v in src.state_dict().items()}, path)

    with caplog.at_level(logging.WARNING, logger="dlops.models"):
        dst = create_model("resnet18", 3, weights=str(path))
    rep = dst.dlops_load_report
    assert set(rep.skipped) == {"fc.weight", "fc.bias"}
    assert rep.skipped["fc.weight"] == ((10, 512), (3, 512))
    assert "fc" in caplog.text and "left out" in caplog.text
    sd_src, sd_dst = src.state_dict(), dst.state_dict()
    for k, v in sd_dst.items():
        if k.startswith("fc."):
            assert v.shape[0] == 3
        else:
            assert torch.equal(v, sd_src[k]), k

    same = create_model("resnet18", 10, weights=path)  # a Path works too; the head now fits
    assert same.dlops_load_report.skipped == {}
    assert torch.equal(same.fc.weight, src.fc.weight)


def test_checkpoint_dicts_are_accepted(tmp_path):
    src = create_model("small_cnn", 5, in_channels=1)
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": src.state_dict()}, path)
    dst = create_model("small_cnn", 5, weights=path, in_channels=1)
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k])


def test_weights_of_another_architecture_or_not_a_state_dict_raise(tmp_path):
    other = tmp_path / "r34.pt"
    torch.save(create_model("resnet34", 3).state_dict(), other)
    with pytest.raises(ValueError, match="another architecture"):
        create_model("resnet18", 3, weights=other)
    pickled = tmp_path / "whole_model.pt"
    torch.save(nn.Sequential(nn.Linear(2, 2)), pickled)  # a pickled module, not a state_dict
    with pytest.raises(ValueError, match="weights_only"):
        create_model("small_cnn", 3, weights=pickled)


def test_rgb_weights_file_loads_into_a_grey_model(tmp_path):
    torch.manual_seed(3)
    rgb = create_model("resnet18", 4).eval()
    path = tmp_path / "rgb.pt"
    torch.save(rgb.state_dict(), path)
    grey = create_model("resnet18", 4, weights=path, in_channels=1).eval()
    assert grey.dlops_load_report.adapted == ["conv1.weight"]
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(rgb(x.repeat(1, 3, 1, 1)), grey(x), atol=1e-4, rtol=1e-4)


def test_weights_from_mlflow_registered_model_alias(tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    try:
        exp = mlflow.create_experiment("weights", artifact_location=(tmp_path / "artifacts").as_uri())
        models = []
        # MLflow 3 saves "pt2" (torch.export, needs an input example) by default; "pickle" only
        # loads with MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true. Both are read back.
        for seed, fmt in ((10, "pt2"), (11, "pickle")):
            torch.manual_seed(seed)
            m = create_model("small_cnn", 4, in_channels=1).eval()
            with mlflow.start_run(experiment_id=exp):
                info = mlflow.pytorch.log_model(
                    m, name="model", pip_requirements=["torch"], serialization_format=fmt,
                    input_example=torch.zeros(2, 1, 8, 8).numpy(),
                )
            mlflow.register_model(info.model_uri, "digits-net")
            models.append(m)
        client = MlflowClient()
        client.set_registered_model_alias("digits-net", "champion", "1")
        client.set_registered_model_alias("digits-net", "challenger", "2")

        loaded = create_model("small_cnn", 4, weights="models:/digits-net@champion", in_channels=1)
        for k, v in models[0].state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v), k
        assert not torch.equal(loaded.head[2].weight, models[1].head[2].weight)

        other_head = create_model("small_cnn", 6, weights="models:/digits-net@champion", in_channels=1)
        assert set(other_head.dlops_load_report.skipped) == {"head.2.weight", "head.2.bias"}
        assert torch.equal(other_head.features[0].weight, models[0].features[0].weight)

        monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
        pickled = create_model("small_cnn", 4, weights="models:/digits-net@challenger", in_channels=1)
        for k, v in models[1].state_dict().items():
            assert torch.equal(pickled.state_dict()[k], v), k

        with pytest.raises(ValueError, match="cannot load MLflow model"):
            create_model("small_cnn", 4, weights="models:/digits-net@nosuchalias", in_channels=1)
    finally:
        mlflow.set_tracking_uri(previous)


def test_register_model_decorator_adds_a_third_party_model():
    @register_model("tiny_mlp_for_test", head="out", torchvision=False)
    def tiny(num_outputs, in_channels=3, weights=None, hidden=8):
        m = nn.Sequential()
        m.add_module("flat", nn.Flatten())
        m.add_module("body", nn.Linear(in_channels * 4 * 4, hidden))
        m.add_module("out", nn.Linear(hidden, num_outputs))
        return m

    assert "tiny_mlp_for_test" in list_models()
    m = create_model("tiny_mlp_for_test", 3, freeze="backbone", hidden=5)
    assert m(torch.randn(2, 3, 4, 4)).shape == (2, 3)
    assert not m.body.weight.requires_grad and m.out.weight.requires_grad
    assert get_model_spec("tiny_mlp_for_test").head == "out"
    with pytest.raises(ValueError, match="already registered"):
        register_model("tiny_mlp_for_test")(lambda num_outputs, **kw: None)


def test_head_name_falls_back_to_the_last_linear():
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 4))
    assert head_name(m) == "4"
    with pytest.raises(ValueError, match="no nn.Linear"):
        head_name(nn.Sequential(nn.Conv2d(1, 1, 1)))


def test_load_weights_reports_missing_head(tmp_path):
    src = create_model("resnet18", 3)
    sd = {k: v for k, v in src.state_dict().items() if not k.startswith("fc.")}  # a backbone-only file
    path = tmp_path / "backbone.pt"
    torch.save(sd, path)
    dst = create_model("resnet18", 3)
    rep = load_weights(dst, path)
    assert sorted(rep.missing_head) == ["fc.bias", "fc.weight"]
    assert torch.equal(dst.layer4[1].conv2.weight, src.layer4[1].conv2.weight)
