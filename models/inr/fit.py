"""Fitting a video INR with quantization in the loop, and rendering frames from stored integers.

``fit(frames, kind, config, options)`` trains one of the three networks on a clip with
``loss = MSE + λ · (estimated bits per pixel)`` and returns a :class:`Fitted`: the integer weights
(and HNeRV's integer embeddings) with their float32 steps — exactly what a file stores — plus the
frames rendered *from those integers* by the same functions the decoder calls, so the encoder's
final evaluation and the decoded file agree by construction.
"""
from __future__ import annotations

import collections
import contextlib
import copy
import dataclasses
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .distributed import all_sum, barrier, broadcast_from_root, gather_to_root, segment, share, team
from .control import Planner, RateControl, ThreadGovernor
from .hnerv import HNeRVDecoder, HNeRVEncoder, delta_coded
from .layout import crop_frames, pad_frames, psnr_from_mse, to_uint8
from .nervpp import NeRVpp
from .nirvana import NirvanaConfig, NirvanaNet, assemble, group_count, patch_coords, split_patches
from .quant import QuantizedLatents, QuantizedNet, QuantizedTensor, empirical_bits, load_quantized

KINDS = ("hnerv", "nervpp", "nirvana")
Progress = Callable[[int, int, dict], None]


@dataclass
class FitOptions:
    epochs: int = 100  # passes over the clip (NIRVANA: over each group's frames)
    lr: float = 2e-3
    lam: float = 0.02  # rate weight: loss = mse + lam * bpp
    batch: int | None = None  # frames per step (NIRVANA: frames' worth of patches); None: 1, NeRV++ 4
    warmup: float = 0.1  # fraction of the steps with a linear warm-up, then cosine decay
    seed: int = 0
    device: str = "cpu"
    bits: int = 8  # initial weight precision (the step learns afterwards)
    quant_lr_mult: float = 5.0  # learning-rate factor of the steps and prior scales
    burn_in: int = 2  # NIRVANA on several ranks: groups a rank trains before its segment, not kept
    burn_epochs: int | None = None  # epochs of each burn-in group (None: half of ``epochs``)
    target_psnr: float | None = None  # NIRVANA: a group stops after the first epoch at this PSNR (dB)
    start_epochs: int | None = None  # NIRVANA: epochs of the common start (None: ``epochs``; 0: none)
    first_epochs: int | None = None  # NIRVANA: epochs of the clip's first group (None: ``epochs``)
    target_bpp: float | None = None  # steer λ (from ``lam``) so the file lands near this bpp
    overhead_bits: float = 0.0  # bits the file spends outside the rate estimate (header, tables)
    time_budget: float | None = None  # seconds: fit the epochs into this (planned from measured steps)
    precision: str = "auto"  # training forward: "fp32", "bf16" (autocast) or "auto" (bf16 on native-bf16 CPUs)
    adapt_threads: bool = False  # CPU: switch between torch's threads and one as the load changes

    def for_model(self, kind: str, ranks: int = 1) -> "FitOptions":
        """These options with the model's default batch filled in (when ``batch`` is None): one
        frame per step, NeRV++ four; HNeRV / NeRV++ on ``ranks`` data-parallel ranks get at least
        one frame per rank (a smaller batch would have every rank compute the same frame).

        HNeRV learns far more per second from one frame per step than from four (benchmark clip,
        12 epochs at lr 2e-3: 25.5 dB at 0.035 bpp vs 23.9 dB at 0.041 bpp, 1.4x the time)."""
        if self.batch is not None:
            return self
        batch = 4 if kind == "nervpp" else 1
        if kind != "nirvana":  # NIRVANA's ranks train groups of their own, not shares of a batch
            batch = max(batch, ranks)
        return dataclasses.replace(self, batch=batch)

    def burn_group_epochs(self) -> int:
        """Epochs a burn-in group trains: ``burn_epochs``, by default half of ``epochs``."""
        return max(1, self.epochs // 2) if self.burn_epochs is None else self.burn_epochs


@dataclass
class Fitted:
    """What a file stores about a trained network, and the frames it renders."""

    kind: str
    config: object  # HNeRVConfig | NeRVppConfig | NirvanaConfig
    groups: list[list[QuantizedTensor]]  # weights: one list (HNeRV, NeRV++) or one per group
    emb: list[QuantizedTensor] | None = None  # HNeRV: one per channel, ints (T, h, w)
    est_bits: float = 0.0  # the rate estimate the training minimised (at the end)
    frames: torch.Tensor | None = None  # uint8 (T, H, W, 3), rendered from the integers
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)
    interrupted: bool = False  # training stopped early by Ctrl-C; the file holds the network as it was


