"""What every video INR's training shares: options, the result, and the loop's parts.

A kind's schedule (:mod:`models.inr.frame_fit` for one network over the whole clip,
:mod:`models.inr.nirvana` for a chain of group networks) is built from these: the learning-rate
schedule, Adam with its own rate for the quantization scalars, one descent step on
``mse + λ · bits / pixels``, the training precision, Ctrl-C handling, the collapse guard, and how
often the rate control steers.
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
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from .control import RateControl
from .quant import QuantizedTensor

Progress = Callable[[int, int, dict], None]


@dataclass
class FitOptions:
    """Training options every kind understands; ``model`` holds a kind's own options (e.g.
    :class:`~models.inr.nirvana.NirvanaOptions`; None: that kind's defaults)."""

    epochs: int = 100  # passes over the clip (NIRVANA: over each group's frames)
    lr: float = 2e-3
    lam: float = 0.02  # rate weight: loss = mse + lam * bpp
    batch: int | None = None  # frames per step (NIRVANA: frames' worth of patches); None: the kind's default
    warmup: float = 0.1  # fraction of the steps with a linear warm-up, then cosine decay
    seed: int = 0
    device: str = "cpu"
    bits: int = 8  # initial weight precision (the step learns afterwards)
    quant_lr_mult: float = 5.0  # learning-rate factor of the steps and prior scales
    target_bpp: float | None = None  # steer λ (from ``lam``) so the file lands near this bpp
    overhead_bits: float = 0.0  # bits the file spends outside the rate estimate (header, tables)
    time_budget: float | None = None  # seconds: fit the epochs into this (planned from measured steps)
    precision: str = "auto"  # training forward: "fp32", "bf16" (autocast) or "auto" (bf16 on native-bf16 CPUs)
    adapt_threads: bool = False  # CPU: switch between torch's threads and one as the load changes
    model: object | None = None  # the kind's own options (its ``options`` class)


@dataclass
class Fitted:
    """What a file stores about a trained network, and the frames it renders."""

    kind: str
    config: object  # the kind's config
    groups: list[list[QuantizedTensor]]  # weights: one list, or one per group (NIRVANA)
    emb: list[QuantizedTensor] | None = None  # HNeRV: one per channel, ints (T, h, w)
    est_bits: float = 0.0  # the rate estimate the training minimised (at the end)
    frames: torch.Tensor | None = None  # uint8 (T, H, W, 3), rendered from the integers
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)
    interrupted: bool = False  # training stopped early by Ctrl-C; the file holds the network as it was


def frame_times(idx: torch.Tensor, count: int) -> torch.Tensor:
    """Frame indices → times in [0, 1] (the input of the time-indexed networks)."""
    return idx.to(torch.float32) / max(count - 1, 1)


class Schedule:
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
#: least 160 frames) gets the least lead, :data:`RATE_LEAD_MIN`.
RATE_LAG_STEPS = 160
#: Times at least the rate control steers λ in a fit: a fit planned for fewer epochs than this
#: (a time budget on large frames) is steered within its epochs too, every ``planned steps /
#: RATE_UPDATES`` steps. λ starts far below where it ends (:data:`codec.nerv.START_LAM`), and 240
#: frames at 640x360, whose 9-minute cap planned 12 epochs, ended 34 % over the target with λ
#: still rising once an epoch.
RATE_UPDATES = 50
#: The least lead, in updates, whatever the interval between them. On long clips (an update an
#: epoch of 160 frames or more) the bits' answer to λ lags by epochs, not steps: the quantization
#: steps λ coarsens keep coarsening on their momentum, and late in the schedule, at a small
#: learning rate, they never come back. Benchmark clip, 240 frames at 128x72, 0.05 bpp asked:
#: with no lead λ rose to 0.67, the bits crossed the target at epoch 38 of 55 still falling 5–8 %
#: an epoch and the file ended at −31 %, 25.15 dB; with a lead of 1, −27 % at 25.82 dB (2: −26 %,
#: 25.62 dB).
RATE_LEAD_MIN = 1.0


