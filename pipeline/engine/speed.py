"""How batches run: autocast dtype (with or without a gradient scaler) and memory format, chosen for
the device at hand. Speed switches never change what a run learns, only how fast."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pipeline.progress import warn


@dataclass(frozen=True)
class Speed:
    """How batches run: autocast dtype, gradient scaler need, memory format."""

    amp: torch.dtype | None = None
    fp16_scaler: bool = False
    channels_last: bool = False
    video: bool = True

    @property
    def memory_format(self) -> torch.memory_format | None:
        # Frame networks fold time into the batch and convert each frame batch themselves.
        return torch.channels_last_3d if self.channels_last and self.video else None

    @classmethod
    def choose(cls, device: torch.device, *, amp: bool, channels_last: bool, video: bool) -> Speed:
        dtype, scaler = None, False
        if amp and device.type == "cuda":
            if torch.cuda.is_bf16_supported():
                dtype = torch.bfloat16
            else:
                dtype, scaler = torch.float16, True  # fp16 needs loss scaling; bf16 does not
        elif amp and cpu_has_fast_bf16():
            dtype = torch.bfloat16
        elif amp:
            # Measured on an AVX2 CPU: bf16 autocast makes r3d_18 ~70x slower (no native bf16
            # kernels, oneDNN emulates them). Mixed precision only pays with AVX512-BF16/AMX.
            warn("--amp ignored: this CPU has no native bf16 instructions (avx512_bf16/amx), training in fp32")
        return cls(dtype, scaler, channels_last, video)

    def prepare(self, model: nn.Module) -> None:
        if self.channels_last:
            model.to(memory_format=torch.channels_last_3d if self.video else torch.channels_last)
            if not self.video:
                model.backbone.channels_last = True


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
