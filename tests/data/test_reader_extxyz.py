"""Extended XYZ reader: labels in eV / eV/Å, grouping into trajectories, bad frames skipped."""

import gzip

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from force2geo.data.readers import extxyz
from force2geo.errors import InputError

WATER = np.array([[0.0, 0.0, 0.117], [0.0, 0.757, -0.469], [0.0, -0.757, -0.469]])
METHANE = np.array([[0.0, 0.0, 0.0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63],
                    [-0.63, 0.63, -0.63], [0.63, -0.63, -0.63]])


def frame(symbols, positions, energy=None, forces=None, **info):
    atoms = Atoms(symbols, positions=positions)
    if energy is not None or forces is not None:
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
    atoms.info.update(info)
    return atoms


def optimisation(n_steps, seed, **info):
    """A fake but fully specified water descent: distinct energies, forces, positions."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n_steps):
        positions = WATER + rng.normal(scale=0.05, size=WATER.shape)
        forces = rng.normal(scale=0.5, size=WATER.shape)
        frames.append(frame("OH2", positions, energy=-2079.0 - 0.1 * k - seed, forces=forces,
                            **info))
    return frames


def read_all(path, **options):
    errors = []
    trajectories = list(extxyz.read(path, on_error=errors.append, **options))
    return trajectories, errors


def test_round_trip_values_and_metadata(tmp_path):
    frames = optimisation(3, seed=1, mol_id="w1", stage="xtb", charge=0, smiles="O",
                          homo=-7.25, gap=9.5, cid=962)
    path = tmp_path / "water.extxyz"
    ase.io.write(path, frames, format="extxyz")
    trajectories, errors = read_all(path)
    assert errors == []
    assert len(trajectories) == 1
    traj = trajectories[0]
    assert traj.n_snapshots == 3 and traj.atomic_numbers.tolist() == [8, 1, 1]
    np.testing.assert_allclose(traj.energy, [f.get_potential_energy() for f in frames])
    # extxyz text keeps 8 decimals
    np.testing.assert_allclose(traj.forces, [f.get_forces() for f in frames], atol=1e-7)
    np.testing.assert_allclose(traj.positions, [f.positions for f in frames], atol=1e-7)
    assert traj.stages == ["xtb"] * 3 and traj.smiles == "O" and traj.cid == 962
    assert traj.name == "w1"  # the grouping key names a trajectory without a name
    assert traj.properties == {"homo": -7.25, "gap": 9.5}


def test_grouping_by_key_atoms_and_order(tmp_path):
    frames = (optimisation(2, 1, mol_id="a") + optimisation(1, 2, mol_id="b")
              + optimisation(2, 3, mol_id="a")
              + [frame("CH4", METHANE, energy=-1100.0, mol_id="a")])
    path = tmp_path / "mixed.xyz"
    ase.io.write(path, frames, format="extxyz")
    trajectories, errors = read_all(path)
    assert errors == []
    # a, a | b | a, a | a with other atoms: consecutive runs only, atoms must match
    assert [t.n_snapshots for t in trajectories] == [2, 1, 2, 1]
    assert [t.name for t in trajectories] == ["a", "b", "a", "a"]
    assert trajectories[3].atomic_numbers.tolist() == [6, 1, 1, 1, 1]
    assert trajectories[2].energy.tolist() == pytest.approx([-2082.0, -2082.1])

    single, _ = read_all(path, group_by=False)
    assert len(single) == 6 and all(t.n_snapshots == 1 for t in single)
    by_other, _ = read_all(path, group_by="traj_id")  # no frame has it: each alone
    assert len(by_other) == 6


def test_no_key_means_one_trajectory_per_frame_and_missing_labels_are_nan(tmp_path):
    path = tmp_path / "plain.xyz"
    ase.io.write(path, [frame("OH2", WATER), frame("OH2", WATER + 0.01)], format="extxyz")
    trajectories, errors = read_all(path)
    assert errors == [] and len(trajectories) == 2
    assert np.isnan(trajectories[0].energy).all() and np.isnan(trajectories[0].forces).all()
    assert trajectories[1].stages == ["input"]


def test_alternative_label_keys_and_explicit_keys(tmp_path):
    path = tmp_path / "ref.xyz"
    path.write_text(
        "3\n"
        "Properties=species:S:1:pos:R:3:REF_forces:R:3 REF_energy=-12.5 total_charge=-1 "
        "stage=dft name=hydroxide-ish\n"
        "O 0.0 0.0 0.0 0.1 0.2 0.3\n"
        "H 0.97 0.0 0.0 -0.1 0.0 0.0\n"
        "H 0.0 0.97 0.0 0.0 -0.2 -0.3\n"
        "3\n"
        "Properties=species:S:1:pos:R:3:my_f:R:3 my_e=-3.0\n"
        "O 0.0 0.0 0.0 1 1 1\n"
        "H 0.97 0.0 0.0 2 2 2\n"
        "H 0.0 0.97 0.0 3 3 3\n"
    )
    trajectories, errors = read_all(path)
    assert errors == []
    first, second = trajectories
    assert first.energy.tolist() == [-12.5] and first.charge == -1 and first.stages == ["dft"]
    np.testing.assert_allclose(first.forces[0, 2], [0.0, -0.2, -0.3])
    assert np.isnan(second.energy).all()  # my_e is not a known energy key
    explicit, errors = read_all(path, energy_key="my_e", forces_key="my_f")
    assert errors == []
    assert np.isnan(explicit[0].energy[0]) and explicit[1].energy[0] == -3.0
    np.testing.assert_allclose(explicit[1].forces[0, 1], [2.0, 2.0, 2.0])


GOOD = "2\nenergy=-1.0 mol_id=m\nH 0.0 0.0 0.0\nH 0.0 0.0 0.74\n"


def test_malformed_frames_are_reported_and_later_frames_still_read(tmp_path):
    path = tmp_path / "damaged.xyz"
    path.write_text(
        GOOD  # frame 1 (lines 1-4)
        + "2\nenergy=-2.0\nH 0.0 0.0 abc\nH 0.0 0.0 0.74\n"  # frame 2: bad number
        + "3\nenergy=-3.0\nH 0.0 0.0 0.0\nH 0.0 0.0 0.74\n"  # frame 3: one atom line short
        + GOOD.replace("-1.0", "-4.0")  # frame 4
        + "not a count line\nmore junk\n"  # frame 5: garbage where a frame should start
        + "2\nenergy=-6.0\nXx 0.0 0.0 0.0\nH 0.0 0.0 0.74\n"  # frame 6: unknown element
        + "2\nenergy=nan\nH 0.0 0.0 0.0\nH 0.0 0.0 0.74\n"  # frame 7: NaN energy
        + "2\ncharge=0.5\nH 0.0 0.0 0.0\nH 0.0 0.0 0.74\n"  # frame 8: fractional charge
        + GOOD.replace("-1.0", "-9.0")  # frame 9
        + "4\nenergy=-10.0\nH 0.0 0.0 0.0\n"  # frame 10: file ends inside it
    )
    trajectories, errors = read_all(path, group_by=False)
    assert [t.energy[0] for t in trajectories] == [-1.0, -4.0, -9.0]
    assert [e.record for e in errors] == [2, 3, 5, 6, 7, 8, 10]
    assert all(e.path == str(path) and str(e).startswith(f"{path}: record ") for e in errors)
    reasons = {e.record: e.reason for e in errors}
    assert "line 5" in reasons[2] and "abc" in reasons[2]
    assert "header says 3 atoms but only 2" in reasons[3]
    assert "not a count line" in reasons[5]
    assert "unknown element 'Xx'" in reasons[6]
    assert "non-finite energy" in reasons[7]
    assert "charge 0.5 is not an integer" in reasons[8]
    assert "file ends inside the frame" in reasons[10]
    # without on_error the first bad frame raises
    with pytest.raises(InputError, match=r"record 2: line 5"):
        list(extxyz.read(path))


def test_non_numeric_energy_and_wrong_force_shape(tmp_path):
    path = tmp_path / "labels.xyz"
    path.write_text(
        '2\nenergy="high"\nH 0.0 0.0 0.0\nH 0.0 0.0 0.74\n'
        "2\nProperties=species:S:1:pos:R:3:forces:R:2 energy=-1.0\n"
        "H 0.0 0.0 0.0 0.1 0.1\nH 0.0 0.0 0.74 0.1 0.1\n"
        + GOOD
    )
    trajectories, errors = read_all(path)
    assert len(trajectories) == 1 and trajectories[0].energy.tolist() == [-1.0]
    assert "'high' is not a number" in errors[0].reason
    assert errors[1].record == 2 and "shape" in errors[1].reason


def test_gzip_and_empty_and_missing(tmp_path):
    path = tmp_path / "water.xyz.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(GOOD * 2)
    assert extxyz.detect(path)
    trajectories, errors = read_all(path)
    assert errors == [] and len(trajectories) == 1 and trajectories[0].n_snapshots == 2

    empty = tmp_path / "empty.xyz"
    empty.write_text("\n\n")
    assert extxyz.detect(empty)  # so that reading it says what is wrong
    with pytest.raises(InputError, match=r"empty\.xyz: empty file"):
        list(extxyz.read(empty))
    with pytest.raises(InputError, match="no such file"):
        extxyz.read(tmp_path / "missing.xyz")


def test_detect(tmp_path):
    good, bad, other = tmp_path / "a.xyz", tmp_path / "b.xyz", tmp_path / "c.sdf"
    good.write_text(GOOD)
    bad.write_text("hello\n")
    other.write_text(GOOD)
    assert extxyz.detect(good) and not extxyz.detect(bad) and not extxyz.detect(other)
    assert not extxyz.detect(tmp_path)


def test_split_frames_cuts_by_count_lines():
    text = "1\nc\nH 0 0 0\n\n2\nc2\nH 0 0 0\nH 0 0 1\n"
    frames = list(extxyz.split_frames(text.splitlines(keepends=True)))
    assert [(f.number, f.line, f.problem) for f in frames] == [(1, 1, None), (2, 5, None)]
    assert frames[1].text.endswith("H 0 0 1\n")
