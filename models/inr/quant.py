"""Quantization during training: integer weights with a learned step and a differentiable rate.

A network always runs with weights ``Δ · round(w / Δ)``: integers times a learned per-tensor step
``Δ`` (straight-through gradient), so what
it learns is exactly what the decoder will rebuild from the integers — no post-hoc quantization
step, no gap between the last training evaluation and the decoded file.

The rate term is a differentiable estimate of the bits the entropy coder will spend: each tensor's
integers are scored under a zero-mean discretised logistic with a learned scale, on ``w / Δ`` plus
uniform noise (the usual relaxation: the noise makes the bit count smooth in ``q``). A λ in the loss
trades these bits against distortion. When a tensor is coded as a residual against a reference
(NIRVANA's later groups), the rate is scored on ``w / Δ - q_ref`` instead, so training learns residuals
that are cheap to code.

The coder itself does not use the logistic: :mod:`codec.nerv` codes the final integers under their
empirical histogram, which costs at most what the estimate says plus the table.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

LN2 = math.log(2.0)


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, g):
        return g


def ste_round(x: torch.Tensor) -> torch.Tensor:
    """Round in the forward pass (exactly: not ``x + (round(x) - x)``, which can miss the integer by
    an ulp), identity gradient in the backward pass."""
    return _RoundSTE.apply(x)


def logistic_bits(v: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Bits of integer-ish ``v`` under a zero-mean logistic of scale ``exp(log_scale)``, discretised
    to unit bins: ``-log2(F(v + 1/2) - F(v - 1/2))``, summed. Evaluated in a numerically stable form
    (the upper tail mirrored onto the lower one)."""
    s = torch.exp(log_scale)
    a = -v.abs()  # mass is symmetric: use the side where both CDF values are small and exact
    upper = torch.sigmoid((a + 0.5) / s)
    lower = torch.sigmoid((a - 0.5) / s)
    p = (upper - lower).clamp_min(1e-9)
    return -(torch.log(p).sum()) / LN2


#: How the file codes integer tensors (:mod:`codec.nerv` uses these): tensors of fewer values share
#: one histogram (table row), larger ones get their own; a row spans at most TABLE_SPAN values
#: (values beyond are escape-coded).
SMALL_TENSOR = 256
TABLE_SPAN = 4096


def empirical_bits(arrays: list[torch.Tensor], small: int = SMALL_TENSOR, tables: bool = True) -> float:
    """Bits the integers cost under their own histograms, as the file codes them (one histogram per
    tensor of ``small`` values or more, one shared by the smaller ones), plus, with ``tables``, a
    byte per value the histogram spans (the table rows travel in the file: a frequency each).
    The logistic estimate training uses is smooth but biased: at a bit or less a value it costs
    several times what the empirical tables spend, and it never sees the tables (48 frames at
    128x72: intra embeddings spanning ±1,270 put 5 kB of table into an 11 kB file)."""
    big = [a.reshape(-1) for a in arrays if a.numel() >= small]
    rest = [a.reshape(-1) for a in arrays if 0 < a.numel() < small]
    total = 0.0
    for v in big + ([torch.cat(rest)] if rest else []):
        _, counts = torch.unique(v, return_counts=True)
        p = counts.to(torch.float64) / v.numel()
        total += float(-(counts * torch.log2(p)).sum())
        if tables:
            total += 8.0 * _table_bytes(v)
    return total


#: Row widths the file's encoder may cap a table row at (values outside are escape-coded), and
#: about what an escaped value costs: its escape symbol, bit count and bits.
ROW_CAPS = (TABLE_SPAN, 256, 64, 16)
ESCAPE_BYTES = 3


