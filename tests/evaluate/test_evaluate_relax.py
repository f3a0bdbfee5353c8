"""``force2geo evaluate relax`` end to end: a store made by the real xTB protocol, a tiny
PaiNN trained by force2geo.training, the GFN2-xTB oracle in a process pool. The report
files exist, their numbers agree with each other and with the store, a run with part of
its cache lost resumes to the same report, and a changed setting is refused."""

import csv
import json
import math

import numpy as np
import pytest

from force2geo.cli.main import main
from force2geo.data.splits import save_split, select_store
from force2geo.data.store import TrajectoryStore
from force2geo.evaluate.metrics import heavy_atom_rmsd
from force2geo.evaluate.report import OUTPUTS

PNG = b"\x89PNG\r\n\x1a\n"


def evaluate(store, checkpoint, out, *extra):
    return main(["evaluate", "relax", "--model", str(checkpoint), "--data", str(store),
                 "-o", str(out), "--no-progress", "--device", "cpu", *extra])


def read_rows(folder):
    with open(folder / "molecules.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def value(cell):
    return math.nan if cell == "" else float(cell)


def read_jsonl(path):
    return {r["trajectory"]: r for r in map(json.loads, path.read_text().splitlines())}


@pytest.fixture(scope="module")
def report(qc_store, checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "rep"
    assert evaluate(qc_store, checkpoint, out, "--workers", "2") == 0
    return out


def test_report_files_and_table(report, capsys):
    for name in OUTPUTS:
        assert (report / name).stat().st_size > 0, name
    for name in ("residual_energy.png", "mlip_steps.png"):
        assert (report / name).read_bytes()[:8] == PNG
    table = (report / "report.txt").read_text()
    assert "57.37" in table and "10.29" in table and "pct_FWT" in table
    record = json.loads((report / "evaluate.json").read_text())
    assert record["status"] == "finished" and sorted(record["trajectories"]) == [0, 1, 2, 3]


def test_oracle_energies_are_the_stored_xtb_energies(report, qc_store):
    """c_0 and c_gt are the first and last xTB snapshots, whose stored labels are GFN2-xTB
    energies in eV: the oracle must give the same numbers (a Hartree slip, or another
    snapshot, would be far off)."""
    store = TrajectoryStore(qc_store)
    for row in read_rows(report):
        xtb = store.trajectory(int(row["trajectory"])).select("xtb")
        assert row["gt_source"] == "stage"
        assert value(row["e0"]) == pytest.approx(xtb.energy[0], abs=1e-4)
        assert value(row["e_gt"]) == pytest.approx(xtb.energy[-1], abs=1e-4)
        assert value(row["oracle_fmax_gt"]) < 0.05  # the protocol converged there


def test_metrics_agree_with_the_per_molecule_table(report, qc_store):
    rows = read_rows(report)
    metrics = json.loads((report / "metrics.json").read_text())
    mlip = read_jsonl(report / "mlip.jsonl")
    store = TrajectoryStore(qc_store)
    assert metrics["n_molecules"] == len(rows) == 4
    scored = [r for r in rows if r["scored"] == "True"]
    assert metrics["n_scored"] == len(scored) == 4  # xTB works at every stored geometry
    for r in rows:
        e0, e_t, e_gt = value(r["e0"]), value(r["e_t"]), value(r["e_gt"])
        if math.isfinite(e_t):
            assert value(r["e_res_kcal"]) == pytest.approx((e_t - e_gt) * 23.0605, rel=1e-4)
            assert (r["diverged"] == "True") == (e_t > e0)
            assert (r["success"] == "True") == ((e_t - e_gt) * 23.0605 < 1.0)
            assert (r["fwt"] == "True") == (value(r["oracle_fmax_t"]) < 0.05)
            if e0 - e_gt >= 1e-3:
                assert value(r["pct"]) == pytest.approx(100 * (e0 - e_t) / (e0 - e_gt))
        else:
            assert r["diverged"] == "True" and r["oracle_errors"]
        m = mlip[int(r["trajectory"])]
        assert int(r["mlip_steps"]) == m["n_steps"] and r["mlip_status"] == m["status"]
        traj = store.trajectory(int(r["trajectory"]))
        expected = heavy_atom_rmsd(traj.atomic_numbers, np.array(m["positions"]),
                                   traj.select("xtb").positions[-1])
        assert value(r["rmsd_heavy"]) == pytest.approx(expected, rel=1e-9)
    pct = [value(r["pct"]) for r in scored if r["pct"] != ""]
    assert metrics["n_pct"] == len(pct)
    if pct:
        assert metrics["pct_T"] == pytest.approx(np.mean(pct))
    for name, flag in (("pct_success", "success"), ("pct_div", "diverged"),
                       ("pct_FWT", "fwt")):
        share = 100 * np.mean([r[flag] == "True" for r in scored])
        assert metrics[name] == pytest.approx(share)
    assert metrics["mlip_steps"]["max"] == max(int(r["mlip_steps"]) for r in rows)
    assert metrics["paper_table3"]["pct_T"] == 57.37


def test_resumes_after_losing_part_of_its_cache(report, qc_store, checkpoint):
    before = (report / "molecules.csv").read_text()
    mlip_bytes = (report / "mlip.jsonl").read_bytes()
    oracle = report / "oracle.jsonl"
    lines = oracle.read_text().splitlines(keepends=True)
    oracle.write_text(lines[0] + lines[1][:25])  # one molecule kept, then a torn line
    for name in OUTPUTS:
        (report / name).unlink()
    assert evaluate(qc_store, checkpoint, report, "--workers", "1") == 0
    assert (report / "mlip.jsonl").read_bytes() == mlip_bytes  # nothing relaxed again
    assert len(oracle.read_text().splitlines()) == 4
    after, old = read_rows(report), list(csv.DictReader(before.splitlines()))
    key = {r["trajectory"]: r for r in old}
    for row in after:
        for column in ("e0", "e_t", "e_gt", "pct", "rmsd_heavy"):
            a, b = value(row[column]), value(key[row["trajectory"]][column])
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-5)


def test_changed_settings_are_refused(report, qc_store, checkpoint, capsys):
    assert evaluate(qc_store, checkpoint, report, "--fmax", "0.1") == 1
    assert "config.relax" in capsys.readouterr().err


def test_split_part_maxmin_and_start_at_the_minimum(qc_store, checkpoint, tmp_path):
    """D_opt = 2 MaxMin picks of a split's test part; starting at the last xTB snapshot
    leaves no stored reference, so the oracle makes it from c_0 (already a minimum: no
    step) and E_0 - E_gt = 0 leaves every molecule out of pct_T."""
    store = TrajectoryStore(qc_store)
    split = save_split(tmp_path / "split.json", {"train": [0], "valid": [], "test": [1, 2, 3]},
                       {"store_fingerprint": store.fingerprint})
    out = tmp_path / "rep"
    assert evaluate(qc_store, checkpoint, out, "--split", f"{split}:test", "--k", "2",
                    "--start", "-1", "--workers", "1") == 0
    rows = read_rows(out)
    picked = sorted(int(r["trajectory"]) for r in rows)
    assert picked == sorted(select_store(store, 2, 42, [1, 2, 3]).tolist())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_pct"] == 0 and metrics["pct_T"] is None  # NaN is null in the JSON
    assert metrics["n_pct_small_drop"] + metrics["n_pct_oracle_failed"] == 2
    for row in rows:
        xtb = store.trajectory(int(row["trajectory"])).select("xtb")
        assert row["gt_source"] == "oracle" and row["oracle_gt_steps"] == "0"
        assert value(row["e_gt"]) == pytest.approx(value(row["e0"]), abs=1e-6)
        assert value(row["e0"]) == pytest.approx(xtb.energy[-1], abs=1e-4)


def test_selection_file_with_oracle_reference(qc_store, checkpoint, tmp_path):
    """--select evaluates exactly the listed trajectories; --reference oracle relaxes c_0
    with the oracle's ASE BFGS, which retraces the protocol's own xTB stage (same start,
    engine and optimizer) and so lands on the stored minimum."""
    store = TrajectoryStore(qc_store)
    selection = save_split(tmp_path / "sel.json", {"selected": [3, 1]},
                           {"store_fingerprint": store.fingerprint})
    out = tmp_path / "rep"
    assert evaluate(qc_store, checkpoint, out, "--select", str(selection),
                    "--reference", "oracle", "--workers", "1") == 0
    rows = read_rows(out)
    assert [int(r["trajectory"]) for r in rows] == [3, 1]
    for row in rows:
        xtb = store.trajectory(int(row["trajectory"])).select("xtb")
        assert row["gt_source"] == "oracle"
        assert int(row["oracle_gt_steps"]) == xtb.n_snapshots - 1
        assert value(row["e_gt"]) == pytest.approx(xtb.energy[-1], abs=1e-4)


def test_user_errors_name_the_file_and_leave_nothing(qc_store, checkpoint, tmp_path, capsys):
    out = tmp_path / "rep"
    assert evaluate(qc_store, checkpoint, out, "--stage", "dft") == 1
    assert f"{qc_store}: no trajectory with 'dft' snapshots" in capsys.readouterr().err
    assert evaluate(qc_store, checkpoint, out, "--start", "40") == 1
    assert "--start 40 is outside its" in capsys.readouterr().err
    assert evaluate(qc_store, tmp_path / "missing.pt", out) == 1
    assert "missing.pt: no such checkpoint file" in capsys.readouterr().err
    assert not out.exists()