def build_net(kind: str, cfg) -> nn.Module:
    """The decoder-side network of ``kind`` (what the file's weights load into)."""
    if kind == "hnerv":
        return HNeRVDecoder(cfg)
    if kind == "nervpp":
        return NeRVpp(cfg)
    if kind == "nirvana":
        return NirvanaNet(cfg)
    raise ValueError(f"unknown model kind {kind!r}")


def frame_times(idx: torch.Tensor, count: int) -> torch.Tensor:
    return idx.to(torch.float32) / max(count - 1, 1)


# ---------------------------------------------------------------------------------------------
# Rendering (the decoder's half; the encoder's final evaluation calls the same functions)
# ---------------------------------------------------------------------------------------------


def dequantize_embeddings(emb: list[QuantizedTensor], frames: slice | None = None) -> torch.Tensor:
    """Per-channel integer embeddings → float (n, C, h, w)."""
    parts = [(t.ints if frames is None else t.ints[frames]).to(torch.float32)
             * torch.tensor(t.step, dtype=torch.float32) for t in emb]
    return torch.stack(parts, dim=1)


@torch.no_grad()
def render(kind: str, cfg, net: nn.Module, *, count: int, frames: range,
           emb: torch.Tensor | None = None, device: str = "cpu") -> torch.Tensor:
    """uint8 frames (n, H, W, 3) for ``frames`` (indices into the clip; NIRVANA: into the group).

    ``emb``: HNeRV's dequantized embeddings of exactly those frames. One forward pass per frame,
    so a frame's pixels never depend on which frames are decoded beside it (batched convolutions
    may round differently from single ones); on a CPU this is no slower than batching.
    """
    net = net.to(device).eval()
    out = []
    for k, i in enumerate(frames):
        sel = torch.tensor([i])
        if kind == "hnerv":
            y = net(emb[k:k + 1].to(device))
        elif kind == "nervpp":
            y = net(frame_times(sel, count).to(device))
        else:
            y = assemble(cfg, net(patch_coords(cfg, sel).to(device)), 1)
        out.append(to_uint8(crop_frames(y, cfg.height, cfg.width)).cpu())
    return torch.cat(out) if out else torch.zeros((0, cfg.height, cfg.width, 3), dtype=torch.uint8)


def decoder_from(kind: str, cfg, tensors: list[QuantizedTensor]) -> nn.Module:
    return load_quantized(build_net(kind, cfg), tensors)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


class _Schedule:
    """Linear warm-up over ``warmup`` of the steps, then cosine decay to zero at ``total`` steps.
    ``total`` may change while training (a time budget re-plans it); the warm-up length is fixed
    by the first plan."""

    def __init__(self, opt: torch.optim.Optimizer, total: int, warmup: float):
        self.total = max(1, total)
        self.warm = max(1, int(self.total * warmup))
        self.warmup = warmup
        self.sched = torch.optim.lr_scheduler.LambdaLR(opt, self._factor)

    def _factor(self, step: int) -> float:
        if step < self.warm:
            return (step + 1) / self.warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - self.warm) / max(1, self.total - self.warm))))

    def replan(self, total: int, first: bool = False) -> None:
        self.total = max(1, total)
        if first:
            self.warm = max(1, int(self.total * self.warmup))

    def step(self) -> None:
        self.sched.step()

    @property
    def base_lrs(self) -> list[float]:
        return self.sched.base_lrs

    @base_lrs.setter
    def base_lrs(self, v: list[float]) -> None:
        self.sched.base_lrs = v


#: Training steps over which the quantization steps' learning rate (``quant_lr_mult``) was set.
#: A fit of fewer steps gives them more, by the square root of the shortfall: a step must travel
#: about as far in log space however short the fit (from 8 bits a weight at the start to about 3),
#: and with 240 steps (8 frames, 30 epochs) it could not: the file ended at 0.081 bpp for a 0.05
#: target with λ at its ceiling; scaled by the square root, 0.049 (fully proportional: 0.044).
QUANT_REF_STEPS = 1000

