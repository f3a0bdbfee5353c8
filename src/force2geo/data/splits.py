"""Train/valid/test splits by trajectory, diversity sampling and leakage removal.

* :func:`random_split` — a seeded permutation cut by the largest-remainder rule.
* :func:`scaffold_split` — Bemis-Murcko scaffold groups, assigned largest group first
  (the rule of MoleculeNet / DeepChem / OGB), so no scaffold crosses two parts.
* :func:`maxmin_select` — MaxMin diversity picking on Morgan fingerprints with Tanimoto
  distance (the paper's D_opt, §4.2: a random first pick, then each time the molecule
  farthest from the picked set).
* :func:`remove_leakage` — drop molecules of one set that occur in another, by InChIKey
  and, where both sides know it, by PubChem CID.

Every index here is a *trajectory* index of a store (all snapshots of a molecule travel
together). A split file is JSON, written atomically (temporary name, then rename)::

    {"train": [0, 5, ...], "valid": [...], "test": [...],
     "meta": {"method": "random", "seed": 42, "fractions": [0.8, 0.1, 0.1],
              "store_fingerprint": "...", ...}}

A selection file has one part, ``"selected"``, in pick order.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from force2geo import __version__, atomic
from force2geo.data.store import TrajectoryStore
from force2geo.errors import InputError

logger = logging.getLogger(__name__)

PARTS: tuple[str, str, str] = ("train", "valid", "test")
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.8, 0.1, 0.1)
SPLIT_METHODS = ("random", "scaffold")
_FRACTION_TOL = 1e-6


# --------------------------------------------------------------------------- fractions


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Return ``(train, valid, test)`` fractions, or raise ValueError saying what is wrong.

    Three finite, non-negative numbers summing to 1 (within 1e-6); a zero part is allowed.
    """
    values = [float(f) for f in fractions]
    if len(values) != 3:
        raise ValueError(f"need 3 fractions (train valid test), got {len(values)}")
    if not all(math.isfinite(f) and f >= 0 for f in values):
        raise ValueError(f"fractions must be finite and non-negative, got {values}")
    total = sum(values)
    if abs(total - 1.0) > _FRACTION_TOL:
        raise ValueError(f"fractions must sum to 1, got {values} (sum {total:g})")
    return values[0], values[1], values[2]


def part_sizes(n: int, fractions: Sequence[float]) -> np.ndarray:
    """Sizes ``[3]`` of the parts of ``n`` items by the largest-remainder rule.

    Each part first gets ``floor(f * n)``; the items left over go one each to the parts
    with the largest fractional remainders (ties to the earlier part). Sizes sum to ``n``
    and each is within 1 of ``f * n``: 10 items at 0.8/0.1/0.1 give 8/1/1, 7 give 5/1/1.
    """
    share = np.round(np.asarray(check_fractions(fractions)) * n, 9)  # drop float noise
    sizes = np.floor(share).astype(np.int64)
    order = np.argsort(-(share - sizes), kind="stable")
    sizes[order[: n - int(sizes.sum())]] += 1
    return sizes


# --------------------------------------------------------------------------- random


def random_split(
    n_or_ids: int | Sequence | np.ndarray,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 42,
) -> dict[str, np.ndarray]:
    """Split ``n`` trajectories (or the given distinct ids) at random into train/valid/test.

    A ``numpy.random.default_rng(seed)`` permutation is cut into parts sized by
    :func:`part_sizes`; each part is returned sorted (indices ascending, or ids in input
    order). Every item lands in exactly one part. Returns ``{"train", "valid", "test"}``
    -> int64 indices, or arrays of ids when ids were given.
    """
    if isinstance(n_or_ids, (int, np.integer)):
        n, ids = int(n_or_ids), None
        if n < 0:
            raise ValueError(f"cannot split a negative number of items ({n})")
    else:
        ids = np.asarray(n_or_ids)
        n = ids.shape[0]
        if np.unique(ids).shape[0] != n:
            raise ValueError("ids repeat: a repeated id could land in two parts")
    permutation = np.random.default_rng(seed).permutation(n)
    cuts = np.cumsum(part_sizes(n, fractions))[:-1]
    parts = [np.sort(p).astype(np.int64) for p in np.split(permutation, cuts)]
    return {name: (p if ids is None else ids[p]) for name, p in zip(PARTS, parts, strict=True)}


