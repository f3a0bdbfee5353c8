"""Check force2geo's PaiNN checkpoint loading against independent implementations.

Two layouts are loaded by :func:`force2geo.models.fairchem.load_fairchem_painn`; each is
compared, at random weights and the paper's size (hidden 128, 4 layers, 128 Gaussians,
4.5 Å), with the code that defines it:

* OC20 layout  vs fairchem-core 1.10's ``PaiNN`` (``regress_forces=False``, forces taken
  here as -dE/dx by autograd of its energy: its own ``direct_forces=False`` path is wrong).
* the paper's released foundation model vs ``painn_foundation.py`` of the release
  (divelab/AIRS, ``OpenMol/Force2Geo/Force2Geo/Molecule3D/model/painn/painn_foundation.py``),
  whose output is the mean atomic energy and whose forces are -d(mean)/dx.

Two steps in two environments. Neither fairchem nor the release is ever a dependency of
force2geo; they live in a side environment only:

    python -m venv SIDE && SIDE/bin/pip install torch==2.13.0 numpy scipy pyyaml ase rdkit \
        matplotlib && SIDE/bin/pip install --no-deps fairchem-core==1.10.0 \
        torch_geometric==2.7.0 && SIDE/bin/pip install --no-deps --no-build-isolation \
        torch_scatter torch_cluster            # source builds, minutes each
    # (torch_sparse, imported but unused by fairchem's PaiNN, may be left out: see
    # import_fairchem_painn)
    # painn_foundation.py: from a checkout of divelab/AIRS (path above)

1. Side environment: build both models, give every weight (biases, norms and fitted scale
   factors too) a random value, save them in their real checkpoint layouts, and evaluate
   them on real molecules (RDKit ETKDG geometries) in float32 and float64::

       SIDE/bin/python benchmarks/verify_fairchem_painn.py --side --airs PATH -o DIR

   writes ``DIR/fairchem_painn.pt`` (a fairchem trainer checkpoint: ``state_dict`` with
   ``module.`` keys, ``config``, ``normalizers``, ...), ``DIR/foundation_painn.pth`` (a
   bare DDP state dict, as the release ships) and ``DIR/reference.npz``.

2. force2geo's environment: load both files, recompute, compare::

       .venv/bin/python benchmarks/verify_fairchem_painn.py -o DIR

   prints the worst differences, writes ``DIR/comparison.json`` and exits 1 when a
   tolerance fails (float32: energy 1e-5 relative, forces 1e-4 eV/Å; float64: 1e-10 and
   1e-9 eV/Å). In float64 fairchem's Gaussian centres, a float32 buffer, are replaced by
   float64 ones (see ``exact_gaussians``); left as they are they differ by ~1e-7 relative.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import torch

SMILES = {
    "ethanol": "CCO",
    "aspirin": "CC(=O)Oc1ccccc1C(=O)O",
    "caffeine": "Cn1cnc2c1c(=O)n(C)c(=O)n2C",
    "ibuprofen": "CC(C)Cc1ccc(cc1)C(C)C(=O)O",
    "sulfamethoxazole": "Cc1cc(no1)NS(=O)(=O)c1ccc(N)cc1",
    "fluoxetine": "CNCCC(Oc1ccc(cc1)C(F)(F)F)c1ccccc1",
    "bromazepam": "Brc1ccc2NC(=O)CN=C(c3ccccn3)c2c1",
    "triethyl_phosphate": "CCOP(=O)(OCC)OCC",
    "chlorambucil": "OC(=O)CCCc1ccc(cc1)N(CCCl)CCCl",
    "atorvastatin": "CC(C)c1n(CC(O)CC(O)CC(=O)O)c(c2ccc(F)cc2)c(c1C(=O)Nc1ccccc1)c1ccccc1",
}
SIZE = {"hidden_channels": 128, "num_layers": 4, "num_rbf": 128, "cutoff": 4.5}
TOLERANCES = {"float32": (1e-5, 1e-4), "float64": (1e-10, 1e-9)}  # energy rel., forces eV/Å
DTYPES = {"float32": torch.float32, "float64": torch.float64}


# --------------------------------------------------------------------------- side env


def embed_molecules(seed: int = 11) -> dict[str, np.ndarray]:
    """Concatenated molecules: atomic numbers, positions Å (float64), system index."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    zs, positions, idx = [], [], []
    for k, smiles in enumerate(SMILES.values()):
        mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
        if AllChem.EmbedMolecule(mol, randomSeed=seed + k) != 0:
            raise RuntimeError(f"RDKit could not embed {smiles}")
        AllChem.MMFFOptimizeMolecule(mol)
        zs.append([a.GetAtomicNum() for a in mol.GetAtoms()])
        positions.append(mol.GetConformer().GetPositions())
        idx.append(np.full(mol.GetNumAtoms(), k))
    return {"atomic_numbers": np.concatenate(zs), "positions": np.concatenate(positions),
            "system_idx": np.concatenate(idx)}


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Random values in every weight, bias, norm and scale factor (centres kept)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("offset"):
                continue
            if name.endswith("scale_factor"):
                tensor.fill_(0.8 + 0.3 * float(torch.rand((), generator=generator)))
                continue
            fan = tensor.shape[-1] if tensor.ndim > 1 else 16
            tensor.copy_(torch.randn(tensor.shape, generator=generator) / math.sqrt(fan))


