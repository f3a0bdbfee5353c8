"""The relaxation protocol on real molecules: stages, convergence, labels, rejections."""

import numpy as np
import pytest

from force2geo.data.trajectory import STAGES
from force2geo.qc.engines import MMFFEngine, QCError, XTBEngine
from force2geo.qc.molecules import DEFAULT_ELEMENTS
from force2geo.qc.protocol import (
    ProtocolConfig,
    bond_changes,
    dft_frame_indices,
    fmax_of,
    prepare,
    relax_molecule,
    subsample,
)
from force2geo.units import HARTREE_TO_EV


@pytest.fixture(scope="module")
def ethanol():
    return relax_molecule("OCC", "ethanol", ProtocolConfig(seed=3, max_mmff_frames=4))


def test_stages_in_protocol_order(ethanol):
    order = [STAGES.index(s) for s in ethanol.stages]
    assert order == sorted(order)
    assert ethanol.stages[0] == "etkdg" and ethanol.stages.count("etkdg") == 1
    assert 1 <= ethanol.stages.count("mmff") <= 4
    assert ethanol.stages.count("xtb") >= 2 and ethanol.stages[-1] == "xtb"
    ethanol.validate(require=("energy", "forces"))


def test_xtb_relaxation_converges_downhill(ethanol):
    xtb = ethanol.select("xtb")
    assert fmax_of(xtb.forces[-1]) < 0.05
    assert fmax_of(xtb.forces[0]) > 0.05
    assert xtb.energy[-1] < xtb.energy[0]
    # Energy and forces of the final frame are GFN2-xTB's at that geometry, in eV and eV/Å.
    check = XTBEngine().compute(ethanol.atomic_numbers, xtb.positions[-1])
    assert xtb.energy[-1] == pytest.approx(check.energy, abs=1e-5)
    np.testing.assert_allclose(xtb.forces[-1], check.forces, atol=5e-4)  # SCF guess differs
    assert xtb.energy[-1] / HARTREE_TO_EV == pytest.approx(-11.39, abs=0.05)  # GFN2 ethanol


def test_stage_boundaries_and_levels(ethanol):
    mmff = ethanol.select("mmff")
    xtb = ethanol.select("xtb")
    etkdg = ethanol.select("etkdg")
    np.testing.assert_allclose(xtb.positions[0], mmff.positions[-1])
    # ETKDG and MMFF snapshots carry MMFF94 energies (eV): small, positive, not xTB's -310 eV.
    engine = MMFFEngine(prepare("OCC"))
    for stage in (etkdg, mmff):
        for x, e in zip(stage.positions, stage.energy, strict=True):
            assert engine.compute(ethanol.atomic_numbers, x).energy == pytest.approx(e, abs=1e-6)
    assert mmff.energy[-1] < etkdg.energy[0]


def test_identity_charge_and_orbital_properties(ethanol):
    assert ethanol.name == "ethanol" and ethanol.smiles == "CCO"
    assert ethanol.inchikey == "LFQSCWFLJHTTHZ-UHFFFAOYSA-N" and ethanol.charge == 0
    assert sorted(ethanol.atomic_numbers.tolist()) == [1] * 6 + [6, 6, 8]
    p = ethanol.properties
    assert p["xtb_gap"] == pytest.approx(p["xtb_lumo"] - p["xtb_homo"])
    assert (p["homo"], p["lumo"], p["gap"]) == (p["xtb_homo"], p["xtb_lumo"], p["xtb_gap"])
    assert -13.0 < p["homo"] < -9.0 and 8.0 < p["gap"] < 16.0
    assert not any(k.startswith("dft") for k in p)


def test_same_seed_same_trajectory(ethanol):
    again = relax_molecule("OCC", "ethanol", ProtocolConfig(seed=3, max_mmff_frames=4))
    np.testing.assert_allclose(again.positions, ethanol.positions, atol=1e-8)  # OpenMP sums
    other = relax_molecule("OCC", "ethanol", ProtocolConfig(seed=4, max_mmff_frames=4))
    assert not np.allclose(other.positions[0], ethanol.positions[0])


