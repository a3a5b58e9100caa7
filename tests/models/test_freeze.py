"""Freeze policies: bitwise frozen weights and BatchNorm statistics, reinit, param groups, unfreezing."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from dlops.models import create_model
from dlops.models.freeze import (
    FreezePolicy,
    apply_freeze,
    frozen_batchnorm_modules,
    param_groups,
    parse_freeze_policy,
    trainable_parameters,
    unfreeze_at_epoch,
)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _train_steps(model: nn.Module, steps: int = 2, lr: float = 0.1, wd: float = 1e-2, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(param_groups(model, lr), lr=lr, momentum=0.9, weight_decay=wd)
    model.train()
    for _ in range(steps):
        x = torch.randn(4, 3, 32, 32, generator=g)
        y = torch.randint(0, 3, (4,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def _changed(before, after, prefix):
    return [k for k in before if k.startswith(prefix) and not torch.equal(before[k], after[k])]


@pytest.mark.parametrize("spec, expected", [
    ("none", FreezePolicy("none")),
    ("backbone", FreezePolicy("backbone")),
    ("until:layer3", FreezePolicy("until", "layer3")),
    ("until:features.6", FreezePolicy("until", "features.6")),
    ("backbone,reinit_last=2", FreezePolicy("backbone", None, 2)),
    (" until:encoder.layers.encoder_layer_5 , reinit_last=1", FreezePolicy("until", "encoder.layers.encoder_layer_5", 1)),
    (None, FreezePolicy("none")),
])
def test_parse_freeze_policy(spec, expected):
    pol = parse_freeze_policy(spec)
    assert pol == expected
    assert parse_freeze_policy(str(pol)) == pol


@pytest.mark.parametrize("spec", ["all", "until:", "until:layer 3", "backbone,reinit_last=-1",
                                  "backbone,reinit_last=x", "backbone,lr=3", "Backbone"])
def test_parse_freeze_policy_rejects(spec):
    with pytest.raises(ValueError, match="freeze policy"):
        parse_freeze_policy(spec)


def test_frozen_resnet18_is_bit_identical_after_training_bn_buffers_included():
    torch.manual_seed(0)
    model = create_model("resnet18", 3, freeze="backbone")
    before = _snapshot(model)
    _train_steps(model)
    after = model.state_dict()
    frozen_keys = [k for k in before if not k.startswith("fc.")]
    assert any("running_mean" in k for k in frozen_keys) and any("num_batches_tracked" in k for k in frozen_keys)
    assert _changed(before, after, "") == ["fc.weight", "fc.bias"]
    # the frozen BatchNorm layers stay in eval mode whatever model.train() says
    model.train()
    assert all(not m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert model.fc.training and model.training
    assert [p for p in trainable_parameters(model)] == [model.fc.weight, model.fc.bias]


def test_control_without_freeze_the_same_training_moves_weights_and_bn_statistics():
    torch.manual_seed(0)
    model = create_model("resnet18", 3, freeze="none")
    before = _snapshot(model)
    _train_steps(model)
    changed = _changed(before, model.state_dict(), "")
    assert "bn1.running_mean" in changed and "layer1.0.conv1.weight" in changed


def test_until_block_freezes_up_to_and_including_it():
    torch.manual_seed(0)
    model = create_model("resnet18", 3, freeze="until:layer2")
    before = _snapshot(model)
    _train_steps(model)
    after = model.state_dict()
    for prefix in ("conv1.", "bn1.", "layer1.", "layer2."):
        assert _changed(before, after, prefix) == [], prefix
    assert "layer3.0.bn1.running_mean" in _changed(before, after, "layer3.")
    assert "layer4.1.conv2.weight" in _changed(before, after, "layer4.")
    assert set(frozen_batchnorm_modules(model)) == {"bn1"} | {
        n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d) and n.startswith(("layer1", "layer2"))
    }


def test_until_unknown_block_or_head_is_refused():
    model = create_model("resnet18", 3)
    with pytest.raises(ValueError, match="no block 'layer9'.*layer4"):
        apply_freeze(model, "until:layer9")
    with pytest.raises(ValueError, match="would freeze the head"):
        apply_freeze(model, "until:fc")


@pytest.mark.parametrize("name, kwargs, head_params", [
    ("mobilenet_v3_small", {}, ["classifier.3.weight", "classifier.3.bias"]),
    ("vit_b_16", {"image_size": 32}, ["heads.head.weight", "heads.head.bias"]),
    ("small_cnn", {}, ["head.0.weight", "head.0.bias", "head.2.weight", "head.2.bias"]),
])
def test_backbone_policy_leaves_only_the_head_trainable(name, kwargs, head_params):
    model = create_model(name, 3, freeze="backbone", **kwargs)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == head_params


def test_vit_until_an_encoder_layer():
    model = create_model("vit_b_16", 3, freeze="until:encoder.layers.encoder_layer_5", image_size=32)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "encoder.layers.encoder_layer_6.mlp.0.weight" in trainable
    assert "encoder.layers.encoder_layer_5.mlp.0.weight" not in trainable
    assert "conv_proj.weight" not in trainable and "class_token" not in trainable
    assert "heads.head.weight" in trainable


def test_reinit_last_reinitialises_and_unfreezes_the_last_layers(tmp_path):
    torch.manual_seed(0)
    src = create_model("resnet18", 3)
    with torch.no_grad():
        src.layer4[1].bn2.running_mean.add_(1.0)
    path = tmp_path / "w.pt"
    torch.save(src.state_dict(), path)
    torch.manual_seed(1)
    model = create_model("resnet18", 3, weights=path, freeze="backbone,reinit_last=1")
    assert not torch.equal(model.layer4[1].conv2.weight, src.layer4[1].conv2.weight)
    assert torch.equal(model.layer4[1].conv1.weight, src.layer4[1].conv1.weight)
    assert torch.equal(model.layer4[1].bn2.running_mean, torch.zeros(512))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["layer4.1.conv2.weight", "layer4.1.bn2.weight", "layer4.1.bn2.bias", "fc.weight", "fc.bias"]
    assert "layer4.1.bn2" not in frozen_batchnorm_modules(model)
    groups = param_groups(model, lr=0.1, backbone_lr_mult=0.1)
    assert [g["name"] for g in groups] == ["new"] and len(groups[0]["params"]) == 5
    with pytest.raises(ValueError, match="only"):
        apply_freeze(create_model("small_cnn", 3), "backbone,reinit_last=3")


def test_param_groups_give_the_backbone_a_lower_lr_and_leave_frozen_params_out():
    model = create_model("resnet18", 3, freeze="until:layer3")
    groups = param_groups(model, lr=0.1, backbone_lr_mult=0.01)
    by = {g["name"]: g for g in groups}
    assert by["new"]["lr"] == 0.1 and by["backbone"]["lr"] == pytest.approx(0.001)
    assert {id(p) for p in by["new"]["params"]} == {id(model.fc.weight), id(model.fc.bias)}
    assert {id(p) for p in by["backbone"]["params"]} == {id(p) for p in model.layer4.parameters()}
    torch.optim.SGD(groups, lr=0.1)  # the optimizer accepts them
    with pytest.raises(ValueError, match="lr"):
        param_groups(model, lr=0)


def test_gradual_unfreezing_schedule():
    torch.manual_seed(0)
    model = create_model("resnet18", 3, freeze="backbone")
    opt = torch.optim.SGD(param_groups(model, 0.1), lr=0.1)
    schedule = {"2": "until:layer2", 4: "none"}
    assert unfreeze_at_epoch(model, 0, schedule, opt) == []
    assert unfreeze_at_epoch(model, 1, schedule, opt) == []
    names = unfreeze_at_epoch(model, 2, schedule, opt, backbone_lr_mult=0.1)
    assert names and all(n.startswith(("layer3.", "layer4.")) for n in names)
    assert opt.param_groups[-1]["name"] == "unfrozen@2" and opt.param_groups[-1]["lr"] == pytest.approx(0.01)
    model.train()
    assert model.layer3[0].bn1.training and not model.layer2[0].bn1.training
    before = _snapshot(model)
    _train_steps(model)
    assert _changed(before, model.state_dict(), "layer2.") == []
    assert _changed(before, model.state_dict(), "layer3.")
    rest = unfreeze_at_epoch(model, 4, schedule)
    assert "conv1.weight" in rest and all(p.requires_grad for p in model.parameters())
    assert frozen_batchnorm_modules(model) == []
    with pytest.raises(ValueError, match="only unfreeze"):
        unfreeze_at_epoch(model, 6, {6: "backbone"})
    with pytest.raises(ValueError, match="reinit_last"):
        unfreeze_at_epoch(model, 1, {1: "none,reinit_last=1"})


def test_frozen_model_survives_pickling_with_its_batchnorm_pinned():
    model = create_model("small_cnn", 3, in_channels=1, freeze="backbone")
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    back = torch.load(buf, weights_only=False)
    back.train()
    assert type(back.features[1]).__name__ == "FrozenBatchNorm2d"
    assert not back.features[1].training and back.head.training
    assert isinstance(back.features[1], nn.BatchNorm2d)


def test_none_policy_releases_a_previous_freeze():
    model = create_model("small_cnn", 3, in_channels=1, freeze="backbone")
    apply_freeze(model, "none")
    model.train()
    assert all(p.requires_grad for p in model.parameters())
    assert model.features[1].training and type(model.features[1]) is nn.BatchNorm2d
