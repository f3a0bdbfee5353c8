"""The property predictor: a backbone, a property readout and a displacement head.

``PropertyModel = encoder(backbone) + PropertyHead (+ displacement head for 3D backbones)``.

* The **encoder** turns a :class:`~force2geo.finetune.dataset.PropertyBatch` into node
  features: PaiNN's scalar and vector features of every atom, SchNet's scalar features, or
  one pooled embedding per molecule from a 2D graph network (GIN-virtual).
* The **property head** pools an MLP of the scalar features per molecule. Targets are
  standardised by the training set's mean and standard deviation, kept as buffers, so
  ``forward`` returns eV: ``y = target_mean + target_std * head(features)``.
* The **displacement head** predicts one vector per atom (Å) for geometry fine-tuning
  (paper §2.4) and coordinate denoising: gated equivariant blocks on PaiNN's vector
  features, or a pairwise sum over the radius graph for SchNet. 2D backbones have none.

Force2Prop (paper §4.4) is :meth:`PropertyModel.from_mlip`: the backbone of a trained
potential (ours or the paper's released PaiNN) with new heads. ``freeze_backbone()``
trains the heads only (the paper's Fig. 4); the backbone then also stays in eval mode.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor, nn

from force2geo.finetune.heads import (
    PairDisplacementHead,
    PropertyHead,
    VectorDisplacementHead,
)
from force2geo.models import PaiNN, SchNet
from force2geo.models.gin import GINVirtual
from force2geo.models.painn_foundation import FoundationPaiNN

if TYPE_CHECKING:
    from force2geo.finetune.dataset import PropertyBatch


class NodeFeatures(NamedTuple):
    """What an encoder returns: ``scalars [n_nodes, H]``, ``vectors [n_nodes, 3, H]`` or
    None, the molecule of each node ``node_system [n_nodes]`` and ``n_systems``."""

    scalars: Tensor
    vectors: Tensor | None
    node_system: Tensor
    n_systems: int


class VectorEncoder(nn.Module):
    """PaiNN-like backbones: ``representation(...) -> (x [n_atoms, H], vec [n_atoms, 3, H])``."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, pb: PropertyBatch) -> NodeFeatures:
        b = pb.batch
        x, vec = self.backbone.representation(b.positions, b.atomic_numbers, b.system_idx)
        return NodeFeatures(x, vec, b.system_idx, b.n_systems)


class ScalarEncoder(nn.Module):
    """SchNet-like backbones: ``representation(...) -> h [n_atoms, H]``."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, pb: PropertyBatch) -> NodeFeatures:
        b = pb.batch
        h = self.backbone.representation(b.positions, b.atomic_numbers, b.system_idx)
        return NodeFeatures(h, None, b.system_idx, b.n_systems)


class GraphEncoder(nn.Module):
    """2D graph networks (GIN-virtual): ``representation(graph2d) -> [n_systems, H]``, one
    pooled embedding per molecule of its heavy-atom graph (no positions). Each molecule is
    then a single node for the property head, so the head is OGB's "pool, then predict"."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, pb: PropertyBatch) -> NodeFeatures:
        graph = pb.graph2d
        if graph is None:
            raise ValueError("a 2D backbone needs the batch's 2D graphs (batch(..., "
                             "with_2d=True))")
        pooled = self.backbone.representation(graph)  # [n_systems, H]
        one_node_each = torch.arange(graph.n_systems, device=pooled.device)
        return NodeFeatures(pooled, None, one_node_each, graph.n_systems)


class BackboneSpec(NamedTuple):
    """How a backbone class is wrapped: its encoder, its displacement head (None: a 2D
    backbone without positions) and whether its batches need 2D graphs."""

    cls: type[nn.Module]
    encoder: type[nn.Module]
    displacement: Callable[[int, nn.Module], nn.Module] | None
    needs_2d: bool = False


def _vector_head(hidden: int, backbone: nn.Module) -> nn.Module:
    return VectorDisplacementHead(hidden)


def _pair_head(hidden: int, backbone: nn.Module) -> nn.Module:
    return PairDisplacementHead(hidden, backbone.cutoff)


BACKBONES: dict[str, BackboneSpec] = {
    "painn": BackboneSpec(PaiNN, VectorEncoder, _vector_head),
    "painn_foundation": BackboneSpec(FoundationPaiNN, VectorEncoder, _vector_head),
    "schnet": BackboneSpec(SchNet, ScalarEncoder, _pair_head),
    "gin": BackboneSpec(GINVirtual, GraphEncoder, None, needs_2d=True),
}


def _spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise ValueError(f"unknown property backbone {name!r}; known: {sorted(BACKBONES)}")
    return BACKBONES[name]


def backbone_name_of(backbone: nn.Module) -> str:
    """The :data:`BACKBONES` key of a backbone instance (for an MLIP's backbone)."""
    for name, spec in BACKBONES.items():
        if type(backbone) is spec.cls:
            return name
    raise ValueError(f"a {type(backbone).__name__} backbone cannot carry a property head "
                     f"(supported: {', '.join(s.cls.__name__ for s in BACKBONES.values())})")


