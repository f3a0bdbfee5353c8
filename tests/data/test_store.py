"""The trajectory store: round trips, O(1) access vs batch reads, crash safety."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from force2geo.data.store import MANIFEST, TrajectoryStore, TrajectoryWriter
from force2geo.data.trajectory import Trajectory
from force2geo.errors import StoreError


def make_trajectories(n, seed=0, stages=("dft1",)):
    rng = np.random.default_rng(seed)
    out = []
    for j in range(n):
        n_atoms, n_snap = int(rng.integers(2, 12)), int(rng.integers(1, 9))
        out.append(Trajectory(
            atomic_numbers=rng.integers(1, 18, n_atoms),
            positions=rng.normal(scale=2.0, size=(n_snap, n_atoms, 3)),
            energy=rng.normal(-1000.0, 50.0, n_snap),
            forces=rng.normal(size=(n_snap, n_atoms, 3)),
            stages=[stages[k % len(stages)] for k in range(n_snap)],
            charge=int(rng.integers(-1, 2)),
            cid=int(rng.integers(1, 10**8)) if j % 3 else None,
            smiles="C" * (j % 5 + 1) + "é",  # non-ASCII survives the string columns
            inchikey=f"KEY{j:05d}",
            name=f"mol-{j}",
            properties={"gap": 0.1 * j, "homo": -5.0} if j % 2 else {"gap": 0.1 * j},
        ))
    return out


def write(path, trajectories, **kwargs):
    with TrajectoryWriter(path, **kwargs) as writer:
        writer.extend(trajectories)


def assert_same(a: Trajectory, b: Trajectory):
    np.testing.assert_array_equal(a.atomic_numbers, b.atomic_numbers)
    np.testing.assert_allclose(a.positions, b.positions, atol=1e-5)  # float32 on disk
    np.testing.assert_allclose(a.forces, b.forces, atol=1e-5)
    np.testing.assert_array_equal(a.energy, b.energy)  # float64 on disk: exact
    assert a.stages == b.stages
    assert (a.charge, a.cid, a.smiles, a.inchikey, a.name) == \
        (b.charge, b.cid, b.smiles, b.inchikey, b.name)
    assert a.properties == pytest.approx(b.properties)


def test_round_trip_across_shards(tmp_path):
    trajs = make_trajectories(40)
    write(tmp_path / "s", trajs, shard_snapshots=25, source="unit-test")
    store = TrajectoryStore(tmp_path / "s")
    assert store.n_shards > 3
    assert store.n_trajectories == 40
    assert store.n_snapshots == sum(t.n_snapshots for t in trajs)
    for j, t in enumerate(trajs):
        assert_same(store.trajectory(j), t)
    assert store.identifiers("name") == [t.name for t in trajs]
    assert store.cids().tolist() == [-1 if t.cid is None else t.cid for t in trajs]
    gap = store.properties("gap")
    np.testing.assert_allclose(gap, [t.properties["gap"] for t in trajs])
    assert np.isnan(store.properties("homo")[0]) and store.properties("homo")[1] == -5.0
    manifest = json.loads((tmp_path / "s" / MANIFEST).read_text())
    assert manifest["units"]["energy"] == "eV" and manifest["sources"] == ["unit-test"]
    assert manifest["counts"]["trajectories"] == 40
    store.verify()


def test_snapshot_access_matches_batch_read(tmp_path):
    trajs = make_trajectories(30, seed=1, stages=("hf", "dft1"))
    write(tmp_path / "s", trajs, shard_snapshots=20)
    store = TrajectoryStore(tmp_path / "s")
    flat = [(j, k) for j, t in enumerate(trajs) for k in range(t.n_snapshots)]
    order = np.random.default_rng(0).permutation(len(flat))
    batch = store.read(order)
    assert batch["system_idx"].shape[0] == batch["positions"].shape[0]
    for row, i in enumerate(order):
        j, k = flat[i]
        snap = store[int(i)]
        assert snap.trajectory == j and snap.stage == trajs[j].stages[k]
        assert snap.energy == trajs[j].energy[k]
        np.testing.assert_allclose(snap.positions, trajs[j].positions[k], atol=1e-5)
        mine = batch["system_idx"] == row
        np.testing.assert_array_equal(batch["positions"][mine], snap.positions)
        np.testing.assert_array_equal(batch["forces"][mine], snap.forces)
        np.testing.assert_array_equal(batch["atomic_numbers"][mine], snap.atomic_numbers)
        assert batch["energy"][row] == snap.energy and batch["trajectory"][row] == j
    assert store[-1].energy == trajs[-1].energy[-1]
    with pytest.raises(IndexError):
        store[store.n_snapshots]


def test_select_by_stage_and_trajectory(tmp_path):
    trajs = make_trajectories(12, seed=2, stages=("pm3", "hf", "dft1"))
    write(tmp_path / "s", trajs, shard_snapshots=10)
    store = TrajectoryStore(tmp_path / "s")
    dft = store.select("dft1")
    assert len(dft) == sum(s == "dft1" for t in trajs for s in t.stages)
    assert all(store[int(i)].stage == "dft1" for i in dft)
    both = store.select(["pm3", "dft1"], trajectories=[3, 5])
    expected = [i for j in (3, 5) for i in store.trajectory_snapshots(j)
                if store[int(i)].stage in ("pm3", "dft1")]
    assert both.tolist() == sorted(expected)
    with pytest.raises(ValueError, match="unknown stage"):
        store.select("b3lyp")


def test_append_and_new_stage(tmp_path):
    first, second = make_trajectories(5, seed=3), make_trajectories(4, seed=4, stages=("mystage",))
    write(tmp_path / "s", first)
    write(tmp_path / "s", second)
    store = TrajectoryStore(tmp_path / "s")
    assert store.n_trajectories == 9 and "mystage" in store.stage_names
    assert_same(store.trajectory(7), second[2])
    assert_same(store.trajectory(0), first[0])


def test_nothing_created_without_data(tmp_path):
    with TrajectoryWriter(tmp_path / "s"):
        pass
    assert not (tmp_path / "s").exists()


def test_second_writer_is_refused(tmp_path):
    write(tmp_path / "s", make_trajectories(2))
    with TrajectoryWriter(tmp_path / "s") as writer:
        writer.add(make_trajectories(1)[0])
        with pytest.raises(StoreError, match="another process"):
            TrajectoryWriter(tmp_path / "s")


def test_refuses_foreign_folder(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a trajectory store"):
        TrajectoryWriter(tmp_path / "s")


@pytest.mark.parametrize("damage", ["truncate", "header", "missing"])
def test_damaged_shard_names_the_file(tmp_path, damage):
    write(tmp_path / "s", make_trajectories(6))
    target = tmp_path / "s" / "shard-000000" / "positions.npy"
    if damage == "truncate":
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 2])
    elif damage == "header":
        data = bytearray(target.read_bytes())
        data[:6] = b"XXXXXX"
        target.write_bytes(bytes(data))
    else:
        target.unlink()
    store = TrajectoryStore(tmp_path / "s")
    with pytest.raises(StoreError, match="positions.npy"):
        store.trajectory(0)


def test_verify_catches_flipped_bytes(tmp_path):
    write(tmp_path / "s", make_trajectories(6))
    target = tmp_path / "s" / "shard-000000" / "energy.npy"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="energy.npy: checksum mismatch"):
        TrajectoryStore(tmp_path / "s").verify()


def test_bad_manifest_and_missing_store(tmp_path):
    with pytest.raises(StoreError, match="no such trajectory store"):
        TrajectoryStore(tmp_path / "nope")
    write(tmp_path / "s", make_trajectories(2))
    (tmp_path / "s" / MANIFEST).write_text("{not json")
    with pytest.raises(StoreError, match="corrupt manifest"):
        TrajectoryStore(tmp_path / "s")


def test_leftovers_of_a_crash_are_invisible_and_swept(tmp_path):
    write(tmp_path / "s", make_trajectories(3))
    # What a crash between writing a shard and listing it leaves behind:
    (tmp_path / "s" / ".shard-000001.tmp").mkdir()
    orphan = tmp_path / "s" / "shard-000001"
    orphan.mkdir()
    (orphan / "positions.npy").write_bytes(b"half")
    store = TrajectoryStore(tmp_path / "s")
    assert store.n_trajectories == 3 and store.n_shards == 1
    write(tmp_path / "s", make_trajectories(2, seed=9))
    store = TrajectoryStore(tmp_path / "s")
    assert store.n_trajectories == 5
    store.verify()
    assert not (tmp_path / "s" / ".shard-000001.tmp").exists()


def test_killed_writer_leaves_a_valid_store(tmp_path):
    """SIGKILL a process that writes shards continuously; what is listed must read back whole."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_store import make_trajectories
        from force2geo.data.store import TrajectoryWriter
        with TrajectoryWriter({str(tmp_path / "s")!r}, shard_snapshots=1) as w:
            for k in range(100000):
                w.add(make_trajectories(1, seed=k)[0])
                if k == 3:
                    print("writing", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = TrajectoryStore(tmp_path / "s")
    assert store.n_trajectories >= 4
    store.verify()
    for j in range(store.n_trajectories):
        assert_same(store.trajectory(j), make_trajectories(1, seed=j)[0])


def test_summary(tmp_path):
    trajs = make_trajectories(4, seed=5, stages=("xtb",))
    write(tmp_path / "s", trajs)
    summary = TrajectoryStore(tmp_path / "s").summary()
    assert summary["trajectories"] == 4
    assert summary["snapshots_per_stage"] == {"xtb": sum(t.n_snapshots for t in trajs)}
    assert sum(summary["elements"].values()) == sum(t.n_atoms for t in trajs)
