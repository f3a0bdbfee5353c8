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

import numpy as np

from force2geo.finetune.dataset import MoleculeRecord, PropertyDataset
from force2geo.qc.engines import XTBEngine
from force2geo.qc.protocol import embed, prepare, relax_path

MOLECULES = {
    "water": "O", "methane": "C", "ammonia": "N", "methanol": "CO", "formaldehyde": "C=O",
    "ethylene": "C=C", "acetonitrile": "CC#N", "ethanol": "CCO", "acetaldehyde": "CC=O",
    "formic-acid": "OC=O", "propene": "C=CC", "methylamine": "CN",
}


@functools.cache
def xtb_dataset() -> PropertyDataset:
    """The dataset (built once per test process, ~10 s)."""
    from rdkit import Chem

    engine = XTBEngine()
    records, frames = [], []
    for k, (name, smiles) in enumerate(MOLECULES.items()):
        mol = prepare(smiles)
        z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
        start = embed(mol, seed=k)
        path = relax_path(engine, z, start, charge=0, fmax=0.05, max_steps=200)
        mlip = path.positions[(2 * (len(path.positions) - 1)) // 3]
        records.append(MoleculeRecord(
            name=name, smiles=smiles, inchikey=Chem.MolToInchiKey(mol), atomic_numbers=z,
            geometries={"ground_truth": path.positions[-1], "rdkit": start, "mlip": mlip},
            targets={"gap": path.result.gap}))
        frames.append(path)
    dataset = PropertyDataset.from_records(records, ["gap"], {"source": "tests: GFN2-xTB"})
    dataset.set_relaxations(
        range(len(records)), [p.positions for p in frames], [p.energy for p in frames],
        ["converged" if p.converged else "step_limit" for p in frames],
        [len(p.positions) - 1 for p in frames], [0.0] * len(frames))
    return dataset


TINY_PAINN = {"hidden_channels": 16, "num_layers": 2, "num_rbf": 16, "cutoff": 4.0}
TINY_SCHNET = {"hidden_channels": 16, "num_filters": 16, "num_interactions": 2,
               "num_gaussians": 16, "cutoff": 4.0}
TINY_GIN = {"hidden_channels": 16, "num_layers": 2}
