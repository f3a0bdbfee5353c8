"""Settings for the whole suite."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Small models gain nothing from intra-op threads on a shared 2-core machine, and a
    fixed thread count keeps float reductions in the same order across runs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
