"""The predict pipeline as a library: ensembles' spreads against their members, statuses
made by the relaxation settings (step limit, divergence), inputs that fail per molecule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from predict_data import SMI

from force2geo.finetune.dataset import PropertyBatch
from force2geo.models import Batch, energy_and_forces
from force2geo.predict import PredictConfig, predict_candidates, read_candidates
from force2geo.predict.inputs import from_smiles
from force2geo.predict.output import write_geometries
from force2geo.pretrained import (
    Ensemble,
    PropertyEnsemble,
    load_property_model,
    resolve_model,
)
from force2geo.relax import RelaxConfig

RELAXED = ("converged", "step_limit")


@pytest.fixture(scope="module")
def candidates(tmp_path_factory):
    path = tmp_path_factory.mktemp("inputs") / "molecules.smi"
    path.write_text(SMI)
    return read_candidates(str(path))


def _run(candidates, potential, property_model, **relax):
    config = PredictConfig(relax=RelaxConfig(**{"max_steps": 100, **relax}), progress=False)
    return predict_candidates(candidates, potential, property_model, config).molecules


def _final_batch(molecule, dtype=torch.float64) -> Batch:
    r = molecule.result
    return Batch.from_arrays([r.atomic_numbers], [r.positions], dtype=dtype)


def test_potential_ensemble_spread_is_the_members_spread(candidates, mlip_runs, property_runs):
    potential = resolve_model(mlip_runs)
    assert isinstance(potential, Ensemble)
    prop = load_property_model(property_runs[0])
    relaxed = [m for m in _run(candidates, potential, prop) if m.status in RELAXED]
    assert len(relaxed) == 3
    dtype = next(potential.parameters()).dtype
    for m in relaxed:
        batch = _final_batch(m, dtype)
        outputs = [energy_and_forces(member, batch) for member in potential.members]
        energies = np.array([float(e) for e, _ in outputs])
        forces = np.stack([f.detach().numpy() for _, f in outputs])  # [2, n_atoms, 3]
        assert m.energy_std > 0 and m.forces_std > 0
        assert m.energy_std == pytest.approx(energies.std(), rel=1e-6, abs=1e-9)
        expected = np.linalg.norm(forces.std(axis=0), axis=1).max()
        assert m.forces_std == pytest.approx(expected, rel=1e-5, abs=1e-9)
        assert m.value_std is None


def test_identical_members_have_zero_spread_and_relax_as_one(candidates, mlip_runs,
                                                            property_runs):
    prop = load_property_model(property_runs[0])
    single = _run(candidates, resolve_model(mlip_runs[0]), prop)
    twice = _run(candidates, resolve_model([mlip_runs[0], mlip_runs[0]]),
                 load_property_model([property_runs[0], property_runs[0]]))
    for a, b in zip(single, twice, strict=True):
        assert a.status == b.status
        if a.status in RELAXED:
            assert b.energy_std == 0 and b.forces_std == 0 and b.value_std == 0
            assert a.result.n_steps == b.result.n_steps
            # float32 kernels may round differently from call to call (memory alignment) and
            # BFGS carries the last bits along (8.6e-6 Å seen here): the same relaxation.
            np.testing.assert_allclose(a.result.positions, b.result.positions, atol=1e-4)
            assert a.value == pytest.approx(b.value, abs=1e-5)
            assert a.energy_std is None and a.value_std is None


def test_property_ensemble_is_the_members_mean_and_spread(candidates, mlip_runs,
                                                          property_runs):
    members = [load_property_model(run) for run in property_runs]
    ensemble = load_property_model(property_runs)
    assert isinstance(ensemble, PropertyEnsemble)
    relaxed = [m for m in _run(candidates, resolve_model(mlip_runs[0]), ensemble)
               if m.status in RELAXED]
    assert relaxed
    for m in relaxed:
        pb = PropertyBatch(_final_batch(m, torch.float32), None, None, None)
        with torch.no_grad():
            values = np.array([float(model(pb)) for model in members])
        assert values[0] != pytest.approx(values[1], abs=1e-4)  # different seeds
        assert m.value == pytest.approx(values.mean(), abs=1e-5)
        assert m.value_std == pytest.approx(abs(values[0] - values[1]) / 2, abs=1e-5)


def test_step_limit_keeps_the_property_and_says_why(candidates, mlip_runs, property_runs):
    molecules = _run(candidates, resolve_model(mlip_runs[0]),
                     load_property_model(property_runs[0]), max_steps=0)
    limited = [m for m in molecules if m.status == "step_limit"]
    assert limited
    for m in limited:
        assert m.result.n_steps == 0 and m.value is not None
        assert "not converged in 0 steps" in m.reason
        np.testing.assert_array_equal(m.result.positions, m.candidate.molecule.positions)


def test_diverged_molecules_get_no_numbers_and_no_geometry(candidates, mlip_runs,
                                                           property_runs, tmp_path):
    """Every bonded atom is farther than 0.5 Å from all others: every relaxation diverges
    at its first evaluation (the engine's own criterion, set tight)."""
    molecules = _run(candidates, resolve_model(mlip_runs[0]),
                     load_property_model(property_runs[0]), max_neighbor_distance=0.5)
    statuses = [m.status for m in molecules]
    assert statuses == ["diverged", "failed", "diverged", "failed", "diverged"]
    for m in molecules:
        assert m.value is None and m.energy_std is None and not m.relaxed
        if m.status == "diverged":
            assert "diverged" in m.reason
    assert write_geometries(tmp_path / "none.xyz", molecules, "gap") == 0


def test_inputs_fail_one_by_one(tmp_path):
    from rdkit import Chem
    from rdkit.Chem import AllChem

    charged = from_smiles("ammonium", "[NH4+]")
    assert not charged.ok and "net charge +1" in charged.reason
    assert from_smiles("ammonium", "[NH4+]", allow_charged=True).ok
    plain = from_smiles("ethanol", "CCO", start="etkdg")
    assert plain.ok and plain.start == "etkdg"
    sdf = tmp_path / "in.sdf"
    writer = Chem.SDWriter(str(sdf))
    for name, smiles in (("ethanol", "CCO"), ("bromo", "CBr"), ("ammonium", "[NH4+]")):
        mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
        AllChem.EmbedMolecule(mol, randomSeed=1)
        mol.SetProp("_Name", name)
        writer.write(mol)
    writer.close()
    ethanol, bromo, ammonium = read_candidates(str(sdf))
    assert ethanol.ok and ethanol.start == "input" and ethanol.smiles == "CCO"
    assert ethanol.molecule.positions.shape == (9, 3)
    assert not bromo.ok and "Br not supported" in bromo.reason
    assert not ammonium.ok and "net charge +1" in ammonium.reason
