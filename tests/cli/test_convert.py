"""``force2geo convert``: values survive into the store, bad input never leaves debris."""

import json
import subprocess
import sys

import ase.db
import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from rdkit import Chem
from rdkit.Chem import AllChem

from force2geo.cli.main import main
from force2geo.data.convert import ERRORS_FILE, convert
from force2geo.data.store import TrajectoryStore
from force2geo.units import HARTREE_TO_EV

WATER = np.array([[0.0, 0.0, 0.117], [0.0, 0.757, -0.469], [0.0, -0.757, -0.469]])
GOOD = "2\nenergy=-1.5 stage=xtb\nH 0.0 0.0 0.0\nH 0.0 0.0 0.74\n"
BAD_ELEMENT = "2\nenergy=-1.0\nXx 0.0 0.0 0.0\nH 0.0 0.0 0.74\n"
NAN_ENERGY = "2\nenergy=nan\nH 0.0 0.0 0.0\nH 0.0 0.0 0.74\n"


def relaxation_xyz(path, n_molecules=2, n_steps=3, seed=0):
    """Water relaxations, xtb steps then one dft step, with distinct labels per frame."""
    rng = np.random.default_rng(seed)
    frames = []
    for m in range(n_molecules):
        for k in range(n_steps):
            atoms = Atoms("OH2", positions=WATER + rng.normal(scale=0.05, size=(3, 3)))
            atoms.calc = SinglePointCalculator(atoms, energy=-2079.0 - m - 0.01 * k,
                                               forces=rng.normal(size=(3, 3)))
            atoms.info.update(mol_id=f"w{m}", stage="dft" if k == n_steps - 1 else "xtb",
                              gap=8.0 + m)
            frames.append(atoms)
    ase.io.write(path, frames, format="extxyz")
    return frames


def contents(folder):
    return sorted(p.name for p in folder.iterdir())


