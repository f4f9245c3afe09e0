"""NeRV++ (Ghorbel et al., ICIP 2024): frame index → positional encoding → MLP stem → blocks.

Each block: a 1×1 projection, a separable-conv residual block, an upsampling block (conv →
PixelShuffle → GELU) and a separable-conv residual feed-forward, with a bilinear-interpolation skip
of the projection around the block. A 1×1 head with a sigmoid gives RGB. Everything is stored; the
input is just the frame's time, so there is nothing per frame in the file.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .frame_fit import FrameKind
from .hnerv import solve_width
from .layout import default_strides, leaky_sigmoid, round_up


@dataclass
class NeRVppConfig:
    height: int
    width: int
    strides: tuple[int, ...]
    c0: int  # width of the first block
    pe_freqs: int = 16  # positional encoding: sin/cos of base**l * pi * t, l < pe_freqs
    pe_base: float = 1.25
    mlp_dim: int = 64
    stem_ch: int = 16
    reduce: float = 1.2
    min_ch: int = 12

    def __post_init__(self):
        self.strides = tuple(int(s) for s in self.strides)

    @property
    def total_stride(self) -> int:
        return math.prod(self.strides)

    @property
    def padded(self) -> tuple[int, int]:
        S = self.total_stride
        return round_up(self.height, S), round_up(self.width, S)

    @property
    def grid(self) -> tuple[int, int]:
        H, W = self.padded
        return H // self.total_stride, W // self.total_stride

    def widths(self) -> list[int]:
        return [self.c0] + [max(self.min_ch, round(self.c0 / self.reduce ** (i + 1)))
                            for i in range(len(self.strides))]

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def positional_encoding(t: torch.Tensor, freqs: int, base: float) -> torch.Tensor:
    """t (B,) in [0, 1] → (B, 2·freqs)."""
    f = (base ** torch.arange(freqs, dtype=torch.float32, device=t.device)) * math.pi
    a = t.to(torch.float32)[:, None] * f[None, :]
    return torch.cat([torch.sin(a), torch.cos(a)], dim=1)


class _SepConv(nn.Module):
    """Depthwise 3×3 then pointwise: a residual branch of the NeRV++ block."""

    def __init__(self, c: int, hidden: int):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.pw1 = nn.Conv2d(c, hidden, 1)
        self.pw2 = nn.Conv2d(hidden, c, 1)

    def forward(self, x):
        return self.pw2(F.gelu(self.pw1(self.dw(x))))


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, s: int):
        super().__init__()
        self.s = s
        self.proj = nn.Conv2d(c_in, c_out, 1)
        self.res = _SepConv(c_out, c_out)
        self.up = nn.Conv2d(c_out, c_out * s * s, 3, padding=1)
        self.ff = _SepConv(c_out, 2 * c_out)

    def forward(self, x):
        p = self.proj(x)
        y = p + self.res(p)
        y = F.gelu(F.pixel_shuffle(self.up(y), self.s))
        y = y + self.ff(y)
        return y + F.interpolate(p, scale_factor=self.s, mode="bilinear", align_corners=False)


class NeRVpp(nn.Module):
    def __init__(self, cfg: NeRVppConfig):
        super().__init__()
        self.cfg = cfg
        gh, gw = cfg.grid
        self.mlp1 = nn.Linear(2 * cfg.pe_freqs, cfg.mlp_dim)
        self.mlp2 = nn.Linear(cfg.mlp_dim, cfg.stem_ch * gh * gw)
        w = cfg.widths()
        self.stem = nn.Conv2d(cfg.stem_ch, w[0], 1)
        self.blocks = nn.ModuleList(_Block(w[i], w[i + 1], s) for i, s in enumerate(cfg.strides))
        self.head = nn.Conv2d(w[-1], 3, 1)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """t (B,) frame times in [0, 1] → frames (B, 3, H_pad, W_pad) in [0, 1]."""
        gh, gw = self.cfg.grid
        z = positional_encoding(t, self.cfg.pe_freqs, self.cfg.pe_base)
        x = F.gelu(self.mlp2(F.gelu(self.mlp1(z)))).view(-1, self.cfg.stem_ch, gh, gw)
        x = self.stem(x)
        for b in self.blocks:
            x = b(x)
        return leaky_sigmoid(self.head(x))


def nervpp_params(cfg: NeRVppConfig) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in NeRVpp(cfg).parameters())


def nervpp_config(height: int, width: int, budget: int, strides: tuple[int, ...] | None = None) -> NeRVppConfig:
    strides = tuple(strides) if strides else default_strides(height, width)
    c0 = solve_width(lambda c: nervpp_params(NeRVppConfig(height, width, strides, c)), budget)
    return NeRVppConfig(height, width, strides, c0)


class NeRVppKind(FrameKind):
    """NeRV++ as a nervcodec kind: one network of the frame's time, nothing stored per frame.
    Four frames a step by default."""

    name = "nervpp"
    config = NeRVppConfig
    field_limits = {"c0": 4096, "pe_freqs": 64, "mlp_dim": 4096, "stem_ch": 4096, "min_ch": 4096}
    default_batch = 4
    preset_epochs = {"fast": 12, "medium": 30, "slow": 150}

    def build(self, cfg):
        return NeRVpp(cfg)

    def size(self, height, width, frames, params, group):
        return nervpp_config(height, width, params)
