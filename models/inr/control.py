"""Steering a fit: λ towards a target rate, and the epochs into a wall-clock budget.

:class:`RateControl` — a user asks for bits per pixel, not for a λ. The network is sized for the
target (:func:`codec.nerv.make_config`), but how many bits a parameter costs depends on the clip
and on λ, so a fixed λ lands anywhere from a third to three times the target. The controller does
dual ascent on the constraint "coded file bits = target": after every epoch it moves log λ by a
gain times log(coded / target). The coded bits are the integers' cost under their own histograms
and tables, plus what the file spends besides (header, framing, text), which the codec knows.

:class:`Planner` — a budget in seconds becomes a number of epochs: the first plan comes from timed
probe steps before training, and after every epoch the plan is redone from the measured mean epoch
time, keeping back what the final evaluation (rendering every frame) costs. The learning-rate
schedule follows the plan, so the cosine decay ends when the budget does.
"""
from __future__ import annotations

import math
import time

LN2 = math.log(2.0)

#: λ stays within these bounds whatever the estimate does (the loss is MSE of [0, 1] pixels plus
#: λ times bits per pixel: 1e-7 is rate-blind, 10 trades everything for rate).
LAM_MIN, LAM_MAX = 1e-7, 10.0
#: log λ moves by GAIN · log(coded / target) per epoch: an epoch that ends at twice the target
#: raises λ by 2**GAIN.
GAIN = 0.5


class RateControl:
    """λ (and the quantization steps) steered so the coded bits land on ``target_bits`` (None: λ
    stays fixed). Called once an epoch with what the integers cost *under the coder's own
    tables* (:func:`~models.inr.quant.empirical_bits`), not the training estimate: that scores
    values plus uniform noise under a logistic, which at a bit or less a value costs several times
    what the tables spend, and HNeRV's embedding differences are scored against predecessors an
    epoch stale (48 frames at 128x72: an estimate of 114 kbit for 14 kbit coded).

    ``lead`` (in updates): the coded bits answer a change of λ only some steps later, and the
    quantization steps it coarsens do not come back when λ falls again, so a controller that waits
    for the bits to cross the target has already overshot. With a lead λ answers the bits
    predicted ``lead`` updates on at their present trend, ``log(coded / target) + lead ·
    log(coded / last update's)``. The fit updates once an epoch, or more often when it plans few
    epochs, and sets the lead from the steps between updates
    (:data:`~models.inr.train.RATE_LAG_STEPS`): an epoch of a short clip is a few steps, far
    shorter than that lag."""

    def __init__(self, lam: float, target_bits: float | None, lead: float = 0.0):
        self.log_lam = math.log(min(max(lam, LAM_MIN), LAM_MAX))
        self.target = None if target_bits is None else max(float(target_bits), 1.0)
        self.lead = lead
        self.last_bits: float | None = None

    @property
    def lam(self) -> float:
        return math.exp(self.log_lam)

    def retarget(self, target_bits: float | None) -> None:
        """A new target (NIRVANA: each group's share), keeping the λ learnt so far."""
        self.target = None if target_bits is None else max(float(target_bits), 1.0)

    def after_epoch(self, coded_bits: float) -> float:
        """Record the coded bits at the end of an epoch, or of an update interval within one
        (what the target counts: the integers), move log λ by
        ``GAIN · log(coded / target)``, plus the lead's trend term (clamped to ±GAIN); returns
        the new λ.

        Only λ moves. Shifting every quantization step at once towards the target (the way a
        classical codec moves its quantizer) was tried and lost: the excess early in training
        sits in HNeRV's embeddings, and coarsening the weights with them cost 0.7 dB on the
        benchmark clip's first 48 frames and 10 dB on the second clip's."""
        prev, self.last_bits = self.last_bits, coded_bits
        if self.target is not None and math.isfinite(coded_bits):
            now = math.log(max(coded_bits, 1.0) / self.target)
            trend = math.log(max(coded_bits, 1.0) / max(prev, 1.0)) if prev is not None and math.isfinite(prev) else 0.0
            err = max(-1.0, min(1.0, now + self.lead * trend))
            self.log_lam = min(max(self.log_lam + GAIN * err, math.log(LAM_MIN)), math.log(LAM_MAX))
        return self.lam


