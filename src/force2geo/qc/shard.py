"""``--shard I/N``: the I-th of N disjoint slices of a run's input, for a cluster job array.

Slices are taken round-robin (items ``I, I + N, I + 2N, ...``) over the input in its
deterministic order, so together the N slices cover the input exactly once, and each
gets a similar mix of small and large molecules even when the input is sorted by size.
``I`` counts from 0, as ``SLURM_ARRAY_TASK_ID`` does under ``sbatch --array=0-(N-1)``::

    force2geo label big.xyz --shard ${SLURM_ARRAY_TASK_ID}/16 -o out/part-${SLURM_ARRAY_TASK_ID}
    force2geo merge out/part-* -o out/all
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from force2geo.errors import InputError

T = TypeVar("T")


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``(I, N)`` from ``"I/N"`` (None for None); InputError unless ``0 <= I < N``."""
    if text is None:
        return None
    index, sep, count = str(text).strip().partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i = n = -1
    if not sep or n < 1 or not 0 <= i < n:
        raise InputError("--shard", f"expected I/N with N >= 1 and 0 <= I < N (I counts from "
                         f"0, as in a Slurm --array=0-(N-1) job), got {text!r}")
    return i, n


def shard_slice(items: Sequence[T], shard: tuple[int, int] | None) -> list[T]:
    """The items of slice ``shard = (I, N)`` (all items for None), in input order."""
    if shard is None:
        return list(items)
    i, n = shard
    return list(items[i::n])


def shard_text(shard: tuple[int, int] | None) -> str | None:
    """``"I/N"`` for run records, None when the run is not sharded."""
    return None if shard is None else f"{shard[0]}/{shard[1]}"
