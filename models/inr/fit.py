"""Fitting a video INR with quantization in the loop, and rendering frames from stored integers.

``fit(frames, kind, config, options)`` trains one of the kinds (:mod:`models.inr.registry`) on a
clip with ``loss = MSE + λ · (estimated bits per pixel)`` and returns a :class:`Fitted`: the
integer weights (and HNeRV's integer embeddings) with their float32 steps — exactly what a file
stores — plus the frames rendered *from those integers* by the same functions the decoder calls,
so the encoder's final evaluation and the decoded file agree by construction. Each kind trains
with its own schedule; the parts they share are in :mod:`models.inr.train`.
"""
from __future__ import annotations

import time

import torch
from torch import nn

from .control import ThreadGovernor
from .distributed import barrier, team
from .quant import QuantizedTensor
from .registry import get_kind
from .train import FitOptions, Fitted, Progress, to_target


def build_net(kind: str, cfg) -> nn.Module:
    """The decoder-side network of ``kind`` (what the file's weights load into)."""
    return get_kind(kind).build(cfg)


def decoder_from(kind: str, cfg, tensors: list[QuantizedTensor]) -> nn.Module:
    return get_kind(kind).decoder(cfg, tensors)


def render(kind: str, cfg, net: nn.Module, *, count: int, frames: range,
           emb: torch.Tensor | None = None, device: str = "cpu") -> torch.Tensor:
    """uint8 frames (n, H, W, 3) of clip frames ``frames`` of ``count`` (:meth:`InrKind.render`)."""
    return get_kind(kind).render(cfg, net, count=count, frames=frames, emb=emb, device=device)


def fit(frames, kind: str, cfg, opts: FitOptions = FitOptions(), progress: Progress | None = None) -> Fitted | None:
    """Train ``kind`` with config ``cfg`` on uint8 frames (T, H, W, 3); see the module docstring.

    Inside a torch.distributed process group every rank calls this with the same arguments and
    the work is shared (:mod:`models.inr.distributed`); rank 0 gets the result, the others None.
    """
    k = get_kind(kind)
    torch.manual_seed(opts.seed)
    opts = k.resolve(opts, team().size)
    target = to_target(frames)
    if (target.shape[2], target.shape[3]) != (cfg.height, cfg.width):
        raise ValueError("config size does not match the frames")
    t0 = time.perf_counter()
    governor = ThreadGovernor(torch.get_num_threads() if opts.adapt_threads and opts.device.startswith("cpu")
                              and team().size == 1 else 1)
    try:
        res = k.fit(target, cfg, opts, progress, governor)
    finally:
        governor.close()
    if res is not None:
        res.seconds = time.perf_counter() - t0
    # every rank leaves training together: a rank that tore down its process group while another
    # was still rendering sometimes aborted (SIGABRT) on the way out
    barrier(team())
    return res


def probe_step_seconds(frames, kind: str, cfg, opts: FitOptions, steps: int = 3) -> tuple[float, int]:
    """Time training steps of ``kind`` on a throwaway network (one warm-up step, then the median of
    ``steps``): returns (seconds per step, steps per epoch). What a plan of the encode is built on.
    A kind whose training changes form part way (HNeRV drops its encoder) probes each form and
    weighs it by its share of the steps."""
    k = get_kind(kind)
    opts = k.resolve(opts)
    target = to_target(frames[: max(1, min(len(frames), opts.batch))])
    state = torch.random.get_rng_state()
    try:
        one, per_epoch = k.probe(target, cfg, opts, len(frames))
        total = 0.0
        for share, phase in (one if isinstance(one, list) else [(1.0, one)]):
            times = []
            for i in range(steps + 1):
                t = time.perf_counter()
                phase()
                if i:
                    times.append(time.perf_counter() - t)
            total += share * sorted(times)[len(times) // 2]
    finally:
        torch.random.set_rng_state(state)
    return total, per_epoch
