"""Exponential moving average of a model's weights.

After every optimizer step ``w_ema <- d * w_ema + (1 - d) * w`` with the warm-up
``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates (as TensorFlow's and torch-ema's
``num_updates``): without it, a short run's average is still dominated by the random
initial weights (0.999^500 = 0.61). Buffers (the reference energies, say) are copied.
The averaged copy is what validation, ``best.pt`` and
:func:`~force2geo.training.checkpoint.load_potential` use when EMA is on.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """A frozen averaged copy (``.model``) of ``source``, updated by :meth:`update`."""

    def __init__(self, source: nn.Module, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.source = source
        self.decay = float(decay)
        self.model = copy.deepcopy(source).eval()
        self.model.requires_grad_(False)
        self.n_updates = 0

    @property
    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.n_updates) / (10.0 + self.n_updates))

    @torch.no_grad()
    def update(self) -> None:
        weight = 1.0 - self.current_decay
        for averaged, current in zip(self.model.parameters(), self.source.parameters(),
                                     strict=True):
            averaged.lerp_(current, weight)
        for averaged, current in zip(self.model.buffers(), self.source.buffers(), strict=True):
            averaged.copy_(current)
        self.n_updates += 1

    def state_dict(self) -> dict:
        return {"decay": self.decay, "n_updates": self.n_updates,
                "model": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.n_updates = int(state["n_updates"])
        self.model.load_state_dict(state["model"])
