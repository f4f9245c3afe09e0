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

import dataclasses
import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .control import Planner, RateControl, ThreadGovernor
from .distributed import broadcast_from_root, gather_to_root, segment, team
from .kind import InrKind
from .layout import leaky_sigmoid, pad_frames, psnr_from_mse, round_up
from .quant import QuantizedNet, QuantizedTensor
from .train import (
    PROBE_STEPS, FitOptions, Fitted, Interruptible, Progress, Schedule, adam, autocast, descend, target_bits,
)


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


def nirvana_config(height: int, width: int, frames: int, size: int, group: int = 16) -> NirvanaConfig:
    """NIRVANA for ``size`` parameters over the whole clip. Later groups are residuals that cost a
    fraction of a fresh network, so each group's network gets a share larger than 1/G. The SIREN
    widens with the share; where even the narrowest network (hidden 16) with 8 feature channels is
    over it (short or small clips), the feature channels drop to 4 (the upsampling convolutions
    are most of a small network's parameters), so the budget holds instead of being tripled."""
    g = group_count(NirvanaConfig(height, width, group=group), frames)
    per_group = size / (1 + 0.35 * (g - 1))
    feat = 8 if nirvana_params(NirvanaConfig(height, width, group=group, hidden=16)) <= per_group else 4
    hidden = 16
    while hidden < 512 and nirvana_params(NirvanaConfig(height, width, group=group, hidden=hidden + 8,
                                                        feat_ch=feat)) <= per_group:
        hidden += 8
    return NirvanaConfig(height, width, group=group, hidden=hidden, feat_ch=feat)


# ---------------------------------------------------------------------------------------------
# Training: a chain of group networks
# ---------------------------------------------------------------------------------------------