class PropertyModel(nn.Module):
    """Backbone + property head (eV, standardised internally) + displacement head.

    Build with :meth:`build` (from scratch), :meth:`from_mlip` (Force2Prop) or
    :meth:`from_description` (a checkpoint's ``model`` entry, before loading weights).
    """

    def __init__(self, backbone_name: str, backbone: nn.Module, readout: str = "mean"):
        super().__init__()
        spec = _spec(backbone_name)
        if type(backbone) is not spec.cls:
            raise ValueError(f"backbone {backbone_name!r} must be a {spec.cls.__name__}, got "
                             f"{type(backbone).__name__}")
        self.backbone_name = backbone_name
        self.needs_2d = spec.needs_2d
        hidden = backbone.config.hidden_channels
        self.encoder = spec.encoder(backbone)
        self.property_head = PropertyHead(hidden, readout)
        self.displacement_head = (None if spec.displacement is None
                                  else spec.displacement(hidden, backbone))
        self.register_buffer("target_mean", torch.zeros(()))
        self.register_buffer("target_std", torch.ones(()))
        self.backbone_frozen = False

    # -- construction
    @classmethod
    def build(cls, backbone_name: str, backbone_config: dict | None = None,
              readout: str = "mean") -> PropertyModel:
        """A randomly initialised model; ``backbone_config``: fields of the backbone's
        config dataclass (defaults: the paper's sizes)."""
        spec = _spec(backbone_name)
        backbone = spec.cls(spec.cls.Config(**(backbone_config or {})))
        return cls(backbone_name, backbone, readout)

    @classmethod
    def from_mlip(cls, checkpoint_path: str | os.PathLike, readout: str = "mean",
                  dtype: torch.dtype = torch.float32, use_ema: bool = True) -> PropertyModel:
        """Force2Prop: the backbone of the potential in ``checkpoint_path`` (a force2geo
        training checkpoint, or a PaiNN checkpoint in the OC20 or the paper's released
        layout, read by :func:`~force2geo.training.checkpoint.load_potential`) with new,
        randomly initialised heads. The MLIP's energy head and reference energies are
        not used."""
        from force2geo.training.checkpoint import load_potential

        potential = load_potential(checkpoint_path, dtype=dtype, use_ema=use_ema)
        backbone = potential.backbone
        model = cls(backbone_name_of(backbone), backbone, readout)
        return model.to(dtype)

    def description(self) -> dict:
        """Everything needed to rebuild this architecture (plain JSON values)."""
        return {"backbone": self.backbone_name,
                "backbone_config": dataclasses.asdict(self.backbone.config),
                "readout": self.property_head.readout}

    @classmethod
    def from_description(cls, description: dict) -> PropertyModel:
        return cls.build(description["backbone"], description["backbone_config"],
                         description["readout"])

    # -- parts
    @property
    def backbone(self) -> nn.Module:
        return self.encoder.backbone

    def head_parameters(self) -> list[nn.Parameter]:
        heads = [self.property_head, self.displacement_head]
        return [p for head in heads if head is not None for p in head.parameters()]

    def set_target_normalisation(self, mean: float, std: float) -> None:
        """Targets are predicted as ``mean + std * head`` (eV)."""
        if not std > 0:
            raise ValueError(f"target standard deviation must be positive, got {std}")
        self.target_mean.fill_(float(mean))
        self.target_std.fill_(float(std))

    def freeze_backbone(self) -> None:
        """Train the heads only: the backbone's weights stop requiring gradients and the
        backbone stays in eval mode (no batch-norm statistics drift) from now on."""
        self.backbone_frozen = True
        for parameter in self.backbone.parameters():
            parameter.requires_grad_(False)
        self.encoder.eval()

    def train(self, mode: bool = True) -> PropertyModel:
        super().train(mode)
        if self.backbone_frozen:
            self.encoder.eval()
        return self

    # -- prediction
    def forward(self, pb: PropertyBatch) -> Tensor:
        """The property of every molecule, ``[n_systems]`` eV."""
        return self._property(self.encoder(pb))

    def predict_with_displacement(self, pb: PropertyBatch) -> tuple[Tensor, Tensor]:
        """``([n_systems] eV, [n_atoms, 3] Å)``: the property and the predicted displacement
        of every atom (3D backbones only)."""
        if self.displacement_head is None:
            raise ValueError(f"backbone {self.backbone_name!r} has no displacement head "
                             "(a 2D graph has no atom positions)")
        features = self.encoder(pb)
        b = pb.batch
        displacement = self.displacement_head(features.scalars, features.vectors,
                                              b.positions, b.system_idx)
        return self._property(features), displacement

    def _property(self, features: NodeFeatures) -> Tensor:
        standardised = self.property_head(features.scalars, features.node_system,
                                          features.n_systems)
        return self.target_mean + self.target_std * standardised
