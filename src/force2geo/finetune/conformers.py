"""RDKit conformers in the atom order of a given geometry.

A property dataset needs every geometry of a molecule in one atom order. A SMILES
knows nothing of the order of a stored geometry, so :func:`ordered_conformer` matches
them: the SMILES (with hydrogens) is matched onto the bond graph perceived from the
reference geometry (RDKit ``DetermineConnectivity``, covalent radii), both reduced to
elements and connectivity (bond orders, aromaticity and charges ignored). Equal atom
and bond counts plus a match make the two graphs isomorphic; the SMILES molecule is
renumbered by the match, takes its stereochemistry from the reference geometry, and is
embedded with ETKDGv3. Any molecule where this fails gets a reason, never a conformer
in a guessed order.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from force2geo.qc.engines import QCError

ORDER_SOURCES = ("ground_truth", "early", "mlip")  # geometries that fix the atom order
METHOD = ("ETKDGv3 conformer of the SMILES, atoms matched to the bond graph of the "
          "ground-truth geometry, stereochemistry from that geometry")


class ConformerError(ValueError):
    """No conformer in the reference atom order; ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def connectivity_mol(atomic_numbers: np.ndarray, positions: np.ndarray, charge: int = 0):
    """An RDKit molecule of the geometry with single bonds where RDKit's covalent-radius
    rule puts bonds (no bond orders), atoms in the given order."""
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    table = Chem.GetPeriodicTable()
    lines = [str(len(atomic_numbers)), ""] + [
        f"{table.GetElementSymbol(int(z))} {x:.8f} {y:.8f} {w:.8f}"
        for z, (x, y, w) in zip(atomic_numbers, np.asarray(positions, dtype=float), strict=True)
    ]
    mol = Chem.MolFromXYZBlock("\n".join(lines) + "\n")
    if mol is None:
        raise ConformerError("RDKit cannot read the reference geometry")
    rdDetermineBonds.DetermineConnectivity(mol, charge=int(charge))
    return mol


def _skeleton(mol):
    """A copy of ``mol`` reduced to elements and connectivity: single bonds, nothing
    aromatic, no charges or chirality (what :func:`connectivity_mol` can perceive)."""
    from rdkit import Chem

    skeleton = Chem.RWMol(mol)
    for bond in skeleton.GetBonds():
        bond.SetBondType(Chem.BondType.SINGLE)
        bond.SetIsAromatic(False)
        bond.SetStereo(Chem.BondStereo.STEREONONE)
    for atom in skeleton.GetAtoms():
        atom.SetIsAromatic(False)
        atom.SetFormalCharge(0)
        atom.SetChiralTag(Chem.ChiralType.CHI_UNSPECIFIED)
    return skeleton.GetMol()


def smiles_in_order(smiles: str, atomic_numbers: np.ndarray, positions: np.ndarray,
                    charge: int = 0):
    """The SMILES's molecule with hydrogens, renumbered to the atom order of the
    reference geometry ``positions [n, 3]`` Å, with the reference's stereochemistry
    (from 3D) and the reference as its conformer. Raises :class:`ConformerError`."""
    from rdkit import Chem
    from rdkit.Geometry import Point3D
    from rdkit.rdBase import BlockLogs

    with BlockLogs():
        mol = Chem.MolFromSmiles(smiles) if smiles else None
    if mol is None:
        raise ConformerError(f"RDKit cannot parse the SMILES {smiles!r}")
    mol = Chem.AddHs(mol)
    z = np.asarray(atomic_numbers, dtype=np.int64).reshape(-1)
    if mol.GetNumAtoms() != z.shape[0]:
        raise ConformerError(f"the SMILES has {mol.GetNumAtoms()} atoms with hydrogens, "
                             f"the geometry {z.shape[0]}")
    reference = connectivity_mol(z, positions, charge)
    if reference.GetNumBonds() != mol.GetNumBonds():
        raise ConformerError(f"{reference.GetNumBonds()} bonds perceived from the geometry, "
                             f"{mol.GetNumBonds()} in the SMILES")
    match = reference.GetSubstructMatch(_skeleton(mol), useChirality=False)
    if not match:
        raise ConformerError("the bond graph of the geometry differs from the SMILES")
    order = np.argsort(np.asarray(match))  # new atom k is SMILES atom order[k]
    mol = Chem.RenumberAtoms(mol, [int(k) for k in order])
    if not np.array_equal([a.GetAtomicNum() for a in mol.GetAtoms()], z):
        raise ConformerError("elements differ after matching (internal error)")
    conformer = Chem.Conformer(mol.GetNumAtoms())
    for k, (x, y, w) in enumerate(np.asarray(positions, dtype=float)):
        conformer.SetAtomPosition(k, Point3D(x, y, w))
    conformer.Set3D(True)
    mol.RemoveAllConformers()
    mol.AddConformer(conformer, assignId=True)
    Chem.AssignStereochemistryFrom3D(mol)
    return mol


