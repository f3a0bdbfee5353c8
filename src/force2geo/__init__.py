"""force2geo: molecular geometries from machine-learning interatomic potentials.

Units inside the package are eV, Å and eV/Å everywhere; readers and writers convert
at the boundary with the constants in :mod:`force2geo.units`.
"""

__version__ = "0.1.0"
