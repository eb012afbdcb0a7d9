"""The fine-tuning recipe (issue 18): mixup/cutmix, clip-consistent RandAugment and random erasing,
EMA, gradient accumulation, drop-path; each checked for its exact behaviour, then all together
through `vtl train` and a benchmark's `train:` settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from pipeline.data.mixing import MixCut
from pipeline.data.transforms import build_transform
from pipeline.engine.ema import Ema
from pipeline.engine.loop import train_one_epoch
from pipeline.errors import UserError

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def test_mixup_targets_sum_to_one_with_the_drawn_lambda() -> None:
    x, labels = torch.rand(4, 3, 2, 8, 8), torch.tensor([0, 1, 2, 4])
    torch.manual_seed(7)
    drawn = float(torch.distributions.Beta(0.4, 0.4).sample())
    torch.manual_seed(7)
    mix = MixCut(mixup=0.4, cutmix=0.0, num_classes=5)
    mixed, targets = mix(x, labels)
    lam = mix.lam
    assert lam == drawn and 0.0 < lam < 1.0
    assert torch.allclose(targets.sum(1), torch.ones(4))
    rows = torch.arange(4)
    assert torch.allclose(targets[rows, labels], torch.full((4,), lam))  # own class: λ
    assert torch.allclose(targets[rows, labels.flip(0)], torch.full((4,), 1 - lam))  # partner's: 1 - λ
    assert torch.allclose(mixed, lam * x + (1 - lam) * x.flip(0))


def test_cutmix_pastes_one_box_on_every_frame_and_labels_by_its_area() -> None:
    x = torch.arange(2 * 3 * 4 * 16 * 16, dtype=torch.float32).view(2, 3, 4, 16, 16)  # distinct values
    torch.manual_seed(3)
    mix = MixCut(mixup=0.0, cutmix=1.0, num_classes=3)
    mixed, targets = mix(x, torch.tensor([0, 2]))
    pasted = mixed[0] != x[0]  # (C, T, H, W)
    assert pasted.any() and (pasted == pasted[:1, :1]).all()  # the same box on every channel and frame
    kept = 1 - pasted[0, 0].float().mean().item()
    assert mix.lam == pytest.approx(kept)
    assert torch.allclose(targets, torch.tensor([[kept, 0, 1 - kept], [1 - kept, 0, kept]]))


def _same_frames_clip(frames: int = 4) -> np.ndarray:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1, 40, 48, 3), dtype=np.uint8)
    return np.repeat(image, frames, axis=0)  # T identical frames


def test_randaugment_and_random_erasing_treat_every_frame_of_a_clip_alike() -> None:
    clip = _same_frames_clip()
    plain = build_transform(32, MEAN, STD, train=True, augment="none")(clip)
    changed = 0
    for seed in range(8):
        torch.manual_seed(seed)
        out = build_transform(32, MEAN, STD, train=True, augment="none", randaugment=(2, 15))(clip)
        # One op set for the clip: identical frames stay identical, whatever ops were drawn.
        assert all(torch.equal(out[:, t], out[:, 0]) for t in range(out.shape[1]))
        changed += not torch.equal(out, plain)
    assert changed >= 6  # and RandAugment did change the clip
    torch.manual_seed(0)
    erased = build_transform(32, MEAN, STD, train=True, augment="none", random_erasing=1.0)(clip)
    box = erased != plain
    assert box.any() and (erased[box] == 0).all()  # filled with the mean
    assert all(torch.equal(box[:, t], box[:, 0]) for t in range(box.shape[1]))  # the same box on every frame
    evaluated = build_transform(32, MEAN, STD, train=False, randaugment=(2, 15), random_erasing=1.0)(clip)
    assert torch.equal(evaluated, build_transform(32, MEAN, STD, train=False)(clip))  # training only


def test_ema_update_formula() -> None:
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = Ema(model, decay=0.9)
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.train()(torch.randn(5, 3))  # moves the BatchNorm statistics and counter
    ema.update(model)
    live = model.state_dict()
    for key, avg in ema.module.state_dict().items():
        if avg.is_floating_point():
            assert torch.allclose(avg, 0.9 * before[key] + 0.1 * live[key]), key
        else:
            assert torch.equal(avg, live[key]), key  # num_batches_tracked: copied
    assert not ema.module.training and not any(p.requires_grad for p in ema.module.parameters())


def _epoch(batch_size: int, accumulate: int) -> tuple[nn.Module, int]:
    """One epoch of a deterministic model (no BatchNorm, no dropout) over 16 fixed items."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 3, 2, 4, 4, generator=g), torch.randint(0, 3, (16,), generator=g)
    loader = DataLoader(TensorDataset(x, y, torch.arange(16)), batch_size=batch_size)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(96, 16), nn.ReLU(), nn.Linear(16, 3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    train_one_epoch(model, loader, optimizer, scheduler, nn.CrossEntropyLoss(), torch.device("cpu"),
                    desc="test", accumulate=accumulate, clip_grad=1.0)
    return model, scheduler.last_epoch


def test_accumulate_2_at_batch_4_equals_batch_8() -> None:
    """Exact on a model without BatchNorm: with it, batches of 4 normalise by other statistics than
    batches of 8, so accumulation changes the forward pass itself (use --freeze-bn-stats)."""
    big, big_steps = _epoch(8, 1)
    accumulated, steps = _epoch(4, 2)
    plain, _ = _epoch(4, 1)
    assert steps == big_steps == 2  # one optimizer (and scheduler) step per 8 items
    for a, b, c in zip(accumulated.parameters(), big.parameters(), plain.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
        assert not torch.allclose(c, b, atol=1e-4)  # without accumulation: 4 steps, other weights


def test_recipe_options_are_checked(tmp_path: Path) -> None:
    from pipeline.engine.config import TrainConfig

    base = {"backbone": "resnet18", "strategy": "finetune"}
    for bad, words in (({"randaugment": "2"}, "N,M"), ({"randaugment": "2,31"}, "0-30"),
                       ({"ema": 1.0}, "--ema"), ({"accumulate": 0}, "--accumulate"),
                       ({"random_erasing": 1.5}, "--random-erasing"), ({"mixup": -1.0}, "--mixup"),
                       ({"drop_path": 0.1}, "resnet18 has no stochastic depth"),
                       ({"strategy": "linear", "mixup": 0.2, "randaugment": "2,9"}, "drop --mixup, --randaugment")):
        with pytest.raises(UserError, match=words):
            TrainConfig(**{**base, **bad})
    assert TrainConfig(backbone="resnet18", strategy="linear", ema=0.99, accumulate=2).ema == 0.99
    head = TrainConfig(backbone="convnext_tiny", strategy="finetune", mixup=0.8, drop_path=0.1, ema=0.99).head_phase()
    assert (head.mixup, head.drop_path, head.ema) == (0.0, None, None)  # LP-FT's probe: plain


def test_drop_path_reaches_torchvision_stochastic_depth() -> None:
    from torchvision.ops import StochasticDepth

    from pipeline.models.classifier import build_model

    def rates(drop_path: float | None) -> set[float]:
        model, _ = build_model("efficientnet_b0", 3, drop_path=drop_path)
        return {m.p for m in model.modules() if isinstance(m, StochasticDepth)}

    assert max(rates(None)) == pytest.approx(0.2 * 15 / 16)  # torchvision's default, scaled by depth
    assert max(rates(0.05)) == pytest.approx(0.05 * 15 / 16)
    assert rates(0.0) == {0.0}
    lite, _ = build_model("efficientnet_lite0", 3, drop_path=0.05)  # the package's drop-connect
    assert lite.backbone.pretrained_module().net._global_params.drop_connect_rate == 0.05
    with pytest.raises(UserError, match="resnet18 has no stochastic depth"):
        build_model("resnet18", 3, drop_path=0.1)


RECIPE = ("--mixup", "0.8", "--cutmix", "1.0", "--randaugment", "2,9", "--random-erasing", "0.25",
          "--drop-path", "0.1", "--ema", "0.9", "--accumulate", "2")


@pytest.mark.slow  # ~20 s on 2 loaded cores
def test_vtl_train_with_the_recipe_saves_and_evaluates_the_ema_weights(tiny_dataset: Path, tmp_path: Path) -> None:
    from conftest import invoke_vtl

    from pipeline.models.checkpoint import Checkpoint

    ws = tmp_path / "ws"
    invoke_vtl("-q", "prepare", ws, "--format", "folder", "--root", tiny_dataset, "--workers", "1")
    invoke_vtl("-q", "sample", ws, "--frames", "2", "--short-side", "32", "--workers", "0")
    invoke_vtl("-q", "train", ws, "--backbone", "efficientnet_b0", "--strategy", "scratch", "--epochs", "2",
               "--batch-size", "2", "--input-size", "32", "--name", "recipe", *RECIPE)
    run = ws / "train" / "recipe"
    last, best = Checkpoint.load(run / "last.pt"), Checkpoint.load(run / "best.pt")
    assert {k: last.config[k] for k in ("mixup", "cutmix", "randaugment", "random_erasing", "drop_path", "ema",
                                        "accumulate")} == {"mixup": 0.8, "cutmix": 1.0, "randaugment": "2,9",
                                                           "random_erasing": 0.25, "drop_path": 0.1, "ema": 0.9,
                                                           "accumulate": 2}
    # last.pt: the average as the model, the live weights to resume from; best.pt: the average only.
    assert last.live_model.keys() == last.model.keys()
    assert any(not torch.equal(last.model[k], last.live_model[k]) for k in last.model)
    assert not best.live_model
    invoke_vtl("-q", "evaluate", ws, "--run", "recipe", "--split", "val")
    import json

    evaluated = json.loads((ws / "eval" / "recipe" / "metrics.json").read_text())
    assert evaluated["video_top1"] == pytest.approx(best.best_val_top1)  # the EMA weights validation scored
    out = invoke_vtl("train", ws, "--backbone", "efficientnet_b0", "--strategy", "scratch", "--epochs", "2",
                     "--batch-size", "2", "--input-size", "32", "--name", "recipe", *RECIPE).output
    assert "already finished" in out  # the same settings: nothing to redo


def test_benchmark_takes_the_recipe_in_its_train_settings(tmp_path: Path) -> None:
    from pipeline.benchmark.grid import plan
    from pipeline.benchmark.sources import load_sources

    f = tmp_path / "s.yaml"
    f.write_text("""
train:
  ema: 0.999
  accumulate: 2
  finetune: {mixup: 0.8, cutmix: 1.0, randaugment: "2,9", random_erasing: 0.25}
sources:
  - {name: net, backbone: efficientnet_lite0, weights: imagenet1k}
""")
    cells = {c.strategy: c.train_config() for c in plan(load_sources(f), ("linear", "finetune"), (1.0,), 1)}
    fine, lin = cells["finetune"], cells["linear"]
    assert (fine.mixup, fine.cutmix, fine.randaugment_ops, fine.random_erasing) == (0.8, 1.0, (2, 9), 0.25)
    assert (fine.ema, fine.accumulate, lin.ema, lin.accumulate, lin.mixup) == (0.999, 2, 0.999, 2, 0.0)
    f.write_text(f.read_text().replace("  finetune: {", "  mixup: 0.8\n  finetune: {"))
    with pytest.raises(UserError, match="source 'net' with strategy linear: .*drop --mixup"):
        plan(load_sources(f), ("linear", "finetune"), (1.0,), 1)


class _Clips(Dataset):
    """8 fixed one-frame clips; reads after the first ``fail_after`` raise (a crash mid-run)."""

    def __init__(self, fail_after: int | None = None):
        self.x = torch.randn(8, 3, 1, 32, 32, generator=torch.Generator().manual_seed(1))
        self.labels = [i % 2 for i in range(8)]
        self.reads, self.fail_after = 0, fail_after

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        self.reads += 1
        if self.fail_after is not None and self.reads > self.fail_after:
            raise RuntimeError("crashed")
        return self.x[i], self.labels[i], i


def _fit(folder: Path, data: _Clips) -> None:
    from dataclasses import asdict

    from pipeline.engine.config import TrainConfig
    from pipeline.engine.distributed import DistInfo
    from pipeline.engine.run_folder import RunFolder
    from pipeline.engine.speed import Speed
    from pipeline.engine.trainer import Fit, fit
    from pipeline.models.classifier import build_model

    cfg = TrainConfig(backbone="resnet18", strategy="scratch", epochs=2, batch_size=4, lr=0.01, mixup=0.4, ema=0.5,
                      accumulate=2)
    torch.manual_seed(0)
    model, _ = build_model("resnet18", 2)
    loaders = {"train": DataLoader(data, batch_size=4, shuffle=True, generator=torch.Generator())}
    speed = Speed.choose(torch.device("cpu"), amp=False, channels_last=False, video=False)
    run_config = {**asdict(cfg), "classes": ["a", "b"], "weights": "none"}
    fit(Fit(RunFolder(folder / "train", folder / "eval"), model, model, loaders, cfg, run_config, DistInfo(), speed),
        restart=False)


@pytest.mark.slow  # ~20 s on 2 loaded cores: three short trainings
def test_a_run_with_ema_resumed_after_a_crash_ends_like_an_uninterrupted_one(tmp_path: Path) -> None:
    from pipeline.models.checkpoint import Checkpoint

    _fit(tmp_path / "straight", _Clips())
    with pytest.raises(RuntimeError, match="crashed"):  # in epoch 2 (8 training + 8 validation reads an epoch)
        _fit(tmp_path / "resumed", _Clips(fail_after=20))
    assert Checkpoint.load(tmp_path / "resumed" / "train" / "last.pt").epoch == 1
    _fit(tmp_path / "resumed", _Clips())
    a, b = (Checkpoint.load(tmp_path / name / "train" / "last.pt") for name in ("straight", "resumed"))
    assert a.epoch == b.epoch == 2
    assert any(not torch.equal(a.model[k], a.live_model[k]) for k in a.model)  # the average is not the live model
    for saved, resumed in ((a.model, b.model), (a.live_model, b.live_model)):
        for key, tensor in saved.items():
            torch.testing.assert_close(resumed[key], tensor, atol=1e-6, rtol=1e-5)


def test_a_run_recorded_before_the_recipe_existed_matches_only_at_the_defaults() -> None:
    from pipeline.engine.trainer import same_settings

    old = {"backbone": "resnet18", "lr": 0.001, "classes": ["a", "b"]}  # a run config without the new options
    assert same_settings(old, {**old, "mixup": 0.0, "ema": None, "accumulate": 1})
    assert not same_settings(old, {**old, "mixup": 0.2, "ema": None, "accumulate": 1})
    assert not same_settings({**old, "mixup": 0.2}, {**old, "mixup": 0.0})
    assert not same_settings({**old, "gone": 1}, old)  # an option the current version does not know
