"""Loading PaiNN checkpoints in the OC20 / fairchem layout and in the layout of the paper's
released foundation model: key mapping, safe loading, and the mean-energy convention.

The files are written here in the real layouts from our own models (state dicts renamed
into the release's keys, fairchem-style trainer dicts). The paper's architecture is checked
against a direct, dense re-statement of the release's forward pass below; the comparison
with fairchem's and the release's own code is ``benchmarks/verify_fairchem_painn.py``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem

from force2geo.errors import InputError
from force2geo.models import Batch, PaiNN, PaiNNConfig, Potential, energy_and_forces
from force2geo.models.fairchem import (
    foundation_outputs,
    is_fairchem_checkpoint,
    load_fairchem_painn,
)
from force2geo.models.painn_foundation import FoundationPaiNN, FoundationPaiNNConfig
from force2geo.training.checkpoint import load_potential
from force2geo.units import HARTREE_TO_EV

SMILES = ("CCO", "c1ccccc1O", "CC(=O)Oc1ccccc1C(=O)O", "C")
SMALL = dict(hidden_channels=32, num_layers=2, num_rbf=16, cutoff=4.5)


@functools.cache
def molecules() -> list[tuple[np.ndarray, np.ndarray]]:
    """(atomic numbers, positions Å) of a few real molecules, RDKit ETKDG geometries."""
    out = []
    for k, smiles in enumerate(SMILES):
        mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
        assert AllChem.EmbedMolecule(mol, randomSeed=7 + k) == 0
        z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
        out.append((z, mol.GetConformer().GetPositions()))
    return out


def make_batch(dtype=torch.float64) -> Batch:
    mols = molecules()
    z = torch.as_tensor(np.concatenate([m[0] for m in mols]))
    pos = torch.as_tensor(np.concatenate([m[1] for m in mols]), dtype=dtype)
    idx = torch.cat([torch.full((len(m[0]),), k) for k, m in enumerate(mols)])
    return Batch(positions=pos, atomic_numbers=z, system_idx=idx, n_systems=len(mols))


def randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights everywhere, biases and LayerNorms included, so any mis-mapped
    tensor changes the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("offset"):
                continue
            if name.endswith("scale_factor"):  # fitted scale factors, one per layer
                tensor.fill_(0.8 + 0.3 * torch.rand((), generator=generator).item())
                continue
            fan = tensor.shape[-1] if tensor.ndim > 1 else 8
            tensor.copy_(torch.randn(tensor.shape, generator=generator) / math.sqrt(fan))
    return model.eval()


# --------------------------------------------------------------------------- reference


def release_forward(state: dict, z: torch.Tensor, pos: torch.Tensor, cutoff: float,
                    n_layers: int) -> torch.Tensor:
    """Atomic energies of ONE molecule by the release's equations, dense over all pairs:
    row-Z embedding, Gaussians of d on linspace(0, cutoff) without envelope, SiLU,
    displacement vectors r_i - r_j, no scale factors."""
    def lin(x, key):
        bias = state.get(f"{key}.bias")
        return x @ state[f"{key}.weight"].T + (0 if bias is None else bias)

    def mlp(x, key):
        return lin(torch.nn.functional.silu(lin(x, f"{key}.0")), f"{key}.2")

    n, h = len(z), state["atom_emb.weight"].shape[1]
    diff = pos[:, None, :] - pos[None, :, :]  # [i, j, 3] = r_i - r_j
    dist = diff.norm(dim=-1)
    mask = ((dist < cutoff) & ~torch.eye(n, dtype=torch.bool)).to(pos.dtype)  # [i, j]
    offset = state["radial_basis.offset"]
    coeff = -0.5 / (offset[1] - offset[0]) ** 2
    rbf = torch.exp(coeff * (dist[..., None] - offset) ** 2)  # [i, j, n_rbf]
    x = state["atom_emb.weight"][z]
    vec = torch.zeros(n, 3, h, dtype=pos.dtype)
    for layer in range(n_layers):
        m = f"message_layers.{layer}"
        xn = torch.nn.functional.layer_norm(x, (h,), state[f"{m}.x_layernorm.weight"],
                                            state[f"{m}.x_layernorm.bias"])
        w = mlp(xn, f"{m}.x_proj")[None] * lin(rbf, f"{m}.rbf_proj") * mask[..., None]
        ws, wv, wd = w.split(h, dim=-1)  # [i, j, h] each
        x = (x + ws.sum(1)) / math.sqrt(2)
        dvec = (vec[None] * wv[:, :, None] / math.sqrt(3) + diff[..., None] * wd[:, :, None])
        vec = vec + dvec.sum(1) / math.sqrt(h)
        u = f"update_layers.{layer}"
        v1, v2 = lin(vec, f"{u}.vec_proj").split(h, dim=-1)
        a, b, c = mlp(torch.cat([x, torch.sqrt((v2 ** 2).sum(1) + 1e-8)], -1),
                      f"{u}.xvec_proj").split(h, dim=-1)
        x = x + (a + b * (v1 * v2).sum(1) / math.sqrt(h)) / math.sqrt(2)
        vec = vec + c[:, None] * v1
    return mlp(x, "out_energy").squeeze(-1)


# --------------------------------------------------------------------------- files


@pytest.fixture(scope="module")
def foundation_file(tmp_path_factory):
    """The paper's layout: a bare state dict, keys prefixed by DDP's ``module.``."""
    model = randomise(FoundationPaiNN(FoundationPaiNNConfig(**SMALL)), seed=1)
    state = {f"module.{k}": v.clone() for k, v in model.state_dict().items()}
    path = tmp_path_factory.mktemp("ckpt") / "painn_best_model.pth"
    torch.save(state, path)
    return path, {k: v.double() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def oc20_file(tmp_path_factory):
    """A fairchem trainer checkpoint of our OC20-layout PaiNN, with the trainer's extras."""
    model = randomise(PaiNN(PaiNNConfig(**SMALL)), seed=2)
    state = {f"module.{k}": v.clone() for k, v in model.state_dict().items()}
    state["module.radial_basis.rbf.offset"] = torch.linspace(0, 1, SMALL["num_rbf"])
    state["module.out_forces.output_network.0.vec1_proj.weight"] = torch.ones(32, 32)
    refs = torch.zeros(119)
    refs[1], refs[6], refs[8] = -13.6, -1030.0, -2040.0
    checkpoint = {
        "state_dict": state, "epoch": 3, "step": 120, "amp": None,
        "config": {"model": {"name": "painn", "hidden_channels": 32, "num_layers": 2,
                             "num_rbf": 16, "cutoff": 4.5, "max_neighbors": 50,
                             "regress_forces": True, "direct_forces": True,
                             "use_pbc": False}},
        "normalizers": {"energy": {"mean": torch.tensor(0.0), "rmsd": torch.tensor(2.5)}},
        "elementrefs": {"energy": {"element_references": refs}},
        "val_metrics": {"energy_mae": {"metric": np.float64(0.12), "total": np.float64(3.0)}},
    }
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pt"
    torch.save(checkpoint, path)
    return path, model.double(), refs.double()


