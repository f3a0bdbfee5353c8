"""Micro-benchmark of PaiNN at the paper's size (hidden 128, 4 layers, 128 RBF, 4.5 Å).

Measures, on real drug-like geometries (RDKit ETKDG conformers, jittered):

* energy + forces of one 29-atom molecule (the relaxation case), ms per call;
* energy + forces of 64 molecules in one batch, molecules/s;
* one training step on 64 molecules (forces by autograd with create_graph, L1 energy +
  MSE force loss, backward, Adam step), s per step and snapshots/s.

Not a test. Run: ``python benchmarks/painn_speed.py [--threads 2] [--device cpu]
[--model painn] [--model-option hidden_channels=64 ...] [--plain-malloc] [--profile]``.
By default glibc is told to keep freed memory (:func:`force2geo.models.cpu.keep_freed_memory`),
as the training and relaxation commands should; ``--plain-malloc`` measures without it.
``--profile`` prints where a training step spends its time.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from rdkit import Chem
from rdkit.Chem import AllChem

from force2geo.models import MODELS, Batch, Potential, build_backbone, energy_and_forces
from force2geo.models.cpu import keep_freed_memory

SMILES = [
    "CC(=O)Oc1ccccc1C(=O)O", "CC(C)Cc1ccc(cc1)C(C)C(=O)O", "CN1C=NC2=C1C(=O)N(C(=O)N2C)C",
    "CC(=O)Nc1ccc(O)cc1", "CCOC(=O)c1ccc(N)cc1", "CN1CCC[C@H]1c1cccnc1",
    "NC(Cc1c[nH]c2ccccc12)C(=O)O", "CC(C)c1ccc(C)cc1O", "CC(C)NCC(O)c1ccc(O)c(CO)c1",
    "CCN(CC)CC(=O)Nc1c(C)cccc1C", "CC1=CCC(CC1)C(C)=C", "CC(=O)NCCc1c[nH]c2ccc(OC)cc12",
    "C1CCC(CC1)NC(=O)c1ccccc1", "CCCCc1ccc(cc1)C(=O)O", "COc1ccc(CCN)cc1OC",
    "CC(O)C(=O)Nc1ccccc1C",
]
SINGLE = "CCOc1ccc(NC(C)=O)c(C)c1"  # 29 atoms with hydrogens


def conformer(smiles: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Atomic numbers ``[n]`` and an ETKDG geometry ``[n, 3]`` Å."""
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    if AllChem.EmbedMolecule(mol, randomSeed=seed) != 0:
        raise RuntimeError(f"RDKit could not embed {smiles}")
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    return z, mol.GetConformer().GetPositions()


def molecules(n: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` conformers drawn from SMILES, each jittered by 0.05 Å as in a relaxation."""
    base = [conformer(s) for s in SMILES]
    picks = rng.integers(len(base), size=n)
    return [(base[k][0], base[k][1] + rng.normal(scale=0.05, size=base[k][1].shape))
            for k in picks]


class Timing:
    """Wall-clock and process CPU seconds of repeated calls (CPU time shows how much of
    the wall time was spent waiting for cores on a shared machine)."""

    def __init__(self, wall: list[float], cpu: list[float]):
        self.wall, self.cpu = wall, cpu

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    def describe(self, scale: float = 1e3, unit: str = "ms") -> str:
        return (f"median {scale * self.median:.1f} {unit} wall, min {scale * min(self.wall):.1f}, "
                f"CPU {scale * statistics.median(self.cpu):.1f} {unit}")


def timed(fn, repeats: int, device: torch.device) -> Timing:
    """Times of ``repeats`` calls of ``fn``, after one warm-up call."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return Timing(wall, cpu)


def train_step_fn(potential: Potential, batch: Batch, optimizer: torch.optim.Optimizer):
    n_atoms = batch.atoms_per_system().to(torch.float64)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        energy, forces = energy_and_forces(potential, batch, create_graph=True)
        loss = ((energy - batch.energy) / n_atoms).abs().mean() \
            + (forces - batch.forces).square().sum(dim=-1).mean()
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="painn", choices=sorted(MODELS))
    parser.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                        help="backbone config field, e.g. hidden_channels=64 (repeatable)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20, help="single-molecule calls")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps")
    parser.add_argument("--plain-malloc", action="store_true",
                        help="leave glibc malloc as it is (large blocks mmap'd per use)")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    kept = False if args.plain_malloc else keep_freed_memory()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    rng = np.random.default_rng(0)

    options = {}
    for item in args.model_option:
        key, _, value = item.partition("=")
        options[key] = float(value) if "." in value else int(value)
    potential = Potential(build_backbone(args.model, **options)).to(device)
    n_params = sum(p.numel() for p in potential.parameters())
    print(f"{args.model} {options or '(defaults)'}: {n_params:,} parameters, "
          f"{args.threads} threads, {device}, torch {torch.__version__}, "
          f"keep freed memory: {kept}")

    z, pos = conformer(SINGLE)
    single = Batch.from_arrays([z], [pos]).to(device)
    potential.eval()
    t = timed(lambda: energy_and_forces(potential, single), args.repeats, device)
    print(f"energy+forces, 1 molecule ({single.n_atoms} atoms): {t.describe()}")

    mols = molecules(args.batch_size, rng)
    zs, xs = [m[0] for m in mols], [m[1] for m in mols]
    batch = Batch.from_arrays(zs, xs, energy=rng.normal(size=len(mols)),
                              forces=[rng.normal(size=x.shape) for x in xs]).to(device)
    t = timed(lambda: energy_and_forces(potential, batch), 5, device)
    print(f"energy+forces, {batch.n_systems} molecules ({batch.n_atoms} atoms, "
          f"{batch.n_atoms / batch.n_systems:.1f}/molecule): {t.describe()}, "
          f"{batch.n_systems / t.median:.0f} molecules/s")

    potential.train()
    optimizer = torch.optim.Adam(potential.parameters(), lr=1e-3)
    step = train_step_fn(potential, batch, optimizer)
    t = timed(step, args.steps, device)
    print(f"training step, {batch.n_systems} molecules: {t.describe(1.0, 's')}, "
          f"{batch.n_systems / t.median:.1f} snapshots/s")

    if args.profile:
        with torch.profiler.profile() as prof:
            step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


if __name__ == "__main__":
    main()
