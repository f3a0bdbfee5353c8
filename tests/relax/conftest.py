"""Shared fixtures of the relaxation tests: an analytic potential with
real minima, and ETKDG start geometries of small drug-like molecules."""

import pytest
from relax_potentials import analytic_potential, conformer, tiny_checkpoint

from force2geo.qc.molecules import DEMO

# Six demo molecules (14-20 atoms), one with sulfur and one with chlorine.
EXTRA = {"thioanisole": "CSc1ccccc1", "chloroethanol": "ClCCO"}


@pytest.fixture(scope="session")
def potential():
    return analytic_potential()


@pytest.fixture(scope="session")
def starts():
    """``[(atomic_numbers, positions)]``: six demo molecules, then thioanisole and
    chloroethanol."""
    smiles = [m.smiles for m in DEMO[:6]] + list(EXTRA.values())
    return [conformer(s) for s in smiles]


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """A tiny trained PaiNN checkpoint (see :func:`relax_potentials.tiny_checkpoint`)."""
    return tiny_checkpoint(tmp_path_factory.mktemp("relax-cli"))
