"""``label``: real GFN2-xTB labels of extxyz / SDF / store geometries, resume, shards, failures."""

import json
import os
import signal
import subprocess
import sys
import time

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from force2geo.cli.main import main
from force2geo.data.store import TrajectoryStore
from force2geo.errors import InputError
from force2geo.qc.engines import DFTEngine, XTBEngine
from force2geo.qc.generate import generate, read_failures
from force2geo.qc.geometries import FrameSelection, frame_indices, geometry_key
from force2geo.qc.label import RUN_RECORD, LabelConfig, label
from force2geo.qc.label_inputs import read_geometries
from force2geo.qc.molecules import Molecule
from force2geo.qc.protocol import ProtocolConfig, embed, prepare


def conformer(smiles: str, seed: int = 7):
    """(RDKit molecule with hydrogens, atomic numbers, ETKDG positions Å)."""
    mol = prepare(smiles)
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    positions = embed(mol, seed)
    conf = mol.GetConformer()
    for k, p in enumerate(positions):
        conf.SetAtomPosition(k, p.tolist())
    return mol, z, positions


def write_extxyz(path, with_ion: bool = True) -> list[Atoms]:
    images = []
    for name in ("H2O", "CH4", "CH3CH2OH"):
        atoms = molecule(name)
        atoms.info["name"] = name.lower()
        images.append(atoms)
    if with_ion:
        _, z, x = conformer("C[NH3+]")
        images.append(Atoms(numbers=z, positions=x, info={"name": "methylammonium",
                                                          "charge": 1}))
    ase.io.write(path, images, format="extxyz")
    return images


def write_sdf(path, smiles=("CC(=O)[O-]", "CO")) -> None:
    from rdkit import Chem

    writer = Chem.SDWriter(str(path))
    for k, s in enumerate(smiles):
        mol, _, _ = conformer(s, seed=3 + k)
        mol.SetProp("_Name", f"mol{k}")
        writer.write(mol)
    writer.close()


def stored(store_path) -> dict[str, int]:
    """{name: number of labelled geometries} of a label store."""
    out: dict[str, int] = {}
    for traj in TrajectoryStore(store_path).trajectories():
        out[traj.name] = out.get(traj.name, 0) + traj.n_snapshots
    return out


def assert_matches_engine(store_path, n_expected):
    """Every stored label equals a direct tblite call at the stored (float32) geometry."""
    n = 0
    for traj in TrajectoryStore(store_path).trajectories():
        for k in range(traj.n_snapshots):
            direct = XTBEngine().compute(traj.atomic_numbers, traj.positions[k], traj.charge)
            assert traj.energy[k] == pytest.approx(direct.energy, abs=1e-6)
            np.testing.assert_allclose(traj.forces[k], direct.forces, atol=1e-5)
            n += 1
    assert n == n_expected


def test_label_extxyz_matches_the_engine_and_reads_the_charge(tmp_path):
    source = tmp_path / "in.extxyz"
    write_extxyz(source)
    stats = label([source], tmp_path / "store", workers=2, progress=False)
    assert (stats.requested, stats.written, stats.failed) == (4, 4, 0)
    store = TrajectoryStore(tmp_path / "store")
    assert store.summary()["snapshots_per_stage"] == {"xtb-label": 4}
    charges = {t.name: t.charge for t in store.trajectories()}
    assert charges == {"h2o": 0, "ch4": 0, "ch3ch2oh": 0, "methylammonium": 1}
    assert_matches_engine(tmp_path / "store", 4)
    record = json.loads((tmp_path / "store" / RUN_RECORD).read_text())
    assert record["status"] == "finished" and record["level"] == "GFN2-xTB"
    assert record["stage"] == "xtb-label" and record["counts"]["written"] == 4
    assert len(record["inputs"][0]["sha256"]) == 64 and record["versions"]["tblite"]
    assert record["units"]["forces"] == "eV/Angstrom"


def test_label_sdf_formal_charges_and_plain_xyz(tmp_path):
    write_sdf(tmp_path / "in.sdf")
    (tmp_path / "plain.xyz").write_text(
        "3\nwater, no keys at all\nO 0 0 0.117\nH 0 0.757 -0.470\nH 0 -0.757 -0.470\n")
    label([tmp_path / "in.sdf", tmp_path / "plain.xyz"], tmp_path / "store", workers=1,
          progress=False)
    store = TrajectoryStore(tmp_path / "store")
    by_name = {t.name: t for t in store.trajectories()}
    assert by_name["mol0"].charge == -1 and by_name["mol0"].smiles == "CC(=O)[O-]"
    assert by_name["mol1"].charge == 0 and len(by_name["mol1"].inchikey) == 27
    assert by_name["plain-1"].charge == 0
    assert_matches_engine(tmp_path / "store", 3)


