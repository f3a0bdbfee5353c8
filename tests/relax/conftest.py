"""Shared fixtures of the relaxation tests: one torch thread, an analytic potential with
real minima, and ETKDG start geometries of small drug-like molecules."""

import pytest
import torch
from relax_potentials import analytic_potential, conformer

from force2geo.qc.molecules import DEMO

# Six demo molecules (14-20 atoms), one with sulfur and one with chlorine.
EXTRA = {"thioanisole": "CSc1ccccc1", "chloroethanol": "ClCCO"}


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Small batches gain nothing from intra-op threads on a shared 2-core machine, and a
    fixed thread count keeps float reductions in the same order across runs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def potential():
    return analytic_potential()


@pytest.fixture(scope="session")
def starts():
    """``[(atomic_numbers, positions)]``: six demo molecules, then thioanisole and
    chloroethanol."""
    smiles = [m.smiles for m in DEMO[:6]] + list(EXTRA.values())
    return [conformer(s) for s in smiles]
