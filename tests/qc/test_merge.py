"""``merge``: joins stores, refuses or skips duplicates, checks levels, records provenance."""

import json

import ase.io
import numpy as np
import pytest
from ase.build import molecule

from force2geo.cli.main import main
from force2geo.data.store import TrajectoryStore
from force2geo.errors import InputError
from force2geo.qc.generate import read_failures
from force2geo.qc.label import RUN_RECORD as LABEL_RECORD
from force2geo.qc.label import label
from force2geo.qc.merge import RUN_RECORD, merge


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Two label stores of disjoint shards of four molecules, one with a failure."""
    root = tmp_path_factory.mktemp("merge")
    images = []
    for name in ("H2O", "CH4", "NH3", "CH3OH"):
        atoms = molecule(name)
        atoms.info["name"] = name.lower()
        images.append(atoms)
    ase.io.write(root / "in.extxyz", images, format="extxyz")
    with open(root / "in.extxyz", "a") as handle:
        handle.write("2\nname=overlap\nH 0 0 0\nH 0 0 0.1\n")
    for i in range(2):
        label([root / "in.extxyz"], root / f"part-{i}", workers=1, shard=(i, 2),
              progress=False)
    return root


def names(store_path):
    return [t.name for t in TrajectoryStore(store_path).trajectories()]


def test_merge_joins_shards_with_provenance(shards, tmp_path):
    parts = [shards / "part-0", shards / "part-1"]
    stats = merge(parts, tmp_path / "all")
    assert (stats.stores, stats.trajectories, stats.snapshots, stats.duplicates) == (2, 4, 4, 0)
    assert sorted(names(tmp_path / "all")) == ["ch3oh", "ch4", "h2o", "nh3"]
    merged = TrajectoryStore(tmp_path / "all")
    assert merged.summary()["snapshots_per_stage"] == {"xtb-label": 4}
    original = {t.name: t.energy[0] for p in parts for t in TrajectoryStore(p).trajectories()}
    assert {t.name: t.energy[0] for t in merged.trajectories()} == original
    record = json.loads((tmp_path / "all" / RUN_RECORD).read_text())
    assert [i["fingerprint"] for i in record["inputs"]] == [TrajectoryStore(p).fingerprint
                                                            for p in parts]
    assert record["inputs"][0]["run_record"]["file"] == LABEL_RECORD
    assert record["stage_levels"] == {"xtb-label": "GFN2-xTB"}
    assert record["fingerprint"] == merged.fingerprint and record["duplicates"]["count"] == 0
    failures = read_failures(tmp_path / "all")
    assert [f["source"].rsplit("#", 1)[1] for f in failures] == ["5"]
    assert failures[0]["from_store"] == str(shards / "part-0")
    assert not list(tmp_path.glob(".all.*"))  # no temporary folder left


def test_merge_refuses_duplicates_unless_told_to_skip(shards, tmp_path):
    parts = [str(shards / "part-0"), str(shards / "part-1")]
    assert merge(parts, tmp_path / "all").trajectories == 4
    pattern = "4 duplicate trajectories .*'h2o' \\(.*all #0 = .*part-0 #0\\)"
    with pytest.raises(InputError, match=pattern):
        merge([*parts, tmp_path / "all"], tmp_path / "again")
    assert not (tmp_path / "again").exists()
    assert main(["merge", *parts, str(tmp_path / "all"), "-o", str(tmp_path / "again"),
                 "--skip-duplicates"]) == 0
    assert sorted(names(tmp_path / "again")) == ["ch3oh", "ch4", "h2o", "nh3"]
    listed = json.loads((tmp_path / "again" / RUN_RECORD).read_text())["duplicates"]
    assert listed["policy"] == "skip" and listed["count"] == 4
    assert {d["name"] for d in listed["listed"]} == {"ch3oh", "ch4", "h2o", "nh3"}
    assert all(d["store"] == str(tmp_path / "all") for d in listed["listed"])


def test_merge_refuses_an_existing_output_and_other_levels(shards, tmp_path, capsys):
    parts = [str(shards / "part-0"), str(shards / "part-1")]
    merge(parts, tmp_path / "all")
    assert main(["merge", *parts, "-o", str(tmp_path / "all")]) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["merge", parts[0], "-o", str(tmp_path / "all"), "--overwrite"]) == 0
    assert sorted(names(tmp_path / "all")) == sorted(names(parts[0]))
    with pytest.raises(InputError, match="is also an input"):
        merge([tmp_path / "all"], tmp_path / "all", overwrite=True)
    with pytest.raises(InputError, match="is named twice"):
        merge([parts[0], parts[0]], tmp_path / "x")
    # The same stage at another level of theory (as a DFT label run would record it).
    other = tmp_path / "dft"
    merge([parts[1]], other)
    (other / RUN_RECORD).unlink()
    (other / LABEL_RECORD).write_text(json.dumps({"stage": "xtb-label",
                                                  "level": "B3LYP/6-31G* (density fitting)"}))
    with pytest.raises(InputError, match="stage 'xtb-label' has different levels"):
        merge([parts[0], other], tmp_path / "mixed")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not a trajectory store; refusing"):
        merge(parts, tmp_path / "plain", overwrite=True)
    assert np.isfinite(TrajectoryStore(tmp_path / "all").read([0])["energy"]).all()