# --------------------------------------------------------------------------- scaffold


def murcko_scaffold(smiles: str, include_chirality: bool = False) -> str | None:
    """Canonical Bemis-Murcko scaffold SMILES of ``smiles``; ``""`` for acyclic molecules,
    None when the SMILES is empty or cannot be parsed."""
    from rdkit import Chem
    from rdkit.Chem.Scaffolds import MurckoScaffold
    from rdkit.rdBase import BlockLogs

    if not smiles or not smiles.strip():
        return None
    with BlockLogs():  # failures are reported by the caller, once, not per molecule
        mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None
    return MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=include_chirality)


def scaffold_groups(
    smiles: Sequence[str], include_chirality: bool = False
) -> tuple[list[np.ndarray], np.ndarray]:
    """Group molecules by Murcko scaffold, in the order the scaffold split assigns them.

    Returns ``(groups, unparsed)``: ``groups`` is a list of sorted int64 index arrays,
    ordered by (size, first index) descending, as MoleculeNet / DeepChem / OGB sort them
    (largest first; among equal sizes the later first index comes first). Acyclic
    molecules share the scaffold ``""``. A molecule whose SMILES is empty or cannot be
    parsed is its own group, and its index is also listed in ``unparsed`` (int64).
    """
    members: dict[object, list[int]] = {}
    cache: dict[str, str | None] = {}
    unparsed = []
    for i, s in enumerate(smiles):
        if s not in cache:
            cache[s] = murcko_scaffold(s, include_chirality)
        scaffold = cache[s]
        if scaffold is None:
            unparsed.append(i)
            members[("unparsed", i)] = [i]  # a key no scaffold SMILES can equal
        else:
            members.setdefault(scaffold, []).append(i)
    groups = sorted(members.values(), key=lambda g: (len(g), g[0]), reverse=True)
    return [np.asarray(g, dtype=np.int64) for g in groups], np.asarray(unparsed, dtype=np.int64)


