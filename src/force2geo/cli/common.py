"""Small helpers shared by the sub-commands."""

from __future__ import annotations

from force2geo.errors import InputError


def device(name: str):
    """The torch device for ``--device NAME`` (auto, cpu, cuda, cuda:N), or a user error."""
    from force2geo.training.distributed import resolve_device

    try:
        return resolve_device(name)
    except (RuntimeError, ValueError) as exc:
        raise InputError("--device", f"{name!r}: {exc}") from None
