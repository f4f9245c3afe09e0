"""Frame geometry shared by the video INRs: padding to a multiple of the total stride and back.

The networks produce frames whose sides are multiples of their total upsampling factor; a video
rarely has such sides, so the encoder pads the target (edge replication, which costs the network
little to learn) and both encoder and decoder crop the output back to the exact original size.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def pad_frames(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, C, h, w) → (B, C, height, width) by replicating the last row/column."""
    dh, dw = height - x.shape[-2], width - x.shape[-1]
    if dh < 0 or dw < 0:
        raise ValueError("padding target smaller than the frame")
    if dh == 0 and dw == 0:
        return x
    return F.pad(x, (0, dw, 0, dh), mode="replicate")


def crop_frames(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return x[..., :height, :width]


def default_strides(height: int, width: int, min_side: int = 2, max_stages: int = 5) -> tuple[int, ...]:
    """Upsampling factors for a frame: a first ×4 (×2 for tiny frames), then ×2 stages, as many as
    keep the smallest side of the embedding at ``min_side``..2·``min_side`` pixels or more."""
    side = min(height, width)
    total = 1
    strides: list[int] = []
    while len(strides) < max_stages:
        s = 4 if not strides and side >= 64 * min_side else 2
        if side / (total * s) < min_side:
            break
        strides.append(s)
        total *= s
    return tuple(strides) or (1,)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float frames in [0, 1] (B, 3, H, W) → uint8 (B, H, W, 3), round half to even as torch does."""
    return torch.clamp(torch.round(x * 255.0), 0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def psnr_from_mse(mse: float) -> float:
    """PSNR of a mean squared error of values in [0, 1], as training reports it (the codecs' PSNR
    of 8-bit frames is :func:`neural_codecs.codec.eval.metrics.psnr`; models do not import codecs)."""
    return float("inf") if mse <= 0 else -10.0 * math.log10(mse)


class _Leaky(torch.autograd.Function):
    """A saturating output function whose forward is exactly torch's (decoding is unchanged) and
    whose gradient, where it points back towards the middle, never falls below :data:`LEAK` of its
    largest. Why: on a dark clip (the second clip's first 48 frames) HNeRV's head inputs ran to
    -10,000 within two epochs, the tanh's gradient vanished there, and the network stayed black
    for good (15 dB; 27.8 dB with the leak). Only inwards: a leak that also pushed outwards drove
    the inputs (and the weights, and their integers) on without end towards pixels at exactly 0
    or 255, which no tanh reaches (48 frames at 128x72: 23 bits a weight)."""

    @staticmethod
    def forward(ctx, x, kind: str):
        y = torch.tanh(x) if kind == "tanh" else torch.sigmoid(x)
        ctx.save_for_backward(x, y)
        ctx.kind = kind
        return y

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        slope, least = (1 - y * y, LEAK) if ctx.kind == "tanh" else (y * (1 - y), LEAK / 4)
        inwards = g * x > 0  # descent moves x by -g·slope: towards 0 when g and x share a sign
        return g * torch.where(inwards, torch.clamp(slope, min=least), slope), None


#: Least gradient of an output head's tanh (sigmoid: a quarter of it) while training.
LEAK = 0.05


def leaky_tanh(x: torch.Tensor) -> torch.Tensor:
    """``torch.tanh`` whose training gradient does not vanish (:class:`_Leaky`)."""
    return _Leaky.apply(x, "tanh")


def leaky_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """``torch.sigmoid`` whose training gradient does not vanish (:class:`_Leaky`)."""
    return _Leaky.apply(x, "sigmoid")