def scaffold_split(
    smiles: Sequence[str],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    include_chirality: bool = False,
    train_only: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Split molecules so that no Bemis-Murcko scaffold crosses two parts.

    Groups from :func:`scaffold_groups` are placed in order: into train while train stays
    within ``f_train * n``, else into valid while train + valid stay within
    ``(f_train + f_valid) * n``, else into test (the MoleculeNet / OGB rule). Part sizes
    are therefore near, not exactly at, the fractions. Unparseable SMILES are kept (each
    its own group) and reported by a logged warning. Returns sorted int64 indices.

    ``train_only`` (``[n]`` bool, e.g. the molecules an MLIP was pre-trained on): every
    group holding such a molecule goes to train first; the other groups fill train up to
    ``f_train * n`` as before, and the rest are dealt to valid and test in the ratio
    ``f_valid : f_test`` (the larger deficit first), so that valid and test stay
    scaffold-disjoint from train *and* free of those molecules, however few remain.
    """
    f_train, f_valid, f_test = check_fractions(fractions)
    groups, unparsed = scaffold_groups(smiles, include_chirality)
    n = len(smiles)
    if unparsed.size:
        logger.warning("%d of %d SMILES could not be parsed (indices %s); each is its own "
                       "scaffold group", unparsed.size, n, _head(unparsed))
    train_cut = round(f_train * n, 9)
    if train_only is not None:
        return _scaffold_split_around(groups, np.asarray(train_only, bool), train_cut,
                                      f_valid, f_test)
    valid_cut = round((f_train + f_valid) * n, 9)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in PARTS}
    n_train = n_valid = 0
    for group in groups:
        if n_train + len(group) <= train_cut:
            parts["train"].append(group)
            n_train += len(group)
        elif n_train + n_valid + len(group) <= valid_cut:
            parts["valid"].append(group)
            n_valid += len(group)
        else:
            parts["test"].append(group)
    return _sorted_parts(parts)


def _sorted_parts(parts: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.sort(np.concatenate(p)).astype(np.int64) if p
            else np.empty(0, dtype=np.int64) for name, p in parts.items()}


def _scaffold_split_around(groups: list[np.ndarray], train_only: np.ndarray,
                           train_cut: float, f_valid: float, f_test: float
                           ) -> dict[str, np.ndarray]:
    """:func:`scaffold_split` with the groups that touch ``train_only`` forced into train."""
    parts: dict[str, list[np.ndarray]] = {name: [] for name in PARTS}
    free = []
    for group in groups:
        (parts["train"] if train_only[group].any() else free).append(group)
    n_train = sum(len(g) for g in parts["train"])
    n_valid = n_test = 0
    for group in free:
        if n_train + len(group) <= train_cut:
            parts["train"].append(group)
            n_train += len(group)
        elif f_test == 0 or (f_valid > 0 and n_valid / f_valid <= n_test / f_test):
            parts["valid"].append(group)
            n_valid += len(group)
        else:
            parts["test"].append(group)
            n_test += len(group)
    return _sorted_parts(parts)


# --------------------------------------------------------------------------- diversity


def morgan_fingerprints(smiles: Sequence[str], radius: int = 2, n_bits: int = 2048) -> list:
    """Morgan bit-vector fingerprints (RDKit ``ExplicitBitVect``, ``n_bits`` long).

    Raises ValueError naming the indices of SMILES that are empty or cannot be parsed.
    """
    fingerprints, bad = _fingerprints(smiles, radius, n_bits)
    if bad:
        raise ValueError(f"{len(bad)} SMILES are empty or cannot be parsed (indices "
                         f"{_head(bad)}); a fingerprint is needed for every molecule")
    return fingerprints


def _fingerprints(smiles: Sequence[str], radius: int, n_bits: int) -> tuple[list, list[int]]:
    """Fingerprints of the parseable SMILES, and the indices of the others."""
    from rdkit import Chem
    from rdkit.Chem import rdFingerprintGenerator
    from rdkit.rdBase import BlockLogs

    if radius < 0 or n_bits < 1:
        raise ValueError(f"need radius >= 0 and n_bits >= 1, got {radius} and {n_bits}")
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
    fingerprints, bad = [], []
    with BlockLogs():
        for i, s in enumerate(smiles):
            mol = Chem.MolFromSmiles(s) if s and s.strip() else None
            if mol is None:
                bad.append(i)
            else:
                fingerprints.append(generator.GetFingerprint(mol))
    return fingerprints, bad


def _head(indices: Sequence[int], n: int = 10) -> str:
    """``[1, 2, 3]``, or the first ``n`` followed by `` ...``."""
    shown = [int(i) for i in indices[:n]]
    return f"{shown}{' ...' if len(indices) > n else ''}"


def maxmin_select(
    smiles_or_fingerprints: Sequence,
    k: int,
    seed: int | None = 42,
    radius: int = 2,
    n_bits: int = 2048,
) -> np.ndarray:
    """Pick ``k`` diverse molecules by MaxMin on Tanimoto distance ``1 - |a&b| / |a|b|``.

    The first pick is random (RDKit's generator seeded with ``seed``; None picks a new
    random start each call); each further pick is the molecule whose distance to its
    nearest already-picked molecule is largest (RDKit's lazy ``MaxMinPicker``).
    ``smiles_or_fingerprints`` is SMILES strings (Morgan fingerprints of ``radius`` and
    ``n_bits`` are made) or RDKit bit vectors. Returns int64 indices ``[k]`` in pick order.
    """
    from rdkit.SimDivFilters import rdSimDivPickers

    items = list(smiles_or_fingerprints)
    if all(isinstance(x, str) for x in items):
        fingerprints = morgan_fingerprints(items, radius, n_bits)
    else:
        fingerprints = items
    n = len(fingerprints)
    if not 1 <= int(k) <= n:
        raise ValueError(f"k must be between 1 and the {n} candidates, got {k}")
    rdkit_seed = -1 if seed is None else int(seed)
    if rdkit_seed < -1:
        raise ValueError(f"seed must be non-negative, got {seed}")
    picker = rdSimDivPickers.MaxMinPicker()
    picks = picker.LazyBitVectorPick(fingerprints, n, int(k), seed=rdkit_seed)
    return np.asarray(list(picks), dtype=np.int64)


# --------------------------------------------------------------------------- leakage


def _cid_array(cids: Sequence | np.ndarray, n: int, name: str) -> np.ndarray:
    out = np.array([-1 if c is None else int(c) for c in cids], dtype=np.int64)
    if out.shape[0] != n:
        raise ValueError(f"{name} has {out.shape[0]} entries for {n} InChIKeys")
    return out


def remove_leakage(
    inchikeys_a: Sequence[str],
    inchikeys_b: Sequence[str],
    cids_a: Sequence | np.ndarray | None = None,
    cids_b: Sequence | np.ndarray | None = None,
    first_block: bool = False,
) -> np.ndarray:
    """Boolean mask ``[len(a)]``: True for the items of ``a`` that do not occur in ``b``.

    An item leaks when its InChIKey is among ``b``'s (compared stripped and upper-cased;
    an empty key never matches), or, when both ``cids_a`` and ``cids_b`` are given, when
    its CID is among ``b``'s (-1 or None means unknown and never matches).
    ``first_block=True`` compares only the 14-character connectivity block, so that
    stereoisomers and protonation variants also count as the same molecule.
    """
    width = 14 if first_block else None

    def normalise(key: str) -> str:
        return key.strip().upper()[:width]

    keys_b = {normalise(k) for k in inchikeys_b if k and k.strip()}
    keys_a = [normalise(k) if k else "" for k in inchikeys_a]
    keep = np.array([not (k and k in keys_b) for k in keys_a], dtype=bool).reshape(-1)
    if cids_a is not None and cids_b is not None:
        cid_a = _cid_array(cids_a, len(keys_a), "cids_a")
        cid_b = _cid_array(cids_b, len(inchikeys_b), "cids_b")
        keep &= ~((cid_a >= 0) & np.isin(cid_a, cid_b[cid_b >= 0]))
    return keep


# --------------------------------------------------------------------------- stores


def _open(store: TrajectoryStore | str | os.PathLike) -> TrajectoryStore:
    return store if isinstance(store, TrajectoryStore) else TrajectoryStore(store)


def split_store(
    store: TrajectoryStore | str | os.PathLike,
    method: str = "random",
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 42,
) -> dict[str, np.ndarray]:
    """Split the trajectories of a store: ``{"train", "valid", "test"}`` -> trajectory
    indices (int64, sorted). ``method`` is ``random`` (uses ``seed``) or ``scaffold``
    (deterministic; uses the stored SMILES)."""
    store = _open(store)
    if method == "random":
        return random_split(store.n_trajectories, fractions, seed)
    if method == "scaffold":
        return scaffold_split(store.identifiers("smiles"), fractions)
    raise ValueError(f"unknown split method {method!r}; choose from {', '.join(SPLIT_METHODS)}")


def extend_split(
    store: TrajectoryStore | str | os.PathLike,
    previous: dict[str, np.ndarray],
    previous_store: TrajectoryStore | str | os.PathLike,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 42,
) -> dict[str, np.ndarray]:
    """A random split of a grown store that keeps an earlier split: a trajectory whose
    InChIKey the earlier split (of ``previous_store``) placed stays in that part; the others
    are split at random with ``fractions`` and ``seed``. So a model trained on the earlier
    train part never sees the grown valid or test parts."""
    previous_store = _open(previous_store)
    old_keys = previous_store.identifiers("inchikey")
    placed = {old_keys[i]: name for name, indices in previous.items() for i in indices}
    if "" in placed:
        raise ValueError(f"{previous_store.path}: trajectories without an InChIKey cannot "
                         "be matched")
    return place_and_split(store, placed, fractions, seed)


def place_and_split(
    store: TrajectoryStore | str | os.PathLike,
    placed: dict[str, str],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 42,
) -> dict[str, np.ndarray]:
    """A random split in which the trajectories whose InChIKey ``placed`` names go to the
    part it names (e.g. every training molecule of an earlier model to ``train``, so that
    a model warm-started from it is never validated or tested on them); the others are
    split at random with ``fractions`` and ``seed``."""
    unknown = set(placed.values()) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown part(s) {', '.join(sorted(unknown))}; parts are "
                         f"{', '.join(PARTS)}")
    keys = _open(store).identifiers("inchikey")
    owner = np.array([placed.get(k, "") if k else "" for k in keys], dtype=object)
    fresh = np.flatnonzero(owner == "")
    new = random_split(fresh.shape[0], fractions, seed)
    return {name: np.sort(np.concatenate([np.flatnonzero(owner == name), fresh[new[name]]]))
            .astype(np.int64) for name in PARTS}


def read_inchikeys(path: str | os.PathLike) -> list[str]:
    """The InChIKeys of a text file, one per line (blank lines skipped), e.g. the
    ``*.inchikeys.txt`` beside a model card."""
    try:
        keys = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read the InChIKey list: {exc}") from None
    bad = next((k for k in keys if len(k) != 27 or k.count("-") != 2), None)
    if bad is not None:
        raise InputError(path, f"{bad!r} is not an InChIKey (expected one per line, "
                         "like BSYNRYMUTXBXSQ-UHFFFAOYSA-N)")
    return keys


def select_store(
    store: TrajectoryStore | str | os.PathLike,
    k: int,
    seed: int | None = 42,
    candidates: np.ndarray | Sequence[int] | None = None,
    radius: int = 2,
    n_bits: int = 2048,
) -> np.ndarray:
    """MaxMin-pick ``k`` trajectories of a store (among ``candidates``, default all) by
    their SMILES. Returns trajectory indices ``[k]`` in pick order."""
    store = _open(store)
    smiles = store.identifiers("smiles")
    pool = np.arange(len(smiles)) if candidates is None else np.asarray(candidates, np.int64)
    fingerprints, bad = _fingerprints([smiles[i] for i in pool], radius, n_bits)
    if bad:
        raise InputError(store.path, f"{len(bad)} trajectories have SMILES that are empty or "
                         f"cannot be parsed (trajectories {_head(pool[bad])}); MaxMin needs a "
                         "fingerprint for every candidate")
    return pool[maxmin_select(fingerprints, k, seed)]


def store_leakage_mask(
    store: TrajectoryStore | str | os.PathLike,
    other: TrajectoryStore | str | os.PathLike,
    indices: np.ndarray | Sequence[int] | None = None,
    first_block: bool = False,
) -> np.ndarray:
    """Mask over ``indices`` (default all trajectories of ``store``): True where the
    molecule does not occur in ``other`` by InChIKey or CID (see :func:`remove_leakage`)."""
    store, other = _open(store), _open(other)
    keys, cids = store.identifiers("inchikey"), store.cids()
    if indices is not None:
        indices = np.asarray(indices, dtype=np.int64)
        keys, cids = [keys[i] for i in indices], cids[indices]
    return remove_leakage(keys, other.identifiers("inchikey"), cids, other.cids(),
                          first_block=first_block)


def split_meta(store: TrajectoryStore, method: str, **settings) -> dict:
    """The ``meta`` record of a split file: method, settings, and the store it indexes."""
    return {
        "method": method,
        **settings,
        "store": str(store.path),
        "store_fingerprint": store.fingerprint,
        "n_trajectories": store.n_trajectories,
        "index": "trajectory",
        "force2geo_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


# --------------------------------------------------------------------------- files


def save_split(path: str | os.PathLike, split: dict[str, np.ndarray], meta: dict) -> Path:
    """Write ``split`` (part name -> indices) and ``meta`` as JSON, atomically.

    The file is written under a temporary name in the same folder, synced and renamed,
    so a reader never sees half a split. Returns the path written.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(path, f"folder {path.parent} does not exist")
    if "meta" in split:
        raise ValueError("'meta' is reserved and cannot name a part")
    record = {name: [int(i) for i in np.asarray(ix).reshape(-1)] for name, ix in split.items()}
    record["meta"] = meta
    return atomic.write_json(path, record)


def load_split(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """Read a split file: ``(parts, meta)``, parts as name -> int64 index arrays.

    Raises :class:`InputError` naming the file and part when it is missing, not JSON,
    holds something other than lists of non-negative integers, or repeats an index.
    """
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "no such split file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"not a readable JSON split file ({exc})") from None
    if not isinstance(record, dict) or not isinstance(record.get("meta", {}), dict):
        raise InputError(path, "not a split file (expected an object with a 'meta' object)")
    meta = record.pop("meta", {})
    parts = {}
    for name, values in record.items():
        if not isinstance(values, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values
        ):
            raise InputError(path, "must be a list of non-negative integer indices",
                             record=name)
        parts[name] = np.asarray(values, dtype=np.int64)
    _check_disjoint(path, parts)
    return parts, meta


def _check_disjoint(path: Path, parts: dict[str, np.ndarray]) -> None:
    """Raise InputError when an index appears twice, within a part or across parts."""
    if not parts:
        return
    names = list(parts)
    everything = np.concatenate([parts[n] for n in names])
    owner = np.repeat(np.arange(len(names)), [parts[n].shape[0] for n in names])
    order = np.argsort(everything, kind="stable")
    repeated = np.flatnonzero(np.diff(everything[order]) == 0)
    if repeated.size:
        first, second = order[repeated[0]], order[repeated[0] + 1]
        where = names[owner[first]]
        also = "" if owner[first] == owner[second] else f" (also in {names[owner[second]]!r})"
        raise InputError(path, f"index {everything[first]} appears twice{also}", record=where)


def read_part(spec: str, store) -> np.ndarray:
    """Trajectory indices of ``FILE[:PART]`` (a split or selection file), checked against
    ``store``: same fingerprint when the file records one, indices in range. A file with
    one part needs no ``:PART``."""
    path, part = spec, None
    if not Path(spec).exists() and ":" in spec:
        path, part = spec.rsplit(":", 1)
    parts, meta = load_split(path)
    if part is None:
        if len(parts) != 1:
            raise InputError(path, f"holds parts {', '.join(parts)}; name one as {path}:PART")
        part = next(iter(parts))
    if part not in parts:
        raise InputError(path, f"no part {part!r}; it holds {', '.join(parts) or 'none'}")
    expected = meta.get("store_fingerprint")
    if expected is not None and expected != store.fingerprint:
        raise InputError(path, f"was made for a store with fingerprint {expected}, but "
                         f"{store.path} has fingerprint {store.fingerprint}")
    indices = parts[part]
    if indices.size and indices.max() >= store.n_trajectories:
        raise InputError(path, f"index {int(indices.max())} is out of range for "
                         f"{store.path} ({store.n_trajectories} trajectories)", record=part)
    return indices
