"""The models shipped inside the package (not test fixtures): every registered file is there
with its SHA-256 and its card, the default potential behaves like the GFN2-xTB surface it
was trained on, and the default gap model predicts xTB gaps to within its card's errors.

A random, damaged or mismatched export (wrong reference energies, lost normalisation) fails
here, before users see it."""

import numpy as np
import pytest
import torch

from force2geo.models import Batch, energy_and_forces
from force2geo.pretrained import load_pretrained, read_registry
from force2geo.pretrained.registry import DEFAULT, DEFAULT_PROPERTY, shipped_files, weights_dir
from force2geo.qc.engines import XTBEngine
from force2geo.qc.protocol import embed, prepare, relax_path

MOLECULES = {"ethanol": "CCO", "acetamide": "CC(N)=O", "toluene": "Cc1ccccc1",
             "pyridine": "c1ccncc1", "acetic acid": "CC(=O)O", "phenol": "Oc1ccccc1",
             "acetanilide": "CC(=O)Nc1ccccc1"}
# Drug-like, aromatic: the gap model's domain (RDKit's NCI / WEHI sets). Small saturated
# molecules such as ethanol (xTB gap far above the training range) are outside it.
GAP_DOMAIN = ("toluene", "pyridine", "phenol", "acetanilide")


@pytest.fixture(scope="module")
def package_weights():
    folder = weights_dir()
    assert (folder / "registry.json").is_file(), f"no registry.json in {folder}"
    return folder


@pytest.fixture(scope="module")
def xtb_minima():
    """GFN2-xTB minima (ASE BFGS, fmax 0.05 eV/Å) of a few small molecules, with their
    energy, forces and HOMO-LUMO gap there."""
    engine, out = XTBEngine(), {}
    for k, (name, smiles) in enumerate(MOLECULES.items()):
        mol = prepare(smiles)
        z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
        path = relax_path(engine, z, embed(mol, k), charge=0, fmax=0.05, max_steps=300)
        assert path.converged, name
        out[name] = (z, path.positions[-1], path.result)
    return out


def test_every_registered_file_is_there_with_its_checksum_and_card(package_weights):
    registry = read_registry(package_weights)
    assert DEFAULT in registry and registry[DEFAULT].kind == "mlip"
    assert DEFAULT_PROPERTY in registry and registry[DEFAULT_PROPERTY].kind == "property"
    for name, entry in registry.items():
        assert shipped_files(name, package_weights, entry.kind)  # raises on a bad checksum
        assert entry.card and (package_weights / entry.card).is_file(), name
        assert name in (package_weights / entry.card).read_text(), name


def test_default_potential_follows_the_xtb_surface(package_weights, xtb_minima):
    """At each xTB minimum the shipped model's total energy is within 0.2 eV per atom of
    xTB's (wrong reference energies are off by eV per atom); displaced from it by 0.05 Å
    per coordinate, eight seeded draws per molecule, its forces point the way xTB's do
    (mean cosine > 0.25) and add up to zero.

    Measured (shipped v3 model, tblite 0.8.0): energy at the minima within 0.084 eV/atom;
    mean cosine 0.42-0.48 over draw seeds 0-5, and 0.08-0.10 for the same architecture
    with random weights. The energies at the displaced geometries are left out: the model
    is trained on relaxation paths only and is weak away from minima (its card), so there
    they were off by up to 0.68 eV/atom depending on the draw, and one draw per molecule
    put the mean cosine anywhere in 0.25-0.58."""
    potential = load_pretrained(folder=package_weights).double()
    engine, rng = XTBEngine(), np.random.default_rng(0)
    cosines = []
    for name, (z, minimum, result) in xtb_minima.items():
        batch = Batch.from_arrays([z], [minimum], dtype=torch.float64)
        energy, _ = energy_and_forces(potential, batch)
        assert abs(float(energy[0]) - result.energy) / len(z) < 0.2, name
        for _ in range(8):
            displaced = minimum + rng.normal(scale=0.05, size=minimum.shape)
            reference = engine.compute(z, displaced)
            batch = Batch.from_arrays([z], [displaced], dtype=torch.float64)
            forces = energy_and_forces(potential, batch)[1].numpy()
            cosines.append((forces * reference.forces).sum() / (
                np.linalg.norm(forces) * np.linalg.norm(reference.forces)))
            assert np.abs(forces.sum(axis=0)).max() < 1e-8  # no net force: translations
    assert np.mean(cosines) > 0.25, cosines


def test_default_gap_model_predicts_xtb_gaps(package_weights, xtb_minima):
    from force2geo.finetune.dataset import PropertyBatch
    from force2geo.predict.pipeline import property_values
    from force2geo.pretrained import load_property_model

    model = load_property_model(folder=package_weights)
    errors = []
    for name in GAP_DOMAIN:
        z, positions, result = xtb_minima[name]
        batch = Batch.from_arrays([z], [positions], dtype=next(model.parameters()).dtype)
        predicted, _ = property_values(model, PropertyBatch(batch, None, None, None))
        errors.append(abs(float(predicted[0]) - result.gap))
    # The card: test MAE 0.44 eV at xTB minima; a lost normalisation is off by eV.
    assert np.mean(errors) < 1.0, errors