def exact_gaussians(rbf) -> None:
    """Give torch_geometric's GaussianSmearing (centres linspace(0, 1, n) as a float32
    buffer, width from them) float64 centres and width, as force2geo computes them, so the
    float64 comparison measures the implementations, not float32 rounding of constants."""
    n = rbf.offset.shape[0]
    rbf.offset = torch.linspace(0, 1, n, dtype=torch.float64)
    rbf.coeff = -0.5 * (n - 1) ** 2


def pyg_batch(mols: dict[str, np.ndarray], dtype: torch.dtype):
    """A torch_geometric Batch with the fields both reference models read."""
    from torch_geometric.data import Batch, Data

    data = []
    for k in np.unique(mols["system_idx"]):
        sel = mols["system_idx"] == k
        z = torch.as_tensor(mols["atomic_numbers"][sel])
        data.append(Data(pos=torch.as_tensor(mols["positions"][sel], dtype=dtype),
                         atomic_numbers=z, x=z.view(-1, 1), natoms=int(sel.sum())))
    return Batch.from_data_list(data)


def fairchem_outputs(model, mols, dtype) -> tuple[np.ndarray, np.ndarray]:
    """fairchem PaiNN energies [n_systems] and -dE/dx [n_atoms, 3] by autograd."""
    batch = pyg_batch(mols, dtype)
    batch.pos.requires_grad_(True)
    energy = model(batch)["energy"]
    (gradient,) = torch.autograd.grad(energy.sum(), batch.pos)
    return energy.detach().double().numpy(), -gradient.double().numpy()


def release_outputs(model, mols, dtype) -> tuple[np.ndarray, np.ndarray]:
    """The release's wrapper: mean atomic energy and -d(mean)/dx."""
    energy, forces = model(pyg_batch(mols, dtype))
    return energy.detach().double().numpy(), forces.detach().double().numpy()


def import_fairchem_painn() -> type:
    """fairchem's PaiNN class, made differentiable in positions. Its module imports
    fairchem's GemNet package, which imports ``torch_sparse.SparseTensor`` at import time;
    PaiNN never uses it. torch_sparse is a long
    source build, so where it is missing an import-only placeholder is registered, whose
    every use raises (so it cannot change a number)."""
    try:
        import torch_sparse  # noqa: F401
    except ImportError:
        placeholder = types.ModuleType("torch_sparse")

        class SparseTensor:
            def __init__(self, *args, **kwargs):
                raise RuntimeError("torch_sparse is not installed (import-only placeholder)")

        placeholder.SparseTensor = SparseTensor
        sys.modules["torch_sparse"] = placeholder
    from fairchem.core.models.painn.painn import PaiNN

    class DifferentiablePaiNN(PaiNN):
        """fairchem's PaiNN, except that the edge distances are copied before fairchem sets
        zero distances to 1e-6 in place (which breaks autograd through the norm). Same
        values; a copy of one number per edge."""

        def generate_graph(self, *args, **kwargs):
            graph = super().generate_graph(*args, **kwargs)
            graph.edge_distance = graph.edge_distance.clone()
            return graph

    return DifferentiablePaiNN