#: Training steps after which the coded bits have answered a change of λ (about; the rate
#: control's lead is this less the steps between its updates, an epoch or fewer, in units of
#: those, :class:`~models.inr.control.RateControl`). Measured on
#: the second clip's first 8 frames at 320x180, 0.05 bpp asked, where an epoch is 8 steps: without
#: a lead λ rose to 0.40 while the bits were still falling, they ended 42 % under the target and
#: never came back as λ fell to 8e-4; with a lead for 40 / 80 / 160 steps the file ended −27 /
#: −12 / +9 % off. A fit steered at most every this many steps (one frame a step: a clip of at
#: least 160 frames) gets no lead, so its fit is unchanged.
RATE_LAG_STEPS = 160
#: Times at least the rate control steers λ in a fit: a fit planned for fewer epochs than this
#: (a time budget on large frames) is steered within its epochs too, every ``planned steps /
#: RATE_UPDATES`` steps. λ starts far below where it ends (:data:`codec.nerv.START_LAM`), and 240
#: frames at 640x360, whose 9-minute cap planned 12 epochs, ended 34 % over the target with λ
#: still rising once an epoch.
RATE_UPDATES = 50


def _steer_every(rate: RateControl, planned_steps: int, steps_per_epoch: int) -> int:
    """Steps between the rate control's updates for a fit of ``planned_steps`` (at most an epoch);
    sets the controller's lead for that interval (:data:`RATE_LAG_STEPS`)."""
    every = max(1, min(steps_per_epoch, planned_steps // RATE_UPDATES))
    rate.lead = max(0.0, RATE_LAG_STEPS / every - 1)
    return every


def _adam(params: list[nn.Parameter], opts: FitOptions, steps: int | None = None) -> torch.optim.Adam:
    """Adam; the scalar quantization parameters (log steps, log prior scales) learn ``quant_lr_mult``
    times faster than the weights -- they are few, scale-free, and set the rate -- and faster still
    in a fit of fewer than :data:`QUANT_REF_STEPS` ``steps``."""
    scalars = [p for p in params if p.ndim <= 1 and p.numel() <= 4096 and getattr(p, "_quant", False)]
    ids = {id(p) for p in scalars}
    rest = [p for p in params if id(p) not in ids]
    mult = opts.quant_lr_mult * (max(1.0, QUANT_REF_STEPS / steps) ** 0.5 if steps else 1.0)
    return torch.optim.Adam([{"params": rest}, {"params": scalars, "lr": opts.lr * mult}], lr=opts.lr)


def _descend(opt, sched, mse: torch.Tensor, bits: torch.Tensor, lam_per_bit: float) -> torch.Tensor:
    """One optimisation step on ``mse + λ · bits / pixels``; returns the loss."""
    loss = mse + lam_per_bit * bits
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return loss


def _to_target(frames) -> torch.Tensor:
    """uint8 (T, H, W, 3) numpy/tensor → float (T, 3, H, W) in [0, 1]."""
    x = torch.as_tensor(frames)
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError("frames must be uint8 (T, H, W, 3)")
    return x.permute(0, 3, 1, 2).to(torch.float32) / 255.0


def fit(frames, kind: str, cfg, opts: FitOptions = FitOptions(), progress: Progress | None = None) -> Fitted | None:
    """Train ``kind`` with config ``cfg`` on uint8 frames (T, H, W, 3); see the module docstring.

    Inside a torch.distributed process group every rank calls this with the same arguments and
    the work is shared (:mod:`models.inr.distributed`); rank 0 gets the result, the others None.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; choose from {', '.join(KINDS)}")
    torch.manual_seed(opts.seed)
    opts = resolve_precision(opts.for_model(kind, team().size))
    target = _to_target(frames)
    if (target.shape[2], target.shape[3]) != (cfg.height, cfg.width):
        raise ValueError("config size does not match the frames")
    t0 = time.perf_counter()
    governor = ThreadGovernor(torch.get_num_threads() if opts.adapt_threads and opts.device.startswith("cpu")
                              and team().size == 1 else 1)
    try:
        if kind == "nirvana":
            res = _fit_nirvana(target, cfg, opts, progress, governor)
        else:
            res = _fit_global(target, kind, cfg, opts, progress, governor)
    finally:
        governor.close()
    if res is not None:
        res.seconds = time.perf_counter() - t0
    # every rank leaves training together: a rank that tore down its process group while another
    # was still rendering sometimes aborted (SIGABRT) on the way out
    barrier(team())
    return res


def _autocast(opts: FitOptions):
    """The training forward's precision context: bf16 autocast (convolutions and matrix products
    in bfloat16, everything else, the rate estimate and the quantizer included, in float32) or
    none. Only training runs in it: the final evaluation and the decoder render in float32, so the
    file and what it decodes to are exactly as without it; bf16 only changes the gradients' noise.
    ``auto`` is resolved by :func:`fit` before training."""
    if opts.precision == "bf16":
        return torch.autocast(device_type=opts.device.split(":")[0], dtype=torch.bfloat16)
    return contextlib.nullcontext()


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16): there bf16 training
    steps run ~1.5x faster (240 frames at 320x180, HNeRV: 41 vs 63 ms a step on 2 cores); elsewhere
    bf16 is emulated and slower. Read from the CPU's flags, so the choice is the same on every run."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return ("avx512_bf16" in flags or "amx_bf16" in flags) and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def resolve_precision(opts: FitOptions) -> FitOptions:
    """``precision="auto"`` → "bf16" on a CPU with native bfloat16 (:func:`native_bf16`), else "fp32"
    (CUDA included: its float32 path is what the CUDA checks measured)."""
    if opts.precision != "auto":
        return opts
    return dataclasses.replace(opts, precision="bf16" if opts.device.startswith("cpu") and native_bf16() else "fp32")


#: Steps timed before a time budget makes its first plan.
_PROBE_STEPS = 3


def _target_bits(opts: FitOptions, pixels: int) -> float | None:
    """The rate estimate's target: the file's bits at ``target_bpp`` less what it spends elsewhere."""
    if opts.target_bpp is None:
        return None
    return max(opts.target_bpp * pixels - opts.overhead_bits, 0.05 * opts.target_bpp * pixels)


class _Interruptible:
    """Ctrl-C while training stops training instead of the program: ``requested`` turns True and
    the fit finishes with the network as it is (quantized, evaluated and packed as usual), so a long
    encode keeps its work. A second Ctrl-C, while that finishing runs, interrupts as usual.
    Only for a one-process fit: under torchrun the launcher stops every rank."""

    def __init__(self, tm):
        self.active = tm.size == 1 and threading.current_thread() is threading.main_thread()
        self.requested = False
        self._old = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\ninterrupted: finishing the file with the network trained so far (Ctrl-C again to abandon)",
              file=sys.stderr, flush=True)

    def __enter__(self):
        if self.active:
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self.active:
            signal.signal(signal.SIGINT, self._old)
        return False


class _Rollback:
    """Undo a collapse: when an epoch's training PSNR falls ``drop`` dB below the best of the last
    ``window`` kept epochs, reload the network and optimizer state of that epoch and halve the
    learning rate.

    Why: with one frame per step HNeRV now and then collapses in one epoch at the peak learning
    rate (benchmark clip, lr 3e-3: 29 dB at epoch 27, 13 dB at epoch 32 with the rate estimate
    falling from 0.037 to 0.014 bpp, and it never recovered); the gradual trade of quality for
    rate the loss asks for moves far less than ``drop`` in an epoch. Every rank of a team sees the
    same (summed) PSNR, so all of them roll back together.

    Only the last ``window`` epochs count as the reference: while the rate control
    raises λ, PSNR falls by design, a fraction of a dB an epoch, and measured against the best
    epoch ever that decline once read as a collapse and undid the rate control's work (48 frames
    of the second clip at 128x72: 23.0 dB to 20.1 dB over nine epochs as λ rose to 3.5, rolled
    back to the state at 0.079 bpp, and the file ended 57 % over its target)."""

    def __init__(self, module: nn.Module, opt: torch.optim.Optimizer, sched, drop: float = 3.0, window: int = 3):
        self.module, self.opt, self.sched, self.drop = module, opt, sched, drop
        # (PSNR, network state, optimizer state) of the last ``window`` kept epochs
        self.recent: collections.deque[tuple[float, dict, dict]] = collections.deque(maxlen=window)

    def __call__(self, psnr: float) -> bool:
        """Record an epoch's PSNR; True if it rolled back (to the best of the recent epochs)."""
        best = max(self.recent, key=lambda r: r[0], default=None)
        if best is None or psnr > best[0] - self.drop:
            self.recent.append((psnr, {k: v.detach().clone() for k, v in self.module.state_dict().items()},
                                copy.deepcopy(self.opt.state_dict())))
            return False
        self.module.load_state_dict(best[1])
        lrs = [g["lr"] for g in self.opt.param_groups]
        self.opt.load_state_dict(copy.deepcopy(best[2]))
        for g, lr in zip(self.opt.param_groups, lrs):
            g["lr"] = lr * 0.5
        self.sched.base_lrs = [b * 0.5 for b in self.sched.base_lrs]
        return True