def test_label_reproduces_generate_xtb_frames(tmp_path):
    """Total energies agree with generate's xtb stage; forces agree where both started
    from a fresh SCF guess (generate's later frames reuse the previous wavefunction, which
    moves forces by up to ~2e-4 eV/Å within tblite's SCF tolerance)."""
    generate([Molecule("ethanol", "CCO")], tmp_path / "gen", ProtocolConfig(max_mmff_frames=2),
             workers=1, progress=False)
    assert main(["label", str(tmp_path / "gen"), "--stage", "xtb", "-o",
                 str(tmp_path / "lab"), "--workers", "1", "--no-progress"]) == 0
    gen = TrajectoryStore(tmp_path / "gen").trajectory(0).select("xtb")
    lab = TrajectoryStore(tmp_path / "lab").trajectory(0)
    assert lab.name == "ethanol" and lab.stages == ["xtb-label"] * gen.n_snapshots
    np.testing.assert_array_equal(lab.positions, gen.positions)
    np.testing.assert_allclose(lab.energy, gen.energy, atol=1e-5)
    np.testing.assert_allclose(lab.forces[0], gen.forces[0], atol=1e-5)
    np.testing.assert_allclose(lab.forces, gen.forces, atol=1e-3)


def test_label_store_frames_selection(tmp_path):
    images = [molecule("CH4") for _ in range(5)]
    for k, atoms in enumerate(images):
        atoms.positions += 0.01 * k * np.eye(5, 3)
        atoms.info.update(name="methane", traj_id=1)
    ase.io.write(tmp_path / "t.extxyz", images, format="extxyz")
    units = read_geometries(tmp_path / "t.extxyz", FrameSelection(frames="every:2"))
    assert len(units) == 1 and units[0].sources == [f"{tmp_path / 't.extxyz'}#{k}"
                                                    for k in (1, 3, 5)]
    assert frame_indices("every:3", 7) == [0, 3, 6] and frame_indices("last", 4) == [3]
    with pytest.raises(InputError, match="every:K"):
        FrameSelection(frames="every:0")


def test_relax_trajectory_file_groups_by_index_and_ignores_model_labels(tmp_path):
    """A `force2geo relax --trajectory` file: frames with index, step, the model's energy
    and forces; one stored trajectory per relaxed molecule, with the oracle's labels."""
    images = []
    for index, name in enumerate(("H2O", "NH3")):
        for step in range(3):
            atoms = molecule(name)
            atoms.positions *= 1.0 + 0.02 * step
            atoms.info.update(index=index, step=step, energy=123.0)
            atoms.arrays["forces"] = np.ones((len(atoms), 3))
            images.append(atoms)
    ase.io.write(tmp_path / "relax.traj.xyz", images, format="extxyz")
    label([tmp_path / "relax.traj.xyz"], tmp_path / "store", workers=1, progress=False)
    store = TrajectoryStore(tmp_path / "store")
    assert [(t.name, t.n_snapshots) for t in store.trajectories()] == [("relax.traj-0", 3),
                                                                       ("relax.traj-1", 3)]
    assert store.trajectory(0).energy.max() < -100 and 123.0 not in store.trajectory(1).energy
    assert_matches_engine(tmp_path / "store", 6)


def test_resume_after_partial_run_labels_only_the_rest(tmp_path):
    source = tmp_path / "in.extxyz"
    write_extxyz(source)
    store = tmp_path / "store"
    first = label([source], store, workers=1, limit=2, progress=False)
    assert (first.written, first.deferred) == (2, 2)
    assert json.loads((store / RUN_RECORD).read_text())["status"] == "finished"
    second = label([source], store, workers=2, progress=False)
    assert (second.skipped, second.written, second.deferred) == (2, 2, 0)
    assert stored(store) == {"ch3ch2oh": 1, "ch4": 1, "h2o": 1, "methylammonium": 1}
    third = label([source, source], store, workers=1, progress=False)  # all done, twice
    assert (third.requested, third.skipped, third.written) == (8, 8, 0)
    record = json.loads((store / RUN_RECORD).read_text())
    assert len(record["previous_runs"]) == 2


def test_duplicate_geometries_are_labelled_once(tmp_path):
    atoms = molecule("H2O")
    images = [atoms.copy(), atoms.copy()]
    images[0].info["name"], images[1].info["name"] = "a", "b"
    ase.io.write(tmp_path / "d.extxyz", images, format="extxyz")
    stats = label([tmp_path / "d.extxyz"], tmp_path / "store", workers=1, progress=False)
    assert (stats.written, stats.duplicates) == (1, 1)


