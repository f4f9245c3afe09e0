"""NIRVANA (Maiya et al., CVPR 2023): one small network per group of frames, predicting patches.

The video is cut into groups of ``group`` frames. Each group's network maps a patch's coordinates
(time within the group, patch row, patch column; all in [-1, 1]) through SIREN layers (sine
activations, ω₀ = 30 on the first) to a small feature map, which an upsampling conv block (Conv 3×3
→ PixelShuffle(2) → GELU, repeated) turns into the ``patch``×``patch`` RGB patch. A group's network
starts from the previous group's weights, so consecutive groups differ little and the file stores
the later groups as integer residuals (see :mod:`models.inr.quant`). Networks are small and see
only their group's frames, which makes encoding fast and lets groups decode one after another.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layout import leaky_sigmoid, round_up


@dataclass
class NirvanaConfig:
    height: int
    width: int
    group: int = 16  # frames per group
    patch: int = 16
    hidden: int = 128  # SIREN width
    layers: int = 2  # SIREN layers before the feature projection
    feat_ch: int = 8
    up: int = 4  # upsampling factor of the conv block (power of two, divides patch)
    omega0: float = 30.0

    def __post_init__(self):
        if self.up < 1 or self.up & (self.up - 1) or self.patch % self.up:
            raise ValueError("up must be a power of two dividing the patch size")

    @property
    def padded(self) -> tuple[int, int]:
        return round_up(self.height, self.patch), round_up(self.width, self.patch)

    @property
    def patch_grid(self) -> tuple[int, int]:
        H, W = self.padded
        return H // self.patch, W // self.patch

    def to_dict(self) -> dict:
        return asdict(self)


class _Sine(nn.Module):
    def __init__(self, d_in: int, d_out: int, omega: float, first: bool):
        super().__init__()
        self.omega = omega
        self.lin = nn.Linear(d_in, d_out)
        bound = 1.0 / d_in if first else math.sqrt(6.0 / d_in) / omega  # SIREN initialisation
        with torch.no_grad():
            self.lin.weight.uniform_(-bound, bound)

    def forward(self, x):
        return torch.sin(self.omega * self.lin(x))


class NirvanaNet(nn.Module):
    def __init__(self, cfg: NirvanaConfig):
        super().__init__()
        self.cfg = cfg
        layers = [_Sine(3, cfg.hidden, cfg.omega0, True)]
        layers += [_Sine(cfg.hidden, cfg.hidden, 1.0, False) for _ in range(cfg.layers - 1)]
        self.siren = nn.Sequential(*layers)
        self.side = cfg.patch // cfg.up
        self.proj = nn.Linear(cfg.hidden, cfg.feat_ch * self.side * self.side)
        n_up = int(math.log2(cfg.up))
        self.ups = nn.ModuleList(nn.Conv2d(cfg.feat_ch, cfg.feat_ch * 4, 3, padding=1) for _ in range(n_up))
        self.head = nn.Conv2d(cfg.feat_ch, 3, 3, padding=1)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """coords (N, 3) → patches (N, 3, patch, patch) in [0, 1]."""
        x = self.proj(self.siren(coords)).view(-1, self.cfg.feat_ch, self.side, self.side)
        for conv in self.ups:
            x = F.gelu(F.pixel_shuffle(conv(x), 2))
        return leaky_sigmoid(self.head(x))


def patch_coords(cfg: NirvanaConfig, local_frames: torch.Tensor) -> torch.Tensor:
    """Coordinates of every patch of the given frames (indices within the group), frame-major."""
    gh, gw = cfg.patch_grid
    t = local_frames.to(torch.float32) * (2.0 / max(cfg.group - 1, 1)) - 1.0
    y = torch.linspace(-1.0, 1.0, gh) if gh > 1 else torch.zeros(1)
    x = torch.linspace(-1.0, 1.0, gw) if gw > 1 else torch.zeros(1)
    tt, yy, xx = torch.meshgrid(t, y, x, indexing="ij")
    return torch.stack([tt, yy, xx], dim=-1).reshape(-1, 3)


def assemble(cfg: NirvanaConfig, patches: torch.Tensor, n_frames: int) -> torch.Tensor:
    """(n·gh·gw, 3, P, P) patches → (n, 3, H_pad, W_pad) frames."""
    gh, gw = cfg.patch_grid
    P = cfg.patch
    x = patches.view(n_frames, gh, gw, 3, P, P).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(n_frames, 3, gh * P, gw * P)


def split_patches(cfg: NirvanaConfig, frames: torch.Tensor) -> torch.Tensor:
    """(n, 3, H_pad, W_pad) → (n·gh·gw, 3, P, P), the inverse of :func:`assemble`."""
    n = frames.shape[0]
    gh, gw = cfg.patch_grid
    P = cfg.patch
    x = frames.view(n, 3, gh, P, gw, P).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(n * gh * gw, 3, P, P)


def group_count(cfg: NirvanaConfig, frames: int) -> int:
    return -(-frames // cfg.group)


def nirvana_params(cfg: NirvanaConfig) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in NirvanaNet(cfg).parameters())