# --------------------------------------------------------------------------- tests


def test_foundation_matches_the_release_equations(foundation_file):
    path, state = foundation_file
    backbone = load_fairchem_painn(path, dtype=torch.float64).backbone
    batch = make_batch()
    ours = backbone(batch.positions, batch.atomic_numbers, batch.system_idx)
    for k in range(batch.n_systems):
        sel = batch.system_idx == k
        reference = release_forward(state, batch.atomic_numbers[sel], batch.positions[sel],
                                    SMALL["cutoff"], SMALL["num_layers"])
        torch.testing.assert_close(ours[sel], reference, rtol=1e-10, atol=1e-10)


def test_foundation_mean_convention_and_implied_total(foundation_file):
    path, _ = foundation_file
    potential = load_fairchem_painn(path, dtype=torch.float64)
    batch = make_batch()
    mean, wrapper_forces = foundation_outputs(potential, batch)
    energy, forces = energy_and_forces(potential, batch)
    n_atoms = torch.bincount(batch.system_idx).double()
    # The isolated-atom references of the release (Hartree), by hand: C2H6O, C6H6O,
    # C9H8O4, CH4.
    h, c, o = -0.5002727762, -37.8462799513, -75.0606214015
    refs = torch.tensor([2 * c + 6 * h + o, 6 * c + 6 * h + o, 9 * c + 8 * h + 4 * o,
                         c + 4 * h], dtype=torch.float64) * HARTREE_TO_EV
    torch.testing.assert_close(energy, n_atoms * mean + refs, rtol=1e-12, atol=1e-9)
    atomic = potential.backbone(batch.positions, batch.atomic_numbers, batch.system_idx)
    sums = torch.zeros(batch.n_systems, dtype=torch.float64).index_add_(0, batch.system_idx,
                                                                        atomic.detach())
    torch.testing.assert_close(mean, sums / n_atoms)
    torch.testing.assert_close(forces, wrapper_forces * n_atoms[batch.system_idx, None])
    # The wrapper's forces are -d(mean)/dx: check against a finite difference.
    step, atom = 1e-5, 3
    shifted = batch.positions.clone()
    shifted[atom, 0] += step
    plus, _ = foundation_outputs(potential, Batch(shifted, batch.atomic_numbers,
                                                  batch.system_idx, batch.n_systems))
    shifted[atom, 0] -= 2 * step
    minus, _ = foundation_outputs(potential, Batch(shifted, batch.atomic_numbers,
                                                   batch.system_idx, batch.n_systems))
    numeric = -(plus[0] - minus[0]) / (2 * step)
    assert abs(float(numeric - wrapper_forces[atom, 0])) < 1e-7


