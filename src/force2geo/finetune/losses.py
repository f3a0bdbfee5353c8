"""Losses of property training, geometry fine-tuning and coordinate denoising.

* :func:`property_loss` — L1 in eV, the mean over molecules (the paper's property loss).
* :func:`geometry_alignment_loss` — Eq. 9 of the paper, ``mean_i (1 - cos(dr_hat_i, dr_i))``
  over atoms, with ``dr = ground truth - input`` (Å). Atoms whose target displacement is
  (nearly) zero have no direction and are left out of the mean.
* :func:`denoising_loss` — mean squared error between predicted and true noise per atom
  (Zaidi et al. 2022).
"""

from __future__ import annotations

import torch
from torch import Tensor

# Å; a target displacement shorter than this has no meaningful direction (a trajectory
# frame that coincides with the ground truth, an atom the relaxation did not move).
MIN_DISPLACEMENT = 1e-6


def property_loss(predicted: Tensor, target: Tensor) -> Tensor:
    """``mean |y_hat - y|`` over molecules, eV; ``predicted``, ``target`` ``[n_systems]``."""
    return (predicted - target.to(predicted.dtype)).abs().mean()


def geometry_alignment_loss(predicted: Tensor, target: Tensor,
                            min_norm: float = MIN_DISPLACEMENT) -> Tensor:
    """Eq. 9: ``mean_i (1 - cos(predicted_i, target_i))`` over atoms with ``|target_i| >
    min_norm``; ``predicted``, ``target`` ``[n_atoms, 3]`` Å. Zero (with a gradient path)
    when no atom qualifies."""
    keep = torch.linalg.vector_norm(target, dim=-1) > min_norm
    if not bool(keep.any()):
        return predicted.sum() * 0.0
    cosine = torch.nn.functional.cosine_similarity(predicted[keep], target[keep].to(
        predicted.dtype), dim=-1, eps=1e-12)
    return (1.0 - cosine).mean()


def denoising_loss(predicted: Tensor, noise: Tensor) -> Tensor:
    """``mean_i |predicted_i - noise_i|^2 / 3`` (the mean over atoms and components)."""
    return (predicted - noise.to(predicted.dtype)).square().mean()