def test_charged_molecule_uses_formal_charge():
    cation = relax_molecule("C[NH3+]", "methylammonium", ProtocolConfig(max_mmff_frames=2))
    assert cation.charge == 1
    final = XTBEngine().compute(cation.atomic_numbers, cation.positions[-1], charge=1)
    assert cation.energy[-1] == pytest.approx(final.energy, abs=1e-5)
    assert fmax_of(cation.forces[-1]) < 0.05


@pytest.mark.parametrize("smiles, reason", [
    ("C1CC", "unparsable SMILES"),
    ("CBr", r"element\(s\) Br not supported"),
    ("CC.O", "more than one fragment"),
    ("[CH3]", "open shell"),
    ("", "unparsable SMILES"),
])
def test_rejected_up_front_with_reason(smiles, reason):
    with pytest.raises(QCError, match=reason) as info:
        relax_molecule(smiles, "x")
    assert info.value.stage == "input"


def test_more_elements_when_asked():
    config = ProtocolConfig(elements=DEFAULT_ELEMENTS + ("Br",), max_mmff_frames=2)
    traj = relax_molecule("CBr", "bromomethane", config)
    assert 35 in traj.atomic_numbers.tolist() and fmax_of(traj.forces[-1]) < 0.05


def test_config_is_checked():
    with pytest.raises(ValueError, match="dft must be one of"):
        ProtocolConfig(dft="yes")
    with pytest.raises(ValueError, match="'Fr' is not one GFN2-xTB supports"):
        ProtocolConfig(elements=("C", "Fr"))
    with pytest.raises(ValueError, match="'middle' is not first, last"):
        ProtocolConfig(dft="single", dft_frames="middle")


def test_frame_helpers():
    assert dft_frame_indices("last", 5) == [4]
    assert dft_frame_indices("first, last", 5) == [0, 4]
    assert dft_frame_indices("all", 3) == [0, 1, 2]
    assert dft_frame_indices("1,-1,1", 5) == [1, 4]
    assert subsample(3, 10).tolist() == [0, 1, 2]
    assert subsample(101, 5).tolist() == [0, 25, 50, 75, 100]
    assert subsample(50, 1).tolist() == [49] and subsample(50, 0).tolist() == []


def test_bond_changes_detects_a_broken_bond(ethanol):
    mol = prepare("OCC")
    final = ethanol.positions[-1].copy()
    assert bond_changes(mol, final) == []
    oxygen = 0
    hydrogen = next(a.GetIdx() for a in mol.GetAtomWithIdx(oxygen).GetNeighbors()
                    if a.GetAtomicNum() == 1)
    final[hydrogen] = final[oxygen] + 3.0 * (final[hydrogen] - final[oxygen])
    changes = bond_changes(mol, final)
    assert len(changes) == 1 and "broken" in changes[0] and "O0" in changes[0]


def test_dft_single_point_on_last_xtb_frame():
    config = ProtocolConfig(dft="single", dft_frames="first,last", max_mmff_frames=2)
    water = relax_molecule("O", "water", config)
    dft, xtb = water.select("dft"), water.select("xtb")
    assert water.stages[-2:] == ["dft", "dft"]
    np.testing.assert_allclose(dft.positions, xtb.positions[[0, -1]])
    assert dft.energy[-1] / HARTREE_TO_EV == pytest.approx(-76.408, abs=5e-3)
    p = water.properties
    assert p["homo"] == p["dft_homo"] and p["gap"] == p["dft_gap"]
    assert p["dft_gap"] < p["xtb_gap"]  # B3LYP gaps are smaller than GFN2's for water


@pytest.mark.slow
def test_dft_relaxation_converges():
    config = ProtocolConfig(dft="relax", max_mmff_frames=2)
    water = relax_molecule("O", "water", config)
    dft = water.select("dft")
    np.testing.assert_allclose(dft.positions[0], water.select("xtb").positions[-1])
    assert fmax_of(dft.forces[-1]) < 0.05 and dft.energy[-1] < dft.energy[0]
    assert dft.energy[-1] / HARTREE_TO_EV == pytest.approx(-76.409, abs=2e-3)
