"""Small building blocks shared by the backbones: activations, radial bases, envelopes."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class ScaledSiLU(nn.Module):
    """SiLU scaled by 1/0.6 so that unit-variance inputs give roughly unit-variance outputs
    (the activation of the OC20 PaiNN / GemNet layout)."""

    scale = 1.0 / 0.6

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.silu(x) * self.scale


class ShiftedSoftplus(nn.Module):
    """``softplus(x) - log 2``, zero at zero (SchNet's activation)."""

    shift = math.log(2.0)

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.softplus(x) - self.shift


class GaussianSmearing(nn.Module):
    """``n`` Gaussians with centres evenly spaced on [start, stop] and width = spacing.

    ``forward(d [n]) -> [n, n_gaussians]``. The centres are made in the input's dtype at
    each call (a few hundred numbers), so a float64 model has exact float64 centres.
    """

    def __init__(self, start: float, stop: float, n_gaussians: int):
        super().__init__()
        if n_gaussians < 2:
            raise ValueError(f"need at least 2 Gaussians, got {n_gaussians}")
        self.start, self.stop, self.n_gaussians = float(start), float(stop), n_gaussians
        self.coeff = -0.5 / ((self.stop - self.start) / (n_gaussians - 1)) ** 2

    def forward(self, d: Tensor) -> Tensor:
        offset = torch.linspace(self.start, self.stop, self.n_gaussians, dtype=d.dtype,
                                device=d.device)
        return torch.exp(self.coeff * (d.unsqueeze(-1) - offset).square())


class PolynomialEnvelope(nn.Module):
    """Smooth cutoff ``1 + a x^p + b x^(p+1) + c x^(p+2)`` of the scaled distance ``x = d /
    cutoff``, zero for x >= 1 with zero first and second derivative there
    (DimeNet / GemNet / OC20 PaiNN)."""

    def __init__(self, exponent: int = 5):
        super().__init__()
        if exponent <= 0:
            raise ValueError(f"envelope exponent must be positive, got {exponent}")
        p = float(exponent)
        self.p = p
        self.a = -(p + 1) * (p + 2) / 2
        self.b = p * (p + 2)
        self.c = -p * (p + 1) / 2

    def forward(self, x: Tensor) -> Tensor:
        value = 1 + x.pow(self.p) * (self.a + x * (self.b + self.c * x))
        return torch.where(x < 1, value, torch.zeros_like(x))


class RadialBasis(nn.Module):
    """Gaussian RBF on ``d / cutoff`` in [0, 1], times the polynomial envelope.

    ``forward(d [n] Å) -> [n, n_radial]``; named as the OC20 ``RadialBasis`` (``rbf``,
    ``envelope``) so its state maps by name.
    """

    def __init__(self, n_radial: int, cutoff: float, envelope_exponent: int = 5):
        super().__init__()
        self.inv_cutoff = 1.0 / cutoff
        self.envelope = PolynomialEnvelope(envelope_exponent)
        self.rbf = GaussianSmearing(0.0, 1.0, n_radial)

    def forward(self, d: Tensor) -> Tensor:
        x = d * self.inv_cutoff
        return self.envelope(x).unsqueeze(-1) * self.rbf(x)


class ScaleFactor(nn.Module):
    """A fixed multiplier fitted once on data (OC20 ``ScaleFactor``); 0 means "not fitted"
    and leaves the input unchanged."""

    def __init__(self):
        super().__init__()
        self.register_buffer("scale_factor", torch.tensor(0.0))

    def forward(self, x: Tensor) -> Tensor:
        s = self.scale_factor
        # No .item(): keeps the forward free of host syncs on GPU.
        return x * torch.where(s == 0, torch.ones_like(s), s)


def scatter_sum(values: Tensor, index: Tensor, size: int) -> Tensor:
    """Sum rows ``values [n, ...]`` into ``[size, ...]`` at rows ``index [n]`` (edges onto
    atoms, atoms onto systems)."""
    return values.new_zeros((size,) + tuple(values.shape[1:])).index_add_(0, index, values)


def xavier_linear(linear: nn.Linear) -> nn.Linear:
    """Xavier-uniform weights and zero bias (the OC20 / PyG initialisation)."""
    nn.init.xavier_uniform_(linear.weight)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)
    return linear
