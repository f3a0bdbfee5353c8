"""The only place where unit constants live (CODATA 2018).

Everything inside force2geo is in eV, Å and eV/Å. Readers convert incoming values once,
writers convert outgoing values once, always through these constants.
"""

HARTREE_TO_EV = 27.211386245988
BOHR_TO_ANGSTROM = 0.529177210903
ANGSTROM_TO_BOHR = 1.0 / BOHR_TO_ANGSTROM
EV_TO_HARTREE = 1.0 / HARTREE_TO_EV
HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM = HARTREE_TO_EV / BOHR_TO_ANGSTROM
HARTREE_PER_ANGSTROM_TO_EV_PER_ANGSTROM = HARTREE_TO_EV
# 1 kcal/mol = 4.184 kJ/mol; 1 eV = 96.48533212 kJ/mol (N_A * e).
KCAL_PER_MOL_TO_EV = 4.184 / 96.48533212
EV_TO_KCAL_PER_MOL = 1.0 / KCAL_PER_MOL_TO_EV

UNITS = {"energy": "eV", "positions": "Angstrom", "forces": "eV/Angstrom", "properties": "eV"}


def hartree_to_ev(value):
    return value * HARTREE_TO_EV


def hartree_per_bohr_to_ev_per_angstrom(value):
    return value * HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM


def bohr_to_angstrom(value):
    return value * BOHR_TO_ANGSTROM


def angstrom_to_bohr(value):
    return value * ANGSTROM_TO_BOHR


def ev_to_kcal_per_mol(value):
    return value * EV_TO_KCAL_PER_MOL