def one_line(text):
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def test_xyz_round_trip_in_process(tmp_path, capsys):
    frames = relaxation_xyz(tmp_path / "relax.xyz")
    store_path = tmp_path / "store"
    assert main(["convert", str(tmp_path / "relax.xyz"), str(store_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "extxyz: read 2 trajectories, wrote 2 (6 snapshots)" in out
    assert "skipped 0 bad record(s)" in out
    store = TrajectoryStore(store_path)
    assert store.n_trajectories == 2 and store.n_snapshots == 6
    second = store.trajectory(1)
    assert second.name == "w1" and second.stages == ["xtb", "xtb", "dft"]
    # energies are float64 in the store, positions and forces float32
    assert second.energy.tolist() == [f.get_potential_energy() for f in frames[3:]]
    np.testing.assert_allclose(second.forces, [f.get_forces() for f in frames[3:]],
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(second.positions, [f.positions for f in frames[3:]],
                               rtol=1e-6, atol=1e-6)
    assert store.properties("gap").tolist() == [8.0, 9.0]
    assert store.manifest["sources"] == [f"extxyz:{(tmp_path / 'relax.xyz').resolve()}"]
    assert contents(tmp_path) == ["relax.xyz", "store"]  # no temporary sibling left
    assert not (store_path / ERRORS_FILE).exists()


def test_sdf_detected_with_hartree_energies_from_options(tmp_path, capsys):
    writer = Chem.SDWriter(str(tmp_path / "mols.sdf"))
    for k, smiles in enumerate(["CCO", "c1ccccc1O"]):
        mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
        AllChem.EmbedMolecule(mol, randomSeed=k)
        mol.SetProp("_Name", f"m{k}")
        mol.SetProp("scf_energy", str(-155.25 - 150.0 * k))
        writer.write(mol)
    writer.close()
    code = main(["convert", str(tmp_path / "mols.sdf"), str(tmp_path / "s"), "--no-progress",
                 "-o", "energy_key=scf_energy", "-o", "energy_unit=hartree"])
    assert code == 0 and "sdf: read 2" in capsys.readouterr().out
    store = TrajectoryStore(tmp_path / "s")
    energies = [store[i].energy for i in range(2)]
    assert energies == pytest.approx([-155.25 * HARTREE_TO_EV, -305.25 * HARTREE_TO_EV],
                                     rel=1e-12)
    assert store.identifiers("smiles") == ["CCO", "Oc1ccccc1"]
    assert np.isnan(store[0].forces).all()


def test_ase_database_detected(tmp_path):
    with ase.db.connect(tmp_path / "rows.db") as db:
        for k in range(3):
            atoms = Atoms("OH2", positions=WATER + 0.01 * k)
            atoms.calc = SinglePointCalculator(atoms, energy=-5.0 * k, forces=np.full((3, 3), k))
            db.write(atoms, name=f"r{k}")
    stats = convert(tmp_path / "rows.db", tmp_path / "s")
    assert (stats.format, stats.read, stats.written, stats.skipped) == ("asedb", 3, 3, 0)
    store = TrajectoryStore(tmp_path / "s")
    assert [store[i].energy for i in range(3)] == [0.0, -5.0, -10.0]
    assert store[2].forces.tolist() == [[2.0] * 3] * 3


def test_bad_records_reported_valid_ones_kept(tmp_path, capsys):
    source = tmp_path / "mixed.xyz"
    source.write_text(GOOD + BAD_ELEMENT + NAN_ENERGY * 12 + GOOD + "junk line\n"
                      + BAD_ELEMENT * 11 + GOOD)
    store_path = tmp_path / "s"
    assert main(["convert", str(source), str(store_path), "--no-progress"]) == 0
    captured = capsys.readouterr()
    skipped = [line for line in captured.err.splitlines() if line.startswith("skipped: ")]
    assert len(skipped) == 21  # 20 printed, then a pointer to the full list
    assert skipped[0] == f"skipped: {source}: record 2: line 5: unknown element 'Xx'"
    assert "record 3: non-finite energy" in skipped[1]
    assert skipped[-1].endswith(f"all are listed in {store_path}/{ERRORS_FILE}")
    assert "wrote 3 (3 snapshots)" in captured.out and "skipped 25 bad record(s)" in captured.out
    entries = [json.loads(line) for line in (store_path / ERRORS_FILE).read_text().splitlines()]
    assert len(entries) == 25 and entries[0]["record"] == 2 and entries[0]["format"] == "extxyz"
    assert entries[13]["record"] == 16 and "expected an atom count" in entries[13]["reason"]
    assert TrajectoryStore(store_path).n_snapshots == 3


def test_strict_aborts_on_first_bad_record_and_leaves_nothing(tmp_path, capsys):
    source = tmp_path / "mixed.xyz"
    source.write_text(GOOD * 3 + NAN_ENERGY + GOOD)
    code = main(["convert", str(source), str(tmp_path / "out" / "s"), "--strict",
                 "--no-progress"])
    err = one_line(capsys.readouterr().err)
    assert code == 1
    assert err == f"force2geo convert: error: {source}: record 4: non-finite energy in " \
        "snapshot(s) [0]"
    assert contents(tmp_path) == ["mixed.xyz"]  # nor the parent folder it made


@pytest.mark.parametrize("case", ["missing", "empty", "all-bad", "folder"])
def test_unusable_input_is_one_line_error_and_nothing_left(tmp_path, capsys, case):
    source = tmp_path / ("missing.xyz" if case == "missing" else "in.xyz")
    if case == "empty":
        source.write_text("")
    elif case == "all-bad":
        source.write_text(BAD_ELEMENT + NAN_ENERGY)
    elif case == "folder":
        source = tmp_path / "release"
        source.mkdir()
        (source / "notes.txt").write_text("nothing here")
    before = contents(tmp_path)
    code = main(["convert", str(source), str(tmp_path / "s"), "--no-progress"])
    err = capsys.readouterr().err
    reason = {"missing": "no such file or folder", "empty": "empty file",
              "all-bad": "no valid trajectory to write (2 bad record(s)); nothing written",
              "folder": "cannot tell the format"}[case]
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"force2geo convert: error: {source}: ") and reason in last
    if case != "all-bad":
        one_line(err)
    assert contents(tmp_path) == before


def test_existing_store_needs_append_or_overwrite(tmp_path, capsys):
    relaxation_xyz(tmp_path / "a.xyz", n_molecules=2, seed=1)
    relaxation_xyz(tmp_path / "b.xyz", n_molecules=1, seed=2)
    store_path = tmp_path / "s"
    assert convert(tmp_path / "a.xyz", store_path).written == 2
    fingerprint = TrajectoryStore(store_path).fingerprint
    code = main(["convert", str(tmp_path / "b.xyz"), str(store_path), "--no-progress"])
    err = one_line(capsys.readouterr().err)
    assert code == 1 and f"{store_path}: trajectory store exists; pass --append" in err
    assert TrajectoryStore(store_path).fingerprint == fingerprint

    assert main(["convert", str(tmp_path / "b.xyz"), str(store_path), "--append",
                 "--no-progress"]) == 0
    appended = TrajectoryStore(store_path)
    assert appended.n_trajectories == 3 and appended.n_shards == 2
    assert len(appended.manifest["sources"]) == 2

    (tmp_path / "bad.xyz").write_text(BAD_ELEMENT)
    assert main(["convert", str(tmp_path / "bad.xyz"), str(store_path), "--overwrite",
                 "--no-progress"]) == 1
    assert TrajectoryStore(store_path).n_trajectories == 3  # a failed overwrite keeps the old
    (tmp_path / "bad.xyz").unlink()
    assert main(["convert", str(tmp_path / "b.xyz"), str(store_path), "--overwrite",
                 "--no-progress"]) == 0
    replaced = TrajectoryStore(store_path)
    assert replaced.n_trajectories == 1 and replaced.trajectory(0).energy[0] == -2079.0
    assert contents(tmp_path) == ["a.xyz", "b.xyz", "s"]

    other = tmp_path / "not-a-store"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    assert main(["convert", str(tmp_path / "b.xyz"), str(other), "--overwrite",
                 "--no-progress"]) == 1
    assert "is not a trajectory store" in capsys.readouterr().err
    assert contents(other) == ["keep.txt"]


def test_limit_stages_and_reader_options(tmp_path, capsys):
    relaxation_xyz(tmp_path / "r.xyz", n_molecules=3, n_steps=3)
    stats = convert(tmp_path / "r.xyz", tmp_path / "limited", limit=2)
    assert stats.written == 2 and TrajectoryStore(tmp_path / "limited").n_trajectories == 2

    assert main(["convert", str(tmp_path / "r.xyz"), str(tmp_path / "dft"), "--stages", "dft",
                 "--no-progress"]) == 0
    dft = TrajectoryStore(tmp_path / "dft")
    assert dft.n_snapshots == 3 and {dft[i].stage for i in range(3)} == {"dft"}
    assert [dft[i].energy for i in range(3)] == [-2079.02, -2080.02, -2081.02]

    assert main(["convert", str(tmp_path / "r.xyz"), str(tmp_path / "none"), "--stages",
                 "pm3", "--no-progress"]) == 1
    assert "3 without stages pm3" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()

    assert main(["convert", str(tmp_path / "r.xyz"), str(tmp_path / "x"), "-o", "colour=red",
                 "--no-progress"]) == 1
    assert "format 'extxyz' has no option(s) colour" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "r.xyz"), str(tmp_path / "ungrouped"), "-o",
                 "group_by=false", "--no-progress"]) == 0
    assert TrajectoryStore(tmp_path / "ungrouped").n_trajectories == 9


def test_interrupt_midway_leaves_nothing(tmp_path):
    source = tmp_path / "mixed.xyz"
    source.write_text(GOOD * 5 + BAD_ELEMENT + GOOD)

    def interrupt(err):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        # shard_snapshots=1: shards were already on disk in the temporary store
        convert(source, tmp_path / "s", on_error=interrupt, shard_snapshots=1,
                options={"group_by": False})
    assert contents(tmp_path) == ["mixed.xyz"]


def test_command_line_subprocess(tmp_path):
    relaxation_xyz(tmp_path / "r.xyz")
    result = subprocess.run(
        [sys.executable, "-m", "force2geo.cli.main", "convert", str(tmp_path / "r.xyz"),
         str(tmp_path / "s"), "--format", "extxyz"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "extxyz: read 2 trajectories, wrote 2 (6 snapshots)" in result.stdout
    assert "convert r.xyz" in result.stderr  # the progress bar goes to stderr
    assert TrajectoryStore(tmp_path / "s").n_snapshots == 6
