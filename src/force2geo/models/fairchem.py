"""PaiNN checkpoints in the Open Catalyst layout: the paper's released foundation model and
fairchem (OCP) trainer checkpoints, loaded into force2geo models.

**Files.** Either a bare state dict (the paper's release: ``torch.load`` gives the weights,
keys prefixed ``module.`` by DDP), or a dict holding one under ``state_dict`` (fairchem
trainers, with ``config``, ``normalizers``, ``elementrefs``, ...) or ``model_state_dict``
(the paper's pre-training script). Prefixes ``module.`` (repeated), ``backbone.`` and
``model.`` are stripped, and fairchem heads ``output_heads.<name>.out_energy`` become
``out_energy``. Files are read with ``torch.load(weights_only=True)``, a restricted
unpickler: tensors, containers, plain values and numpy arrays/scalars only, never code.

**Layouts**, told apart by their keys:

* ``"foundation"`` (``atom_emb.weight``, ``radial_basis.offset``): the paper's model,
  loaded into :class:`~force2geo.models.painn_foundation.FoundationPaiNN`, which says how
  it differs from OC20's PaiNN. The cutoff is read from the last Gaussian centre.
* ``"oc20"`` (``atom_emb.embeddings.weight``): fairchem's PaiNN, loaded into
  :class:`~force2geo.models.painn.PaiNN` by name. ``radial_basis.rbf.offset`` (recomputed
  here) and a direct-force head ``out_forces.*`` are dropped: forces are always -dE/dx.
  The cutoff comes from the file's config or the ``cutoff`` argument. A fairchem energy
  normaliser is folded into the output layer (``rmsd``; a non-zero ``mean`` per structure
  cannot be, and is refused) and its linear element references become the atom references.

**What the paper's checkpoint computes.** Pre-training target: ``y = (E - sum_i ref[Z_i]) /
N`` in eV/atom (E and the isolated-atom references ``ref`` in Hartree, times 27.2114). The
model's output is the *mean* of its atomic energies ``e_i``, and its wrapper's forces are
``-d(mean)/dx = -(1/N) dE/dx``, which the pre-training script (``OpenMol/TDN/main.py``,
energy and force weights 1 by default) fitted to DFT forces in full eV/Å. The two targets
disagree by the factor N, so the weights are a compromise between them. (That script also
dropped atoms without a neighbour within the cutoff before averaging; the fine-tuning
wrapper, reproduced here, keeps them. Molecules rarely have such atoms.)
:func:`foundation_outputs` returns exactly what the wrapper returns. The
:class:`~force2geo.models.Potential` built here follows the energy target:

    ``E_total = N * mean + sum_i ref[Z_i] = sum_i (e_i + ref[Z_i])``  (eV)
    ``F = -dE_total/dx = N * (the wrapper's forces)``                (eV/Å)

with ``ref`` the table of :func:`force2geo.data.readers.pubchemqcr.atom_reference_energies_ev`
(CODATA Hartree, so totals match PubChemQCR stores converted here). The force directions
are the wrapper's, so both have the same minima (not the same optimiser paths); a force
threshold ``fmax`` on the wrapper's forces is ``N * fmax`` on this Potential's.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from force2geo.errors import InputError
from force2geo.models.batch import Batch
from force2geo.models.layers import scatter_sum
from force2geo.models.painn import PaiNN, PaiNNConfig
from force2geo.models.painn_foundation import FoundationPaiNN, FoundationPaiNNConfig
from force2geo.models.potential import N_ELEMENT_SLOTS, Potential, elements_from_refs

PREFIXES = ("module.", "backbone.", "model.")
STATE_KEYS = ("state_dict", "model_state_dict")
_HEAD = re.compile(r"^output_heads\.[^.]+\.(?=out_energy\.|out_forces\.)")
_LAYER = re.compile(r"^message_layers\.(\d+)\.")
_DROPPED_OC20 = re.compile(r"^(radial_basis\.rbf\.offset$|out_forces\.)")


# --------------------------------------------------------------------------- files


def _numpy_globals() -> list:
    """numpy names a fairchem checkpoint may pickle (metrics, normaliser values): arrays,
    scalars and dtypes are data, not code. Both numpy 1 and 2 module names."""
    core = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    allowed: list = [np.dtype, np.ndarray, core.scalar, core._reconstruct]
    allowed += [(core.scalar, "numpy.core.multiarray.scalar"),
                (core._reconstruct, "numpy.core.multiarray._reconstruct")]
    allowed += [type(np.dtype(name)) for name in ("f4", "f8", "i4", "i8", "b1")]
    return allowed


def read_torch_file(path: str | os.PathLike) -> object:
    """``torch.load`` of ``path`` on the CPU through the restricted unpickler.

    Raises :class:`InputError` naming the file when it is missing, damaged, or holds
    anything but tensors, containers, plain values and numpy data.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such checkpoint file")
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        why = next((line for line in lines if "Unsupported global" in line),
                   lines[0] if lines else type(exc).__name__)
        raise InputError(path, f"refused: holds more than tensors and plain values "
                         f"({why})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise InputError(path, f"damaged or not a torch checkpoint ({exc})") from None


def strip_prefixes(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """``state`` with wrapper prefixes removed (see the module docstring)."""
    out = {}
    for key, value in state.items():
        name = key
        while name.startswith(PREFIXES):
            name = name[len(next(p for p in PREFIXES if name.startswith(p))):]
        out[_HEAD.sub("", name)] = value
    return out


def state_dict_of(content: object) -> dict[str, Tensor] | None:
    """The model weights inside a loaded file (prefixes stripped), or None if there are none."""
    if not isinstance(content, dict):
        return None
    for key in STATE_KEYS:
        if isinstance(content.get(key), dict):
            content = content[key]
            break
    if not content or not all(isinstance(v, Tensor) for v in content.values()):
        return None
    if not all(isinstance(k, str) for k in content):
        return None
    return strip_prefixes(content)


def detect_layout(state: dict[str, Tensor]) -> str | None:
    """``"foundation"``, ``"oc20"``, or None when ``state`` is not a PaiNN of either layout."""
    if "atom_emb.weight" in state and "radial_basis.offset" in state:
        return "foundation"
    if "atom_emb.embeddings.weight" in state:
        return "oc20"
    return None


def is_fairchem_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a readable PaiNN checkpoint of a layout this module loads."""
    try:
        content = read_torch_file(path)
    except InputError:
        return False
    state = state_dict_of(content)
    return state is not None and detect_layout(state) is not None


# --------------------------------------------------------------------------- configs


def _shape_config(path: Path, state: dict[str, Tensor], embedding_key: str) -> dict:
    """Sizes read off the weights: hidden, layers, Gaussians, elements."""
    layers = {int(m.group(1)) for key in state if (m := _LAYER.match(key))}
    rbf_key = "message_layers.0.rbf_proj.weight"
    if not layers or rbf_key not in state:
        raise InputError(path, "no PaiNN message layers (message_layers.0.rbf_proj.weight)")
    if layers != set(range(len(layers))):
        raise InputError(path, f"message layers {sorted(layers)} are not 0..{len(layers) - 1}")
    n_elements, hidden = state[embedding_key].shape
    return {"hidden_channels": int(hidden), "num_layers": len(layers),
            "num_rbf": int(state[rbf_key].shape[1]), "num_elements": int(n_elements)}


def _model_config(content: object) -> dict:
    """The model section of a fairchem config (v1 flat, hydra ``backbone``, or old
    ``model_attributes``), or {}."""
    config = content.get("config") if isinstance(content, dict) else None
    if not isinstance(config, dict):
        return {}
    model = config.get("model")
    model = dict(model) if isinstance(model, dict) else {}
    if isinstance(model.get("backbone"), dict):
        model = dict(model["backbone"])
    if isinstance(config.get("model_attributes"), dict):
        model = {**config["model_attributes"], **model}
    return model


def oc20_config(path: Path, state: dict[str, Tensor], content: object,
                cutoff: float | None) -> PaiNNConfig:
    """The :class:`PaiNNConfig` of an OC20-layout checkpoint (see the module docstring)."""
    model = _model_config(content)
    cutoff = cutoff if cutoff is not None else model.get("cutoff")
    if cutoff is None:
        raise InputError(path, "the file records no cutoff; pass cutoff= (Å)")
    rbf = model.get("rbf") or {"name": "gaussian"}
    envelope = model.get("envelope") or {"name": "polynomial", "exponent": 5}
    if rbf.get("name") != "gaussian" or envelope.get("name") != "polynomial":
        raise InputError(path, f"radial basis {rbf} with envelope {envelope} is not the "
                         f"Gaussian + polynomial basis force2geo's PaiNN implements")
    offsets = state.get("radial_basis.rbf.offset")
    sizes = _shape_config(path, state, "atom_emb.embeddings.weight")
    if offsets is not None and not torch.allclose(
        offsets.double(), torch.linspace(0, 1, sizes["num_rbf"], dtype=torch.float64),
        atol=1e-6,
    ):
        raise InputError(path, "radial_basis.rbf.offset is not linspace(0, 1): a Gaussian "
                         "basis this PaiNN does not implement")
    return PaiNNConfig(cutoff=float(cutoff), envelope_exponent=int(envelope.get("exponent", 5)),
                       **sizes)


def foundation_config(path: Path, state: dict[str, Tensor]) -> FoundationPaiNNConfig:
    """The config of the paper's layout; the cutoff is the last Gaussian centre."""
    sizes = _shape_config(path, state, "atom_emb.weight")
    offsets = state["radial_basis.offset"].double()
    cutoff = float(offsets[-1])
    expected = torch.linspace(0, cutoff, sizes["num_rbf"], dtype=torch.float64)
    if offsets.shape != expected.shape or not torch.allclose(offsets, expected, atol=1e-5):
        raise InputError(path, "radial_basis.offset is not linspace(0, cutoff, num_rbf)")
    return FoundationPaiNNConfig(cutoff=round(cutoff, 6), **sizes)


# --------------------------------------------------------------------------- weights


def _energy_normalizer(path: Path, content: object) -> float:
    """The ``rmsd`` of a fairchem energy normaliser (1 when there is none)."""
    normalizers = content.get("normalizers") if isinstance(content, dict) else None
    if not isinstance(normalizers, dict):
        return 1.0
    energy = normalizers.get("energy", normalizers.get("target"))
    if not isinstance(energy, dict):
        return 1.0
    mean = float(torch.as_tensor(energy.get("mean", 0.0)))
    if mean != 0.0:
        raise InputError(path, f"energy normaliser mean {mean} eV is an offset per structure, "
                         f"which a sum of atomic energies cannot carry")
    return float(torch.as_tensor(energy.get("rmsd", energy.get("std", 1.0))))


def _element_references(content: object) -> np.ndarray | None:
    """fairchem's linear energy references ``[119]`` eV (index = Z), or None."""
    refs = content.get("elementrefs") if isinstance(content, dict) else None
    refs = refs.get("energy") if isinstance(refs, dict) else None
    table = refs.get("element_references") if isinstance(refs, dict) else None
    if not isinstance(table, Tensor):
        return None
    out = np.zeros(N_ELEMENT_SLOTS, dtype=np.float64)
    n = min(N_ELEMENT_SLOTS, table.shape[0])
    out[:n] = table[:n].double().numpy()
    return out


def _load_weights(path: Path, model: nn.Module, state: dict[str, Tensor]) -> None:
    """Copy ``state`` into ``model`` by name; every weight of each must match."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise InputError(path, f"weights do not fit a {type(model).__name__} "
                         f"{model.config}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for key, value in state.items():
        if value.shape != own[key].shape:
            raise InputError(path, f"{key} has shape {tuple(value.shape)}, the model "
                             f"{tuple(own[key].shape)}")
    model.load_state_dict(state)


def backbone_from_state(path: str | os.PathLike, content: object,
                        cutoff: float | None = None) -> tuple[nn.Module, str]:
    """The backbone (float64, weights loaded) of a loaded file ``content``, and its layout."""
    path = Path(path)
    state = state_dict_of(content)
    layout = None if state is None else detect_layout(state)
    if layout is None:
        keys = [] if state is None else sorted(state)[:5]
        raise InputError(path, f"not a PaiNN checkpoint in the OC20 or the paper's layout "
                         f"(no atom_emb weights; first keys {keys})")
    if layout == "foundation":
        backbone: nn.Module = FoundationPaiNN(foundation_config(path, state))
    else:
        config = oc20_config(path, state, content, cutoff)
        state = {k: v for k, v in state.items() if not _DROPPED_OC20.match(k)}
        backbone = PaiNN(config)
    # In float64, so that casting to the caller's dtype later rounds the folded weights once.
    backbone = backbone.double()
    _load_weights(path, backbone, {k: v.double() for k, v in state.items()})
    scale = _energy_normalizer(path, content) if layout == "oc20" else 1.0
    if scale != 1.0:
        with torch.no_grad():  # e_i * rmsd: the denormalised atomic energies
            backbone.out_energy[2].weight.mul_(scale)
            backbone.out_energy[2].bias.mul_(scale)
    return backbone.eval(), layout


# --------------------------------------------------------------------------- public


def pubchemqcr_atom_refs() -> np.ndarray:
    """The paper's isolated-atom references ``[119]`` eV (index = Z; 0 where none)."""
    from force2geo.data.readers.pubchemqcr import atom_reference_energies_ev

    refs = np.zeros(N_ELEMENT_SLOTS, dtype=np.float64)
    for z, energy in atom_reference_energies_ev().items():
        refs[z] = energy
    return refs


def load_fairchem_painn(path: str | os.PathLike, atom_refs: Sequence[float] | str = "auto",
                        cutoff: float | None = None, dtype: torch.dtype = torch.float32,
                        device: str | torch.device = "cpu") -> Potential:
    """A :class:`Potential` (eval mode) from a PaiNN checkpoint in the paper's or the OC20
    layout (see the module docstring for what its energy and forces mean).

    ``atom_refs``: ``"auto"`` takes the PubChemQCR isolated-atom table for the paper's
    layout and a fairchem file's element references (else zeros) for OC20's; ``"pubchemqcr"``
    the table; or ``[119]`` eV values (index = Z). ``cutoff`` (Å) is needed only for an OC20
    file whose config does not record it. References stay float64 whatever ``dtype``.
    """
    content = read_torch_file(path)
    backbone, layout = backbone_from_state(path, content, cutoff)
    if isinstance(atom_refs, str):
        if atom_refs not in ("auto", "pubchemqcr"):
            raise ValueError(f"atom_refs must be 'auto', 'pubchemqcr' or 119 values, "
                             f"got {atom_refs!r}")
        refs = _element_references(content) if layout == "oc20" else None
        if atom_refs == "pubchemqcr" or layout == "foundation":
            refs = pubchemqcr_atom_refs()
    else:
        refs = np.asarray(atom_refs, dtype=np.float64)
    # These files do not list their training elements: those with a reference energy
    # (the dataset's element table) are the best answer they give.
    elements = None if refs is None else elements_from_refs(refs)
    potential = Potential(backbone, refs, elements)
    return potential.to(dtype).to(device).eval()


def foundation_outputs(potential: Potential | nn.Module, batch: Batch,
                       create_graph: bool = False) -> tuple[Tensor, Tensor]:
    """Exactly what the paper's wrapper returns: the mean atomic energy of each molecule
    ``[n_systems]`` eV/atom (no references) and ``-d(mean)/dx [n_atoms, 3]`` (eV/Å / atom),
    both in the model dtype. ``potential`` is a Potential or a bare backbone."""
    backbone = potential.backbone if isinstance(potential, Potential) else potential
    positions = batch.positions
    if not positions.requires_grad:
        positions = positions.detach().requires_grad_(True)
    with torch.enable_grad():
        atomic = backbone(positions, batch.atomic_numbers, batch.system_idx)  # [n_atoms]
        counts = torch.bincount(batch.system_idx, minlength=batch.n_systems).to(atomic.dtype)
        mean = scatter_sum(atomic, batch.system_idx, batch.n_systems) / counts
        (gradient,) = torch.autograd.grad(mean.sum(), positions, create_graph=create_graph)
    return (mean if create_graph else mean.detach()), -gradient
