"""Training one video across processes with torch.distributed (launched by ``torchrun``).

The fitting code asks :func:`team` who it is; with no process group (the usual case) the answer is
a team of one and nothing here does any communication. Two ways of sharing the work:

- **NIRVANA** — the clip is a sequence of groups of frames; :func:`segment` cuts the groups into
  ``size`` contiguous runs, each rank trains its run in order (warm-starting each group from the
  previous one; a run that begins inside the clip after a burn-in over the groups before it,
  which the rank does not keep), and rank 0 gathers every
  group's integers and rendered frames (:func:`gather_to_root`). The file rank 0 writes has the
  same format as a one-process encode; the decoder cannot tell.
- **HNeRV / NeRV++** — one network for the whole clip, trained data-parallel with
  :class:`~torch.nn.parallel.DistributedDataParallel`; each global mini-batch is split among the
  ranks (:func:`share`), so the optimisation is the one-process one, just computed on more cores.

Backends: gloo for CPU training, NCCL for CUDA (:func:`init_from_env`). A rank that fails ends the
job through the launcher (``torchrun`` stops the others); rank 0 writes its output only after the
final gather, atomically, so a failed job leaves nothing behind.
"""
from __future__ import annotations

import datetime
import math
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Team:
    rank: int = 0
    size: int = 1

    @property
    def root(self) -> bool:
        return self.rank == 0


def team() -> Team:
    """This process's place in the current process group (a team of one without a group)."""
    if dist.is_available() and dist.is_initialized():
        return Team(dist.get_rank(), dist.get_world_size())
    return Team()


def launched() -> bool:
    """True when started by ``torchrun`` (or any launcher that sets ``WORLD_SIZE``) with > 1 rank."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def init_from_env(device: str, timeout_s: float = 1800) -> str:
    """Join the process group described by the launcher's environment; return the device this
    rank trains on (``cuda`` becomes ``cuda:LOCAL_RANK``). Does nothing without a launcher."""
    if not launched() or (dist.is_available() and dist.is_initialized()):
        return device
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed")
    cuda = device.startswith("cuda")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA device(s) here")
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_s))
    return device


def barrier(t: Team) -> None:
    """Wait until every rank of the team gets here (nothing to do for a team of one)."""
    if t.size > 1:
        dist.barrier()


def finish() -> None:
    """Leave the process group (if this process joined one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def leave(t: Team) -> None:
    """End a rank's successful part in a multi-rank job: wait for the others, leave the group and
    end the process at once (``os._exit(0)`` after flushing stdout/stderr); a team of one returns.

    Why not a normal exit: now and then (twice in CI's torchrun test, never in 100 local reruns) a
    gloo rank aborted at the end of a job with ``terminate called without an active exception``,
    the C++ runtime's complaint about a thread object destroyed while its thread still runs. That
    points at teardown (the interpreter's and the C++ libraries'), not at our code; as it never
    reproduced here, skipping the teardown is the remedy for the likely cause, not a proven one.
    Everything a rank owes the job (its groups gathered, rank 0's file written atomically) is done
    before this call, so the skip loses nothing and the job's exit status stays the true one."""
    if t.size == 1:
        return
    barrier(t)
    finish()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


def segment(groups: int, t: Team, burn_in: float = 0) -> range:
    """The contiguous run of group indices rank ``t.rank`` keeps.

    Every rank but the first also trains a burn-in before its run (groups it does not keep) worth
    ``burn_in`` groups of work, so the runs are sized to even out the work: the smallest load ``W``
    such that rank 0 keeps ``W`` groups and each later rank ``⌊W - burn_in⌋`` covers the clip (the
    last run takes what is left). Without a burn-in the runs differ in length by at most one."""
    if burn_in <= 0 or t.size == 1:
        return range(groups * t.rank // t.size, groups * (t.rank + 1) // t.size)

    def later(w: int) -> int:
        return max(math.floor(w - burn_in), 0)

    load = next(w for w in range(groups + 1) if w + (t.size - 1) * later(w) >= groups)
    cuts = [0] + [min(groups, load + r * later(load)) for r in range(t.size)]
    return range(cuts[t.rank], cuts[t.rank + 1])


def share(batch: torch.Tensor, t: Team) -> torch.Tensor:
    """This rank's part of a global mini-batch (near-equal contiguous parts; the batch must hold at
    least one entry per rank)."""
    if len(batch) < t.size:
        raise ValueError(f"a batch of {len(batch)} cannot be shared by {t.size} ranks")
    return torch.tensor_split(batch, t.size)[t.rank]


def all_sum(x: float, t: Team) -> float:
    """Sum of a float over the team."""
    if t.size == 1:
        return x
    v = torch.tensor([x], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        v = v.cuda()
    dist.all_reduce(v)
    return float(v.item())


def broadcast_from_root(obj, t: Team):
    """Rank 0's ``obj`` on every rank."""
    if t.size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_to_root(obj, t: Team) -> list | None:
    """Every rank's ``obj`` in rank order on rank 0; None elsewhere. (torch.distributed pickles
    the objects between our own processes; nothing here reads a user's file.)"""
    if t.size == 1:
        return [obj]
    out = [None] * t.size if t.root else None
    dist.gather_object(obj, out, dst=0)
    return out