def _table_bytes(v: torch.Tensor) -> float:
    """About what one table row for ``v`` costs: a byte a value it spans, at the cheapest width
    cap counting each value outside it as escaped (``codec.nerv`` picks the cap the same way)."""
    med = torch.median(v)
    span = int(v.max() - v.min()) + 1
    best = float(min(TABLE_SPAN, span))
    for cap in ROW_CAPS[1:]:
        if cap < span:
            outside = int(((v - med).abs() > cap // 2).sum())
            best = min(best, cap + ESCAPE_BYTES * outside)
    return best


@dataclass
class QuantizedTensor:
    """A tensor as it travels in the file: integers and the float32 step that scales them."""

    ints: torch.Tensor  # int64, the tensor's shape
    step: float  # exactly representable in float32

    def dequantize(self) -> torch.Tensor:
        return self.ints.to(torch.float32) * torch.tensor(self.step, dtype=torch.float32)


class QuantizedNet(nn.Module):
    """Wrap ``net`` so every parameter runs as ``Δ · round(w / Δ)``; ``forward`` runs ``net`` with them.

    The float weights ``w`` stay the trained parameters (so Adam's step sizes mean what they usually
    do) and the learned step ``Δ`` gets the LSQ gradient ``round(w/Δ) - w/Δ`` through the
    straight-through rounding. ``bits`` sets the initial step (a tensor's largest |w| maps to
    ``2**(bits-1) - 1``). ``rate_bits()`` is the differentiable rate estimate of all integers.
    """

    def __init__(self, net: nn.Module, bits: int = 8):
        super().__init__()
        self.net = net
        self.names = [n for n, _ in net.named_parameters()]
        self.floats = nn.ParameterList()
        self.log_steps = nn.ParameterList()
        self.log_scales = nn.ParameterList()
        for n, p in net.named_parameters():
            p.requires_grad_(False)
            w = p.detach().clone()
            top = float(w.abs().max()) if w.numel() else 0.0
            step = max(top / (2 ** (bits - 1) - 1), 1e-6)
            self.floats.append(nn.Parameter(w))
            self.log_steps.append(nn.Parameter(torch.tensor(math.log(step))))
            spread = float((w / step).abs().mean()) if w.numel() else 1.0
            self.log_scales.append(nn.Parameter(torch.tensor(math.log(max(spread, 0.5)))))
        for p in list(self.log_steps) + list(self.log_scales):
            p._quant = True  # the trainer gives these their own learning rate
        self._refs: list[torch.Tensor | None] = [None] * len(self.names)

    # -- reference (residual) coding -----------------------------------------------------------
    def set_reference(self, refs: list[torch.Tensor | None] | None) -> None:
        """Integers the rate is measured against (``None``: code the integers themselves)."""
        self._refs = [None] * len(self.names) if refs is None else [
            None if r is None else r.detach().to(torch.float32) for r in refs]

    # -- the network with quantized weights ---------------------------------------------------
    def steps(self) -> list[torch.Tensor]:
        return [torch.exp(s) for s in self.log_steps]

    def weights(self) -> dict[str, torch.Tensor]:
        return {n: ste_round(w / s) * s for n, w, s in zip(self.names, self.floats, self.steps())}

    def forward(self, *args, **kwargs):
        return functional_call(self.net, self.weights(), args, kwargs)

    def rate_bits(self, noise: bool = True) -> torch.Tensor:
        total = torch.zeros((), device=self.log_steps[0].device)
        for w, s, ls, ref in zip(self.floats, self.steps(), self.log_scales, self._refs):
            v = w / s
            if ref is not None:
                v = v - ref.to(v.device)
            if noise and self.training:
                v = v + torch.empty_like(v).uniform_(-0.5, 0.5)
            else:
                v = torch.round(v)
            total = total + logistic_bits(v, ls)
        return total

    @torch.no_grad()
    def coded_bits(self) -> float:
        """:func:`empirical_bits` of the current integers (residuals where a reference is set)."""
        ints = []
        for w, s, ref in zip(self.floats, self.steps(), self._refs):
            q = torch.round(w / s)
            ints.append((q - ref.to(q.device) if ref is not None else q).cpu())
        return empirical_bits(ints)

    def num_params(self) -> int:
        return sum(w.numel() for w in self.floats)

    # -- export / import of the integers --------------------------------------------------------
    @torch.no_grad()
    def export(self) -> list[QuantizedTensor]:
        """The integers and float32 steps, in ``self.names`` order."""
        out = []
        for w, s in zip(self.floats, self.steps()):
            out.append(QuantizedTensor(torch.round(w / s).to(torch.int64).cpu(), float(s)))
        return out

    @torch.no_grad()
    def load_exported(self, tensors: list[QuantizedTensor]) -> None:
        """Set weights and steps so the network runs with exactly these integers and steps."""
        for w, ls, t in zip(self.floats, self.log_steps, tensors):
            ls.copy_(torch.tensor(math.log(t.step)))
            w.copy_(t.ints.to(w.device, w.dtype) * torch.exp(ls))


def load_quantized(net: nn.Module, tensors: list[QuantizedTensor]) -> nn.Module:
    """Write dequantized integers into ``net``'s parameters (the decoder side); returns ``net``."""
    params = list(net.named_parameters())
    if len(params) != len(tensors):
        raise ValueError(f"network has {len(params)} tensors, file has {len(tensors)}")
    with torch.no_grad():
        for (n, p), t in zip(params, tensors):
            if tuple(p.shape) != tuple(t.ints.shape):
                raise ValueError(f"tensor {n}: shape {tuple(t.ints.shape)} in the file, {tuple(p.shape)} expected")
            p.copy_(t.dequantize())
    return net


def row_table_bits(v: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """What the file's table rows for the frames ``rows`` (a (n, 1, 1, 1) bool mask) of ``v``
    (n, C, h, w) cost, one row per channel, as the training estimate counts them: 8 bits per
    integer the row spans (``2·max|v| + 1``, at most :data:`TABLE_SPAN`), the span taken from the
    values at hand. Differentiable in the largest |v|, so the estimate sees what widening the
    integers costs in tables, which the logistic per-value bits do not. (A mask, not indexing: no
    data-dependent shapes, so no device synchronisation.)"""
    top = (v.abs() * rows.to(v.dtype)).amax(dim=(0, 2, 3))
    return 8.0 * (2.0 * top + 1.0).clamp_max(TABLE_SPAN).sum()


class QuantizedLatents(nn.Module):
    """Quantize activations that are stored in the file (HNeRV's frame embeddings).

    Per-channel learned step; straight-through rounding; rate estimate on the integers with uniform
    noise while training. A frame's latents are coded either as they are (*intra*) or as the
    difference to the previous frame's integers (*delta*): consecutive frames of a video have
    nearly equal embeddings (benchmark clip: 4.6 bits per value as they are, 1.0 as differences),
    so each mode has its own per-channel logistic prior scale.

    The step starts at 0.4, coarse: it grows only slowly while training, and a fit whose
    embeddings start fine spends its bits on them. On small frames, where an embedding value covers
    many pixels, that starves the weights: 48 frames at 128x72 at 0.05 bpp give 17.7 dB from a
    step of 0.05 (the embeddings alone cost 1.9x the target by epoch 16 and λ runs to its ceiling)
    and 25.1 dB from 0.4. At 320x180 the start makes little difference.

    After each forward, ``table_bits`` holds (intra, delta): what the table rows of the modes in
    that batch cost (:func:`row_table_bits`), for the caller to weigh into its rate estimate. The
    per-value logistic bits never see the tables, and without them a fit can learn a step that
    makes the integers span hundreds of values: the benchmark clip's 240 frames at 128x72 learned
    one channel's step down from 0.4 to 0.013, its embeddings coded at 1.5x their estimate
    (180 kbit against 124 kbit, the difference tables), the weights squeezed to 7 kbit to pay for
    them, and the file ended 45 % under its target at 21.8 dB.
    """

    def __init__(self, channels: int, init_step: float = 0.4):
        super().__init__()
        self.log_step = nn.Parameter(torch.full((channels,), math.log(init_step)))
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.log_scale_delta = nn.Parameter(torch.full((channels,), -1.0))
        for p in (self.log_step, self.log_scale, self.log_scale_delta):
            p._quant = True

    def step(self) -> torch.Tensor:
        return torch.exp(self.log_step)

    def forward(self, x: torch.Tensor, prev: torch.Tensor | None = None,
                delta: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x`` (B, C, h, w) floats → (dequantized, integer-valued latents, rate bits).

        ``prev`` (B, C, h, w): the dequantized latents of each frame's predecessor, and ``delta``
        (B,) bool: which frames are coded as the difference to it (the others intra). The
        predecessor is a constant here (no gradient): it is what the file will hold for it."""
        s = self.step().view(1, -1, 1, 1)
        z = x / s
        zq = ste_round(z)
        v = z + torch.empty_like(z).uniform_(-0.5, 0.5) if self.training else torch.round(z)
        if prev is None or delta is None:
            prev, delta = torch.zeros_like(v), torch.zeros(len(v), dtype=torch.bool)
        d = delta.view(-1, 1, 1, 1).to(v.device)
        v = v - torch.where(d, torch.round(prev.detach() / s), torch.zeros_like(v))
        # both scales always enter the graph (a zero gradient for the mode no frame uses), so
        # DistributedDataParallel sees every parameter used on every step
        ls = torch.where(d, self.log_scale_delta.view(1, -1, 1, 1), self.log_scale.view(1, -1, 1, 1)).expand_as(v)
        bits = logistic_bits(v, ls)
        self.table_bits = (row_table_bits(v, ~d), row_table_bits(v, d))
        return zq * s, zq, bits
