"""The schedule of kinds with one network for the whole clip (HNeRV, NeRV++): mini-batches of frames.

Such a kind is a :class:`FrameKind`. It plugs in a :class:`FrameStep`, one training forward
``(target frames, rate scale of the per-frame data, frame indices) → (frames, rate in bits)``: the
plain one feeds the network the frames' times, HNeRV's runs its encoder and quantizes the
embeddings it stores. :func:`fit_frames` is the loop around it: λ steered to the target rate, the epochs planned into a time budget, the
collapse guard, Ctrl-C, data parallelism over a team of ranks.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from .control import Planner, RateControl, ThreadGovernor
from .distributed import all_sum, share, team
from .kind import InrKind
from .layout import crop_frames, pad_frames, psnr_from_mse
from .quant import QuantizedNet, QuantizedTensor
from .train import (
    PROBE_STEPS, FitOptions, Fitted, Interruptible, Progress, Rollback, Schedule, adam, autocast, descend,
    frame_times, steer_every, target_bits,
)


class FrameStep(nn.Module):
    """One training forward as a single module, so DistributedDataParallel can wrap it. This one
    is a time-indexed network's: the frames' times in, nothing stored per frame."""

    def __init__(self, qnet: QuantizedNet, frames: int):
        super().__init__()
        self.qnet = qnet
        self.frames = frames

    def forward(self, x: torch.Tensor, emb_scale: float, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.qnet(frame_times(idx, self.frames).to(x.device)), self.qnet.rate_bits()

    def coded_extra_bits(self) -> float:
        """What the per-frame data costs under the coder's tables (the rate control adds it)."""
        return 0.0

    #: Share of the planned epochs after which :meth:`release` switches form (None: never).
    release_at: float | None = None

    def late_parameters(self) -> list[nn.Parameter]:
        """Parameters only the form after :meth:`release` trains (none here)."""
        return []

    def release(self, padded: torch.Tensor, device: str, share: float) -> bool:
        """Called after every epoch with the ``share`` of the planned epochs done: a step that
        can switch to a cheaper training form here (HNeRV drops its encoder) does, and says so
        (the time plan then re-measures an epoch)."""
        return False

    def finish(self, padded: torch.Tensor, device: str) -> tuple[list[QuantizedTensor] | None, float, torch.Tensor | None]:
        """After training: (the per-frame integers a file stores, their estimated bits, their
        dequantized values for rendering); None, 0, None where nothing is stored per frame."""
        return None, 0.0, None