def test_oc20_trainer_checkpoint_maps_by_name_with_normaliser_and_refs(oc20_file):
    path, model, refs = oc20_file
    potential = load_fairchem_painn(path, dtype=torch.float64)
    assert isinstance(potential.backbone, PaiNN)
    batch = make_batch()
    energy, _ = energy_and_forces(potential, batch)
    atomic = model(batch.positions, batch.atomic_numbers, batch.system_idx).detach()
    expected = torch.zeros(batch.n_systems, dtype=torch.float64).index_add_(
        0, batch.system_idx, 2.5 * atomic + refs[batch.atomic_numbers])
    torch.testing.assert_close(energy, expected, rtol=1e-12, atol=1e-9)


def test_load_potential_dispatches_on_the_keys(foundation_file, oc20_file):
    for path in (foundation_file[0], oc20_file[0]):
        assert is_fairchem_checkpoint(path)
        potential = load_potential(path)
        assert isinstance(potential, Potential)
        assert potential.atom_refs.dtype == torch.float64
        assert next(potential.parameters()).dtype == torch.float32
    assert isinstance(load_potential(foundation_file[0]).backbone, FoundationPaiNN)


def test_float32_load_agrees_with_float64(foundation_file):
    path, _ = foundation_file
    batch = make_batch()
    e64, f64 = energy_and_forces(load_fairchem_painn(path, dtype=torch.float64), batch)
    batch32 = Batch(batch.positions.float(), batch.atomic_numbers, batch.system_idx,
                    batch.n_systems)
    e32, f32 = energy_and_forces(load_fairchem_painn(path), batch32)
    assert torch.allclose(e32, e64, rtol=0, atol=1e-3)
    assert torch.allclose(f32.double(), f64, rtol=0, atol=1e-4)


def test_refuses_pickled_code_and_foreign_files(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {"atom_emb.weight": torch.zeros(2)}, "model": PaiNN(
        PaiNNConfig(**SMALL))}, evil)
    with pytest.raises(InputError, match=r"evil\.pt: refused"):
        load_fairchem_painn(evil)
    assert not is_fairchem_checkpoint(evil)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2)}}, other)
    with pytest.raises(InputError, match=r"other\.pt: not a PaiNN checkpoint"):
        load_fairchem_painn(other)
    with pytest.raises(InputError, match="no such checkpoint"):
        load_fairchem_painn(tmp_path / "missing.pt")


def test_oc20_without_cutoff_and_normaliser_mean_are_refused(oc20_file, tmp_path):
    content = torch.load(oc20_file[0], weights_only=False)
    del content["config"]
    path = tmp_path / "nocutoff.pt"
    torch.save(content, path)
    with pytest.raises(InputError, match="records no cutoff"):
        load_fairchem_painn(path)
    assert load_fairchem_painn(path, cutoff=4.5).backbone.cutoff == 4.5
    content["normalizers"]["energy"]["mean"] = torch.tensor(-0.75)
    torch.save(content, path)
    with pytest.raises(InputError, match="offset per structure"):
        load_fairchem_painn(path, cutoff=4.5)


def test_shape_mismatch_names_the_tensor(foundation_file, tmp_path):
    state = torch.load(foundation_file[0], weights_only=True)
    state["module.message_layers.1.x_layernorm.bias"] = torch.zeros(7)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(InputError, match=r"bad\.pth: message_layers\.1\.x_layernorm\.bias"):
        load_fairchem_painn(path)
