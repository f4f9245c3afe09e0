"""CPU thread defaults that hold on a busy machine as well as an idle one.

Why this exists: torch's CPU kernels run on OpenMP (libgomp), whose worker threads *spin* for a
long while (300,000 iterations by default) waiting for the next parallel region before they
sleep. nervcodec's training runs thousands of small parallel regions per second. When another
process holds one of the cores, the spinning thread and the thread that has work take turns on
it, and a training step costs about ten times the CPU it costs on an idle machine
(``tools/bench_nerv_threads.py`` measures it). Shorter spinning cuts that; the rest is the
training's thread governor, which drops to one thread while another program holds a core.

libgomp reads its settings once, when torch is first imported, so :func:`calm_spinning` must run
before that: the command-line tools call it at import time. A library user who imports torch
first can set ``GOMP_SPINCOUNT`` in the environment instead. This module imports nothing heavy.
"""
from __future__ import annotations

import os
import sys

#: Spin iterations before an idle OpenMP worker sleeps (libgomp's default is 300,000). Not 1,000:
#: that makes two threads slower than one on an idle machine (75 vs 57 ms a step); 10,000 keeps the
#: idle speed-up (46 ms) and, with the training's thread governor
#: (:class:`models.inr.control.ThreadGovernor`), the cost under load.
SPIN_COUNT = "10000"


def calm_spinning() -> bool:
    """Ask OpenMP for short spin-waits unless the user chose a policy; True if it can take effect
    (torch not imported yet and no user setting)."""
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return False
    os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    return "torch" not in sys.modules


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_threads(ranks: int = 1) -> int:
    """Threads per process: the cores this process may use, shared among ``ranks`` processes
    started together (torchrun on one machine), at most 8 (the small convolutions of these
    networks stop gaining before that)."""
    return max(1, min(8, available_cores() // max(1, ranks)))


def set_threads(n: int | None = None, ranks: int = 1) -> int:
    """Set torch's intra-op threads to ``n`` (default :func:`default_threads`) and its inter-op
    pool to one thread (nothing here runs independent ops side by side); returns ``n``."""
    import torch

    n = n or default_threads(ranks)
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or parallel work already ran: harmless
        pass
    return n