def fit_frames(kind: "FrameKind", target: torch.Tensor, cfg, opts: FitOptions, progress: Progress | None,
               governor: ThreadGovernor) -> Fitted | None:
    """One network for the whole clip, mini-batches of frames, each through the kind's
    :meth:`FrameKind.train_step` (built after the network: the seeded initialisation draws the
    network's weights first).

    With a team of several ranks each global batch is split among them and the step is wrapped
    in DistributedDataParallel; the loss of each rank is weighted so that the averaged gradient
    is exactly the one-process gradient of the whole batch."""
    dev = opts.device
    tm = team()
    T, _, H, W = target.shape
    Hp, Wp = cfg.padded
    padded = pad_frames(target, Hp, Wp)
    qnet = QuantizedNet(kind.build(cfg), opts.bits).to(dev)
    inner = kind.train_step(qnet, T, cfg).to(dev)
    step_net: nn.Module = inner
    if tm.size > 1:
        for p in inner.late_parameters():  # the release is one process's (every parameter of a
            p.requires_grad_(False)  # DDP module must have a gradient on every step)
        import warnings

        from torch.nn.parallel import DistributedDataParallel

        # depthwise-conv gradients come back in another memory layout than DDP's buckets: a
        # copy per step, harmless at these sizes, but the warning would repeat on every rank
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        step_net = DistributedDataParallel(inner)
    params = [p for p in inner.parameters() if p.requires_grad]
    steps_per_epoch = -(-T // opts.batch)
    opt = adam(params, opts, opts.epochs * steps_per_epoch)
    pixels = T * H * W
    planner = Planner(opts.epochs, opts.time_budget, reserve=0.4)
    total = opts.epochs * steps_per_epoch
    sched = Schedule(opt, total, opts.warmup)
    rate = RateControl(opts.lam, target_bits(opts, pixels))
    every = steer_every(rate, total, steps_per_epoch)
    order = torch.Generator().manual_seed(opts.seed)  # the same batches on every rank
    torch.manual_seed(opts.seed * 7919 + 1 + tm.rank)  # noise: independent per rank
    hist: list[dict] = []
    step = 0
    t0 = time.perf_counter()
    rollback = Rollback(step_net, opt, sched)

    def coded_bits() -> float:
        return all_sum(qnet.coded_bits() + inner.coded_extra_bits(), tm) / tm.size

    qnet.train()
    epoch = 0
    with Interruptible(tm) as stop:
        while epoch < planner.planned and not stop.requested:
            perm = torch.randperm(T, generator=order)
            se = 0.0
            for b in range(steps_per_epoch):
                batch = perm[b * opts.batch:(b + 1) * opts.batch]
                if len(batch) < tm.size:
                    batch = batch.repeat(-(-tm.size // len(batch)))[:tm.size]
                idx = share(batch, tm)
                x = padded[idx].to(dev)
                with autocast(opts):
                    y, bits = step_net(x, tm.size * T / len(batch), idx)
                y = y.float()
                mse = F.mse_loss(crop_frames(y, H, W), crop_frames(x, H, W))
                part = tm.size * len(idx) / len(batch)  # this rank's share of the batch mean
                loss = descend(opt, sched, mse * part, bits, rate.lam / pixels)
                governor.step()
                step += 1
                se += float(mse.detach()) * len(idx)
                if epoch == 0 and step == PROBE_STEPS and opts.time_budget is not None:
                    sched.replan(planner.after_steps(step, steps_per_epoch) * steps_per_epoch, first=True)
                    every = steer_every(rate, planner.planned * steps_per_epoch, steps_per_epoch)
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
            if tm.size == 1 and inner.release(padded, dev, epoch / planner.planned):
                planner.rebase(epoch)
                hist[-1]["released"] = True
            sched.replan(planner.after_epoch(epoch) * steps_per_epoch)
            every = steer_every(rate, planner.planned * steps_per_epoch, steps_per_epoch)
    if not tm.root:
        return None
    qnet.eval()
    weights = qnet.export()
    est = float(qnet.rate_bits(noise=False).detach())
    emb_q, emb_est, emb = inner.finish(padded, dev)
    out = kind.render(cfg, kind.decoder(cfg, weights), count=T, frames=range(T), emb=emb, device=dev)
    return Fitted(kind.name, cfg, [weights], emb_q, est + emb_est, out, history=hist, interrupted=stop.requested)


def probe_frames(kind: "FrameKind", target: torch.Tensor, cfg, opts: FitOptions, frames: int):
    """:meth:`~models.inr.kind.InrKind.probe` of a :class:`FrameKind`."""
    qnet = QuantizedNet(kind.build(cfg), opts.bits).to(opts.device)
    step_net = kind.train_step(qnet, len(target), cfg).to(opts.device)
    opt = adam(list(step_net.parameters()), opts)
    x = pad_frames(target, *cfg.padded).to(opts.device)
    idx = torch.arange(len(target))

    def one():
        with autocast(opts):
            y, bits = step_net(x, 1.0, idx)
        loss = F.mse_loss(y.float(), x) + 1e-9 * bits
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    at = step_net.release_at
    if at is None:
        return one, -(-frames // opts.batch)

    def late():
        step_net.release(x, opts.device, 1.0)  # once, on the first call (a warm-up step)
        one()

    return [(at, one), (1.0 - at, late)], -(-frames // opts.batch)


class FrameKind(InrKind):
    """A kind with one network for the whole clip, trained by :func:`fit_frames`. By default the
    network takes the frame's time (:class:`FrameStep`); a kind that stores something per frame
    overrides :meth:`train_step` and :meth:`forward_frame`."""

    def train_step(self, qnet: QuantizedNet, frames: int, cfg) -> FrameStep:
        """The training forward around ``qnet`` for a clip of ``frames`` frames."""
        return FrameStep(qnet, frames)

    def forward_frame(self, cfg, net, index, count, emb, device):
        return net(frame_times(torch.tensor([index]), count).to(device))

    def fit(self, target, cfg, opts, progress, governor):
        return fit_frames(self, target, cfg, opts, progress, governor)

    def probe(self, target, cfg, opts, frames):
        return probe_frames(self, target, cfg, opts, frames)