def test_shards_cover_the_input_disjointly(tmp_path):
    source = tmp_path / "in.extxyz"
    write_extxyz(source)
    keys = []
    for i in range(3):
        assert main(["label", str(source), "-o", str(tmp_path / f"s{i}"), "--shard", f"{i}/3",
                     "--workers", "1", "--no-progress"]) == 0
        record = json.loads((tmp_path / f"s{i}" / RUN_RECORD).read_text())
        assert record["shard"] == f"{i}/3"
        for traj in TrajectoryStore(tmp_path / f"s{i}").trajectories():
            keys.extend(geometry_key(traj.atomic_numbers, x, traj.charge)
                        for x in traj.positions)
    everything = [k for unit in read_geometries(source) for k in unit.keys]
    assert sorted(keys) == sorted(everything) and len(set(keys)) == 4


def test_bad_records_fail_one_by_one(tmp_path):
    source = tmp_path / "bad.xyz"
    source.write_text(
        "3\nname=ok\nO 0 0 0.117\nH 0 0.757 -0.470\nH 0 -0.757 -0.470\n"
        "2\nname=unknown\nXx 0 0 0\nH 0 0 1\n"
        "2\nname=overlap\nH 0 0 0\nH 0 0 0.1\n"
        "2\nname=radical\nO 0 0 0\nH 0 0 0.97\n"
        "3\nname=short\nO 0 0 0\nH 0 0 1\n"
        "2\nname=text\nH 0 zz 0\nH 0 0 0.74\n"
        "1\nname=uranium charge=0\nU 0 0 0\n"
        "2\nname=h2\nH 0 0 0\nH 0 0 0.74\n")
    stats = label([source], tmp_path / "store", workers=2, progress=False)
    assert (stats.written, stats.failed) == (2, 6)
    assert stored(tmp_path / "store") == {"h2": 1, "ok": 1}
    reasons = {r["source"].rsplit("#", 1)[1]: r["reason"]
               for r in read_failures(tmp_path / "store")}
    assert "unknown element 'Xx'" in reasons["2"]
    assert "overlapping atoms: 1 (H) and 2 (H)" in reasons["3"] and "0.100 Å" in reasons["3"]
    assert "9 electrons at charge 0" in reasons["4"]
    assert "header says 3 atoms" in reasons["5"]
    assert "could not convert string to float" in reasons["6"]
    assert "no parameters for atomic number(s) [92]" in reasons["7"]
    # The failures are remembered: a rerun does not try them again.
    rerun = label([source], tmp_path / "store", workers=1, progress=False)
    assert (rerun.skipped, rerun.written, rerun.failed) == (8, 0, 0)


def test_bad_sdf_record_and_whole_input_errors(tmp_path):
    write_sdf(tmp_path / "a.sdf", ("CO",))
    text = (tmp_path / "a.sdf").read_text()
    lines = text.splitlines(keepends=True)
    lines[4] = lines[4][:31] + "Qq " + lines[4][34:]  # the first atom line's symbol
    (tmp_path / "b.sdf").write_text("".join(lines) + text)
    stats = label([tmp_path / "b.sdf"], tmp_path / "store", workers=1, progress=False)
    assert (stats.written, stats.failed) == (1, 1)
    assert "unknown element 'Qq'" in read_failures(tmp_path / "store")[0]["reason"]
    with pytest.raises(InputError, match="missing.xyz: no such file"):
        label([tmp_path / "missing.xyz"], tmp_path / "other", progress=False)
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(InputError, match="cannot tell the format"):
        label([tmp_path / "x.csv"], tmp_path / "other", progress=False)
    with pytest.raises(InputError, match="no stage\\(s\\) \\['dtf'\\] in this store"):
        label([tmp_path / "store"], tmp_path / "other", selection=FrameSelection(("dtf",)),
              progress=False)
    with pytest.raises(InputError, match="no frames of stage\\(s\\) dft"):
        label([tmp_path / "store"], tmp_path / "other", selection=FrameSelection(("dft",)),
              progress=False)
    assert not (tmp_path / "other").exists()


