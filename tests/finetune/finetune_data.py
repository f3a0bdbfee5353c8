"""A tiny property dataset of real GFN2-xTB data for the fine-tuning tests.

Twelve small molecules, each relaxed by GFN2-xTB (tblite, ASE BFGS, fmax 0.05 eV/Å) from
an RDKit ETKDG conformer: ground truth = the xTB minimum, target ``gap`` = the xTB
HOMO-LUMO gap there (eV); ``rdkit`` = the ETKDG start. The xTB optimisation path stands
in for the MLIP relaxation (real frames of a real relaxation, in the same atom order):
its frames are the trajectory, and the frame two thirds along it is the ``mlip``
geometry (near, not at, the minimum, as an imperfect MLIP would leave it).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from force2geo.data.store import TrajectoryWriter
from force2geo.data.trajectory import Trajectory
from force2geo.finetune.dataset import MoleculeRecord, PropertyDataset
from force2geo.qc.engines import XTBEngine
from force2geo.qc.protocol import embed, prepare, relax_path
from force2geo.training import TrainConfig, fit

MOLECULES = {
    "water": "O", "methane": "C", "ammonia": "N", "methanol": "CO", "formaldehyde": "C=O",
    "ethylene": "C=C", "acetonitrile": "CC#N", "ethanol": "CCO", "acetaldehyde": "CC=O",
    "formic-acid": "OC=O", "propene": "C=CC", "methylamine": "CN",
}


@functools.cache
def xtb_paths() -> tuple:
    """``(name, smiles, inchikey, atomic_numbers, RelaxPath)`` per molecule (built once per
    test process, ~10 s)."""
    from rdkit import Chem

    engine = XTBEngine()
    out = []
    for k, (name, smiles) in enumerate(MOLECULES.items()):
        mol = prepare(smiles)
        z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
        path = relax_path(engine, z, embed(mol, seed=k), charge=0, fmax=0.05, max_steps=200)
        out.append((name, smiles, Chem.MolToInchiKey(mol), z, path))
    return tuple(out)


def xtb_dataset() -> PropertyDataset:
    """A fresh dataset (safe to modify) of the molecules of :func:`xtb_paths`."""
    records = []
    for name, smiles, inchikey, z, path in xtb_paths():
        mlip = path.positions[(2 * (len(path.positions) - 1)) // 3]
        records.append(MoleculeRecord(
            name=name, smiles=smiles, inchikey=inchikey, atomic_numbers=z,
            geometries={"ground_truth": path.positions[-1], "rdkit": path.positions[0],
                        "mlip": mlip},
            targets={"gap": path.result.gap}))
    dataset = PropertyDataset.from_records(records, ["gap"], {"source": "tests: GFN2-xTB"})
    paths = [p[-1] for p in xtb_paths()]
    dataset.set_relaxations(
        range(len(records)), [p.positions for p in paths], [p.energy for p in paths],
        ["converged" if p.converged else "step_limit" for p in paths],
        [len(p.positions) - 1 for p in paths], [0.0] * len(paths))
    return dataset


def write_xtb_store(folder: Path) -> Path:
    """The xTB relaxation paths as a trajectory store (energies and forces: MLIP data)."""
    with TrajectoryWriter(folder, source="tests: GFN2-xTB relaxation paths") as writer:
        for name, smiles, _, z, path in xtb_paths():
            writer.add(Trajectory(z, path.positions, path.energy, path.forces, "xtb",
                                  smiles=smiles, name=name))
    return folder


def train_mlip(store: Path, run_dir: Path, model: str, model_config: dict) -> Path:
    """A briefly trained potential (a real force2geo MLIP checkpoint): its best.pt."""
    config = TrainConfig(data=str(store), run_dir=str(run_dir), model=model,
                         model_config=model_config, epochs=2, batch_size=16, device="cpu",
                         plots=False, split_fractions=(0.8, 0.2, 0.0))
    fit(config)
    return run_dir / "best.pt"


TINY_PAINN = {"hidden_channels": 16, "num_layers": 2, "num_rbf": 16, "cutoff": 4.0}
TINY_SCHNET = {"hidden_channels": 16, "num_filters": 16, "num_interactions": 2,
               "num_gaussians": 16, "cutoff": 4.0}
TINY_GIN = {"hidden_channels": 16, "num_layers": 2}
