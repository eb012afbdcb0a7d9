"""Transfer strategies on a small backbone (resnet18 as a frame backbone: stages stem, layer1-4):
the exact set of trainable parameters, the exact LR groups, BatchNorm modes of frozen parts,
gradual unfreezing epoch by epoch, and one end-to-end ``vtl train --strategy gradual``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from pipeline.choices import STRATEGIES
from pipeline.errors import UserError
from pipeline.models.classifier import Classifier, build_model
from pipeline.transfer.strategies import Strategy

torch.set_num_threads(2)

LR = 1e-2
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")


@pytest.fixture
def model() -> Classifier:
    torch.manual_seed(0)
    m, _ = build_model("resnet18", 4)
    return m


def _resnet(model: Classifier) -> nn.Module:
    return model.backbone.net.net  # FramePooling → wrapper → torchvision resnet18


def _stage_params(model: Classifier, stage: str) -> set[int]:
    r = _resnet(model)
    modules = [r.conv1, r.bn1] if stage == "stem" else [getattr(r, stage)]
    return {id(p) for m in modules for p in m.parameters()}


def _ids(params) -> set[int]:
    return {id(p) for p in params}


def _trainable(model: Classifier) -> set[int]:
    return {id(p) for p in model.parameters() if p.requires_grad}


def _groups(groups: list[dict]) -> list[tuple[str, set[int], float]]:
    return [(g["name"], _ids(g["params"]), g["lr"]) for g in groups]


def _head(model: Classifier) -> set[int]:
    return _ids(model.head.parameters())


def _stages(model: Classifier, *names: str) -> set[int]:
    return set().union(*(_stage_params(model, n) for n in names))


def _bn_training(model: Classifier, stage: str) -> set[bool]:
    r = _resnet(model)
    root = nn.ModuleList([r.conv1, r.bn1]) if stage == "stem" else getattr(r, stage)
    return {m.training for m in root.modules() if isinstance(m, nn.BatchNorm2d)}


def test_strategy_names() -> None:
    assert STRATEGIES == ("scratch", "linear", "partial", "finetune", "gradual")


def test_scratch(model: Classifier) -> None:
    groups = Strategy("scratch").param_groups(model, LR)
    assert _trainable(model) == _ids(model.parameters())
    assert _groups(groups) == [("head", _head(model), LR), ("backbone", _ids(model.backbone.parameters()), LR)]


def test_linear(model: Classifier) -> None:
    s = Strategy("linear")
    groups = s.param_groups(model, LR)
    assert s.frozen_backbone
    assert _trainable(model) == _head(model)
    assert _groups(groups) == [("head", _head(model), LR)]
    s.set_train_mode(model)
    assert not any(m.training for m in model.backbone.modules()) and model.head.training


def test_partial_freezes_up_to_the_stage_and_its_batchnorm(model: Classifier) -> None:
    s = Strategy("partial", freeze_to="layer2")
    groups = s.param_groups(model, LR)
    assert _trainable(model) == _head(model) | _stages(model, "layer3", "layer4")
    assert _groups(groups) == [("head", _head(model), LR),
                               ("backbone", _stages(model, "layer3", "layer4"), LR * 0.1)]
    s.set_train_mode(model)
    for stage in ("stem", "layer1", "layer2"):
        assert _bn_training(model, stage) == {False}
    for stage in ("layer3", "layer4"):
        assert _bn_training(model, stage) == {True}
    # A training-mode forward pass leaves the frozen BatchNorm statistics alone.
    r = _resnet(model)
    before_frozen = r.layer2[0].bn1.running_mean.clone()
    before_trained = r.layer3[0].bn1.running_mean.clone()
    model(torch.randn(2, 3, 2, 64, 64))
    assert torch.equal(r.layer2[0].bn1.running_mean, before_frozen)
    assert not torch.equal(r.layer3[0].bn1.running_mean, before_trained)


def test_partial_rejects_an_unknown_stage(model: Classifier) -> None:
    with pytest.raises(UserError, match=r"--freeze-to 'layer9' is not a stage of this backbone "
                                        r"\(stem, layer1, layer2, layer3, layer4\)"):
        Strategy("partial", freeze_to="layer9").param_groups(model, LR)


def test_partial_keeps_a_learnable_temporal_head_trainable() -> None:
    m, _ = build_model("resnet18", 4, temporal="attention")
    Strategy("partial", freeze_to="layer4").param_groups(m, LR)
    assert _trainable(m) == _head(m) | _ids(m.backbone.pool.parameters())


def test_finetune_discriminative_lr(model: Classifier) -> None:
    groups = Strategy("finetune", backbone_lr_mult=0.5).param_groups(model, LR)
    assert _trainable(model) == _ids(model.parameters())
    assert _groups(groups) == [("head", _head(model), LR), ("backbone", _ids(model.backbone.parameters()), LR * 0.5)]


def test_finetune_layer_decay(model: Classifier) -> None:
    groups = Strategy("finetune", layer_decay=0.5).param_groups(model, LR)
    assert _trainable(model) == _ids(model.parameters())
    # Stage k of K = 5 at lr × 0.5^(5-k): the top stage at the head's LR.
    assert _groups(groups) == [("head", _head(model), LR)] + [
        (f"stage:{name}", _stage_params(model, name), LR * 0.5 ** (5 - k)) for k, name in enumerate(STAGES, start=1)]


def test_partial_with_layer_decay(model: Classifier) -> None:
    groups = Strategy("partial", freeze_to="layer1", layer_decay=0.5).param_groups(model, LR)
    assert _trainable(model) == _head(model) | _stages(model, "layer2", "layer3", "layer4")
    assert _groups(groups) == [("head", _head(model), LR), ("stage:layer2", _stage_params(model, "layer2"), LR / 4),
                               ("stage:layer3", _stage_params(model, "layer3"), LR / 2),
                               ("stage:layer4", _stage_params(model, "layer4"), LR)]


@pytest.mark.parametrize("decay", [None, 0.5])
def test_gradual_unfreezes_from_the_top(model: Classifier, decay: float | None) -> None:
    s = Strategy("gradual", unfreeze_every=2, layer_decay=decay)
    groups = s.param_groups(model, LR)
    # The optimizer holds every stage from the start (frozen ones get no gradient), at lower LRs.
    lrs = [LR * 0.5 ** (5 - k) if decay else LR * 0.1 for k in range(1, 6)]
    assert _groups(groups) == [("head", _head(model), LR)] + [
        (f"stage:{n}", _stage_params(model, n), lr) for n, lr in zip(STAGES, lrs, strict=True)]
    assert _trainable(model) == _head(model)  # before the first epoch: head only
    for epoch in range(12):
        training = s.on_epoch_start(model, None, epoch)
        n = min(5, epoch // 2)
        assert training == list(STAGES[5 - n:])
        assert _trainable(model) == _head(model) | _stages(model, *training)
        s.set_train_mode(model)
        for stage in STAGES:
            assert _bn_training(model, stage) == {stage in training}


def test_gradual_optimizer_only_moves_unfrozen_stages(model: Classifier) -> None:
    s = Strategy("gradual", unfreeze_every=1)
    opt = torch.optim.AdamW(s.param_groups(model, LR), weight_decay=0.1)
    clip, labels = torch.randn(2, 3, 1, 32, 32), torch.tensor([0, 1])

    def step(epoch: int) -> dict[str, torch.Tensor]:
        s.on_epoch_start(model, opt, epoch)
        s.set_train_mode(model)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(clip), labels).backward()
        opt.step()
        return before

    def changed(before: dict, prefix: str) -> bool:
        return any(not torch.equal(v, model.state_dict()[k]) for k, v in before.items() if k.startswith(prefix))

    before = step(0)  # head only: weight decay does not touch the frozen backbone either
    assert changed(before, "head.") and not changed(before, "backbone.")
    before = step(1)  # + layer4
    assert changed(before, "backbone.net.net.layer4.") and not changed(before, "backbone.net.net.layer3.")
    assert not changed(before, "backbone.net.net.bn1.")  # frozen BN: neither weights nor statistics


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"name": "freeze"}, "unknown strategy 'freeze'; choose one of scratch, linear, partial, finetune, gradual"),
    ({"name": "partial"}, "--strategy partial needs --freeze-to STAGE"),
    ({"name": "finetune", "layer_decay": 1.5}, "--layer-decay must be in (0, 1], got 1.5"),
    ({"name": "finetune", "layer_decay": 0.0}, "--layer-decay must be in (0, 1], got 0.0"),
    ({"name": "linear", "layer_decay": 0.7}, "--layer-decay needs a strategy that trains the backbone, not linear"),
    ({"name": "gradual", "unfreeze_every": 0}, "--unfreeze-every must be at least 1, got 0"),
    ({"name": "finetune", "backbone_lr_mult": 0.0}, "--backbone-lr-mult must be positive"),
])
def test_bad_options(kwargs: dict, fragment: str) -> None:
    with pytest.raises(UserError) as e:
        Strategy(**kwargs)
    assert fragment in str(e.value)


def test_train_config_validates_the_new_options() -> None:
    from pipeline.engine.config import TrainConfig

    with pytest.raises(UserError, match="--unfreeze-every must be at least 1"):
        TrainConfig(backbone="resnet18", strategy="gradual", unfreeze_every=0)
    cfg = TrainConfig(backbone="resnet18", strategy="finetune", layer_decay=0.7)
    assert cfg.make_strategy() == Strategy("finetune", layer_decay=0.7)


def test_vtl_train_gradual_end_to_end(tiny_dataset: Path, tmp_path: Path) -> None:
    """Through the CLI: head only in epoch 1, then efficientnet_lite0's stages from the top; the
    stages never unfrozen keep their ImageNet weights and BatchNorm statistics exactly."""
    from conftest import invoke_vtl

    from pipeline.models.checkpoint import Checkpoint

    ws = tmp_path / "ws"
    invoke_vtl("-q", "prepare", ws, "--root", tiny_dataset, "--workers", "0")
    invoke_vtl("-q", "sample", ws, "--frames", "2", "--short-side", "32", "--workers", "0")
    invoke_vtl("-q", "train", ws, "--backbone", "efficientnet_lite0", "--strategy", "gradual", "--epochs", "3",
               "--unfreeze-every", "1", "--layer-decay", "0.5", "--input-size", "32", "--batch-size", "6",
               "--lr", "0.01")
    run = ws / "train" / "efficientnet_lite0-gradual"
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    assert "unfreeze_every: 1" in (run / "config.yaml").read_text()
    trained = Checkpoint.load(run / "last.pt").model
    pretrained, _ = build_model("efficientnet_lite0", 3, weights="imagenet1k")
    ref = pretrained.state_dict()
    # lite0 stages: stem, stage1..4, head. Epoch 1: head layer only; 2: + "head" stage; 3: + stage4.
    same = [k for k in ref if k.startswith("backbone.") and torch.equal(ref[k], trained[k])]
    moved = {k for k in ref if k.startswith("backbone.") and k not in same}
    assert moved and all(k.startswith(("backbone.net.net._conv_head", "backbone.net.net._bn1",
                                       "backbone.net.net._blocks.11.", "backbone.net.net._blocks.12.",
                                       "backbone.net.net._blocks.13.", "backbone.net.net._blocks.14.",
                                       "backbone.net.net._blocks.15.")) for k in moved)
    assert any(k.startswith("backbone.net.net._blocks.15.") for k in moved)  # stage4 trained in epoch 3
    assert all(k in same for k in ref if k.startswith("backbone.net.net._conv_stem"))
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] == 3
