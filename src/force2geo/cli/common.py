"""Small helpers shared by the sub-commands."""

from __future__ import annotations

import argparse

from force2geo.errors import InputError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter,
                    argparse.RawDescriptionHelpFormatter):
    """Show defaults and keep the description's line breaks."""


def add_pool_run_options(parser, what: str, retry: str) -> None:
    """The "run" group of the commands that feed a one-thread worker pool into a store
    (generate, label): ``--retry-failed``, ``--flush-every`` (finished ``what``),
    ``--flush-seconds``, ``--no-progress``."""
    group = parser.add_argument_group("run")
    group.add_argument("--retry-failed", action="store_true", help=retry)
    group.add_argument("--flush-every", type=int, default=16,
                       help=f"write a shard after this many finished {what}")
    group.add_argument("--flush-seconds", type=float, default=30.0,
                       help="... or after this many seconds, whichever comes first")
    group.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return group


def device(name: str):
    """The torch device for ``--device NAME`` (auto, cpu, cuda, cuda:N), or a user error."""
    from force2geo.training.distributed import resolve_device

    try:
        return resolve_device(name)
    except (RuntimeError, ValueError) as exc:
        raise InputError("--device", f"{name!r}: {exc}") from None


def add_threads_option(parser) -> None:
    """``--threads N``: torch's CPU threads in this process (see :func:`set_threads`)."""
    parser.add_argument(
        "--threads", type=int, default=None, metavar="N",
        help="torch CPU threads per process (None: torch's own choice, one per core); on a "
        "loaded machine, or with several processes per machine, 1 is often much faster")


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)``; None leaves torch's default alone."""
    if threads is None:
        return
    if threads < 1:
        raise InputError("--threads", f"must be at least 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def distributed(name: str):
    """``(DistInfo, device)`` of this process: under ``torchrun`` it joins the job (gloo on
    CPUs, NCCL on GPUs) and ``--device auto``/``cuda`` means ``cuda:LOCAL_RANK``; alone,
    a world of one that never touches torch.distributed."""
    from force2geo.training.distributed import init_distributed

    try:
        return init_distributed(name)
    except (RuntimeError, ValueError) as exc:
        raise InputError("--device", f"{name!r}: {exc}") from None
