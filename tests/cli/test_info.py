"""``force2geo info``: text and JSON summaries, checksum verification, clear errors."""

import json

import numpy as np

from force2geo.cli.main import main
from force2geo.data.store import TrajectoryWriter
from force2geo.data.trajectory import Trajectory


def water_store(path):
    positions = np.array([[[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]]] * 2)
    with TrajectoryWriter(path, source="hand-made water") as writer:
        writer.add(Trajectory([8, 1, 1], positions, [-2080.0, -2080.1], np.zeros((2, 3, 3)),
                              ["xtb", "xtb"], name="water", properties={"gap": 10.5}))


def test_info_text_and_json(tmp_path, capsys):
    water_store(tmp_path / "s")
    assert main(["info", str(tmp_path / "s"), "--verify"]) == 0
    text = capsys.readouterr().out
    assert "trajectories 1" in text and "xtb        2" in text and "H:2 O:1" in text
    assert "all shard checksums match" in text
    assert main(["info", str(tmp_path / "s"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["snapshots"] == 2 and summary["elements"] == {"H": 2, "O": 1}
    assert summary["sources"] == ["hand-made water"] and summary["properties"] == ["gap"]


def test_info_missing_store_is_one_line_error(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing" in err and "no such trajectory store" in err


def test_help_lists_commands(capsys):
    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    for command in ("generate", "convert", "info", "split"):
        assert command in out
