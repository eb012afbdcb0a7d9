"""I3D-style inflation of 2D ImageNet ResNet-18 weights into torchvision's video ResNets.

Inflation (Carreira & Zisserman, "Quo Vadis, Action Recognition? A New Model and the Kinetics
Dataset", CVPR 2017) turns a 2D kernel W of shape (O, I, kh, kw) into a 3D kernel of temporal
size t by repeating it over time and dividing by t::

    W3d[:, :, τ] = W / t     for τ = 0 .. t-1

so that on a "boring" video (one frame repeated over time) every inflated convolution returns,
at each time step, exactly what the 2D convolution returns on the frame; batch-norm layers then
copy over unchanged. The video networks are those of Tran et al., "A Closer Look at
Spatiotemporal Convolutions for Action Recognition" (CVPR 2018), as built by
``torchvision.models.video``.

What gets inflated, per architecture (fc is never copied: the classes differ):

* ``r3d_18``: everything except ``fc``. Stem conv (64, 3, 3, 7, 7) and every block conv
  (3, 3, 3) with t = 3, the downsample 1x1x1 convs with t = 1, and every batch norm.
* ``mc3_18``: everything except ``fc``. Stem and layer1 convs with t = 3; layer2-4 convs are
  (1, 3, 3) and downsample convs 1x1x1, inflated with t = 1 (a plain copy).
* ``r2plus1d_18``: only the downsample branches of layer2-4 (1x1x1 conv + batch norm). The
  stem and every block conv are factorised (2+1)D pairs - a (1, k, k) spatial conv into M
  mid channels, then a (3, 1, 1) temporal conv - with M (45, 144, 230, 288, ...) chosen to
  match the parameter count of a full 3D conv, so no 2D kernel maps onto them exactly. The
  batch norms that follow those convs are left alone too: their statistics describe the output
  of a conv whose weights were not copied.

Caveat on the stem: torchvision's video ResNets have no max-pool after the stem, so an
inflated video network matches the 2D ResNet-18 *with its max-pool removed*; feature maps are
2x larger spatially than ImageNet-style ones. That is an architecture difference, not an
inflation one.

Anything that cannot be mapped with matching shapes keeps its random initialisation and is
listed in the return value of :func:`inflate_resnet2d_into_video`, so callers can report it.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from pipeline.errors import UserError

# Video-ResNet state-dict key -> torchvision resnet18 key. Order matters only for readability;
# the patterns are mutually exclusive.
_KEY_MAP: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^stem\.0\.weight$"), "conv1.weight"),
    (re.compile(r"^stem\.1\.(\w+)$"), r"bn1.\1"),
    (re.compile(r"^(layer\d\.\d+)\.conv(\d)\.0\.weight$"), r"\1.conv\2.weight"),
    (re.compile(r"^(layer\d\.\d+)\.conv(\d)\.1\.(\w+)$"), r"\1.bn\2.\3"),
    (re.compile(r"^(layer\d\.\d+\.downsample\.0\.weight)$"), r"\1"),
    (re.compile(r"^(layer\d\.\d+\.downsample\.1\.\w+)$"), r"\1"),
)
# A batch norm ``<parent>.1.<x>`` follows the conv ``<parent>.0.weight`` in every video block.
_BN_KEY = re.compile(r"^(.*)\.1\.\w+$")


def _source_key(key_3d: str) -> str | None:
    """The resnet18 key that ``key_3d`` corresponds to by name, or None (fc, (2+1)D parts)."""
    for pattern, replacement in _KEY_MAP:
        if pattern.match(key_3d):
            return pattern.sub(replacement, key_3d)
    return None


def _inflate_conv(weight_2d: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    """Repeat a (O, I, kh, kw) kernel over the target's time size t and divide by t.

    Returns None when the shapes do not correspond exactly (never copy a partial match).
    """
    if weight_2d.dim() != 4 or target.dim() != 5:
        return None
    out_c, in_c, t, kh, kw = target.shape
    if tuple(weight_2d.shape) != (out_c, in_c, kh, kw):
        return None
    # Dividing by t keeps the response to a temporally constant input equal to the 2D one.
    inflated = weight_2d.unsqueeze(2).expand(out_c, in_c, t, kh, kw) / t
    return inflated.to(dtype=target.dtype, device=target.device)


def _check_source(state_2d: dict[str, torch.Tensor]) -> None:
    """Refuse checkpoints that are not a BasicBlock torchvision ResNet (resnet18/34)."""
    if "conv1.weight" not in state_2d or "bn1.weight" not in state_2d:
        raise UserError("inflation needs a torchvision ResNet state dict (conv1.weight, bn1.* missing)")
    if any(re.match(r"^layer\d\.\d+\.conv3\.weight$", key) for key in state_2d):
        raise UserError("inflation needs a BasicBlock ResNet (resnet18/34); got a Bottleneck one")


def inflate_resnet2d_into_video(state_2d: dict[str, torch.Tensor], model_3d: nn.Module) -> list[str]:
    """Copy ResNet-18 ``state_2d`` into a torchvision video ResNet, in place (I3D inflation).

    Conv3d weights of temporal size t get the 2D kernel repeated over time and divided by t
    (Carreira & Zisserman, CVPR 2017); batch-norm parameters and buffers are copied as they
    are, but only when the conv they follow was inflated. ``fc`` is always skipped. Works for
    ``r3d_18``, ``mc3_18`` and ``r2plus1d_18`` (see the module docstring for which layers of
    each get inflated).

    Returns the keys of ``model_3d.state_dict()`` that were *not* filled from ``state_2d``
    and keep their previous (random) values, in state-dict order.
    """
    _check_source(state_2d)
    target = model_3d.state_dict()
    if "stem.0.weight" not in target:
        raise UserError("inflation target must be a torchvision video ResNet (no stem.0.weight)")

    updated: dict[str, torch.Tensor] = {}
    # Convs first, so each batch norm can check whether the conv it follows was inflated.
    for key, value in target.items():
        source = _source_key(key)
        if key.endswith(".0.weight") and source in state_2d and value.dim() == 5:
            inflated = _inflate_conv(state_2d[source].detach(), value)
            if inflated is not None:
                updated[key] = inflated
    for key, value in target.items():
        source = _source_key(key)
        bn = _BN_KEY.match(key)
        if key in updated or source not in state_2d or bn is None:
            continue
        if f"{bn.group(1)}.0.weight" in updated and state_2d[source].shape == value.shape:
            updated[key] = state_2d[source].detach().to(dtype=value.dtype, device=value.device)

    # strict=True: ``updated`` only holds keys taken from the model itself, plus the rest as-is.
    model_3d.load_state_dict({**target, **updated}, strict=True)
    return [key for key in target if key not in updated]