@dataclass
class NirvanaOptions:
    """NIRVANA's own training options (``FitOptions(model=NirvanaOptions(...))``)."""

    burn_in: int = 2  # on several ranks: groups a rank trains before its segment, not kept
    burn_epochs: int | None = None  # epochs of each burn-in group (None: half of the epochs)
    target_psnr: float | None = None  # a group stops after the first epoch at this PSNR (dB)
    start_epochs: int | None = None  # epochs of the common start (None: the epochs; 0: none)
    first_epochs: int | None = None  # epochs of the clip's first group (None: the epochs)

    def burn_group_epochs(self, epochs: int) -> int:
        """Epochs a burn-in group trains: ``burn_epochs``, by default half of ``epochs``."""
        return max(1, epochs // 2) if self.burn_epochs is None else self.burn_epochs


def _train_patches(qnet: QuantizedNet, coords: torch.Tensor, tiles: torch.Tensor, frames: int, pixels: int,
                   opts: FitOptions, tick: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None],
                   rate: RateControl | None = None, stop: "Interruptible | None" = None,
                   budget: float | None = None, governor: ThreadGovernor | None = None,
                   target_psnr: float | None = None) -> tuple[float, int]:
    """Up to ``opts.epochs`` passes of NIRVANA training over one set of patches, ``frames`` frames'
    worth of patches per step; ``tick(loss, mse, bits)`` after each pass. With ``target_psnr`` it
    stops after the first pass whose PSNR (of the mean squared error over the pass, with the
    quantized weights the pass trained) reaches it: a group that already looks like its
    predecessor costs a pass or two, and the time goes to the groups that need it. The learning
    rate follows the schedule of the planned passes either way. ``rate`` steers λ (else
    ``opts.lam``), ``budget`` (seconds) caps the passes (:class:`~models.inr.control.Planner`),
    ``stop`` ends training at Ctrl-C. Returns (the last pass's mean squared error, passes run)."""
    n_patches = len(coords)
    per_step = max(1, min(n_patches, opts.batch * n_patches // max(frames, 1)))
    steps = -(-n_patches // per_step)
    rate = rate or RateControl(opts.lam, None)
    opt = adam(list(qnet.parameters()), opts)
    planner = Planner(opts.epochs, budget, reserve=0.0)
    sched = Schedule(opt, opts.epochs * steps, opts.warmup)
    qnet.train()
    epoch_mse, epoch = math.inf, 0
    while epoch < planner.planned and not (stop and stop.requested):
        perm = torch.randperm(n_patches, device=coords.device)
        se = torch.zeros((), device=coords.device)
        for b in range(steps):
            sel = perm[b * per_step:(b + 1) * per_step]
            with autocast(opts):
                out = qnet(coords[sel])
            mse = F.mse_loss(out.float(), tiles[sel])
            bits = qnet.rate_bits()
            loss = descend(opt, sched, mse, bits, rate.lam / pixels)
            if governor is not None:
                governor.step()
            se = se + mse.detach() * len(sel)
            if epoch == 0 and b + 1 == PROBE_STEPS and budget is not None:
                sched.replan(planner.after_steps(b + 1, steps) * steps, first=True)
        epoch += 1
        epoch_mse = float(se) / n_patches
        tick(loss, mse, bits)
        if target_psnr is not None and psnr_from_mse(epoch_mse) >= target_psnr:
            break
        if rate.target is not None:
            rate.after_epoch(qnet.coded_bits())
        sched.replan(planner.after_epoch(epoch) * steps)
    qnet.eval()
    return epoch_mse, epoch


def _start_frames(cfg: NirvanaConfig, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The frames the common start learns from: one per group, at a within-group position that
    walks through the group (frame ``g·group + g mod group``), so every part of the clip and
    every time coordinate is seen. Returns (clip indices, within-group indices)."""
    G = group_count(cfg, T)
    local = torch.tensor([min(g % cfg.group, T - 1 - g * cfg.group) for g in range(G)])
    return torch.arange(G) * cfg.group + local, local


def _fit_groups(kind: InrKind, target: torch.Tensor, cfg: NirvanaConfig, opts: FitOptions, progress: Progress | None,
                governor: ThreadGovernor) -> Fitted | None:
    """One network per group of frames, each warm-started from the previous group's integers and
    trained with the rate of its residual against them.

    The first group starts from the *common start*: the seeded network trained for the same
    number of epochs on one frame from every group (:func:`_start_frames`), so it already knows
    the whole clip roughly. A team of several ranks cuts the groups into contiguous segments (one
    per rank); every rank computes the same common start. A rank whose segment begins inside the
    clip first trains the ``burn_in`` groups before it from that start (a *burn-in* it does
    not keep): NIRVANA keeps improving along its chain, and a segment begun from the start itself
    lost 4.4 dB on its first group and about four groups' quality in all on the benchmark clip. That
    first kept group is trained with the rate of its integers themselves (the file cannot refer to
    a burn-in network) and stored directly, unless a residual against the previous segment's last
    group codes smaller. Each group is seeded by its index; rank 0 gathers the groups in order.

    The kind's options (:class:`NirvanaOptions`) set the common start's epochs (0: none, the chain
    begins from the seeded network), the first group's, and a PSNR at which a group stops
    early (:func:`_train_patches`). The common start is the default because the distributed
    chains begin from it; a one-process encode may reach its first group's quality sooner
    without it (``start_epochs=0`` with more ``first_epochs``: the results suite's NIRVANA run)."""
    dev = opts.device
    tm = team()
    T, _, H, W = target.shape
    Hp, Wp = cfg.padded
    padded = pad_frames(target, Hp, Wp)
    G = group_count(cfg, T)
    mo: NirvanaOptions = opts.model
    burn_epochs = mo.burn_group_epochs(opts.epochs)
    mine = segment(G, tm, mo.burn_in * burn_epochs / opts.epochs)
    # a rank whose segment starts inside the clip first trains the groups before it (the burn-in,
    # not kept), so its first kept group starts from a network warmed along the chain
    plan = [*range(max(0, mine.start - mo.burn_in), mine.start), *mine] if len(mine) else []
    start_epochs = opts.epochs if mo.start_epochs is None else mo.start_epochs
    first_epochs = opts.epochs if mo.first_epochs is None else mo.first_epochs

    def group_epochs(g: int) -> int:
        return burn_epochs if g not in mine else first_epochs if g == 0 else opts.epochs

    total = start_epochs + sum(group_epochs(g) for g in plan)
    done: list[dict] = []
    step = 0
    t0 = time.perf_counter()
    # rate: the first kept group is coded whole, later ones as residuals that cost a fraction of a
    # network, so the first gets the share make_config sized it by and the rest split what is left
    clip_bits = target_bits(opts, T * H * W)
    rate = RateControl(opts.lam, None)
    spent = 0.0

    def group_target(g: int) -> float | None:
        if clip_bits is None:
            return None
        left = [k for k in mine if k >= g]
        if g == mine.start:
            return clip_bits * len(mine) / G / (1 + 0.35 * (len(mine) - 1)) if len(mine) else None
        return max(clip_bits * len(mine) / G - spent, 0.0) / max(1, len(left))

    def group_budget(g: int | None) -> float | None:
        """A share of the time left, in proportion to the epochs this group and the rest plan."""
        if opts.time_budget is None:
            return None
        rest = [k for k in plan if g is None or k >= g]
        weight = sum(group_epochs(k) for k in rest) + (start_epochs if g is None else 0)
        mine_w = start_epochs if g is None else group_epochs(g)
        return max(0.0, opts.time_budget - (time.perf_counter() - t0)) * mine_w / max(1, weight)

    def ticker(g: int | str, pixels: int):
        def tick(loss, mse, bits):
            nonlocal step
            step += 1
            if progress:
                progress(step, total, {"loss": float(loss.detach()), "psnr": psnr_from_mse(float(mse.detach())),
                                       "bpp": float(bits.detach()) / pixels, "group": g, "lam": rate.lam})
        return tick

    qnet = QuantizedNet(NirvanaNet(cfg), opts.bits).to(dev)  # seeded in ``fit``: the same on every rank
    idx, local = _start_frames(cfg, T)
    torch.manual_seed(opts.seed * 100003)
    with Interruptible(tm) as stop:
        if start_epochs:
            passes = _train_patches(qnet, patch_coords(cfg, local).to(dev), split_patches(cfg, padded[idx]).to(dev),
                                    len(idx), len(idx) * H * W,
                                    dataclasses.replace(opts, epochs=start_epochs),
                                    ticker("start", len(idx) * H * W), stop=stop, budget=group_budget(None),
                                    governor=governor)[1]
            step += start_epochs - passes
        # every rank computed the same start; rank 0's copy makes sure of it to the last bit, and
        # every chain (one or many) begins from exactly these quantized values
        qnet.load_exported(broadcast_from_root(qnet.export(), tm))
        prev: list[QuantizedTensor] | None = None
        for g in plan:
            torch.manual_seed(opts.seed * 100003 + g + 1)
            lo, hi = g * cfg.group, min(T, (g + 1) * cfg.group)
            n = hi - lo
            if prev is not None:
                qnet.load_exported(prev)
            # the rate is measured against the previous group, unless the file cannot hold that
            # reference: a segment's first kept group follows a burn-in group only this rank has
            qnet.set_reference(None if prev is None or g == mine.start else [t.ints.to(dev) for t in prev])
            pixels = n * H * W
            planned = group_epochs(g)
            rate.retarget(group_target(g) if g in mine else None)
            mse, passes = _train_patches(qnet, patch_coords(cfg, torch.arange(n)).to(dev),
                                         split_patches(cfg, padded[lo:hi]).to(dev), n, pixels,
                                         dataclasses.replace(opts, epochs=planned), ticker(g, pixels),
                                         rate=rate, stop=stop, budget=group_budget(g), governor=governor,
                                         target_psnr=mo.target_psnr)
            step += planned - passes  # the progress skips what was not needed
            weights = qnet.export()
            prev = weights
            if g not in mine:
                continue
            frames = kind.render(cfg, kind.decoder(cfg, weights), count=T, frames=range(lo, hi), device=dev)
            est = float(qnet.rate_bits(noise=False).detach())
            spent += qnet.coded_bits()
            done.append({"group": g, "weights": weights, "frames": frames, "est": est,
                         "hist": {"group": g, "rank": tm.rank, "psnr": psnr_from_mse(mse), "epochs": passes,
                                  "lam": rate.lam, "seconds": time.perf_counter() - t0}})
    parts = gather_to_root(done, tm)
    if parts is None:
        return None
    every = sorted((d for part in parts for d in part), key=lambda d: d["group"])
    if [d["group"] for d in every] != list(range(G)):
        raise RuntimeError("distributed NIRVANA: the gathered groups do not cover the clip")
    return Fitted(kind.name, cfg, [d["weights"] for d in every], None, sum(d["est"] for d in every),
                  torch.cat([d["frames"] for d in every]), history=[d["hist"] for d in every],
                  interrupted=stop.requested)


class Nirvana(InrKind):
    """NIRVANA as a nervcodec kind: one network per group of frames (a ``W`` chunk each);
    data-parallel ranks train groups of their own instead of sharing a batch."""

    name = "nirvana"
    config = NirvanaConfig
    field_limits = {"group": 1 << 16, "patch": 1024, "hidden": 4096, "layers": 32, "feat_ch": 256, "up": 64}
    ranks_share_batch = False
    preset_epochs = {"fast": 15, "medium": 40, "slow": 150}
    options = NirvanaOptions

    def build(self, cfg):
        return NirvanaNet(cfg)

    def size(self, height, width, frames, params, group):
        return nirvana_config(height, width, frames, params, group)

    def weight_groups(self, cfg, frames):
        return group_count(cfg, frames)

    def group_frames(self, cfg, frames, g):
        return range(g * cfg.group, min(frames, (g + 1) * cfg.group))

    def group_of(self, cfg, index):
        return index // cfg.group

    def forward_frame(self, cfg, net, index, count, emb, device):
        return assemble(cfg, net(patch_coords(cfg, torch.tensor([index % cfg.group])).to(device)), 1)

    def fit(self, target, cfg, opts, progress, governor):
        return _fit_groups(self, target, cfg, opts, progress, governor)

    def probe(self, target, cfg, opts, frames):
        qnet = QuantizedNet(NirvanaNet(cfg), opts.bits).to(opts.device)
        tiles = split_patches(cfg, pad_frames(target[:1], *cfg.padded)).to(opts.device)
        n = len(tiles)
        per_step = max(1, min(n * min(frames, cfg.group), opts.batch * n))
        coords = patch_coords(cfg, torch.zeros(1)).to(opts.device).repeat(-(-per_step // n), 1)[:per_step]
        tiles = tiles.repeat(-(-per_step // n), 1, 1, 1)[:per_step]
        opt = adam(list(qnet.parameters()), opts)

        def one():
            with autocast(opts):
                out = qnet(coords)
            loss = F.mse_loss(out.float(), tiles) + 1e-9 * qnet.rate_bits()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return one, -(-min(frames, cfg.group) * n // per_step)

    def planned_epochs(self, cfg, opts, frames):
        mo: NirvanaOptions = opts.model or NirvanaOptions()
        G = group_count(cfg, frames)
        start = opts.epochs if mo.start_epochs is None else mo.start_epochs
        first = opts.epochs if mo.first_epochs is None else mo.first_epochs
        return (start * G / frames + first + opts.epochs * (G - 1)) * 1.05  # the start trains on one frame a group

    def stops_early(self, opts):
        return opts.model is not None and opts.model.target_psnr is not None