def test_refuses_other_settings_and_foreign_stores(tmp_path, capsys):
    source = tmp_path / "in.extxyz"
    write_extxyz(source, with_ion=False)
    label([source], tmp_path / "store", workers=1, progress=False)
    with pytest.raises(InputError, match="other settings \\(stage_name differ\\)"):
        label([source], tmp_path / "store", LabelConfig(stage_name="mine"), progress=False)
    with pytest.raises(InputError, match="is also an input"):
        label([tmp_path / "store"], tmp_path / "store", progress=False)
    generate([Molecule("water", "O")], tmp_path / "gen", ProtocolConfig(max_mmff_frames=1),
             workers=1, progress=False)
    with pytest.raises(InputError, match="made by force2geo generate"):
        label([source], tmp_path / "gen", progress=False)
    assert main(["label", str(source), "-o", str(tmp_path / "s2"), "--shard", "3/3"]) == 1
    assert "0 <= I < N" in capsys.readouterr().err
    assert not (tmp_path / "s2").exists()
    assert LabelConfig(oracle="dft").stage_name == "dft-label"
    assert LabelConfig(oracle="dft").level == "B3LYP/6-31G* (density fitting)"


def test_labelled_store_trains(tmp_path):
    """A label store is training data: the loader selects its stage, labels are finite,
    and `force2geo train` runs on it."""
    source = tmp_path / "in.extxyz"
    write_extxyz(source)
    label([source], tmp_path / "store", workers=2, progress=False)
    from force2geo.training.data import split_snapshots

    store = TrajectoryStore(tmp_path / "store")
    parts = split_snapshots(store, None, (0.5, 0.5, 0.0), stages=("xtb-label",))
    arrays = store.read(np.concatenate(list(parts.values())))
    assert arrays["energy"].shape == (4,) and np.all(np.isfinite(arrays["forces"]))
    assert main(["train", "--data", str(tmp_path / "store"), "--stages", "xtb-label", "-o",
                 str(tmp_path / "run"), "--model-option", "hidden_channels=8",
                 "--model-option", "num_layers=1", "--max-steps", "2", "--batch-size", "2",
                 "--split-fractions", "0.5", "0.5", "0", "--threads", "1", "--no-plots"]) == 0
    assert (tmp_path / "run" / "last.pt").exists()


def wait_for_trajectories(store_path, proc, at_least, timeout=120.0):
    """The store's trajectory count once it reaches ``at_least`` (None if ``proc`` ends or
    time runs out first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            count = json.loads((store_path / "manifest.json").read_text())["counts"][
                "trajectories"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            count = 0
        if count >= at_least:
            return count
        time.sleep(0.02)
    return None


def test_kill_mid_run_then_resume_labels_each_geometry_once(tmp_path):
    rng = np.random.default_rng(0)
    benzene, images = molecule("C6H6"), []
    for k in range(8 * 64):
        atoms = benzene.copy()
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        atoms.info["name"] = f"benzene-{k // 64}"
        images.append(atoms)
    ase.io.write(tmp_path / "in.extxyz", images, format="extxyz")
    store = tmp_path / "store"
    command = [sys.executable, "-m", "force2geo.cli.main", "label", str(tmp_path / "in.extxyz"),
               "-o", str(store), "--workers", "1", "--flush-every", "1", "--no-progress"]
    # Own session: the pool's workers share the group, so one killpg ends them all.
    proc = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        written = wait_for_trajectories(store, proc, at_least=1)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    assert written is not None and 1 <= len(stored(store)) < 8
    assert json.loads((store / RUN_RECORD).read_text())["status"] == "running"
    stats = label([tmp_path / "in.extxyz"], store, workers=2, progress=False)
    assert stats.skipped >= 64 and stats.skipped + stats.written == 8 * 64
    assert stored(store) == {f"benzene-{k}": 64 for k in range(8)}
    keys = [geometry_key(t.atomic_numbers, x, t.charge)
            for t in TrajectoryStore(store).trajectories() for x in t.positions]
    assert len(set(keys)) == 8 * 64


def test_dft_oracle_matches_the_pyscf_engine(tmp_path):
    images = [molecule("H2O"), molecule("H2O")]
    images[1].positions[1] += [0.0, 0.05, 0.02]
    for atoms in images:
        atoms.info.update(name="water")
    ase.io.write(tmp_path / "w.extxyz", images, format="extxyz")
    assert main(["label", str(tmp_path / "w.extxyz"), "-o", str(tmp_path / "dft"), "--oracle",
                 "dft", "--workers", "1", "--no-progress"]) == 0
    traj = TrajectoryStore(tmp_path / "dft").trajectory(0)
    assert traj.stages == ["dft-label", "dft-label"]
    for k in range(2):
        direct = DFTEngine().compute(traj.atomic_numbers, traj.positions[k])
        assert traj.energy[k] == pytest.approx(direct.energy, abs=1e-6)
        np.testing.assert_allclose(traj.forces[k], direct.forces, atol=1e-4)
    record = json.loads((tmp_path / "dft" / RUN_RECORD).read_text())
    assert record["level"] == "B3LYP/6-31G* (density fitting)"
