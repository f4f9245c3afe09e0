"""Generalized divisive normalization (Ballé, Laparra & Simoncelli, ICLR 2016 / 2017).

``GDN``:  y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)
``IGDN``: y_i = x_i * sqrt(beta_i + sum_j gamma_ij x_j^2)   (its approximate inverse)

beta and gamma must stay non-negative (beta bounded away from 0). As in Ballé's implementation,
they are stored reparametrised: the parameter ``p`` represents ``max(p, bound)^2 - pedestal`` with
``pedestal = 2^-36`` and ``bound = sqrt(minimum + pedestal)``, and the bound lets gradients through
whenever they would push ``p`` back above it (so a parameter stuck at the bound can recover).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_PEDESTAL = 2.0 ** -36


class _LowerBound(torch.autograd.Function):
    """max(x, bound) whose gradient also flows where x < bound if it points upwards."""

    @staticmethod
    def forward(ctx, x, bound):
        ctx.save_for_backward(x, bound)
        return torch.maximum(x, bound)

    @staticmethod
    def backward(ctx, grad):
        x, bound = ctx.saved_tensors
        passes = (x >= bound) | (grad < 0)
        return grad * passes.to(grad.dtype), None


def lower_bound(x: torch.Tensor, bound: float) -> torch.Tensor:
    """``max(x, bound)`` with the gradient rule above (also used for likelihood floors)."""
    return _LowerBound.apply(x, torch.tensor(bound, dtype=x.dtype, device=x.device))


class NonNegative(nn.Module):
    """The reparametrisation ``p -> max(p, bound)^2 - pedestal`` (values >= ``minimum``)."""

    def __init__(self, minimum: float = 0.0):
        super().__init__()
        self.minimum = float(minimum)
        self.bound = (self.minimum + _PEDESTAL) ** 0.5

    @staticmethod
    def init(value: torch.Tensor) -> torch.Tensor:
        """The stored parameter that represents ``value``."""
        return torch.sqrt(torch.clamp(value + _PEDESTAL, min=_PEDESTAL))

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        return lower_bound(p, self.bound) ** 2 - _PEDESTAL


class GDN(nn.Module):
    """GDN over the channels of an (N, C, H, W) tensor; ``inverse=True`` gives IGDN."""

    def __init__(self, channels: int, inverse: bool = False, beta_min: float = 1e-6, gamma_init: float = 0.1):
        super().__init__()
        self.channels = int(channels)
        self.inverse = bool(inverse)
        self.beta_param = NonNegative(beta_min)
        self.gamma_param = NonNegative(0.0)
        self.beta = nn.Parameter(NonNegative.init(torch.ones(channels)))
        self.gamma = nn.Parameter(NonNegative.init(gamma_init * torch.eye(channels)))

    def effective(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The actual (beta, gamma): beta >= beta_min, gamma >= 0."""
        return self.beta_param(self.beta), self.gamma_param(self.gamma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta, gamma = self.effective()
        C = self.channels
        norm = F.conv2d(x * x, gamma.reshape(C, C, 1, 1), beta)
        return x * torch.sqrt(norm) if self.inverse else x * torch.rsqrt(norm)

    def extra_repr(self) -> str:
        return f"{self.channels}, inverse={self.inverse}"


class IGDN(GDN):
    """Inverse GDN: ``x * sqrt(beta + gamma x^2)``."""

    def __init__(self, channels: int, beta_min: float = 1e-6, gamma_init: float = 0.1):
        super().__init__(channels, inverse=True, beta_min=beta_min, gamma_init=gamma_init)
