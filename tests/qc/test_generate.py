"""``generate``: parallel workers, failure log, run record, resume after a kill."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest

from force2geo.cli.main import main
from force2geo.data.store import TrajectoryStore
from force2geo.errors import InputError
from force2geo.qc.generate import FAILURES, RUN_RECORD, generate, read_failures
from force2geo.qc.molecules import DEMO, Molecule
from force2geo.qc.protocol import ProtocolConfig, fmax_of

SMALL = [Molecule("water", "O"), Molecule("methane", "C"), Molecule("ethanol", "CCO"),
         Molecule("methylamine", "CN")]
BAD = [Molecule("broken", "C1CC"), Molecule("bromomethane", "CBr")]
CONFIG = ProtocolConfig(max_mmff_frames=3)


def names_in(store_path):
    return TrajectoryStore(store_path).identifiers("name")


def test_generate_two_workers_with_failures(tmp_path):
    store_path = tmp_path / "store"
    molecules = [SMALL[0], BAD[0], SMALL[1], SMALL[2], BAD[1], SMALL[3]]
    stats = generate(molecules, store_path, CONFIG, workers=2, progress=False)
    assert (stats.written, stats.failed, stats.skipped) == (4, 2, 0)
    store = TrajectoryStore(store_path)
    assert sorted(names_in(store_path)) == sorted(m.name for m in SMALL)
    for j in range(store.n_trajectories):
        traj = store.trajectory(j)
        assert traj.stages[0] == "etkdg" and traj.stages[-1] == "xtb"
        assert fmax_of(traj.forces[-1]) < 0.05 + 1e-6  # float32 in the store
        assert traj.properties["gap"] > 5.0
    failures = {r["name"]: r for r in read_failures(store_path)}
    assert failures["broken"]["stage"] == "input"
    assert "unparsable SMILES" in failures["broken"]["reason"]
    assert failures["bromomethane"]["smiles"] == "CBr"
    assert "Br not supported" in failures["bromomethane"]["reason"]
    record = json.loads((store_path / RUN_RECORD).read_text())
    assert record["status"] == "finished" and record["workers"] == 2
    assert record["counts"]["written"] == 4 and record["counts"]["failed"] == 2
    assert record["config"]["fmax"] == 0.05 and record["levels"]["xtb"] == "GFN2-xTB"
    assert record["versions"]["tblite"] and record["molecules_per_hour"] > 0


def test_resume_after_prefix_skips_done_and_failed(tmp_path):
    store_path = tmp_path / "store"
    everything = SMALL + BAD
    first = generate([SMALL[0], BAD[0]], store_path, CONFIG, workers=2, progress=False)
    assert (first.written, first.failed) == (1, 1)
    second = generate(everything, store_path, CONFIG, workers=2, progress=False)
    assert (second.skipped, second.written, second.failed) == (2, 3, 1)
    assert Counter(names_in(store_path)) == Counter(m.name for m in SMALL)
    assert Counter(r["name"] for r in read_failures(store_path)) == Counter(["broken",
                                                                            "bromomethane"])
    third = generate(everything, store_path, CONFIG, workers=2, progress=False)
    assert (third.skipped, third.written, third.failed) == (6, 0, 0)
    retry = generate(everything, store_path, CONFIG, workers=1, progress=False,
                     retry_failed=True)
    assert (retry.skipped, retry.failed) == (4, 2)
    assert len(read_failures(store_path)) == 2  # retried ones replace their old records


def test_resume_refuses_a_different_config(tmp_path):
    store_path = tmp_path / "store"
    generate(SMALL[:1], store_path, CONFIG, workers=1, progress=False)
    with pytest.raises(InputError, match="different protocol config \\(fmax differ\\)"):
        generate(SMALL, store_path, ProtocolConfig(max_mmff_frames=3, fmax=0.02), workers=1,
                 progress=False)
    with pytest.raises(InputError, match="names must be unique"):
        generate(SMALL + SMALL[:1], tmp_path / "other", CONFIG, workers=1, progress=False)


def test_torn_failure_line_is_cut(tmp_path):
    store_path = tmp_path / "store"
    store_path.mkdir()
    whole = json.dumps({"name": "a", "smiles": "C1CC", "stage": "input", "reason": "r"})
    (store_path / FAILURES).write_text(whole + "\n" + '{"name": "b", "smi')
    assert [r["name"] for r in read_failures(store_path)] == ["a"]
    assert (store_path / FAILURES).read_text() == whole + "\n"


def wait_for_trajectories(store_path, proc, at_least, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        manifest = store_path / "manifest.json"
        if manifest.exists():
            try:
                counts = json.loads(manifest.read_text())["counts"]
            except (json.JSONDecodeError, KeyError):
                counts = {"trajectories": 0}
            if counts["trajectories"] >= at_least:
                return counts["trajectories"]
        time.sleep(0.02)
    return None


def test_kill_mid_run_then_resume_loses_and_duplicates_nothing(tmp_path):
    store_path = tmp_path / "store"
    smi = tmp_path / "in.smi"
    molecules = list(DEMO[:8]) + BAD
    smi.write_text("".join(f"{m.smiles} {m.name}\n" for m in molecules))
    command = [sys.executable, "-m", "force2geo.cli.main", "generate", str(smi), "-o",
               str(store_path), "--workers", "1", "--flush-every", "1", "--no-progress",
               "--max-mmff-frames", "3"]
    # Own session: the pool's workers share the group, so one killpg ends them all.
    proc = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        written = wait_for_trajectories(store_path, proc, at_least=2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    assert written is not None and 2 <= len(names_in(store_path)) < 8
    record = json.loads((store_path / RUN_RECORD).read_text())
    assert record["status"] == "running"  # the kill left no finished record
    assert main(["generate", str(smi), "-o", str(store_path), "--workers", "2",
                 "--no-progress", "--max-mmff-frames", "3"]) == 0
    names = names_in(store_path)
    assert Counter(names) == Counter(m.name for m in DEMO[:8])  # each exactly once
    assert sorted(r["name"] for r in read_failures(store_path)) == ["broken", "bromomethane"]
    store = TrajectoryStore(store_path).open_all()
    assert np.all(np.isfinite(store.read(np.arange(store.n_snapshots))["energy"]))
    assert json.loads((store_path / RUN_RECORD).read_text())["status"] == "finished"


def test_cli_help_lists_options_with_defaults(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in ("--workers", "--fmax", "--max-steps", "--dft {none,single,relax}",
                   "--dft-frames", "--max-mmff-frames", "--limit", "--seed", "--min-heavy",
                   "--max-heavy", "--elements", "--retry-failed", "builtin:demo"):
        assert option in text
    assert "(default: 0.05)" in text and "(default: 500)" in text


def test_cli_reports_bad_options_in_one_line(tmp_path, capsys):
    assert main(["generate", "builtin:demo", "-o", str(tmp_path / "s"), "--elements",
                 "C,H,Fr"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'Fr' is not one GFN2-xTB supports" in err
    assert main(["generate", str(tmp_path / "none.smi"), "-o", str(tmp_path / "s")]) == 1
    assert "none.smi: no such file" in capsys.readouterr().err
