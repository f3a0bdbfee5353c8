"""torch.distributed set-up for training launched by ``torchrun`` (env:// rendezvous).

``torchrun --nproc-per-node 4 -m force2geo.cli.main train ...`` sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address; :func:`init_distributed`
reads them and joins the process group (NCCL on CUDA, gloo on CPU). A plain
``force2geo train`` is a world of one and never touches torch.distributed.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
import torch.distributed as dist


class DistInfo(NamedTuple):
    """This process's place in the job; ``owns_group``: we created the process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files, logs and shows the progress bar."""
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``; ``cuda`` ->
    ``cuda:LOCAL_RANK``; anything else as given."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


def init_distributed(device_name: str) -> tuple[DistInfo, torch.device]:
    """Join the torchrun job if there is one; return this process's place and device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world_size == 1:
        return DistInfo(), device
    owns = False
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, init_method="env://")
        owns = True
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, owns), device


def shutdown(info: DistInfo) -> None:
    """Leave the process group if :func:`init_distributed` created it."""
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks, in place (a no-op in a world of one); returns it."""
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()
