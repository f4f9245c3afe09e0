"""A learned factorized prior over a bottleneck's channels (Ballé et al., ICLR 2018, appendix 6.1).

Each channel c has its own univariate density, given by its cumulative ``F_c``: a small monotone
network R -> R with layer widths ``1 -> 3 -> 3 -> 3 -> 3 -> 1`` (``filters=(3, 3, 3, 3)``). Layer
k computes ``softplus(H_k) x + b_k`` (softplus keeps the matrices positive, hence monotone), and
every layer but the last adds ``tanh(a_k) * tanh(.)`` (a gated nonlinearity with |tanh(a_k)| < 1,
which keeps the derivative positive). The network outputs logits: ``F_c(x) = sigmoid(logit_c(x))``.

- The probability of the integer bin around x is ``F(x + 1/2) - F(x - 1/2)``, computed stably as
  ``|sigmoid(s * u) - sigmoid(s * l)|`` with ``s = -sign(l + u)`` (both sigmoids then sit on the
  side of 1/2 where they have full relative precision), floored at 1e-9.
- Training adds uniform noise U(-1/2, 1/2) (a differentiable proxy for rounding); evaluation
  rounds around each channel's median: ``round(x - median) + median``.
- Three learned quantiles per channel (lower, median, upper at tail mass 1e-9) are fitted by
  :meth:`EntropyBottleneck.aux_loss` (train it with its own optimizer): ``|logit(q) - target|``
  with targets ``-log(2/t - 1), 0, log(2/t - 1)``; the density is frozen for that loss.
- :meth:`EntropyBottleneck.cdf_table` turns the learned densities into the integer tables of the
  entropy layer (one row per channel over the integers between the quantiles, the tail mass as the
  escape symbol). The table is built once, on the encoder side, and travels as integers, so the
  decoder never evaluates a float density.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from neural_codecs.bitstream import CdfTable

from .gdn import lower_bound

#: Each half of a table row (below / above the median) holds at most this many values; anything
#: further out is escape-coded (exact, just dearer).
MAX_HALF_RANGE = 2047


def _sigmoid(x: float) -> float:
    """Logistic function without overflow: exp(-log(1 + exp(-x)))."""
    return float(np.exp(-np.logaddexp(0.0, -x)))


class EntropyBottleneck(nn.Module):
    """Factorized prior with per-channel learned densities; ``forward(x) -> (x_tilde, likelihoods)``."""

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3, 3), init_scale: float = 10.0,
                 tail_mass: float = 1e-9, likelihood_bound: float = 1e-9):
        super().__init__()
        self.channels = int(channels)
        self.filters = tuple(int(f) for f in filters)
        self.tail_mass = float(tail_mass)
        self.likelihood_bound = float(likelihood_bound)
        widths = (1,) + self.filters + (1,)
        scale = init_scale ** (1.0 / (len(self.filters) + 1))
        self._matrices = nn.ParameterList()
        self._biases = nn.ParameterList()
        self._factors = nn.ParameterList()
        for k in range(len(self.filters) + 1):
            # softplus(init) = 1 / scale / fan-out: the initial density is a wide, smooth bump
            init = math.log(math.expm1(1.0 / scale / widths[k + 1]))
            self._matrices.append(nn.Parameter(torch.full((channels, widths[k + 1], widths[k]), init)))
            self._biases.append(nn.Parameter(torch.empty(channels, widths[k + 1], 1).uniform_(-0.5, 0.5)))
            if k < len(self.filters):
                self._factors.append(nn.Parameter(torch.zeros(channels, widths[k + 1], 1)))
        self.quantiles = nn.Parameter(torch.tensor([-init_scale, 0.0, init_scale]).repeat(channels, 1, 1))
        t = math.log(2.0 / self.tail_mass - 1.0)
        self.register_buffer("target", torch.tensor([-t, 0.0, t]), persistent=False)

    # -- the density -----------------------------------------------------------------------------
    def density_parameters(self):
        """Every parameter but the quantiles (those belong to the auxiliary optimizer)."""
        return [p for name, p in self.named_parameters() if name != "quantiles"]

    def _logits_cumulative(self, x: torch.Tensor, stop_gradient: bool = False) -> torch.Tensor:
        """``logit F_c(x)`` for x of shape (C, 1, N)."""
        logits = x
        for k, (m, b) in enumerate(zip(self._matrices, self._biases)):
            m, b = m.to(x.dtype), b.to(x.dtype)
            if stop_gradient:
                m, b = m.detach(), b.detach()
            logits = torch.matmul(F.softplus(m), logits) + b
            if k < len(self._factors):
                a = self._factors[k].to(x.dtype)
                if stop_gradient:
                    a = a.detach()
                logits = logits + torch.tanh(a) * torch.tanh(logits)
        return logits

    def _bin_probability(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Probability of [v - 1/2, v + 1/2) per element of v (C, 1, N); also the two logits."""
        lower = self._logits_cumulative(v - 0.5)
        upper = self._logits_cumulative(v + 0.5)
        sign = -torch.sign(lower + upper).detach()
        p = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
        return p, lower, upper

    def likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """Bin probabilities of (N, C, H, W) values (floored at ``likelihood_bound``)."""
        v = x.transpose(0, 1).reshape(self.channels, 1, -1)
        p, _, _ = self._bin_probability(v)
        if self.likelihood_bound > 0:
            p = lower_bound(p, self.likelihood_bound)
        C, N = x.shape[1], x.shape[0]
        return p.reshape(C, N, *x.shape[2:]).transpose(0, 1)

    @property
    def medians(self) -> torch.Tensor:
        return self.quantiles[:, 0, 1]

    def aux_loss(self) -> torch.Tensor:
        """Pulls the quantiles to where the (frozen) cumulative reaches tail/2, 1/2 and 1 - tail/2."""
        logits = self._logits_cumulative(self.quantiles, stop_gradient=True)
        return torch.abs(logits - self.target).sum()

    @torch.no_grad()
    def fit_quantiles(self, iterations: int = 64) -> None:
        """Set the quantiles to where the cumulative crosses the aux targets, by bisection.

        The cumulative is monotone, so 64 halvings of a bracket pin each crossing to float
        precision — what :meth:`aux_loss` approaches over many optimizer steps, done exactly. The
        bracket starts at the current quantiles and doubles outwards until it holds the crossing."""
        q = self.quantiles.detach().double()
        target = self.target.double().reshape(1, 1, 3)

        def f(x):  # logit F(x) - target, shape (C, 1, 3)
            return self._logits_cumulative(x.to(self.quantiles.dtype)).double() - target

        width = torch.ones_like(q)
        lo, hi = q - width, q + width
        for _ in range(200):  # widen until f(lo) <= 0 <= f(hi)
            bad_lo, bad_hi = f(lo) > 0, f(hi) < 0
            if not (bad_lo.any() or bad_hi.any()):
                break
            width = width * 2
            lo = torch.where(bad_lo, q - width, lo)
            hi = torch.where(bad_hi, q + width, hi)
        else:
            raise RuntimeError("the learned cumulative does not reach its tail targets")
        for _ in range(iterations):
            mid = (lo + hi) / 2
            below = f(mid) < 0
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        self.quantiles.copy_(((lo + hi) / 2).to(self.quantiles.dtype))

    # -- training / evaluation -------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C, H, W) -> (x plus uniform noise in training / rounded around the medians at eval,
        the bin probabilities of that)."""
        if self.training:
            x_tilde = x + torch.empty_like(x).uniform_(-0.5, 0.5)
        else:
            x_tilde = self.dequantize(self.quantize(x))
        return x_tilde, self.likelihood(x_tilde)

    def _median_view(self, ndim: int, dtype) -> torch.Tensor:
        return self.medians.detach().to(dtype).reshape(1, -1, *([1] * (ndim - 2)))

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """``round(x - median)`` per channel as int64 (ties to even, as ``torch.round``)."""
        return torch.round(x - self._median_view(x.dim(), x.dtype)).to(torch.int64)

    def dequantize(self, q: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        """``q + median`` in ``dtype``: exactly the value the eval forward passes on."""
        return q.to(dtype) + self._median_view(q.dim(), dtype)

    # -- export ----------------------------------------------------------------------------------
    def table_ranges(self) -> tuple[np.ndarray, np.ndarray]:
        """Integers below and above the median each table row covers (ceil of the quantile
        distances, clipped to 0 … ``MAX_HALF_RANGE``)."""
        q = self.quantiles.detach().double().cpu()[:, 0, :]
        below = torch.ceil(q[:, 1] - q[:, 0]).clamp(0, MAX_HALF_RANGE).to(torch.int64).numpy()
        above = torch.ceil(q[:, 2] - q[:, 1]).clamp(0, MAX_HALF_RANGE).to(torch.int64).numpy()
        return below, above

    @torch.no_grad()
    def pmfs(self) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """Per channel, in float64: the bin probabilities of ``median + v`` for the integers v of
        the row's range, the tail mass outside it, and the row offsets (lowest v)."""
        below, above = self.table_ranges()
        lengths = below + above + 1
        dev = self.quantiles.device
        med = self.medians.detach().double()
        k = torch.arange(int(lengths.max()), dtype=torch.float64, device=dev)
        start = torch.as_tensor(-below, dtype=torch.float64, device=dev)
        x = (med + start).reshape(-1, 1, 1) + k.reshape(1, 1, -1)  # (C, 1, L): median + v
        p, lower, upper = self._bin_probability(x)
        p, lower, upper = p.cpu().numpy()[:, 0], lower.cpu().numpy()[:, 0], upper.cpu().numpy()[:, 0]
        pmfs, tails = [], np.zeros(self.channels)
        for c in range(self.channels):
            n = int(lengths[c])
            pmfs.append(p[c, :n])
            # mass below the first bin and above the last one (sigmoid(-u) = 1 - F(u), stably)
            tails[c] = _sigmoid(lower[c, 0]) + _sigmoid(-upper[c, n - 1])
        return pmfs, tails, -below

    def cdf_table(self, precision: int = 16) -> CdfTable:
        """The learned densities as the entropy layer's integer table (row c = channel c; the
        escape symbol carries the tail mass, so values beyond the quantiles still code exactly)."""
        pmfs, tails, offsets = self.pmfs()
        return CdfTable.from_pmfs(pmfs, offsets, tails, precision)
