"""Geometry-optimisation metrics of the paper (Appendix A.2, Eq. 10-14), as pure functions.

Per molecule, an oracle (DFT or GFN2-xTB) gives single-point energies (eV) at the start
geometry ``c_0``, the MLIP-relaxed geometry ``c_T`` and the reference minimum ``c_gt``, and
its largest atomic force norm (eV/Å) at ``c_T``. NaN marks a single point that failed.

* ``pct(c_T) = 100 (E_0 - E_T) / (E_0 - E_gt)`` (Eq. 11), averaged into ``pct_T`` (Eq. 10);
* ``E_res = E_T - E_gt``, converted to kcal/mol; ``pct_success`` is the share with
  ``E_res < 1 kcal/mol`` (Eq. 12-13; a negative residual, a lower minimum than the
  reference, is a success);
* ``pct_div`` is the share where the oracle failed at ``c_T`` or ``E_T > E_0``;
* ``pct_FWT`` is the share whose oracle max force at ``c_T`` is below 0.05 eV/Å (Eq. 14).

Edge cases, decided here (the paper leaves them open):

* **reference failed**: when the oracle failed at ``c_0`` or ``c_gt`` (or could not make
  ``c_gt``), nothing about the MLIP can be measured: the molecule is left out of every
  metric and counted in ``n_reference_failed``. The other percentages are over the
  remaining ``n_scored`` molecules.
* **oracle failed at c_T**: the MLIP produced a geometry the oracle cannot treat. It counts
  as diverged, not successful and not force-converged; it has no ``pct`` and is left out of
  the ``pct_T`` average (counted in ``n_pct_oracle_failed``).
* **no energy to minimise**: when ``E_0 - E_gt < min_drop`` (default 1 meV, about
  0.023 kcal/mol, near the oracle's SCF noise) Eq. 11 divides noise by noise; such a
  molecule (start already at the reference minimum, or a reference above the start) is
  left out of the ``pct_T`` average only, and counted in ``n_pct_small_drop``.

Heavy-atom RMSD (Å) between ``c_T`` and ``c_gt`` after optimal superposition (Kabsch; atom
order as given, no permutation search) is :func:`heavy_atom_rmsd`.
"""

from __future__ import annotations

import math

import numpy as np

from force2geo.units import EV_TO_KCAL_PER_MOL

SUCCESS_KCAL = 1.0  # chemical accuracy, kcal/mol (Eq. 12)
FWT_FMAX = 0.05  # force threshold of Eq. 14, eV/Å
MIN_DROP = 1e-3  # eV; below this E_0 - E_gt is treated as zero (see the module docstring)
PAPER_TABLE3 = {"pct_T": 57.37, "pct_success": 10.29, "pct_div": 8.1, "pct_FWT": 4.2}
METRIC_NAMES = ("pct_T", "pct_success", "pct_div", "pct_FWT")