class _Step(nn.Module):
    """One training forward of HNeRV / NeRV++ as a single module, so DistributedDataParallel can
    wrap it: ``(input, embedding-rate scale, frame indices) → (frames, rate in bits)``.

    HNeRV's embedding rate is scored the way the file codes it: a frame inside a run
    (:data:`~models.inr.hnerv.EMB_RUN`) as the difference to its predecessor's integers. The
    predecessor's embedding is the one remembered from the last time that frame was trained (a
    plain attribute, not a buffer: DDP would overwrite it with rank 0's); until a frame has been
    seen, its successor is scored intra."""

    def __init__(self, kind: str, qnet: QuantizedNet, enc: nn.Module | None, embq: QuantizedLatents | None,
                 frames: int = 0):
        super().__init__()
        self.kind, self.qnet, self.enc, self.embq = kind, qnet, enc, embq
        self.frames = frames
        self.memory: torch.Tensor | None = None  # (T, C, h, w) dequantized embeddings
        self.seen: torch.Tensor | None = None  # (T,) bool

    @torch.no_grad()
    def coded_embedding_bits(self) -> float:
        """What the embeddings remembered so far cost under the coder's own tables, coded as the
        file codes them (intra at a run's start, else the difference to the predecessor)."""
        if self.memory is None:
            return 0.0
        ints = torch.round(self.memory / self.embq.step().view(1, -1, 1, 1)).cpu()
        delta = torch.tensor([delta_coded(t) for t in range(len(ints))])
        vals = ints.clone()
        vals[1:] -= ints[:-1] * delta[1:].view(-1, 1, 1, 1)
        return empirical_bits([vals[~delta], vals[delta]])

    def forward(self, x: torch.Tensor, emb_scale: float, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind != "hnerv":
            return self.qnet(x), self.qnet.rate_bits()
        # on a CPU the encoder runs in float32 even inside bf16 autocast: its strided convolutions
        # were slower in bf16 there (320x180, one thread: 16.3 vs 20.2 ms a frame, forward and
        # backward); elsewhere it follows the step's precision
        cpu = x.device.type == "cpu"
        with torch.autocast(device_type="cpu", enabled=False) if cpu else contextlib.nullcontext():
            z = self.enc(x)
        if self.memory is None:
            self.memory = torch.zeros((self.frames, *z.shape[1:]), device=z.device)
            self.seen = torch.zeros(self.frames, dtype=torch.bool)
        before = (idx - 1).clamp_min(0)
        delta = torch.tensor([delta_coded(int(t)) for t in idx]) & self.seen[before]
        emb, _, ebits = self.embq(z, self.memory[before.to(z.device)], delta)
        self.memory[idx.to(z.device)] = emb.detach()
        self.seen[idx] = True
        return self.qnet(emb), self.qnet.rate_bits() + ebits * emb_scale


def _fit_global(target: torch.Tensor, kind: str, cfg, opts: FitOptions, progress: Progress | None,
                governor: ThreadGovernor) -> Fitted | None:
    """HNeRV and NeRV++: one network for the whole clip, mini-batches of frames.

    With a team of several ranks each global batch is split among them and the step is wrapped
    in DistributedDataParallel; the loss of each rank is weighted so that the averaged gradient
    is exactly the one-process gradient of the whole batch."""
    dev = opts.device
    tm = team()
    T, _, H, W = target.shape
    Hp, Wp = cfg.padded
    padded = pad_frames(target, Hp, Wp)
    qnet = QuantizedNet(build_net(kind, cfg), opts.bits).to(dev)
    params = list(qnet.parameters())
    enc = embq = None
    if kind == "hnerv":
        enc = HNeRVEncoder(cfg).to(dev)
        embq = QuantizedLatents(cfg.emb_ch).to(dev)
        params += list(enc.parameters()) + list(embq.parameters())
    step_net: nn.Module = _Step(kind, qnet, enc, embq, T)
    if tm.size > 1:
        import warnings

        from torch.nn.parallel import DistributedDataParallel

        # depthwise-conv gradients come back in another memory layout than DDP's buckets: a
        # copy per step, harmless at these sizes, but the warning would repeat on every rank
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        step_net = DistributedDataParallel(step_net)
    steps_per_epoch = -(-T // opts.batch)
    opt = _adam(params, opts, opts.epochs * steps_per_epoch)
    pixels = T * H * W
    planner = Planner(opts.epochs, opts.time_budget, reserve=0.4)
    total = opts.epochs * steps_per_epoch
    sched = _Schedule(opt, total, opts.warmup)
    rate = RateControl(opts.lam, _target_bits(opts, pixels))
    every = _steer_every(rate, total, steps_per_epoch)
    order = torch.Generator().manual_seed(opts.seed)  # the same batches on every rank
    torch.manual_seed(opts.seed * 7919 + 1 + tm.rank)  # noise: independent per rank
    hist: list[dict] = []
    step = 0
    t0 = time.perf_counter()
    rollback = _Rollback(step_net, opt, sched)
    inner = step_net.module if isinstance(step_net, nn.parallel.DistributedDataParallel) else step_net

    def coded_bits() -> float:
        return all_sum(qnet.coded_bits() + inner.coded_embedding_bits(), tm) / tm.size

    qnet.train()
    epoch = 0
    with _Interruptible(tm) as stop:
        while epoch < planner.planned and not stop.requested:
            perm = torch.randperm(T, generator=order)
            se = 0.0
            for b in range(steps_per_epoch):
                batch = perm[b * opts.batch:(b + 1) * opts.batch]
                if len(batch) < tm.size:
                    batch = batch.repeat(-(-tm.size // len(batch)))[:tm.size]
                idx = share(batch, tm)
                x = padded[idx].to(dev)
                inp = x if kind == "hnerv" else frame_times(idx, T).to(dev)
                with _autocast(opts):
                    y, bits = step_net(inp, tm.size * T / len(batch), idx)
                y = y.float()
                mse = F.mse_loss(crop_frames(y, H, W), crop_frames(x, H, W))
                part = tm.size * len(idx) / len(batch)  # this rank's share of the batch mean
                loss = _descend(opt, sched, mse * part, bits, rate.lam / pixels)
                governor.step()
                step += 1
                se += float(mse.detach()) * len(idx)
                if epoch == 0 and step == _PROBE_STEPS and opts.time_budget is not None:
                    sched.replan(planner.after_steps(step, steps_per_epoch) * steps_per_epoch, first=True)
                    every = _steer_every(rate, planner.planned * steps_per_epoch, steps_per_epoch)
                if rate.target is not None and (b + 1) % every == 0 and b + 1 < steps_per_epoch:
                    rate.after_epoch(coded_bits())  # a long epoch of a short plan: steer within it
                if progress:
                    coded = float(bits.detach()) if rate.last_bits is None else rate.last_bits + opts.overhead_bits
                    progress(step, planner.planned * steps_per_epoch,
                             {"loss": float(loss.detach()), "psnr": psnr_from_mse(float(mse.detach())),
                              "bpp": coded / pixels, "lam": rate.lam})
                if stop.requested:
                    break
            epoch += 1
            se = all_sum(se, tm)
            hist.append({"epoch": epoch, "psnr": psnr_from_mse(se / T), "bpp": float(bits.detach()) / pixels,
                         "lam": rate.lam, "seconds": time.perf_counter() - t0})
            if stop.requested:
                hist[-1]["interrupted"] = True
                break
            if rollback(hist[-1]["psnr"]):
                hist[-1]["rolled_back"] = True
            if rate.target is not None:
                rate.after_epoch(coded_bits())
            sched.replan(planner.after_epoch(epoch) * steps_per_epoch)
            every = _steer_every(rate, planner.planned * steps_per_epoch, steps_per_epoch)
    if not tm.root:
        return None
    qnet.eval()
    weights = qnet.export()
    est = float(qnet.rate_bits(noise=False).detach())
    emb_q = None
    dec = decoder_from(kind, cfg, weights)
    if kind == "hnerv":
        enc.eval()
        embq.eval()
        with torch.no_grad():
            z = torch.cat([enc(padded[i:i + 8].to(dev)) for i in range(0, T, 8)])
            deq, zq, _ = embq(z)
            prev = torch.cat([deq[:1], deq[:-1]])  # each frame's predecessor (frame 0: itself, unused)
            _, _, ebits = embq(z, prev, torch.tensor([delta_coded(t) for t in range(T)]))
            steps = embq.step().to(torch.float32).cpu()
            ints = zq.cpu().to(torch.int64)
            est += float(ebits)
        emb_q = [QuantizedTensor(ints[:, c].contiguous(), float(steps[c])) for c in range(cfg.emb_ch)]
        out = render(kind, cfg, dec, count=T, frames=range(T), emb=dequantize_embeddings(emb_q), device=dev)
    else:
        out = render(kind, cfg, dec, count=T, frames=range(T), device=dev)
    return Fitted(kind, cfg, [weights], emb_q, est, out, history=hist, interrupted=stop.requested)


def _train_patches(qnet: QuantizedNet, coords: torch.Tensor, tiles: torch.Tensor, frames: int, pixels: int,
                   opts: FitOptions, tick: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None],
                   rate: RateControl | None = None, stop: "_Interruptible | None" = None,
                   budget: float | None = None, governor: ThreadGovernor | None = None) -> tuple[float, int]:
    """Up to ``opts.epochs`` passes of NIRVANA training over one set of patches, ``frames`` frames'
    worth of patches per step; ``tick(loss, mse, bits)`` after each pass. With ``opts.target_psnr`` it
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
    opt = _adam(list(qnet.parameters()), opts)
    planner = Planner(opts.epochs, budget, reserve=0.0)
    sched = _Schedule(opt, opts.epochs * steps, opts.warmup)
    qnet.train()
    epoch_mse, epoch = math.inf, 0
    while epoch < planner.planned and not (stop and stop.requested):
        perm = torch.randperm(n_patches, device=coords.device)
        se = torch.zeros((), device=coords.device)
        for b in range(steps):
            sel = perm[b * per_step:(b + 1) * per_step]
            with _autocast(opts):
                out = qnet(coords[sel])
            mse = F.mse_loss(out.float(), tiles[sel])
            bits = qnet.rate_bits()
            loss = _descend(opt, sched, mse, bits, rate.lam / pixels)
            if governor is not None:
                governor.step()
            se = se + mse.detach() * len(sel)
            if epoch == 0 and b + 1 == _PROBE_STEPS and budget is not None:
                sched.replan(planner.after_steps(b + 1, steps) * steps, first=True)
        epoch += 1
        epoch_mse = float(se) / n_patches
        tick(loss, mse, bits)
        if opts.target_psnr is not None and psnr_from_mse(epoch_mse) >= opts.target_psnr:
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


def _fit_nirvana(target: torch.Tensor, cfg: NirvanaConfig, opts: FitOptions, progress: Progress | None,
                 governor: ThreadGovernor) -> Fitted | None:
    """One network per group of frames, each warm-started from the previous group's integers and
    trained with the rate of its residual against them.

    The first group starts from the *common start*: the seeded network trained for the same
    number of epochs on one frame from every group (:func:`_start_frames`), so it already knows
    the whole clip roughly. A team of several ranks cuts the groups into contiguous segments (one
    per rank); every rank computes the same common start. A rank whose segment begins inside the
    clip first trains the ``opts.burn_in`` groups before it from that start (a *burn-in* it does
    not keep): NIRVANA keeps improving along its chain, and a segment begun from the start itself
    lost 4.4 dB on its first group and about four groups' quality in all on the benchmark clip. That
    first kept group is trained with the rate of its integers themselves (the file cannot refer to
    a burn-in network) and stored directly, unless a residual against the previous segment's last
    group codes smaller. Each group is seeded by its index; rank 0 gathers the groups in order.

    ``opts.start_epochs`` sets the common start's epochs (0: none, the chain begins from the seeded
    network), ``opts.first_epochs`` the first group's, and ``opts.target_psnr`` lets a group stop
    early (:func:`_train_patches`). On the benchmark clip's first 16 frames (800k budget, λ = 0.0005)
    the first group trained from scratch for 180 epochs reached 28.5 dB in 56 s, where the common
    start and 90 epochs of the group reached 26.7 dB in 72 s; the common start stays the default
    because the distributed chains begin from it."""
    dev = opts.device
    tm = team()
    T, _, H, W = target.shape
    Hp, Wp = cfg.padded
    padded = pad_frames(target, Hp, Wp)
    G = group_count(cfg, T)
    burn_epochs = opts.burn_group_epochs()
    mine = segment(G, tm, opts.burn_in * burn_epochs / opts.epochs)
    # a rank whose segment starts inside the clip first trains the groups before it (the burn-in,
    # not kept), so its first kept group starts from a network warmed along the chain
    plan = [*range(max(0, mine.start - opts.burn_in), mine.start), *mine] if len(mine) else []
    start_epochs = opts.epochs if opts.start_epochs is None else opts.start_epochs
    first_epochs = opts.epochs if opts.first_epochs is None else opts.first_epochs

    def group_epochs(g: int) -> int:
        return burn_epochs if g not in mine else first_epochs if g == 0 else opts.epochs

    total = start_epochs + sum(group_epochs(g) for g in plan)
    done: list[dict] = []
    step = 0
    t0 = time.perf_counter()
    # rate: the first kept group is coded whole, later ones as residuals that cost a fraction of a
    # network, so the first gets the share make_config sized it by and the rest split what is left
    clip_bits = _target_bits(opts, T * H * W)
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
    with _Interruptible(tm) as stop:
        if start_epochs:
            passes = _train_patches(qnet, patch_coords(cfg, local).to(dev), split_patches(cfg, padded[idx]).to(dev),
                                    len(idx), len(idx) * H * W,
                                    dataclasses.replace(opts, epochs=start_epochs, target_psnr=None),
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
                                         rate=rate, stop=stop, budget=group_budget(g), governor=governor)
            step += planned - passes  # the progress skips what was not needed
            weights = qnet.export()
            prev = weights
            if g not in mine:
                continue
            frames = render("nirvana", cfg, decoder_from("nirvana", cfg, weights), count=n, frames=range(n),
                            device=dev)
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
    return Fitted("nirvana", cfg, [d["weights"] for d in every], None, sum(d["est"] for d in every),
                  torch.cat([d["frames"] for d in every]), history=[d["hist"] for d in every],
                  interrupted=stop.requested)


def probe_step_seconds(frames, kind: str, cfg, opts: FitOptions, steps: int = 3) -> tuple[float, int]:
    """Time training steps of ``kind`` on a throwaway network (one warm-up step, then the median of
    ``steps``): returns (seconds per step, steps per epoch). What a plan of the encode is built on."""
    opts = resolve_precision(opts.for_model(kind))
    target = _to_target(frames[: max(1, min(len(frames), opts.batch))])
    T = len(frames)
    state = torch.random.get_rng_state()
    try:
        if kind == "nirvana":
            qnet = QuantizedNet(NirvanaNet(cfg), opts.bits).to(opts.device)
            tiles = split_patches(cfg, pad_frames(target[:1], *cfg.padded)).to(opts.device)
            n = len(tiles)
            per_step = max(1, min(n * min(T, cfg.group), opts.batch * n))
            coords = patch_coords(cfg, torch.zeros(1)).to(opts.device).repeat(-(-per_step // n), 1)[:per_step]
            tiles = tiles.repeat(-(-per_step // n), 1, 1, 1)[:per_step]
            opt = _adam(list(qnet.parameters()), opts)

            def one():
                with _autocast(opts):
                    out = qnet(coords)
                loss = F.mse_loss(out.float(), tiles) + 1e-9 * qnet.rate_bits()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            per_epoch = -(-min(T, cfg.group) * n // per_step)
        else:
            qnet = QuantizedNet(build_net(kind, cfg), opts.bits).to(opts.device)
            enc = embq = None
            params = list(qnet.parameters())
            if kind == "hnerv":
                enc, embq = HNeRVEncoder(cfg).to(opts.device), QuantizedLatents(cfg.emb_ch).to(opts.device)
                params += list(enc.parameters()) + list(embq.parameters())
            step_net = _Step(kind, qnet, enc, embq, len(target))
            opt = _adam(params, opts)
            x = pad_frames(target, *cfg.padded).to(opts.device)
            idx = torch.arange(len(target))

            def one():
                with _autocast(opts):
                    y, bits = step_net(x if kind == "hnerv" else frame_times(idx, T).to(opts.device), 1.0, idx)
                loss = F.mse_loss(y.float(), x) + 1e-9 * bits
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            per_epoch = -(-T // opts.batch)
        times = []
        for i in range(steps + 1):
            t = time.perf_counter()
            one()
            if i:
                times.append(time.perf_counter() - t)
    finally:
        torch.random.set_rng_state(state)
    return sorted(times)[len(times) // 2], per_epoch
