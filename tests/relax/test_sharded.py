"""``force2geo relax`` under torchrun: two CPU processes (gloo) give the single-process
result, merged in input order, and resume after the whole job is killed."""

import json
import os
import signal
import subprocess
import sys
import time

import ase.io
import numpy as np
import pytest

from force2geo.cli.main import main
from force2geo.relax.shards import share_range

NAMES = {"paracetamol": "CC(=O)Nc1ccc(O)cc1", "ethanol": "CCO", "phenol": "c1ccccc1O",
         "acetic-acid": "CC(=O)O", "glycerol": "OCC(O)CO"}


def torchrun(*args, wait=True):
    """``torchrun --standalone --nproc-per-node 2 -m force2geo.cli.main relax ARGS``."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", "-m", "force2geo.cli.main", "relax",
               *map(str, args), "--device", "cpu", "--no-progress", "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True)
    if wait:
        output = process.communicate(timeout=300)[0].decode()
        assert process.returncode == 0, output
        return output
    return process


def descendants(pid):
    """Process ids started by ``pid``, recursively (torchrun puts its workers in sessions
    of their own, so killing its process group does not reach them)."""
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                for child in map(int, handle.read().split()):
                    found += [child, *descendants(child)]
    except FileNotFoundError:  # it has just exited
        pass
    return found


def smi_file(path, names):
    path.write_text("".join(f"{NAMES[n]} {n}\n" for n in names))
    return path


def assert_same_frames(ours, reference):
    assert [a.info["name"] for a in ours] == [a.info["name"] for a in reference]
    for a, b in zip(ours, reference, strict=True):
        assert list(a.numbers) == list(b.numbers)
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-6)
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-6)
        assert (a.info["n_steps"], a.info["status"]) == (b.info["n_steps"], b.info["status"])


def test_shares_cover_the_input_in_order():
    for n in (0, 1, 5, 17):
        for world in (1, 2, 3, 8):
            shares = [share_range(n, r, world) for r in range(world)]
            assert shares[0][0] == 0 and shares[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(shares, shares[1:], strict=False))
            sizes = [last - first for first, last in shares]
            assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError):
        share_range(4, 2, 2)


def test_two_processes_equal_one(tmp_path, checkpoint):
    names = list(NAMES)  # 5 molecules: shares of 2 and 3
    smi = smi_file(tmp_path / "in.smi", names)
    common = ["--model", checkpoint, "--steps", 25, "--batch-atoms", 30]
    assert main(["relax", str(smi), "-o", str(tmp_path / "one.xyz"),
                 "--trajectory", str(tmp_path / "one-traj.xyz"), *map(str, common),
                 "--device", "cpu", "--no-progress"]) == 0
    torchrun(smi, "-o", tmp_path / "two.xyz", "--trajectory", tmp_path / "two-traj.xyz",
             *common)
    one = ase.io.read(tmp_path / "one.xyz", index=":")
    two = ase.io.read(tmp_path / "two.xyz", index=":")
    assert [a.info["name"] for a in two] == names
    assert_same_frames(two, one)
    steps_one = ase.io.read(tmp_path / "one-traj.xyz", index=":")
    steps_two = ase.io.read(tmp_path / "two-traj.xyz", index=":")
    assert [(a.info["index"], a.info["step"]) for a in steps_two] == \
        [(a.info["index"], a.info["step"]) for a in steps_one]
    record = json.loads((tmp_path / "two.xyz.json").read_text())
    assert record["world_size"] == 2 and record["molecules"] == 5
    assert [s["share"] for s in record["shards"]] == [[0, 2], [2, 5]]
    assert sum(record["status_counts"].values()) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["in.smi", "one.xyz", "one.xyz.json", "one-traj.xyz", "two.xyz", "two.xyz.json",
         "two-traj.xyz"])  # no shard or partial files left
    again = torchrun(smi, "-o", tmp_path / "two.xyz", *common, wait=False)
    assert "exists; pass --overwrite" in again.communicate(timeout=300)[0].decode()
    assert again.returncode != 0


@pytest.mark.slow  # two torchrun jobs, about 40 s on a busy 2-core machine
def test_killed_job_resumes(tmp_path, checkpoint):
    """SIGKILL the whole torchrun job once both ranks have written a molecule; the rerun
    goes on in each shard and the merged result equals one uninterrupted process's."""
    names = ["ethanol", "phenol", "acetic-acid", "glycerol"] * 2
    smi = smi_file(tmp_path / "in.smi", names)
    args = ["-o", tmp_path / "out.xyz", "--model", checkpoint, "--steps", 30,
            "--batch-atoms", 1]  # one molecule at a time: results arrive one by one
    indices = [tmp_path / f"out.shard-{r:03d}-of-002.xyz.partial.json" for r in range(2)]
    process = torchrun(smi, *args, wait=False)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            if all(p.exists() and json.loads(p.read_text())["done"] >= 1 for p in indices):
                break
            time.sleep(0.01)
        assert process.poll() is None, process.stdout.read().decode()
    finally:
        for pid in [process.pid, *descendants(process.pid)]:  # torchrun and its workers
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait()
    # A rank that finished its 4 has renamed its partial files into its shard.
    done = [json.loads(p.read_text())["done"] if p.exists() else 4 for p in indices]
    assert all(d >= 1 for d in done) and sum(done) < len(names), done
    torchrun(smi, *args)
    record = json.loads((tmp_path / "out.xyz.json").read_text())
    assert record["relaxed_this_run"] == len(names) - sum(done)
    resumed = ase.io.read(tmp_path / "out.xyz", index=":")
    assert main(["relax", str(smi), "-o", str(tmp_path / "clean.xyz"),
                 *map(str, args[2:]), "--device", "cpu", "--no-progress"]) == 0
    assert_same_frames(resumed, ase.io.read(tmp_path / "clean.xyz", index=":"))
