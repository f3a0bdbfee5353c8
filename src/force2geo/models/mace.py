"""MACE (Batatia et al. 2022), an equivariant tensor-product backbone, from mace-torch.

This wraps ``mace.modules.ScaleShiftMACE`` (the model class MACE's own training builds)
behind force2geo's backbone contract: ``forward(positions [n_atoms, 3] Å, atomic_numbers
[n_atoms], system_idx [n_atoms]) -> [n_atoms]`` eV. It feeds MACE our radius graph (no
periodic shifts), one-hot element attributes over ``config.elements``, and takes MACE's
*node energies*: MACE computes no forces here, :func:`~force2geo.models.energy_and_forces`
takes them as -dE/dx like for every other backbone. MACE's own per-element energies E0
are zero: :class:`~force2geo.models.Potential` adds the reference energies.

mace-torch is an optional dependency (``pip install 'force2geo[mace]'``). It is imported
when the first MACE backbone is built, not when force2geo is: importing it takes seconds.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from force2geo.models.graph import radius_graph

INSTALL_HINT = "pip install 'force2geo[mace]'"
# H, B, C, N, O, F, Si, P, S, Cl, Br, I: the elements of drug-like organic molecules.
ORGANIC_ELEMENTS = (1, 5, 6, 7, 8, 9, 14, 15, 16, 17, 35, 53)


def mace_available() -> bool:
    """Whether mace-torch is installed (checked without importing it)."""
    return importlib.util.find_spec("mace") is not None


@dataclass(frozen=True)
class MACEConfig:
    """MACE hyper-parameters; the defaults are a small model for organic molecules.

    ``r_max`` cutoff in Å; ``hidden_irreps`` the node features (e3nn notation: 64 scalars
    and 64 vectors); ``max_ell`` the highest spherical-harmonic order of edge attributes;
    ``correlation`` the body order of the product basis minus one; ``num_bessel`` radial
    functions with a polynomial envelope of order ``num_polynomial_cutoff``; ``radial_mlp``
    hidden widths of the radial network; ``mlp_irreps`` the hidden layer of the last
    readout; ``avg_num_neighbors`` normalises the sum over neighbours (a fixed constant,
    not a parameter); ``elements`` the atomic numbers the model accepts (one-hot table);
    ``scale`` and ``shift`` (eV) map the readout to atomic energies.
    """

    r_max: float = 4.5
    hidden_irreps: str = "64x0e+64x1o"
    max_ell: int = 3
    correlation: int = 3
    num_interactions: int = 2
    num_bessel: int = 8
    num_polynomial_cutoff: int = 5
    radial_mlp: tuple[int, ...] = (64, 64, 64)
    mlp_irreps: str = "16x0e"
    avg_num_neighbors: float = 10.0
    elements: tuple[int, ...] = ORGANIC_ELEMENTS
    scale: float = 1.0
    shift: float = 0.0

    def __post_init__(self) -> None:
        # Lists arrive from JSON (checkpoints, --model-option): keep the config hashable.
        object.__setattr__(self, "radial_mlp", tuple(int(w) for w in self.radial_mlp))
        object.__setattr__(self, "elements", tuple(int(z) for z in self.elements))
        if not self.elements or len(set(self.elements)) != len(self.elements) or \
                min(self.elements) < 1 or max(self.elements) > 118:
            raise ValueError(f"elements: distinct atomic numbers in 1..118, got "
                             f"{list(self.elements)}")
        if not self.r_max > 0:
            raise ValueError(f"r_max: must be positive (Å), got {self.r_max}")
        if self.num_interactions < 1 or self.correlation < 1:
            raise ValueError(f"num_interactions and correlation must be >= 1, got "
                             f"{self.num_interactions}, {self.correlation}")


def _import_mace():
    """``(mace.modules, e3nn.o3)``, imported without mace's side effects on the process.

    Importing mace sets ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` in the environment (which
    would make every later ``torch.load`` without an explicit ``weights_only`` unpickle
    arbitrary objects, in this process and its children) and prints a line about
    cuequivariance to stdout; both are undone here. mace sets that variable so that e3nn
    0.4.4 can read its table of constants, which holds ``slice`` objects: e3nn is imported
    first, with ``slice`` allowed for a weights-only load instead.
    """
    if not mace_available():
        raise ImportError(f"the MACE backbone needs mace-torch: {INSTALL_HINT}")
    key = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
    before = os.environ.get(key)
    try:
        with contextlib.redirect_stdout(io.StringIO()), _quiet_torchscript(), \
                torch.serialization.safe_globals([slice]):
            from e3nn import o3
            from mace import modules
    except ImportError as exc:
        raise ImportError(f"mace-torch is installed but does not import ({exc}); "
                          f"reinstall it: {INSTALL_HINT}") from exc
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before
    return modules, o3


def build_mace_model(config: MACEConfig) -> nn.Module:
    """The ``mace.modules.ScaleShiftMACE`` of ``config``, with zero per-element E0."""
    modules, o3 = _import_mace()
    with _quiet_torchscript():
        return _scale_shift_mace(modules, o3, config)


@contextlib.contextmanager
def _quiet_torchscript():
    """e3nn compiles functions and modules with TorchScript when imported and built, which
    warns that TorchScript is deprecated and about an annotation style in e3nn's code:
    nothing a user of force2geo can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The TorchScript type system doesn't "
                                "support instance-level annotations")
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated")
        yield


def _scale_shift_mace(modules, o3, config: MACEConfig) -> nn.Module:
    n_elements = len(config.elements)
    return modules.ScaleShiftMACE(
        r_max=float(config.r_max),
        num_bessel=config.num_bessel,
        num_polynomial_cutoff=config.num_polynomial_cutoff,
        max_ell=config.max_ell,
        interaction_cls=modules.RealAgnosticResidualInteractionBlock,
        interaction_cls_first=modules.RealAgnosticInteractionBlock,
        num_interactions=config.num_interactions,
        num_elements=n_elements,
        hidden_irreps=o3.Irreps(config.hidden_irreps),
        MLP_irreps=o3.Irreps(config.mlp_irreps),
        atomic_energies=torch.zeros(n_elements, dtype=torch.float64).numpy(),
        avg_num_neighbors=float(config.avg_num_neighbors),
        atomic_numbers=list(config.elements),
        correlation=config.correlation,
        gate=nn.functional.silu,
        radial_MLP=list(config.radial_mlp),
        atomic_inter_scale=float(config.scale),
        atomic_inter_shift=float(config.shift),
    )


class MACE(nn.Module):
    """MACE backbone: ``forward(positions, atomic_numbers, system_idx) -> [n_atoms]`` eV,
    one energy contribution per atom (MACE's node energies).

    The wrapped ``mace.modules.ScaleShiftMACE`` is ``self.model``; its weights are the
    only parameters.
    """

    Config = MACEConfig

    def __init__(self, config: MACEConfig | None = None):
        super().__init__()
        config = config or MACEConfig()
        self.config = config
        self.cutoff = float(config.r_max)
        self.model = build_mace_model(config)
        # atomic number -> row of the one-hot table (-1: not an element of the model).
        index = torch.full((119,), -1, dtype=torch.long)
        index[list(config.elements)] = torch.arange(len(config.elements))
        self.register_buffer("element_index", index, persistent=False)

    def node_attributes(self, atomic_numbers: Tensor, dtype: torch.dtype) -> Tensor:
        """One-hot element rows ``[n_atoms, n_elements]``; ValueError for other elements."""
        rows = self.element_index[atomic_numbers.clamp(0, 118)]
        bad = (rows < 0) | (atomic_numbers < 0) | (atomic_numbers > 118)
        if bool(bad.any()):
            raise ValueError(f"atomic numbers {sorted(set(atomic_numbers[bad].tolist()))} "
                             f"outside the model's elements {list(self.config.elements)}")
        return nn.functional.one_hot(rows, len(self.config.elements)).to(dtype)

    def mace_inputs(self, positions: Tensor, atomic_numbers: Tensor,
                    system_idx: Tensor) -> dict[str, Tensor]:
        """The input dict ``mace.modules`` models read, for molecules without a cell."""
        # MACE marks the positions it gets as requiring gradients, in place: give it an
        # alias when the caller's tensor does not, so the caller's tensor stays as it was.
        if not positions.requires_grad:
            positions = positions.detach()
        graph = radius_graph(positions, system_idx, self.cutoff)
        n_systems = int(system_idx.max()) + 1 if system_idx.numel() else 0
        counts = torch.bincount(system_idx, minlength=n_systems)
        ptr = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
        n_edges = graph.edge_index.shape[1]
        return {
            "positions": positions,
            "node_attrs": self.node_attributes(atomic_numbers, positions.dtype),
            "edge_index": graph.edge_index,  # row 0 sender j, row 1 receiver i
            "shifts": positions.new_zeros(n_edges, 3),
            "unit_shifts": positions.new_zeros(n_edges, 3),
            "cell": positions.new_zeros(n_systems, 3, 3),
            "batch": system_idx,
            "ptr": ptr,
        }

    def forward(self, positions: Tensor, atomic_numbers: Tensor, system_idx: Tensor) -> Tensor:
        data = self.mace_inputs(positions, atomic_numbers, system_idx)
        out = self.model(data, training=self.training, compute_force=False)
        # ScaleShiftMACE returns node energies in float64; keep the model dtype.
        return out["node_energy"].to(positions.dtype)
