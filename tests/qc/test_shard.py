"""``--shard I/N``: deterministic, disjoint, covering slices; generate takes it too."""

import json

import pytest

from force2geo.cli.main import main
from force2geo.data.store import TrajectoryStore
from force2geo.errors import InputError
from force2geo.qc.generate import RUN_RECORD
from force2geo.qc.shard import parse_shard, shard_slice


@pytest.mark.parametrize("n_items", [0, 1, 5, 12])
@pytest.mark.parametrize("n_shards", [1, 3, 7])
def test_shards_are_disjoint_and_cover(n_items, n_shards):
    items = list(range(n_items))
    slices = [shard_slice(items, (i, n_shards)) for i in range(n_shards)]
    assert sorted(x for s in slices for x in s) == items
    assert max(map(len, slices)) - min(map(len, slices)) <= 1
    assert shard_slice(items, None) == items


def test_parse_shard_speaks_clearly():
    assert parse_shard("2/4") == (2, 4) and parse_shard(None) is None
    for bad in ("4/4", "-1/4", "1/0", "a/b", "3", "1/2/3"):
        with pytest.raises(InputError, match="expected I/N .*I counts from 0"):
            parse_shard(bad)


def test_generate_shard_relaxes_its_slice_only(tmp_path, capsys):
    smi = tmp_path / "in.smi"
    smi.write_text("O water\nC methane\nN ammonia\n")
    assert main(["generate", str(smi), "-o", str(tmp_path / "s1"), "--shard", "1/2",
                 "--workers", "1", "--no-progress", "--max-mmff-frames", "1"]) == 0
    names = [t.name for t in TrajectoryStore(tmp_path / "s1").trajectories()]
    assert names == ["methane"]
    record = json.loads((tmp_path / "s1" / RUN_RECORD).read_text())
    assert record["shard"] == "1/2" and record["counts"]["requested"] == 1
    assert main(["generate", str(smi), "-o", str(tmp_path / "s2"), "--shard", "2/2"]) == 1
    assert "--shard: expected I/N" in capsys.readouterr().err
