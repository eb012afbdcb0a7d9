"""The options of a training run (:class:`TrainConfig`: ``vtl train``, a ``train:`` section of
``vtl run``, a benchmark cell) and of an evaluation (:class:`EvaluateConfig`), with their defaults
and help, validated on construction.

Torch is imported only when a config is validated, never by importing this module: the command
line builds its options from these classes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.choices import (
    AUGMENTATIONS,
    BACKBONE_TRAINING,
    CLASS_WEIGHTS,
    SAMPLERS,
    STRATEGIES,
    TEMPORAL_POOLINGS,
)
from pipeline.data.splits import SPLITS
from pipeline.data.timeline import BACKGROUND
from pipeline.errors import UserError
from pipeline.files import path_safe
from pipeline.options import check_choices, option

if TYPE_CHECKING:
    from pipeline.models.registry import BackboneSpec
    from pipeline.transfer.strategies import Strategy

# Options that change speed or what is logged, not results: they may differ when a run is resumed,
# and are left out of the run config that a resumed run (or a finished benchmark cell) must match.
SPEED_OPTIONS = ("workers", "amp", "channels_last", "compile", "device", "deterministic", "tensorboard", "tracker")
TRACKERS = ("none", "mlflow")


def device_option() -> Any:
    """The ``--device`` field of every command that runs a network: one default, one help text."""
    return option(None, "cpu, cuda or cuda:N (default: the GPU when one is visible, else the CPU; under torchrun: "
                        "the local rank's GPU).", metavar="DEVICE")


def deterministic_option() -> Any:
    """The ``--deterministic`` field of train, evaluate and benchmark: one default, one help text."""
    return option(False, "Deterministic kernels (torch.use_deterministic_algorithms, cuDNN without autotuning, "
                         "CUBLAS_WORKSPACE_CONFIG): the same command gives the same numbers on a GPU too, "
                         "typically 10-30% slower there (a CPU run is deterministic anyway).")


def check_tracker(tracker: str) -> None:
    """An unusable ``--tracker`` is a one-line error before any work."""
    if tracker == "mlflow":
        from pipeline.engine.tracking import require_mlflow

        require_mlflow()


def tracker_option() -> Any:
    """The ``--tracker`` field of train and benchmark (see :func:`check_tracker`)."""
    return option("none", "Also log params, metrics, provenance and the best checkpoint to an experiment tracker: "
                          "mlflow (pip install 'vtl[mlflow]'; MLFLOW_TRACKING_URI, default a file store mlruns/ in "
                          "the workspace).", choices=TRACKERS)


@dataclass
class TrainConfig:
    backbone: str = option(help="A name from `vtl backbones`.")
    strategy: str = option(
        choices=STRATEGIES,
        help="scratch (random init: the baseline), linear (frozen backbone, head on cached features), partial "
             "(freeze up to --freeze-to), finetune (everything), gradual (unfreeze stages from the top).")
    weights: str | None = option(
        None, "Weight tag (e.g. imagenet1k, kinetics400), 'none', or a checkpoint path. "
              "Default: the backbone's first tag (none for scratch).")
    freeze_to: str | None = option(None, "partial: last frozen stage (e.g. layer2).")
    temporal: str = option("avg", "How a frame backbone pools over time.", choices=TEMPORAL_POOLINGS)
    epochs: int = option(10, "Training epochs.")
    lr: float = option(1e-3, "Head learning rate (peak of the warm-up + cosine).")
    batch_size: int = option(8, "Clips per batch (per process under torchrun).")
    weight_decay: float = option(1e-4, "AdamW weight decay.")
    backbone_lr_mult: float = option(0.1, "Backbone LR = head LR × this.")
    layer_decay: float | None = option(
        None, "Instead of --backbone-lr-mult: stage k of K trains at LR × D^(K-k) (e.g. 0.7).")
    unfreeze_every: int = option(
        1, "gradual: epochs of head-only training, then between unfreezing each next stage.")
    label_smoothing: float = option(0.0, "Label smoothing of the cross-entropy.")
    dropout: float = option(0.0, "Dropout before the classifier.")
    # The fine-tuning recipe (docs/models.md recommends one per backbone family).
    mixup: float = option(0.0, "Mixup: blend pairs of clips and their labels by λ ~ Beta(A, A), e.g. 0.8 (0: off).",
                          metavar="A")
    cutmix: float = option(0.0, "CutMix: paste a box of another clip (every frame), labels by area; λ ~ Beta(A, A), "
                                "e.g. 1.0 (0: off). With --mixup: one of the two per batch.", metavar="A")
    randaugment: str | None = option(None, "N,M: RandAugment with N ops of magnitude M (0-30), e.g. 2,9; the same "
                                           "ops and magnitudes for every frame of a clip.", metavar="N,M")
    random_erasing: float = option(0.0, "Erase a random box (the same on every frame) of a clip with this "
                                        "probability, e.g. 0.25.", metavar="P")
    drop_path: float | None = option(None, "Stochastic depth rate, e.g. 0.1 (backbones that have it; default: the "
                                           "backbone's own).", metavar="R")
    ema: float | None = option(None, "Keep an exponential moving average of the weights with this decay (e.g. "
                                     "0.999); validation, best.pt and evaluation use it.", metavar="DECAY")
    accumulate: int = option(1, "Accumulate gradients over K batches per optimizer step (an effective batch of "
                                "K × --batch-size).", metavar="K")
    fraction: float = option(1.0, "Train on this stratified share of the train split.")
    seed: int = option(0, "Seed of initialisation, shuffling, augmentation and --fraction.")
    input_size: int | None = option(None, "Crop size fed to the network (default: the backbone's).")
    augment: str = option("standard", "standard (crop+flip), crop (no flip: when left/right matters), none.",
                          choices=AUGMENTATIONS)
    class_weights: str = option("none", "Imbalanced classes: auto weights the loss by inverse class frequency on "
                                        "the train split (normalised to mean 1).", choices=CLASS_WEIGHTS)
    sampler: str = option("random", "Imbalanced classes: balanced draws every class equally often in each "
                                    "epoch (oversampling small classes).", choices=SAMPLERS)
    sampling: str | None = option(None, "Clip-cache key (default: the latest `vtl sample`).")
    workers: int | None = option(None, "DataLoader worker processes (default: 0 on CPU, a few per GPU).")
    name: str | None = option(None, "Run name (default: <backbone>-<strategy>).")
    patience: int | None = option(None, "Stop after this many epochs without a validation gain.")
    clip_grad: float | None = option(None, "Clip the gradient norm to this value.")
    warmup: float = option(0.1, "Share of the steps spent warming up the LR (then cosine decay).")
    amp: bool = option(False, "Mixed precision: bf16 autocast (CPU with native bf16, recent GPUs) or fp16 + "
                              "loss scaling.")
    channels_last: bool = option(False, "channels-last memory format (faster convolutions on some hardware).")
    compile: bool = option(False, "torch.compile the model (slow start, faster steps).")
    freeze_bn_stats: bool = option(
        False, "Keep the backbone's pretrained BatchNorm statistics (advised for batches under ~16).")
    head_epochs: int = option(
        20, "partial/finetune/gradual from pretrained weights: first fit the head on cached frozen features "
            "for this many epochs (LP-FT; keeps the pretrained features intact). 0: random head.")
    head_lr: float = option(1e-2, "LR of that head-only phase.")
    device: str | None = device_option()
    deterministic: bool = deterministic_option()
    tensorboard: bool = option(True, "Write TensorBoard scalars (loss, top-1, lr) to train/RUN/tensorboard/.")
    tracker: str = tracker_option()

    def __post_init__(self) -> None:
        check_choices(self)
        check_tracker(self.tracker)
        self.make_strategy()  # validates the strategy's own options
        spec = self.spec  # validates the name
        if not 0.0 < self.fraction <= 1.0:
            raise UserError(f"--fraction must be in (0, 1], got {self.fraction}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be positive")
        if self.lr <= 0:
            raise UserError("--lr must be positive")
        if not 0.0 <= self.warmup < 1.0:
            raise UserError(f"--warmup must be in [0, 1), got {self.warmup}")
        if self.head_epochs < 0 or self.head_lr <= 0:
            raise UserError("--head-epochs must be >= 0 and --head-lr positive")
        if self.patience is not None and self.patience <= 0:
            raise UserError("--patience must be positive")
        self._check_recipe(spec)
        if self.strategy == "scratch" and self.weights not in (None, "none"):
            raise UserError("--strategy scratch trains from random initialisation: drop --weights")
        if self.input_size is not None:
            if self.input_size < spec.min_input_size:
                raise UserError(f"--input-size {self.input_size} is below the smallest input {self.backbone} "
                                f"accepts ({spec.min_input_size})")
            if spec.fixed_size and self.input_size != spec.input_size:
                raise UserError(f"{self.backbone} takes only --input-size {spec.input_size} (fixed position "
                                "embeddings)")

    def _check_recipe(self, spec: BackboneSpec) -> None:
        if self.mixup < 0 or self.cutmix < 0:
            raise UserError("--mixup and --cutmix must be >= 0")
        parse_randaugment(self.randaugment)
        if not 0.0 <= self.random_erasing <= 1.0:
            raise UserError(f"--random-erasing must be in [0, 1], got {self.random_erasing}")
        if self.drop_path is not None and not 0.0 <= self.drop_path < 1.0:
            raise UserError(f"--drop-path must be in [0, 1), got {self.drop_path}")
        from pipeline.models.factory import check_drop_path

        check_drop_path(spec, self.drop_path)
        if self.ema is not None and not 0.0 < self.ema < 1.0:
            raise UserError(f"--ema must be in (0, 1), got {self.ema}")
        if self.accumulate < 1:
            raise UserError("--accumulate must be >= 1")
        if self.make_strategy().frozen_backbone and (pixels := self.pixel_recipe()):
            raise UserError(f"--strategy linear trains the head on cached features of unaugmented clips: drop "
                            f"{', '.join(pixels)}")

    def pixel_recipe(self) -> list[str]:
        """The recipe options set that act on clips or the backbone (not on cached features)."""
        given = {"--mixup": self.mixup, "--cutmix": self.cutmix, "--randaugment": self.randaugment,
                 "--random-erasing": self.random_erasing, "--drop-path": self.drop_path}
        return [flag for flag, value in given.items() if value]

    @property
    def randaugment_ops(self) -> tuple[int, int] | None:
        """``--randaugment N,M`` as (N, M)."""
        return parse_randaugment(self.randaugment)

    @property
    def spec(self) -> BackboneSpec:
        from pipeline.models.registry import get_spec

        return get_spec(self.backbone)

    def make_strategy(self) -> Strategy:
        from pipeline.transfer.strategies import Strategy

        return Strategy(self.strategy, self.freeze_to, self.backbone_lr_mult, layer_decay=self.layer_decay,
                        unfreeze_every=self.unfreeze_every, freeze_bn_stats=self.freeze_bn_stats)

    @property
    def run_name(self) -> str:
        return self.name or f"{path_safe(self.backbone)}-{self.strategy}"

    @property
    def size(self) -> int:
        """The crop size fed to the network."""
        return self.input_size or self.spec.input_size

    def resolved_weights(self) -> str:
        if self.strategy == "scratch":
            return "none"
        if self.weights:
            return self.weights
        spec = self.spec
        if not spec.weights:
            raise UserError(f"{self.backbone} has no pretrained weights; pass --weights PATH or use scratch")
        return next(iter(spec.weights))

    @property
    def fits_head_first(self) -> bool:
        """LP-FT: fit the head on frozen features before training the backbone."""
        return (self.strategy in BACKBONE_TRAINING and self.head_epochs > 0
                and self.resolved_weights() != "none")

    def head_phase(self) -> TrainConfig:
        """The head-only phase of LP-FT: a linear probe with this run's data settings."""
        return replace(self, strategy="linear", epochs=self.head_epochs, lr=self.head_lr, freeze_to=None,
                       layer_decay=None, patience=None, batch_size=max(self.batch_size, 32), head_epochs=0,
                       mixup=0.0, cutmix=0.0, randaugment=None, random_erasing=0.0, drop_path=None, ema=None,
                       accumulate=1)

    def check_clip_length(self, frames: int) -> None:
        """A one-line error when the clips' length does not suit the backbone."""
        spec = self.spec
        if frames < spec.min_clip_len:
            raise UserError(f"{self.backbone} needs clips of at least {spec.min_clip_len} frames; these have "
                            f"{frames} (`vtl sample --frames`)")
        if spec.fixed_clip_len and frames != spec.clip_len:
            raise UserError(f"{self.backbone} takes only clips of {spec.clip_len} frames; these have {frames} "
                            "(`vtl sample --frames`)")