def ordered_conformer(smiles: str, atomic_numbers: np.ndarray, positions: np.ndarray,
                      seed: int = 42, charge: int = 0) -> np.ndarray:
    """An ETKDGv3 conformer ``[n, 3]`` Å of ``smiles`` in the atom order (and with the
    stereochemistry) of the reference geometry ``positions [n, 3]`` Å.

    Raises :class:`ConformerError` with the reason when the SMILES cannot be matched to
    the geometry or embedding fails.
    """
    from force2geo.qc.protocol import embed

    mol = smiles_in_order(smiles, atomic_numbers, positions, charge)
    mol.RemoveAllConformers()
    try:
        return embed(mol, seed)
    except QCError as exc:
        raise ConformerError(exc.reason) from None


def add_rdkit_conformers(dataset, seed: int = 42, *, indices: Sequence[int] | None = None,
                         overwrite: bool = False, progress: bool = True) -> dict[int, str]:
    """Fill the ``rdkit`` geometry of ``dataset`` with :func:`ordered_conformer`.

    The atom order comes from each molecule's ground-truth geometry (else its early or
    MLIP one). ``indices`` default to every molecule; molecules that already have an
    RDKit conformer are kept unless ``overwrite``. Molecules that fail lose their
    ``rdkit`` geometry (when ``overwrite``) and are listed. Returns ``{index: reason}``
    of the failures; ``dataset.meta["rdkit"]`` records seed, method and failures.
    """
    from tqdm import tqdm

    todo = np.arange(len(dataset)) if indices is None else np.asarray(indices, np.int64)
    if not overwrite:
        todo = todo[~dataset.has("rdkit")[todo]]
    failures: dict[int, str] = {}
    done, made = [], []
    bar = tqdm(todo.tolist(), unit="mol", desc="RDKit conformers", dynamic_ncols=True,
               disable=not progress or not sys.stderr.isatty())
    for i in bar:
        source = next((g for g in ORDER_SOURCES if dataset.has(g)[i]), None)
        try:
            if source is None:
                raise ConformerError("no geometry to take the atom order from")
            made.append(ordered_conformer(dataset.smiles[i], dataset.atomic_numbers(i),
                                          dataset.positions(i, source), seed,
                                          int(dataset.charges[i])))
            done.append(i)
        except ConformerError as exc:
            failures[i] = exc.reason
    dataset.set_geometry("rdkit", done, made)
    if overwrite and failures:
        dataset.clear_geometry("rdkit", list(failures))
    record = dataset.meta.setdefault("rdkit", {})
    kept = int(dataset.has("rdkit").sum()) - len(done)
    record.update(method=METHOD, seed=seed, kept_existing=kept)
    failed = record.setdefault("failures", {})
    failed.update({str(i): r for i, r in failures.items()})
    for i in done:
        failed.pop(str(i), None)
    return failures
