"""The batched relaxation state: many molecules concatenated, with scoped fields.

Molecules are concatenated atom by atom, as everywhere in force2geo: ``positions
[n_atoms, 3]`` Å, ``atomic_numbers [n_atoms]``, ``system_idx [n_atoms]``. Every field is
declared with a :class:`Scope`:

* ``ATOM``: one row per atom, ``[n_atoms, ...]`` (positions, forces, FIRE velocities);
* ``SYSTEM``: one row per molecule, ``[n_systems, ...]`` (energy, step counts);
* ``Scope("system", dof_axes=...)``: one row per molecule whose listed axes run over the
  molecule's Cartesian coordinates, padded with zeros to ``3 * max_atoms`` of the batch
  (a dense BFGS Hessian ``[n_systems, D, D]``, an L-BFGS history ``[n_systems, m, D]``).

Because every field says how it is laid out, removing converged molecules
(:meth:`BatchState.select`) and adding waiting ones (:func:`concat`) are generic: no
optimizer needs its own bookkeeping. The padded layout puts atom ``k`` of a molecule at
coordinates ``3k, 3k+1, 3k+2`` and zeros after the molecule's last atom; that invariant is
what lets a dof axis shrink or grow by slicing or zero-padding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Scope:
    """How a field is laid out: ``per`` is "atom" or "system"; ``dof_axes`` (system fields
    only) are the axes of length ``3 * max_atoms`` that follow the batch's padding."""

    per: str
    dof_axes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.per not in ("atom", "system"):
            raise ValueError(f"scope must be per 'atom' or 'system', got {self.per!r}")
        if self.per == "atom" and self.dof_axes:
            raise ValueError("atom-scoped fields have no padded dof axes")
        if 0 in self.dof_axes:
            raise ValueError("axis 0 is the system axis, not a dof axis")


ATOM = Scope("atom")
SYSTEM = Scope("system")


