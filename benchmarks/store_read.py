"""Random-access read throughput: force2geo store vs the PubChemQCR LMDB it was made from.

Builds a PubChemQCR-format LMDB (key = zero-padded CID, value = gzip(pickle(dict)) with
'pm3'/'hf'/'DFT_1st'/'DFT_2nd' step lists), converts it to a store with the real reader, then
reads the same random DFT snapshots both ways, one process, warm page cache:

- ``lmdb``: what a loader over the release must do per snapshot: get the molecule's value,
  decompress, unpickle, pick the step, build arrays in eV / Å.
- ``store[i]``: one snapshot at a time from the memory-mapped store.
- ``store.read``: batches of 64 snapshots gathered at once (what a training loader does).

Run:  .venv/bin/python benchmarks/store_read.py [--molecules 2000] [--reads 200000]
Rates are per second of this process's CPU time (wall-clock rates are reported too).
Writes the numbers as JSON to --out (default benchmarks/results/store_read.json).
"""

from __future__ import annotations

import argparse
import gzip
import json
import pickle
import platform
import tempfile
import time
from pathlib import Path

import lmdb
import numpy as np

from force2geo.data.convert import convert
from force2geo.data.readers.pubchemqcr import write_lmdb
from force2geo.data.store import TrajectoryStore
from force2geo.units import HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM, HARTREE_TO_EV

ELEMENTS = ["H", "C", "N", "O", "F", "S", "Cl"]
STAGE_KEYS = ("pm3", "hf", "DFT_1st", "DFT_2nd")


def synthetic_release(n_molecules: int, seed: int = 0) -> dict[int, dict]:
    """Records in the release's layout with realistic sizes (~29 atoms, ~30 DFT steps)."""
    rng = np.random.default_rng(seed)
    records = {}
    for cid in range(1, n_molecules + 1):
        n_atoms = int(np.clip(rng.normal(29, 8), 6, 60))
        probs = [0.45, 0.35, 0.07, 0.08, 0.02, 0.02, 0.01]
        # plain str, as in the release: NumPy strings would unpickle several times slower
        symbols = [str(s) for s in rng.choice(ELEMENTS, size=n_atoms, p=probs)]
        record = {}
        for key, mean_steps in zip(STAGE_KEYS, (15, 10, 30, 5), strict=False):
            n_steps = max(1, int(rng.poisson(mean_steps)))
            steps = []
            for _ in range(n_steps):
                xyz = rng.normal(scale=2.5, size=(n_atoms, 3))
                grad = rng.normal(scale=0.01, size=(n_atoms, 3))
                steps.append({
                    "coordinates": [{"atom": s, "x": p[0], "y": p[1], "z": p[2]}
                                    for s, p in zip(symbols, xyz.tolist(), strict=False)],
                    "energy": float(rng.normal(-700.0, 100.0)),
                    "gradient": [{"atom": s, "dx": g[0], "dy": g[1], "dz": g[2]}
                                 for s, g in zip(symbols, grad.tolist(), strict=False)],
                })
            record[key] = steps
        records[cid] = record
    return records


def lmdb_snapshot(txn, cid: int, step: int) -> tuple:
    """One DFT_1st snapshot read the way a loader over the release must read it."""
    value = pickle.loads(gzip.decompress(txn.get(f"{cid:09d}".encode())))
    entry = value["DFT_1st"][step]
    positions = np.array([[a["x"], a["y"], a["z"]] for a in entry["coordinates"]])
    forces = -HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM * np.array(
        [[g["dx"], g["dy"], g["dz"]] for g in entry["gradient"]])
    symbols = [a["atom"] for a in entry["coordinates"]]
    return symbols, positions, forces, entry["energy"] * HARTREE_TO_EV


def timed(fn, n: int) -> float:
    """Reads per second of CPU time of this process: robust to other load on the machine
    (wall-clock rates on an idle machine agree to a few percent; both are reported)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    RATES_WALL.append(n / wall)
    return n / cpu


RATES_WALL: list[float] = []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--molecules", type=int, default=2000)
    parser.add_argument("--reads", type=int, default=200_000, help="store reads")
    parser.add_argument("--lmdb-reads", type=int, default=5_000,
                        help="LMDB reads (the slow path; a subset of the same snapshots)")
    parser.add_argument("--workdir", default=None, help="where to build the files (temp)")
    parser.add_argument("--out", default="benchmarks/results/store_read.json")
    args = parser.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="f2g-bench-"))
    lmdb_path, store_path = work / "pubchemqcr.lmdb", work / "store"
    if not (lmdb_path.exists() and store_path.exists()):  # reuse an earlier --workdir
        write_lmdb(lmdb_path, synthetic_release(args.molecules))
        convert(lmdb_path, store_path, format="pubchemqcr", overwrite=True)
    store = TrajectoryStore(store_path).open_all()

    # The same snapshots both ways: (cid, step) pairs and their global store indices.
    cids = store.cids()
    rng = np.random.default_rng(1)
    picks = rng.integers(0, store.n_snapshots, size=args.reads)
    snap_traj = store.snapshot_trajectory()
    traj_first = np.array([store.trajectory_snapshots(j)[0] for j in range(store.n_trajectories)])
    pairs = [(int(cids[snap_traj[i]]), int(i - traj_first[snap_traj[i]])) for i in picks]

    env = lmdb.open(str(lmdb_path), subdir=False, readonly=True, lock=False, readahead=False)
    with env.begin() as txn:
        check = lmdb_snapshot(txn, *pairs[0])
        assert np.allclose(check[1], store[int(picks[0])].positions, atol=1e-5)
        sub = pairs[: args.lmdb_reads]
        lmdb_rate = timed(lambda: [lmdb_snapshot(txn, c, s) for c, s in sub], len(sub))

    single_rate = timed(lambda: [store[int(i)] for i in picks], len(picks))
    batches = picks[: len(picks) // 64 * 64].reshape(-1, 64)
    batch_rate = timed(lambda: [store.read(b) for b in batches], batches.size)

    result = {
        "molecules": args.molecules,
        "store_snapshots": store.n_snapshots,
        "store_reads": int(args.reads),
        "lmdb_reads": min(int(args.lmdb_reads), int(args.reads)),
        "lmdb_snapshots_per_s": round(lmdb_rate),
        "store_single_snapshots_per_s": round(single_rate),
        "store_batch64_snapshots_per_s": round(batch_rate),
        "wall_clock_snapshots_per_s": {k: round(r) for k, r in
                                       zip(("lmdb", "single", "batch64"), RATES_WALL, strict=True)},
        "speedup_single": round(single_rate / lmdb_rate, 1),
        "speedup_batch64": round(batch_rate / lmdb_rate, 1),
        "machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