@dataclass
class EvaluateConfig:
    run: str | None = option(
        None, "Run name under WORKSPACE/train (default: the latest). Under torchrun write --name: "
              "torchrun's own parser mistakes --run for its --run-path.", flags=("--run", "--name"))
    split: str = option("test", "The split to score.", choices=SPLITS)
    batch_size: int = option(16, "Clips per batch.")
    views: str | None = option(
        None, "CLIPSxCROPS test views, e.g. 5x3: the first CLIPS cached clips of each video, each at 1 (centre) "
              "or 3 spatial crops; softmax averaged per video. Default: all cached clips x 1.")
    device: str | None = device_option()
    deterministic: bool = deterministic_option()

    def __post_init__(self) -> None:
        check_choices(self)
        if self.batch_size <= 0:
            raise UserError("--batch-size must be positive")
        parse_views(self.views)


# What `vtl predict --output` writes, by the file's suffix.
PREDICT_OUTPUTS = (".csv", ".jsonl")


@dataclass
class PredictConfig:
    """``vtl predict``'s options beyond its arguments."""

    device: str | None = device_option()
    batch_size: int = option(16, "Clips per forward pass (an input's views, or a long video's windows, share "
                                 "batches).")
    workers: int = option(2, "Decoding processes working while the model runs (0: decode in this process).")
    output: Path | None = option(None, "Write the rows to FILE.csv or FILE.jsonl instead of printing them "
                                       "(with --window: also FILE.segments.* and a FILE.png timeline).",
                                 flags=("--output", "-o"), metavar="FILE")
    window: float | None = option(None, "Long videos: classify every window of this many seconds (a row per "
                                        "window) and merge them into segments.", metavar="SECONDS")
    stride: float | None = option(None, "Seconds from one window's start to the next (default: --window).",
                                  metavar="SECONDS")
    smooth: int = option(1, "With --window: majority vote over K consecutive windows before merging (1: none).",
                         metavar="K")
    min_score: float = option(0.0, f"With --window: a window whose top-1 probability is below this is "
                                   f"'{BACKGROUND}'.")

    def __post_init__(self) -> None:
        for name in ("batch_size", "smooth"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.workers < 0:
            raise UserError(f"--workers must be 0 or more, got {self.workers}")
        for name in ("window", "stride"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise UserError(f"--{name} must be a positive number of seconds, got {value}")
        if self.stride is not None and self.window is None:
            raise UserError("--stride is the step between windows: give --window too")
        if not 0.0 <= self.min_score <= 1.0:
            raise UserError(f"--min-score is a probability in [0, 1], got {self.min_score}")
        if self.output is not None and Path(self.output).suffix.lower() not in PREDICT_OUTPUTS:
            raise UserError(f"--output {self.output}: name a .csv or .jsonl file")

    @property
    def step(self) -> float | None:
        """Seconds between window starts."""
        return self.stride or self.window


def parse_randaugment(text: str | None) -> tuple[int, int] | None:
    """``"2,9"`` → (2 ops, magnitude 9); None → no RandAugment."""
    if text is None:
        return None
    try:
        n, m = (int(v) for v in str(text).split(","))
    except ValueError:
        raise UserError(f"--randaugment must look like N,M (e.g. 2,9), got {text!r}") from None
    if n < 1 or not 0 <= m <= 30:
        raise UserError(f"--randaugment {text}: N must be >= 1 and M in 0-30")
    return n, m


def parse_views(views: str | None) -> tuple[int | None, int]:
    """``"10x3"`` → (10 clips, 3 crops); None → every cached clip, centre crop."""
    if views is None:
        return None, 1
    try:
        clips, crops = (int(v) for v in views.lower().split("x"))
    except ValueError:
        raise UserError(f"--views must look like CLIPSxCROPS (e.g. 5x3), got {views!r}") from None
    if clips < 1 or crops not in (1, 3):
        raise UserError(f"--views {views}: CLIPS must be ≥ 1 and CROPS 1 or 3")
    return clips, crops