def _as_array(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(-1)


def energy_percentage(e0, e_t, e_gt, min_drop: float = MIN_DROP) -> np.ndarray:
    """Eq. 11 per molecule, ``100 (E_0 - E_T) / (E_0 - E_gt)`` in %, ``[n]``.

    Energies in eV, ``[n]`` each. NaN where any energy is NaN or ``E_0 - E_gt < min_drop``
    (eV). Values above 100 mean a lower energy than the reference; negative ones, an
    energy above the start.
    """
    e0, e_t, e_gt = _as_array(e0), _as_array(e_t), _as_array(e_gt)
    drop = e0 - e_gt
    usable = np.isfinite(e0) & np.isfinite(e_t) & np.isfinite(e_gt) & (drop >= min_drop)
    out = np.full(e0.shape, np.nan)
    out[usable] = 100.0 * (e0[usable] - e_t[usable]) / drop[usable]
    return out


def residual_energy_kcal(e_t, e_gt) -> np.ndarray:
    """Eq. 13, ``E_T - E_gt`` converted from eV to kcal/mol, ``[n]`` (NaN propagates)."""
    return (_as_array(e_t) - _as_array(e_gt)) * EV_TO_KCAL_PER_MOL


def diverged(e0, e_t) -> np.ndarray:
    """Per molecule: the oracle failed at ``c_T`` (NaN ``E_T``) or ``E_T > E_0`` (eV)."""
    e0, e_t = _as_array(e0), _as_array(e_t)
    failed = ~np.isfinite(e_t)
    with np.errstate(invalid="ignore"):
        return failed | (e_t > e0)


def _percent(flags: np.ndarray) -> float:
    return 100.0 * float(flags.mean()) if flags.size else math.nan


def molecule_metrics(e0, e_t, e_gt, fmax_t, success_kcal: float = SUCCESS_KCAL,
                     fwt_fmax: float = FWT_FMAX, min_drop: float = MIN_DROP
                     ) -> dict[str, np.ndarray]:
    """Per-molecule terms of Eq. 10-14, each ``[n]``.

    ``e0``, ``e_t``, ``e_gt``: oracle energies (eV) at ``c_0``, ``c_T``, ``c_gt``;
    ``fmax_t``: oracle max atomic force norm (eV/Å) at ``c_T``; NaN where the oracle
    failed. Returns ``scored`` (the reference is usable), ``oracle_ok_t`` (energy and
    forces at ``c_T``), ``pct`` (%, NaN where left out), ``e_res_kcal`` (kcal/mol),
    and the flags ``success``, ``diverged``, ``fwt`` (all False where not scored).
    """
    e0, e_t, e_gt, fmax_t = (_as_array(v) for v in (e0, e_t, e_gt, fmax_t))
    if not e0.shape == e_t.shape == e_gt.shape == fmax_t.shape:
        raise ValueError(f"need four [n] arrays, got shapes {e0.shape}, {e_t.shape}, "
                         f"{e_gt.shape}, {fmax_t.shape}")
    scored = np.isfinite(e0) & np.isfinite(e_gt)
    t_ok = np.isfinite(e_t) & np.isfinite(fmax_t)
    e_t = np.where(t_ok, e_t, np.nan)  # a force failure at c_T is an oracle failure too
    e_res = residual_energy_kcal(e_t, e_gt)
    with np.errstate(invalid="ignore"):
        success = scored & t_ok & (e_res < success_kcal)
        fwt = scored & t_ok & (fmax_t < fwt_fmax)
    return {
        "scored": scored,
        "oracle_ok_t": t_ok,
        "pct": np.where(scored, energy_percentage(e0, e_t, e_gt, min_drop), np.nan),
        "e_res_kcal": np.where(scored, e_res, np.nan),
        "success": success,
        "diverged": scored & diverged(e0, e_t),
        "fwt": fwt,
    }


def geo_opt_metrics(e0, e_t, e_gt, fmax_t, success_kcal: float = SUCCESS_KCAL,
                    fwt_fmax: float = FWT_FMAX, min_drop: float = MIN_DROP) -> dict:
    """The four metrics of Table 3 and the counts behind them.

    Arguments as :func:`molecule_metrics`. Returns ``pct_T``, ``pct_success``,
    ``pct_div``, ``pct_FWT`` (%, NaN when no molecule is scored or, for ``pct_T``, none
    has a usable ``pct``), ``n_molecules``, ``n_scored``, ``n_reference_failed``,
    ``n_pct``, ``n_pct_small_drop``, ``n_pct_oracle_failed``, the counts of successes,
    divergences and force-converged molecules, and the thresholds used.
    """
    m = molecule_metrics(e0, e_t, e_gt, fmax_t, success_kcal, fwt_fmax, min_drop)
    scored = m["scored"]
    has_pct = np.isfinite(m["pct"])
    t_ok = m["oracle_ok_t"] & scored
    return {
        "pct_T": float(m["pct"][has_pct].mean()) if has_pct.any() else math.nan,
        "pct_success": _percent(m["success"][scored]),
        "pct_div": _percent(m["diverged"][scored]),
        "pct_FWT": _percent(m["fwt"][scored]),
        "n_molecules": int(scored.shape[0]),
        "n_scored": int(scored.sum()),
        "n_reference_failed": int((~scored).sum()),
        "n_pct": int(has_pct.sum()),
        "n_pct_small_drop": int((t_ok & ~has_pct).sum()),
        "n_pct_oracle_failed": int((scored & ~m["oracle_ok_t"]).sum()),
        "n_success": int(m["success"].sum()),
        "n_div": int(m["diverged"].sum()),
        "n_FWT": int(m["fwt"].sum()),
        "success_kcal_per_mol": success_kcal,
        "fwt_fmax_eV_per_A": fwt_fmax,
        "min_drop_eV": min_drop,
    }


# --------------------------------------------------------------------------- RMSD


def kabsch_rmsd(p, q, weights=None) -> float:
    """RMSD (Å) between ``p`` and ``q`` (``[n, 3]`` Å, same atom order) after the proper
    rotation and translation of ``p`` that minimise it (Kabsch). ``weights [n]`` weigh
    atoms (default equal). NaN when either has non-finite coordinates."""
    p = np.asarray(p, dtype=np.float64).reshape(-1, 3)
    q = np.asarray(q, dtype=np.float64).reshape(-1, 3)
    if p.shape != q.shape:
        raise ValueError(f"coordinates of shapes {p.shape} and {q.shape} do not match")
    if p.shape[0] == 0:
        raise ValueError("no atoms to align")
    if not (np.isfinite(p).all() and np.isfinite(q).all()):
        return math.nan
    w = np.ones(p.shape[0]) if weights is None else _as_array(weights)
    w = w / w.sum()
    p = p - w @ p
    q = q - w @ q
    covariance = (p * w[:, None]).T @ q  # [3, 3]
    u, _, vt = np.linalg.svd(covariance)
    sign = np.sign(np.linalg.det(u @ vt)) or 1.0  # no reflections: a proper rotation only
    rotation = u @ np.diag([1.0, 1.0, sign]) @ vt  # applied as p @ rotation
    diff = p @ rotation - q
    return float(np.sqrt((w * (diff * diff).sum(axis=1)).sum()))


def heavy_atom_rmsd(atomic_numbers, p, q) -> float:
    """:func:`kabsch_rmsd` over the non-hydrogen atoms of ``p`` and ``q`` (``[n, 3]`` Å);
    over all atoms for a molecule without heavy atoms (H2)."""
    z = np.asarray(atomic_numbers).reshape(-1)
    heavy = z > 1
    if not heavy.any():
        heavy = np.ones_like(heavy)
    return kabsch_rmsd(np.asarray(p).reshape(-1, 3)[heavy], np.asarray(q).reshape(-1, 3)[heavy])
