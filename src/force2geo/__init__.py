"""force2geo: molecular geometries from machine-learning interatomic potentials.

Units inside the package are eV, Å and eV/Å everywhere; readers and writers convert
at the boundary with the constants in :mod:`force2geo.units`.
"""

__version__ = "0.1.0"


def load_model(spec=None, device="cpu", dtype=None):
    """A ready potential (eval mode): the shipped model when ``spec`` is None, else a shipped
    model's name, a checkpoint of ``force2geo train`` or its run folder, an exported model,
    the paper's released PaiNN checkpoint, or a list of these (an ensemble). See
    :func:`force2geo.pretrained.resolve_model`; imported on call, so ``import force2geo``
    stays light."""
    from force2geo.pretrained import resolve_model

    return resolve_model(spec, device=device, dtype=dtype)
