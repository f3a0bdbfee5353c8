"""The MACE backbone beyond the shared contract of test_models.py: our batch path gives
what mace-torch's own data path gives on the same weights, elements outside the table are
clear errors, and importing mace leaves the process as it was."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from ase import Atoms

from force2geo.models import (
    MODELS,
    Batch,
    MACEConfig,
    Potential,
    build_backbone,
    energy_and_forces,
)
from force2geo.models.mace import mace_available
from force2geo.qc.protocol import embed, prepare

pytestmark = pytest.mark.skipif(not mace_available(),
                                reason="mace-torch not installed (force2geo[mace])")

SMALL = MACEConfig(r_max=4.0, hidden_irreps="8x0e+8x1o", max_ell=2, correlation=2,
                   num_bessel=6, radial_mlp=(8, 8), mlp_irreps="4x0e", elements=(1, 6, 7, 8))
SMILES = ("CCO", "CC#N", "O", "Oc1ccccc1")


@pytest.fixture(scope="module")
def backbone():
    """A small MACE in float64, every parameter perturbed (no zero weights hiding a bug)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_backbone("mace", **vars(SMALL))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model.double()


@pytest.fixture(scope="module")
def molecules():
    """Real molecules at RDKit ETKDG geometries, as ASE Atoms (Å)."""
    atoms = []
    for k, smiles in enumerate(SMILES):
        mol = prepare(smiles)
        z = [a.GetAtomicNum() for a in mol.GetAtoms()]
        atoms.append(Atoms(numbers=z, positions=embed(mol, seed=k)))
    return atoms


def mace_own_outputs(model, atoms_list):
    """Node energies, energies and forces from mace's own data path: its neighbour list
    (matscipy), its element table and batching, its forces (autograd inside MACE)."""
    from mace.data import AtomicData, config_from_atoms
    from mace.tools import AtomicNumberTable, torch_geometric

    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # mace builds its tensors in the default dtype
    try:
        table = AtomicNumberTable(list(SMALL.elements))
        data = [AtomicData.from_config(config_from_atoms(a), z_table=table, cutoff=SMALL.r_max)
                for a in atoms_list]
        loader = torch_geometric.dataloader.DataLoader(data, batch_size=len(data),
                                                       shuffle=False)
        batch = next(iter(loader))
    finally:
        torch.set_default_dtype(default)
    out = model.model(batch.to_dict(), compute_force=True)
    return out["node_energy"].detach(), out["energy"].detach(), out["forces"].detach()


def test_matches_mace_own_data_path(backbone, molecules):
    batch = Batch.from_atoms(molecules, dtype=torch.float64)
    potential = Potential(backbone).double()
    energy, forces = energy_and_forces(potential, batch)
    with torch.no_grad():
        atomic = backbone(batch.positions, batch.atomic_numbers, batch.system_idx)
    node_energy, their_energy, their_forces = mace_own_outputs(backbone, molecules)

    assert atomic.dtype == torch.float64 and forces.abs().max() > 1e-2
    torch.testing.assert_close(atomic, node_energy, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(energy, their_energy, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(forces, their_forces, rtol=1e-10, atol=1e-10)
    assert not batch.positions.requires_grad  # the caller's tensor is left as it was


def test_elements_outside_the_table_and_missing_package_are_clear_errors(backbone,
                                                                          monkeypatch):
    batch = Batch.from_arrays([np.array([6, 9, 1])],
                              [np.array([[0.0, 0, 0], [1.35, 0, 0], [-0.6, 0.9, 0]])],
                              dtype=torch.float64)
    with pytest.raises(ValueError, match=r"\[9\] outside the model's elements \[1, 6, 7, 8\]"):
        backbone(batch.positions, batch.atomic_numbers, batch.system_idx)
    monkeypatch.delitem(MODELS, "mace")  # as where mace-torch is not installed
    with pytest.raises(ValueError, match=r"needs mace-torch \(pip install 'force2geo\[mace\]'\)"):
        build_backbone("mace")


def test_config_from_json_lists_and_bad_values():
    again = MACEConfig(**{**vars(SMALL), "elements": [1, 6, 7, 8], "radial_mlp": [8, 8]})
    assert again == SMALL and hash(again) == hash(SMALL)
    with pytest.raises(ValueError, match="elements: distinct atomic numbers"):
        MACEConfig(elements=(1, 6, 6))
    with pytest.raises(ValueError, match="r_max: must be positive"):
        MACEConfig(r_max=0.0)


def test_building_mace_leaves_weights_only_loads_alone(backbone, tmp_path):
    """Importing mace sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1, which makes a torch.load
    without ``weights_only`` unpickle anything; building our backbone (the fixture, which
    imported mace in this process) must leave it unset."""
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in os.environ
    path = tmp_path / "object.pt"
    torch.save({"a": slice(1, 2)}, path)  # a global that weights-only loads refuse
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        torch.load(path)


@pytest.mark.slow  # a fresh interpreter importing torch and mace: ~15 s
def test_building_mace_leaves_environment_and_stdout_alone():
    """mace sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 and prints on import; a fresh process
    shows that building the backbone undoes both."""
    code = ("import os, torch\n"
            "from force2geo.models import build_backbone\n"
            "build_backbone('mace', hidden_irreps='4x0e', max_ell=1, correlation=1,\n"
            "               num_interactions=1, radial_mlp=[4])\n"
            "print('env', os.environ.get('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'))\n")
    env = {k: v for k, v in os.environ.items() if k != "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "env None\n"