class BatchState:
    """Molecules concatenated atom by atom, with named, scoped fields.

    ``sizes [n_systems]`` atoms per molecule (long); ``fields`` name -> tensor; ``scopes``
    name -> :class:`Scope` for every field. Fields are read and replaced with ``state[name]``
    and ``state[name] = value`` (the shape is checked against the scope).
    """

    def __init__(self, sizes: Tensor, fields: Mapping[str, Tensor],
                 scopes: Mapping[str, Scope]):
        self.sizes = sizes.to(torch.long)
        self.scopes = dict(scopes)
        self.fields: dict[str, Tensor] = {}
        missing = set(fields) ^ set(self.scopes)
        if missing:
            raise ValueError(f"fields and scopes differ in {sorted(missing)}")
        n_atoms = int(self.sizes.sum())
        self.max_atoms = int(self.sizes.max()) if self.sizes.numel() else 0
        device = self.sizes.device
        self.system_idx = torch.repeat_interleave(
            torch.arange(self.n_systems, device=device), self.sizes)  # [n_atoms]
        start = torch.cumsum(self.sizes, 0) - self.sizes  # [n_systems]
        local = torch.arange(n_atoms, device=device) - start[self.system_idx]
        # Row of each atom in the padded [n_systems * max_atoms, 3] layout.
        self.pad_slot = self.system_idx * self.max_atoms + local  # [n_atoms]
        for name, value in fields.items():
            self[name] = value

    # -- sizes
    @property
    def n_systems(self) -> int:
        return int(self.sizes.shape[0])

    @property
    def n_atoms(self) -> int:
        return int(self.system_idx.shape[0])

    @property
    def n_dofs(self) -> int:
        """Padded coordinates per molecule, ``3 * max_atoms``."""
        return 3 * self.max_atoms

    # -- fields
    def __getitem__(self, name: str) -> Tensor:
        return self.fields[name]

    def __setitem__(self, name: str, value: Tensor) -> None:
        scope = self.scopes[name]
        rows = self.n_atoms if scope.per == "atom" else self.n_systems
        if value.ndim == 0 or value.shape[0] != rows:
            raise ValueError(f"field {name!r} ({scope.per}-scoped) needs {rows} rows, "
                             f"got shape {tuple(value.shape)}")
        for axis in scope.dof_axes:
            if value.shape[axis] != self.n_dofs:
                raise ValueError(f"field {name!r} axis {axis} must have {self.n_dofs} "
                                 f"(3 * max_atoms) entries, got {value.shape[axis]}")
        self.fields[name] = value

    def __contains__(self, name: str) -> bool:
        return name in self.fields

    # -- per-system reductions of atom-scoped values
    def system_sum(self, values: Tensor) -> Tensor:
        """``values [n_atoms, ...]`` summed per molecule: ``[n_systems, ...]``."""
        out = values.new_zeros((self.n_systems,) + tuple(values.shape[1:]))
        return out.index_add_(0, self.system_idx, values)

    def system_max(self, values: Tensor) -> Tensor:
        """``values [n_atoms]`` maximised per molecule: ``[n_systems]`` (NaN propagates)."""
        out = values.new_full((self.n_systems,), -torch.inf)
        return out.scatter_reduce(0, self.system_idx, values, reduce="amax")

    def per_atom(self, values: Tensor) -> Tensor:
        """A per-molecule ``values [n_systems, ...]`` broadcast to atoms ``[n_atoms, ...]``."""
        return values[self.system_idx]

    # -- padded coordinates
    def pad(self, values: Tensor) -> Tensor:
        """``values [n_atoms, 3]`` -> ``[n_systems, 3 * max_atoms]``, zeros after each
        molecule's last atom."""
        out = values.new_zeros((self.n_systems * self.max_atoms, 3))
        out.index_copy_(0, self.pad_slot, values)
        return out.view(self.n_systems, self.n_dofs)

    def unpad(self, padded: Tensor) -> Tensor:
        """The inverse of :meth:`pad`: ``[n_systems, 3 * max_atoms]`` -> ``[n_atoms, 3]``."""
        return padded.reshape(self.n_systems * self.max_atoms, 3)[self.pad_slot]

    def dof_mask(self) -> Tensor:
        """``[n_systems, 3 * max_atoms]`` bool, True on a molecule's real coordinates."""
        dof = torch.arange(self.n_dofs, device=self.sizes.device)
        return dof.unsqueeze(0) < (3 * self.sizes).unsqueeze(1)

    # -- membership changes
    def select(self, keep: Tensor) -> BatchState:
        """The molecules where ``keep [n_systems]`` (bool) is True, in order; padded dof
        axes shrink to the new ``3 * max_atoms``."""
        keep = keep.to(torch.bool)
        atom_keep = keep[self.system_idx]
        sizes = self.sizes[keep]
        n_dofs = 3 * (int(sizes.max()) if sizes.numel() else 0)
        fields = {}
        for name, value in self.fields.items():
            scope = self.scopes[name]
            value = value[atom_keep] if scope.per == "atom" else value[keep]
            for axis in scope.dof_axes:
                value = value.narrow(axis, 0, n_dofs)
            fields[name] = value
        return BatchState(sizes, fields, self.scopes)


def _pad_axes(value: Tensor, axes: Sequence[int], n_dofs: int) -> Tensor:
    """Zero-pad each of ``axes`` of ``value`` to length ``n_dofs``."""
    for axis in axes:
        extra = n_dofs - value.shape[axis]
        if extra > 0:
            shape = list(value.shape)
            shape[axis] = extra
            value = torch.cat([value, value.new_zeros(shape)], dim=axis)
    return value


def concat(states: Sequence[BatchState]) -> BatchState:
    """One state holding the molecules of ``states`` in order (same field names and
    scopes); padded dof axes grow to the largest ``3 * max_atoms``."""
    states = [s for s in states if s.n_systems > 0] or list(states[:1])
    if len(states) == 1:
        return states[0]
    scopes = states[0].scopes
    for other in states[1:]:
        if other.scopes != scopes:
            raise ValueError("cannot concatenate states with different fields or scopes")
    n_dofs = max(s.n_dofs for s in states)
    fields = {
        name: torch.cat([_pad_axes(s[name], scope.dof_axes, n_dofs) for s in states])
        for name, scope in scopes.items()
    }
    return BatchState(torch.cat([s.sizes for s in states]), fields, scopes)
