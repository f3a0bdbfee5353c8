"""``sample``: displaced and normal-mode geometries around minima, at the asked RMS."""

import json

import ase.io
import numpy as np
import pytest
from ase.build import molecule

from force2geo.cli.main import main
from force2geo.data.store import TrajectoryStore, TrajectoryWriter
from force2geo.data.trajectory import Trajectory
from force2geo.errors import InputError
from force2geo.qc.sample import (
    SampleConfig,
    normal_mode_displacement,
    rigid_motions,
    rms,
    sample,
    vibrational_modes,
    xtb_hessian,
)


@pytest.fixture(scope="module")
def minima_store(tmp_path_factory):
    """A store with two molecules whose last xtb frame is an (approximate) minimum."""
    from ase.optimize import BFGS

    from force2geo.qc.engines import EngineCalculator, XTBEngine

    path = tmp_path_factory.mktemp("sample") / "store"
    with TrajectoryWriter(path) as writer:
        for name, smiles in (("H2O", "O"), ("CH3OH", "CO")):
            atoms = molecule(name)
            atoms.calc = EngineCalculator(XTBEngine())
            BFGS(atoms, logfile=None).run(fmax=0.01)
            x = atoms.get_positions()
            writer.add(Trajectory(atoms.numbers, np.stack([x + 0.05, x]), [0.0, 0.0], None,
                                  ["mmff", "xtb"], name=name.lower(), smiles=smiles))
    return path


def test_displace_has_the_requested_rms_on_average(minima_store, tmp_path):
    config = SampleConfig(method="displace", amplitudes=(0.05, 0.2), per_molecule=40, seed=3)
    stats = sample(minima_store, tmp_path / "d.extxyz", config, progress=False)
    assert (stats.molecules, stats.geometries) == (2, 160)
    store = TrajectoryStore(minima_store)
    frames = ase.io.read(tmp_path / "d.extxyz", ":")
    for amplitude in (0.05, 0.2):
        chosen = [a for a in frames if a.info["amplitude"] == amplitude]
        measured = []
        for atoms in chosen:
            minimum = store.trajectory(atoms.info["source_trajectory"]).positions[
                atoms.info["source_frame"]]
            measured.append(rms(atoms.positions - minimum))
            assert atoms.info["rms"] == pytest.approx(measured[-1], abs=1e-6)
        assert np.mean(measured) == pytest.approx(amplitude, rel=0.1)
    assert frames[0].info["name"] == "h2o" and frames[0].info["method"] == "displace"
    assert frames[0].info["source_frame"] == 1 and frames[0].info["charge"] == 0
    # Seeded by (seed, name, amplitude): the same draws whatever else is asked for.
    sample(minima_store, tmp_path / "e.extxyz", SampleConfig(amplitudes=(0.2,),
                                                             per_molecule=40, seed=3),
           progress=False)
    again = ase.io.read(tmp_path / "e.extxyz", ":")
    np.testing.assert_array_equal(again[0].positions, [a for a in frames
                                                       if a.info["amplitude"] == 0.2][0]
                                  .positions)
    record = json.loads((tmp_path / "d.extxyz.json").read_text())
    assert record["store_fingerprint"] == store.fingerprint
    assert record["counts"] == {"molecules": 2, "geometries": 160, "skipped": 0}


def test_vibrational_modes_exclude_rigid_motions():
    atoms = molecule("H2O")
    hessian = xtb_hessian(atoms.numbers, atoms.positions)
    assert np.allclose(hessian, hessian.T)
    kappa, modes = vibrational_modes(hessian, atoms.positions)
    assert kappa.shape == (3,) and modes.shape == (3, 3, 3)
    rigid = rigid_motions(atoms.positions)
    assert rigid.shape == (9, 6)
    assert np.abs(rigid.T @ modes.reshape(3, -1).T).max() < 1e-8
    assert rigid_motions(molecule("CO2").positions).shape[1] == 5
    d = normal_mode_displacement(np.random.default_rng(0), kappa, modes, 0.1)
    assert rms(d) == pytest.approx(0.1, abs=1e-12)
    assert np.abs(d.sum(axis=0)).max() < 1e-8  # no net translation


def test_normal_modes_cli_then_label(minima_store, tmp_path):
    out = tmp_path / "nm.extxyz"
    assert main(["sample", str(minima_store), "--stage", "xtb", "-o", str(out), "--method",
                 "normal-modes", "--amplitudes", "0.05,0.1", "--per-molecule", "2",
                 "--seed", "1", "--workers", "2", "--no-progress"]) == 0
    frames = ase.io.read(out, ":")
    assert len(frames) == 8
    for atoms in frames:
        assert atoms.info["rms"] == pytest.approx(atoms.info["amplitude"], abs=1e-9)
    assert main(["label", str(out), "-o", str(tmp_path / "labels"), "--workers", "1",
                 "--no-progress"]) == 0
    store = TrajectoryStore(tmp_path / "labels")
    assert sorted(t.name for t in store.trajectories()) == ["ch3oh", "h2o"]
    assert store.n_snapshots == 8
    assert main(["sample", str(minima_store), "-o", str(out)]) == 1  # exists


def test_sample_skips_and_refuses_clearly(minima_store, tmp_path):
    config = SampleConfig(method="normal-modes", amplitudes=(0.1,), max_hessian_atoms=4)
    stats = sample(minima_store, tmp_path / "n.xyz", config, workers=1, progress=False)
    assert stats.molecules == 1
    assert stats.skipped == [{"name": "ch3oh", "reason": "6 atoms > --max-hessian-atoms 4"}]
    with pytest.raises(InputError, match="no stage 'xtb2'"):
        sample(minima_store, tmp_path / "x.xyz", SampleConfig(stage="xtb2"), progress=False)
    with pytest.raises(InputError, match="must end in .xyz"):
        sample(minima_store, tmp_path / "x.sdf", progress=False)
    with pytest.raises(ValueError, match="amplitudes must be positive"):
        SampleConfig(amplitudes=(0.1, -0.1))