class Planner:
    """Epochs that fit ``budget`` seconds (None: ``epochs`` as given), redone after every epoch.

    ``reserve`` is what must be left for the work after training (the final render), in epochs'
    time; ``least`` the fewest epochs it plans, however short the budget."""

    def __init__(self, epochs: int, budget: float | None, reserve: float = 0.0, least: int = 1):
        self.cap, self.budget, self.reserve, self.least = epochs, budget, reserve, least
        self.t0 = time.perf_counter()
        self.planned = epochs
        self.mark: tuple[int, float] | None = None  # (epochs done, seconds) when epochs changed cost

    def rebase(self, done: int) -> None:
        """Epochs from ``done`` on cost differently (a cheaper training form): plan from those."""
        self.mark = (done, time.perf_counter() - self.t0)

    def _fit(self, per_epoch: float, done: int, elapsed: float) -> int:
        left = self.budget - self.reserve * per_epoch - elapsed
        more = int(left / max(per_epoch, 1e-9)) if left > 0 else 0
        return min(self.cap, max(self.least, done + more))

    def after_steps(self, steps: int, steps_per_epoch: int) -> int:
        """A first plan from the first ``steps`` steps (before an epoch has ended)."""
        if self.budget is not None and steps > 0:
            elapsed = time.perf_counter() - self.t0
            self.planned = self._fit(elapsed / steps * steps_per_epoch, 0, elapsed)
        return self.planned

    def after_epoch(self, done: int) -> int:
        """Re-plan after ``done`` epochs; returns the epochs now planned (≥ ``done``)."""
        if self.budget is not None and done > 0:
            elapsed = time.perf_counter() - self.t0
            if self.mark is None:
                self.planned = self._fit(elapsed / done, done, elapsed)
            elif done > self.mark[0]:
                self.planned = self._fit((elapsed - self.mark[1]) / (done - self.mark[0]), done, elapsed)
        return self.planned


class ThreadGovernor:
    """Chooses, while training runs, between ``most`` torch threads and one, by timing windows of
    steps with each: on an idle machine several threads win, and when another program takes a core
    one thread wins by far, because every parallel region then waits for a thread that is not
    running (2 cores, one busy, HNeRV at 320x180: 190-900 ms a step with 2 threads, 57 with one;
    ``tools/bench_nerv_threads.py``). A trial window of the other choice runs every ``every``
    windows, so the choice follows the load as it changes.

    Changing the thread count can change how float sums are split, so a fit that uses this is not
    bit-for-bit repeatable (its file still decodes exactly to its own final evaluation)."""

    def __init__(self, most: int, window: int = 8, every: int = 12):
        import torch

        self._torch = torch
        self.most, self.window, self.every = most, window, every
        self.enabled = most > 1
        self.current = most
        self.times: dict[int, float] = {}
        self.count, self.windows, self.trial = 0, 0, False
        self.t0 = time.perf_counter()

    def _set(self, n: int) -> None:
        if n != self.current:
            self._torch.set_num_threads(n)
            self.current = n

    def step(self) -> None:
        """Call after every training step."""
        if not self.enabled:
            return
        self.count += 1
        if self.count < self.window:
            return
        self.times[self.current] = (time.perf_counter() - self.t0) / self.count
        self.count = 0
        self.windows += 1
        if self.trial:  # the trial window ended: keep the faster
            self._set(min(self.times, key=self.times.get))
            self.trial = False
        elif self.windows % self.every == 1:
            self._set(1 if self.current != 1 else self.most)
            self.trial = True
        self.t0 = time.perf_counter()

    def close(self) -> None:
        """Leave torch with the thread count it had."""
        if self.enabled:
            self._set(self.most)