def import_release(path: Path):
    spec = importlib.util.spec_from_file_location("painn_foundation", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # torch_geometric inspects message() through it
    spec.loader.exec_module(module)
    return module


def run_side(out: Path, airs: Path) -> None:
    FairchemPaiNN = import_fairchem_painn()
    torch.manual_seed(0)
    mols = embed_molecules()
    fairchem_config = {**SIZE, "max_neighbors": 50, "regress_forces": False,
                       "use_pbc": False, "otf_graph": True}
    fairchem = FairchemPaiNN(**fairchem_config)
    randomise(fairchem, seed=1)
    release = import_release(airs).PaiNN(**SIZE, gradient_force=True)
    randomise(release, seed=2)
    # The layouts as written by their trainers: fairchem's checkpoint dict, and a bare
    # state dict of a DDP-wrapped model for the release.
    torch.save({"state_dict": {f"module.{k}": v for k, v in fairchem.state_dict().items()},
                "config": {"model": {"name": "painn", **fairchem_config}},
                "normalizers": {}, "elementrefs": {}, "val_metrics": {}, "amp": None,
                "epoch": 0, "step": 0}, out / "fairchem_painn.pt")
    torch.save({f"module.{k}": v for k, v in release.state_dict().items()},
               out / "foundation_painn.pth")
    results = dict(mols)
    for name, dtype in DTYPES.items():
        # Both make constants with torch.tensor / torch.zeros, in the default dtype.
        torch.set_default_dtype(dtype)
        fairchem.to(dtype)
        if dtype == torch.float64:
            exact_gaussians(fairchem.radial_basis.rbf)
        energy, forces = fairchem_outputs(fairchem.eval(), mols, dtype)
        results[f"oc20_energy_{name}"], results[f"oc20_forces_{name}"] = energy, forces
        mean, forces = release_outputs(release.to(dtype).eval(), mols, dtype)
        results[f"foundation_mean_{name}"], results[f"foundation_forces_{name}"] = mean, forces
    torch.set_default_dtype(torch.float32)
    np.savez(out / "reference.npz", **results)
    print(f"wrote {out}/reference.npz, fairchem_painn.pt, foundation_painn.pth "
          f"({len(SMILES)} molecules, {len(mols['atomic_numbers'])} atoms)")


# --------------------------------------------------------------------------- ours


def compare(name: str, dtype: str, energy, ref_energy, forces, ref_forces) -> dict:
    e_tol, f_tol = TOLERANCES[dtype]
    e_rel = float(np.max(np.abs(energy - ref_energy) / np.abs(ref_energy)))
    f_abs = float(np.max(np.abs(forces - ref_forces)))
    row = {"layout": name, "dtype": dtype, "energy_max_rel": e_rel,
           "energy_max_abs_eV": float(np.max(np.abs(energy - ref_energy))),
           "forces_max_abs_eV_per_A": f_abs,
           "forces_rms_eV_per_A": float(np.sqrt(np.mean(ref_forces ** 2))),
           "ok": e_rel <= e_tol and f_abs <= f_tol}
    print(f"{name:10s} {dtype}: energy max rel {e_rel:.2e} (tol {e_tol:.0e}), forces max "
          f"|diff| {f_abs:.2e} eV/Å (tol {f_tol:.0e}; force rms "
          f"{row['forces_rms_eV_per_A']:.2f}) -> {'ok' if row['ok'] else 'FAIL'}")
    return row


def run_ours(out: Path) -> int:
    from force2geo.models import Batch, energy_and_forces
    from force2geo.models.fairchem import foundation_outputs, load_fairchem_painn

    ref = np.load(out / "reference.npz")
    rows = []
    for dtype_name, dtype in DTYPES.items():
        batch = Batch(positions=torch.as_tensor(ref["positions"], dtype=dtype),
                      atomic_numbers=torch.as_tensor(ref["atomic_numbers"]),
                      system_idx=torch.as_tensor(ref["system_idx"]), n_systems=len(SMILES))
        oc20 = load_fairchem_painn(out / "fairchem_painn.pt", dtype=dtype)
        energy, forces = energy_and_forces(oc20, batch)
        rows.append(compare("oc20", dtype_name, energy.numpy(), ref[f"oc20_energy_{dtype_name}"],
                            forces.double().numpy(), ref[f"oc20_forces_{dtype_name}"]))
        foundation = load_fairchem_painn(out / "foundation_painn.pth", dtype=dtype)
        mean, forces = foundation_outputs(foundation, batch)
        rows.append(compare("foundation", dtype_name, mean.double().numpy(),
                            ref[f"foundation_mean_{dtype_name}"], forces.double().numpy(),
                            ref[f"foundation_forces_{dtype_name}"]))
    report = {"molecules": list(SMILES), "n_atoms": int(len(ref["atomic_numbers"])),
              "torch": str(torch.__version__), "rows": rows}
    (out / "comparison.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(row["ok"] for row in rows) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--side", action="store_true",
                        help="write the reference (run in the side environment)")
    parser.add_argument("--airs", type=Path, help="the release's painn_foundation.py (--side)")
    parser.add_argument("-o", "--out", type=Path, required=True, help="folder of the files")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.side:
        if args.airs is None:
            parser.error("--side needs --airs PATH/painn_foundation.py")
        args.out.mkdir(parents=True, exist_ok=True)
        run_side(args.out, args.airs)
        return 0
    return run_ours(args.out)


if __name__ == "__main__":
    sys.exit(main())
