"""Large relaxations shared by the processes of a ``torchrun`` job.

    torchrun --nproc-per-node 4 -m force2geo.cli.main relax INPUT -o OUTPUT ...

Rank ``r`` of ``W`` relaxes the contiguous share :func:`share_range` of the input on its
own device (``cuda:LOCAL_RANK``, or the CPU) and writes it, resumably and in input order,
to its own shard file beside OUTPUT (:class:`ShardFiles`); when done it records its counts
in the shard's ``.json``. Rank 0 then waits for every shard's record, concatenates the
shard files in rank order into OUTPUT (and the trajectories into TRAJECTORY), and removes
the shards. Because the shares are contiguous, concatenation is input order.

A killed job resumes when rerun with the same command and the same number of processes:
each rank goes on in its own shard, a finished shard is not run again, and rank 0 merges
once all are there. Rank 0 waits by watching the records on disk rather than in a
collective call, since one share can take hours longer than another and collective calls
time out; ranks must therefore share the file system of OUTPUT.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from force2geo.atomic import atomic_open, write_json


def share_range(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """``(first, last)``: rank ``rank``'s contiguous share ``[first, last)`` of ``n``
    items; shares differ in size by at most one and cover ``range(n)`` in rank order."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size}")
    return n * rank // world_size, n * (rank + 1) // world_size


def _shard_name(path: Path, rank: int, world_size: int) -> Path:
    """``out.xyz`` -> ``out.shard-001-of-004.xyz`` (the suffix names the format)."""
    return path.with_name(f"{path.stem}.shard-{rank:03d}-of-{world_size:03d}{path.suffix}")


@dataclass(frozen=True)
class ShardFiles:
    """The files of rank ``rank`` of ``world_size`` for ``output`` (and ``trajectory``):
    in a world of one, OUTPUT and TRAJECTORY themselves and no record."""

    output: Path
    trajectory: Path | None
    record: Path | None
    rank: int
    world_size: int

    @classmethod
    def of(cls, output: str | os.PathLike, trajectory: str | os.PathLike | None,
           rank: int = 0, world_size: int = 1) -> ShardFiles:
        output = Path(output)
        trajectory = Path(trajectory) if trajectory is not None else None
        if world_size == 1:
            return cls(output, trajectory, None, 0, 1)
        shard = _shard_name(output, rank, world_size)
        return cls(shard, _shard_name(trajectory, rank, world_size) if trajectory else None,
                   shard.with_name(shard.name + ".json"), rank, world_size)

    def signature(self, run: dict) -> dict:
        """The resume signature of this shard: the run's, plus rank and world size."""
        if self.world_size == 1:
            return run
        return {**run, "shard": {"rank": self.rank, "world_size": self.world_size}}

    def finished(self, run: dict) -> dict | None:
        """This shard's record when it was completed by a run with signature ``run``."""
        if self.record is None or not self.record.exists() or not self.output.exists():
            return None
        record = json.loads(self.record.read_text())
        return record if record.get("signature") == self.signature(run) else None

    def finish(self, run: dict, record: dict) -> None:
        """Write this shard's record (after its files are complete)."""
        write_json(self.record, {**record, "signature": self.signature(run)}, indent=1)

    def remove(self) -> None:
        """Delete this shard's files, record first (a record never outlives its data)."""
        for path in (self.record, self.output, self.trajectory):
            if path is not None:
                path.unlink(missing_ok=True)


def wait_for_shards(shards: list[ShardFiles], run: dict, poll_s: float = 2.0,
                    log=None) -> list[dict]:
    """The records of all ``shards`` of the run with signature ``run``, once every one is
    finished (polling the files every ``poll_s`` s; ``log(message)`` once while waiting)."""
    told = False
    while True:
        records = [shard.finished(run) for shard in shards]
        if all(record is not None for record in records):
            return records
        if log is not None and not told:
            waiting = [s.rank for s, r in zip(shards, records, strict=True) if r is None]
            log(f"waiting for shard(s) of rank {', '.join(map(str, waiting))}")
            told = True
        time.sleep(poll_s)


def concatenate(parts: list[Path], target: Path) -> None:
    """Write the files ``parts`` one after another into ``target``, atomically."""
    with atomic_open(target, "wb") as out:
        for part in parts:
            with open(part, "rb") as handle:
                shutil.copyfileobj(handle, out, 1 << 24)


def merge_shards(shards: list[ShardFiles], output: str | os.PathLike,
                 trajectory: str | os.PathLike | None) -> None:
    """Concatenate the finished ``shards`` (rank order) into ``output`` and ``trajectory``,
    then remove them."""
    shards = sorted(shards, key=lambda s: s.rank)
    if trajectory is not None:
        concatenate([s.trajectory for s in shards], Path(trajectory))
    concatenate([s.output for s in shards], Path(output))
    for shard in shards:
        shard.remove()