def steer_every(rate: RateControl, planned_steps: int, steps_per_epoch: int) -> int:
    """Steps between the rate control's updates for a fit of ``planned_steps`` (at most an epoch);
    sets the controller's lead for that interval (:data:`RATE_LAG_STEPS`, at least
    :data:`RATE_LEAD_MIN`)."""
    every = max(1, min(steps_per_epoch, planned_steps // RATE_UPDATES))
    rate.lead = max(RATE_LEAD_MIN, RATE_LAG_STEPS / every - 1)
    return every


def adam(params: list[nn.Parameter], opts: FitOptions, steps: int | None = None) -> torch.optim.Adam:
    """Adam; the scalar quantization parameters (log steps, log prior scales) learn ``quant_lr_mult``
    times faster than the weights -- they are few, scale-free, and set the rate -- and faster still
    in a fit of fewer than :data:`QUANT_REF_STEPS` ``steps``."""
    scalars = [p for p in params if p.ndim <= 1 and p.numel() <= 4096 and getattr(p, "_quant", False)]
    ids = {id(p) for p in scalars}
    own = [p for p in params if id(p) not in ids and hasattr(p, "_lr_mult")]
    ids |= {id(p) for p in own}
    rest = [p for p in params if id(p) not in ids]
    mult = opts.quant_lr_mult * (max(1.0, QUANT_REF_STEPS / steps) ** 0.5 if steps else 1.0)
    groups = [{"params": rest}, {"params": scalars, "lr": opts.lr * mult}]
    for m in sorted({p._lr_mult for p in own}):  # parameters with a factor of their own
        groups.append({"params": [p for p in own if p._lr_mult == m], "lr": opts.lr * m})
    try:
        # one fused kernel per step instead of a dozen element-wise passes per tensor: 6 % off
        # an HNeRV encode here (48 frames at 320x180, 3 epochs, 1 thread, the other core busy;
        # median of 4 pairs, 5.59 against 5.95 s)
        return torch.optim.Adam(groups, lr=opts.lr, fused=True)
    except (RuntimeError, TypeError):  # a device or a torch without the fused kernel
        return torch.optim.Adam(groups, lr=opts.lr)


def descend(opt, sched, mse: torch.Tensor, bits: torch.Tensor, lam_per_bit: float) -> torch.Tensor:
    """One optimisation step on ``mse + λ · bits / pixels``; returns the loss."""
    loss = mse + lam_per_bit * bits
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return loss


def to_target(frames) -> torch.Tensor:
    """uint8 (T, H, W, 3) numpy/tensor → float (T, 3, H, W) in [0, 1]."""
    x = torch.as_tensor(frames)
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError("frames must be uint8 (T, H, W, 3)")
    return x.permute(0, 3, 1, 2).to(torch.float32) / 255.0


def autocast(opts: FitOptions):
    """The training forward's precision context: bf16 autocast (convolutions and matrix products
    in bfloat16, everything else, the rate estimate and the quantizer included, in float32) or
    none. Only training runs in it: the final evaluation and the decoder render in float32, so the
    file and what it decodes to are exactly as without it; bf16 only changes the gradients' noise.
    ``auto`` is resolved before training (:func:`resolve_precision`)."""
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
PROBE_STEPS = 3


def target_bits(opts: FitOptions, pixels: int) -> float | None:
    """The rate estimate's target: the file's bits at ``target_bpp`` less what it spends elsewhere."""
    if opts.target_bpp is None:
        return None
    return max(opts.target_bpp * pixels - opts.overhead_bits, 0.05 * opts.target_bpp * pixels)


class Interruptible:
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


class Rollback:
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
            state = {k: v.detach().clone() if torch.is_tensor(v) else copy.deepcopy(v)
                     for k, v in self.module.state_dict().items()}
            self.recent.append((psnr, state,
                                copy.deepcopy(self.opt.state_dict())))
            return False
        self.module.load_state_dict(best[1])
        lrs = [g["lr"] for g in self.opt.param_groups]
        self.opt.load_state_dict(copy.deepcopy(best[2]))
        for g, lr in zip(self.opt.param_groups, lrs):
            g["lr"] = lr * 0.5
        self.sched.base_lrs = [b * 0.5 for b in self.sched.base_lrs]
        return True
