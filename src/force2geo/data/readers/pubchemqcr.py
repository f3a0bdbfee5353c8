"""PubChemQCR: relaxation trajectories of ~3.5 M PubChem molecules, as released (LMDB).

Format of the release (``Code/database.md`` of the Hugging Face dataset ``divelab/PubChemQCR``
and the lab's own loader, ``OpenMol/TDN/data.py`` in ``divelab/AIRS``):

* a single-file LMDB (``lmdb.open(path, subdir=False)``), or a folder of them (``*.lmdb``,
  read in sorted name order, as the loader does);
* key: the PubChem CID as ASCII digits zero-padded to 9 characters, e.g. ``b'000015111'``;
* value: ``pickle.loads(gzip.decompress(value))`` -> ``{'pm3': [...], 'hf': [...],
  'DFT_1st': [...], 'DFT_2nd': [...]}``, each a list of optimisation steps or ``None``
  (``DFT_1st`` is ``None`` where the HF results were copied into the DFT files);
* step: ``{'coordinates': [{'atom', 'x', 'y', 'z'[, 'charge']}, ...], 'energy': E,
  'gradient': [{'atom', 'dx', 'dy', 'dz'[, 'charge']}, ...]}`` with ``atom`` an element
  symbol (matched case-insensitively, as the loader does), coordinates in Å, energy in
  Hartree and gradient in Hartree/Bohr. ``charge`` is the per-atom column of the
  GAMESS/Firefly output (absent for SMASH-computed ``DFT_1st``); it is not the molecular
  charge and is not used. The molecular charge is not stored; trajectories get charge 0.

Units are converted once, here: energy Hartree -> eV, forces = -gradient, Hartree/Bohr ->
eV/Å (CODATA 2018 via :mod:`force2geo.units`; the released loader uses the rounded factors
27.2114 and 1.8897, a relative difference below 1e-5).

Stages: ``pm3 -> "pm3"``, ``hf -> "hf"``, ``DFT_1st -> "dft1"``, ``DFT_2nd -> "dft2"``.
Option ``stages`` picks which (default ``("dft1",)``, the paper's choice: the DFT first
substage, whole trajectories, as the loader's ``stage="1st"``); ``"all"`` takes all four.

The repeated boundary frame. The last step of one stage is the first step of the next,
with the same coordinates. Between stages at different levels of theory (pm3 -> hf ->
dft1) the two copies carry different labels (PM3 vs HF vs DFT energy and forces), so both
are kept: they are different data. Between ``dft1`` and ``dft2`` (same functional and
basis) the first ``dft2`` step repeats the last ``dft1`` step; when both stages are read
it is dropped, so no DFT geometry appears twice. Reading one stage alone keeps all of its
steps, exactly as the loader does.

Records whose selected stages hold no steps (e.g. ``DFT_1st`` is ``None``) are skipped
silently, as the loader skips them. Everything else that is wrong with a record (a value
that does not decompress, an unknown element, atoms that change between steps, a missing or
non-finite energy or gradient) is an :class:`~force2geo.errors.InputError` naming the file
and the key. The released loader instead drops such steps one by one; option
``drop_bad_steps=True`` does the same.

Values are pickles, and a pickle can name any function for the reader to call. They are
therefore read by a restricted unpickler (:func:`decode_record`) that builds only plain
containers, strings and numbers, which is all the release holds, plus numpy numbers and
numeric arrays in case a value carries them. A value that names anything else (a shell
command, a file operation, any other class) is refused before anything is called, as an
:class:`~force2geo.errors.InputError` naming the file and the key; nothing it asks for runs.
"""

from __future__ import annotations

import codecs
import gzip
import io
import os
import pickle
import random
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path

import lmdb
import numpy as np
from ase.data import atomic_numbers as _ASE_ATOMIC_NUMBERS

from force2geo.data.trajectory import Trajectory
from force2geo.errors import InputError
from force2geo.units import hartree_per_bohr_to_ev_per_angstrom, hartree_to_ev

# Release key -> our stage name, in protocol order.
STAGE_KEYS: dict[str, str] = {"pm3": "pm3", "hf": "hf", "DFT_1st": "dft1", "DFT_2nd": "dft2"}
DEFAULT_STAGES: tuple[str, ...] = ("dft1",)
KEY_DIGITS = 9
LMDB_SUFFIX = ".lmdb"

# Isolated-atom reference energies (Hartree) that the lab's PubChemQCR loader subtracts
# before training: target = (E - sum of references) / n_atoms, in eV/atom. Copied from
# ``atom_energy`` in divelab/AIRS, OpenMol/TDN/data.py (commit 826b94e, "TDN update").
ATOM_REFERENCE_ENERGIES_HARTREE: dict[int, float] = {
    1: -0.5002727762, 4: -14.6684425428, 5: -24.6543539532, 6: -37.8462799513,
    7: -54.5844893657, 8: -75.0606214015, 9: -99.7155354215, 14: -289.3723539998,
    15: -341.2580898032, 16: -398.1049925382, 17: -460.1362417086, 21: -760.5813501324,
    22: -849.3013849537, 23: -943.8255794204, 24: -1044.2810289455, 25: -1150.8680174849,
    26: -1263.5207828239406, 27: -1382.5485719267936, 28: -1508.0542451335,
    29: -1640.1731641564784, 31: -1924.5926070018, 32: -2076.6914561594,
    33: -2235.5683127287, 34: -2401.2347730327, 35: -2573.8397377628,
}

# The published split (loader ``initialize_datasets`` with ``total_traj=True``):
# trajectories shuffled by Python's ``random`` seeded with 42, then cut train/valid/test.
SPLIT_SEED = 42
SUBSET_FRACTIONS = (0.6, 0.2)  # train, valid; test is the rest (the 40,979-trajectory subset)
FULL_FRACTIONS = (0.8, 0.1)

_SYMBOLS = {symbol.lower(): z for symbol, z in _ASE_ATOMIC_NUMBERS.items() if z > 0}
_LMDB_MAGIC = 0xBEEFC0DE
_DECODE_ERRORS = (OSError, EOFError, zlib.error, pickle.UnpicklingError, AttributeError,
                  ImportError, IndexError, TypeError, ValueError)


def atom_reference_energies_ev() -> dict[int, float]:
    """:data:`ATOM_REFERENCE_ENERGIES_HARTREE` in eV, keyed by atomic number."""
    return {z: hartree_to_ev(e) for z, e in ATOM_REFERENCE_ENERGIES_HARTREE.items()}


def encode_key(cid: int) -> bytes:
    """The release's key of ``cid``: ASCII digits zero-padded to 9 characters."""
    if int(cid) < 0:
        raise ValueError(f"a CID is not negative: {cid}")
    return f"{int(cid):0{KEY_DIGITS}d}".encode("ascii")


def _key_text(key: bytes) -> str:
    try:
        return key.decode("ascii")
    except UnicodeDecodeError:
        return repr(key)


def _is_lmdb_file(path: Path) -> bool:
    """LMDB data files start with a meta page whose magic follows the 16-byte page header."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(24)
    except OSError:
        return False
    return len(head) == 24 and int.from_bytes(head[16:20], "little") == _LMDB_MAGIC


def lmdb_files(path: str | os.PathLike) -> list[Path]:
    """The LMDB files of ``path``: itself, or the ``*.lmdb`` files of a folder, sorted."""
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.glob(f"*{LMDB_SUFFIX}") if p.is_file())
    return [path]


def _open(path: Path) -> lmdb.Environment:
    try:
        return lmdb.open(str(path), subdir=False, readonly=True, lock=False,
                         readahead=False, meminit=False, max_readers=256)
    except lmdb.Error as err:
        raise InputError(path, f"cannot open as an LMDB file: {err}") from err


def detect(path: Path) -> bool:
    """True for a PubChemQCR LMDB file, or a folder whose first ``*.lmdb`` file is one.

    Cheap: the LMDB magic number, then the first key (9 digits) and the first bytes of its
    value (gzip) are checked.
    """
    path = Path(path)
    files = lmdb_files(path)
    if not files or not files[0].is_file() or not _is_lmdb_file(files[0]):
        return False
    try:
        env = lmdb.open(str(files[0]), subdir=False, readonly=True, lock=False)
    except lmdb.Error:
        return False
    try:
        with env.begin() as txn:
            cursor = txn.cursor()
            if not cursor.first():
                return False
            key, value = cursor.item()
    finally:
        env.close()
    return len(key) == KEY_DIGITS and key.isdigit() and bytes(value[:2]) == b"\x1f\x8b"


# --------------------------------------------------------------------------- one record


def _stage_names(stages: str | Iterable[str]) -> tuple[str, ...]:
    known = tuple(STAGE_KEYS.values())
    if stages == "all":
        return known
    wanted = (stages,) if isinstance(stages, str) else tuple(stages)
    unknown = [s for s in wanted if s not in known]
    if unknown or not wanted:
        raise ValueError(f"unknown PubChemQCR stage(s) {unknown}; choose from {known} or 'all'")
    return tuple(s for s in known if s in wanted)


def _atomic_number(symbol) -> int:
    if isinstance(symbol, (int, np.integer)) and 0 < int(symbol) <= 118:
        return int(symbol)
    z = _SYMBOLS.get(str(symbol).strip().lower())
    if z is None:
        raise ValueError(f"unknown element {symbol!r}")
    return z


@lru_cache(maxsize=4096)
def _numbers(symbols: tuple) -> np.ndarray:
    """Atomic numbers ``[n_atoms]`` of a tuple of symbols (steps repeat the same tuple)."""
    numbers = np.array([_atomic_number(s) for s in symbols], dtype=np.int64)
    numbers.flags.writeable = False
    return numbers


def _step_arrays(step) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """``(atomic_numbers [n], positions [n, 3] Å, energy eV, forces [n, 3] eV/Å)`` of one
    step; raises ValueError/KeyError/TypeError with the reason."""
    if not isinstance(step, dict):
        raise TypeError(f"a step is a dict, not {type(step).__name__}")
    coords, gradient = step["coordinates"], step["gradient"]
    if not coords:
        raise ValueError("no coordinates")
    if gradient is None or len(gradient) != len(coords):
        n_grad = 0 if gradient is None else len(gradient)
        raise ValueError(f"{n_grad} gradient rows for {len(coords)} atoms")
    symbols = tuple(a["atom"] for a in coords)
    numbers = _numbers(symbols)
    grad_symbols = tuple(g.get("atom", s) for g, s in zip(gradient, symbols, strict=True))
    if grad_symbols != symbols and not np.array_equal(_numbers(grad_symbols), numbers):
        raise ValueError("gradient atoms differ from coordinate atoms")
    positions = np.array([[a["x"], a["y"], a["z"]] for a in coords], dtype=np.float64)
    grad = np.array([[g["dx"], g["dy"], g["dz"]] for g in gradient], dtype=np.float64)
    energy = step["energy"]
    energy = np.nan if energy is None else float(energy)
    return numbers, positions, hartree_to_ev(energy), -hartree_per_bohr_to_ev_per_angstrom(grad)


def _stage_steps(record: dict, key: str, drop_bad_steps: bool) -> list[tuple]:
    """The parsed steps of stage ``key`` of ``record`` (empty when the stage is None)."""
    steps = record.get(key)
    if steps is None:
        return []
    if not isinstance(steps, (list, tuple)):
        raise ValueError(f"{key} is a {type(steps).__name__}, not a list of steps")
    parsed = []
    for i, step in enumerate(steps):
        try:
            arrays = _step_arrays(step)
            finite = np.isfinite(arrays[2]) and np.isfinite(arrays[1]).all() \
                and np.isfinite(arrays[3]).all()
            if drop_bad_steps and not finite:
                continue
        except (KeyError, TypeError, ValueError) as err:
            if drop_bad_steps:
                continue
            reason = f"missing field {err}" if isinstance(err, KeyError) else str(err)
            raise ValueError(f"{key} step {i}: {reason}") from err
        parsed.append((key, i, *arrays))
    return parsed


def _join(parts: list[tuple], drop_bad_steps: bool) -> list[tuple]:
    """Steps of consecutive stages with consistent atoms; drops the repeated dft1 -> dft2
    boundary step."""
    kept: list[tuple] = []
    for part in parts:
        key, i, numbers, positions = part[:4]
        if kept and not np.array_equal(numbers, kept[0][2]):
            if drop_bad_steps:
                continue
            raise ValueError(f"{key} step {i}: atoms differ from {kept[0][0]} step {kept[0][1]}")
        previous = kept[-1] if kept else None
        if (previous is not None and key == "DFT_2nd" and previous[0] == "DFT_1st"
                and np.array_equal(positions, previous[3])):
            continue
        kept.append(part)
    return kept


class RefusedPickle(pickle.UnpicklingError):
    """A value that names a global the release format never needs (see
    :class:`RecordUnpickler`)."""


def _numeric_dtype(*args) -> np.dtype:
    """``numpy.dtype`` as a pickle calls it, for booleans and numbers only: an object dtype
    would let the array's items be anything."""
    dtype = np.dtype(*args)
    if dtype.kind not in "biufc":
        raise RefusedPickle(f"numpy dtype {dtype} (only numeric arrays are data)")
    return dtype


def _numpy_array_names() -> dict[tuple[str, str], object]:
    """The globals a pickled numpy number or numeric array names, under the module paths
    of numpy 1 (``numpy.core``) and numpy 2 (``numpy._core``)."""
    core = np._core if hasattr(np, "_core") else np.core
    names: dict[tuple[str, str], object] = {("numpy", "dtype"): _numeric_dtype,
                                            ("numpy", "ndarray"): np.ndarray}
    for package in ("numpy.core", "numpy._core"):
        names[(f"{package}.multiarray", "scalar")] = core.multiarray.scalar
        names[(f"{package}.multiarray", "_reconstruct")] = core.multiarray._reconstruct
        names[(f"{package}.numeric", "_frombuffer")] = core.numeric._frombuffer
    return names


class RecordUnpickler(pickle.Unpickler):
    """Unpickles a release value without calling anything it names, except numpy's own
    constructors of numbers and numeric arrays (and ``_codecs.encode``, with which
    protocol 2 stores bytes). The release holds dicts, lists, strings, floats and None,
    which unpickle without any global; every other global is refused."""

    ALLOWED: dict[tuple[str, str], object] = {**_numpy_array_names(),
                                              ("_codecs", "encode"): codecs.encode}

    def find_class(self, module: str, name: str):
        allowed = self.ALLOWED.get((module, name))
        if allowed is None:
            raise RefusedPickle(f"the value names {module}.{name}, which a PubChemQCR "
                                "record never holds (only dicts, lists, strings and "
                                "numbers); not a genuine release value")
        return allowed


def decode_record(value: bytes) -> dict:
    """``pickle.loads(gzip.decompress(value))`` through :class:`RecordUnpickler` (nothing
    the value names is called), checked to be a dict."""
    record = RecordUnpickler(io.BytesIO(gzip.decompress(value))).load()
    if not isinstance(record, dict):
        raise ValueError(f"value is a {type(record).__name__}, not a dict of stages")
    return record


def parse_record(value: bytes, cid: int, stages: Sequence[str] = DEFAULT_STAGES,
                 drop_bad_steps: bool = False) -> Trajectory | None:
    """The trajectory of one LMDB value over ``stages`` (ours, in protocol order), or None
    when those stages hold no steps. Raises ValueError with the reason when malformed."""
    try:
        record = decode_record(value)
    except RefusedPickle as err:
        raise ValueError(f"refused, nothing in it was run: {err}") from None
    except _DECODE_ERRORS as err:
        raise ValueError(f"value does not decode (gzip + pickle): {err}") from err
    parts: list[tuple] = []
    for key, stage in STAGE_KEYS.items():
        if stage in stages:
            parts.extend(_stage_steps(record, key, drop_bad_steps))
    parts = _join(parts, drop_bad_steps)
    if not parts:
        return None
    return Trajectory(
        atomic_numbers=parts[0][2],
        positions=np.stack([p[3] for p in parts]),
        energy=np.array([p[4] for p in parts]),
        forces=np.stack([p[5] for p in parts]),
        stages=[STAGE_KEYS[p[0]] for p in parts],
        cid=cid,
    )


# --------------------------------------------------------------------------- reading


def _report(error: InputError, on_error: Callable[[InputError], None] | None) -> None:
    if on_error is None:
        raise error
    on_error(error)


def _items(txn, cids: list[int] | None) -> Iterator[tuple[bytes, bytes | None]]:
    """(key, value) in cursor order, or for the requested CIDs in the order given."""
    if cids is None:
        yield from txn.cursor()
        return
    for cid in cids:
        key = encode_key(cid)
        yield key, txn.get(key)


def _record(path: Path, key: bytes, value, stages, drop_bad_steps) -> Trajectory | None:
    text = _key_text(key)
    if value is None:
        raise InputError(path, "no such key in the file", record=text)
    if not key.isdigit():
        raise InputError(path, "key is not a zero-padded CID", record=text)
    try:
        trajectory = parse_record(value, int(key), stages, drop_bad_steps)
    except ValueError as err:
        raise InputError(path, str(err), record=text) from err
    if trajectory is None:
        return None
    return trajectory.validate(str(path), text, require=("energy", "forces"))


def read(path: Path, on_error: Callable[[InputError], None] | None = None, *,
         stages: str | Iterable[str] = DEFAULT_STAGES, cids: Iterable[int] | None = None,
         limit: int | None = None, drop_bad_steps: bool = False) -> Iterator[Trajectory]:
    """Yield one trajectory per molecule (CID) of a PubChemQCR LMDB file or folder.

    Streams with an LMDB cursor (keys in byte order, i.e. ascending CID, file by file):
    nothing but the current record is held in memory. ``cids`` reads only those molecules,
    in the given order (with a folder: grouped by the file that holds them); a CID that is
    in no file is a record error. ``limit`` stops after that many keys were looked at,
    bad and skipped records included. See the module docstring for stages and the
    repeated boundary frame.
    """
    path = Path(path)
    stages = _stage_names(stages)
    files = lmdb_files(path)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    if not files:
        raise InputError(path, f"no {LMDB_SUFFIX} files in this folder")
    for file in files:
        if not _is_lmdb_file(file):
            raise InputError(file, "not an LMDB file (empty or wrong magic number)")
    wanted = None if cids is None else [int(c) for c in cids]
    return _read(files, on_error, stages, wanted, limit, drop_bad_steps)


def _read(files: list[Path], on_error, stages, wanted, limit, drop_bad_steps):
    if wanted is None:
        plan = [(file, None) for file in files]
    elif len(files) == 1:
        plan = [(files[0], wanted)]
    else:
        plan = list(_locate(files, wanted, on_error).items())
    seen = 0
    for file, cids in plan:
        env = _open(file)
        try:
            with env.begin(buffers=False) as txn:
                for key, value in _items(txn, cids):
                    if limit is not None and seen >= limit:
                        return
                    seen += 1
                    try:
                        trajectory = _record(file, key, value, stages, drop_bad_steps)
                    except InputError as err:
                        _report(err, on_error)
                        continue
                    if trajectory is not None:
                        yield trajectory
        finally:
            env.close()


def _locate(files: list[Path], cids: list[int], on_error) -> dict[Path, list[int]]:
    """Which file of a folder holds each requested CID (first file wins)."""
    where: dict[Path, list[int]] = {}
    missing = list(cids)
    for file in files:
        env = _open(file)
        try:
            with env.begin() as txn:
                found = [c for c in missing if txn.get(encode_key(c)) is not None]
        finally:
            env.close()
        where[file] = found
        found_set = set(found)
        missing = [c for c in missing if c not in found_set]
    for cid in missing:
        _report(InputError(files[0].parent, "no such key in any file",
                           record=encode_key(cid).decode()), on_error)
    return where


def iter_cids(path: str | os.PathLike) -> Iterator[int]:
    """The CIDs of a release in cursor order (file by file), reading keys only."""
    for file in lmdb_files(path):
        env = _open(Path(file))
        try:
            with env.begin() as txn:
                for key in txn.cursor().iternext(keys=True, values=False):
                    if key.isdigit():
                        yield int(key)
        finally:
            env.close()


# --------------------------------------------------------------------------- split


def published_split(cids_or_n: int | Sequence[int] | np.ndarray,
                    full: bool = False) -> dict[str, np.ndarray]:
    """The released random split by trajectory, reproduced step by step.

    The loader lists the valid trajectories: the keys, in cursor order file by file, whose
    ``DFT_1st`` keeps at least one complete finite step. Here that is the CIDs that
    ``read(path, drop_bad_steps=True)`` (default ``stages=("dft1",)``) yields, in the order
    it yields them; for the subset, the loader reads ``Data06.lmdb`` only. It then does
    ``random.seed(42); random.shuffle(list(range(n)))`` and cuts ``int(0.6 n)`` train,
    ``int(0.2 n)`` valid and the rest test for the subset (``full=False``), or
    ``int(0.8 n)`` / ``int(0.1 n)`` / rest for the full set. Positions in the shuffled
    order are kept (not sorted). Returns ``{"train", "valid", "test"}`` -> int64 indices
    into the input order when given ``n``, else the CIDs themselves.
    """
    if isinstance(cids_or_n, (int, np.integer)):
        ids = np.arange(int(cids_or_n), dtype=np.int64)
    else:
        ids = np.asarray(list(cids_or_n), dtype=np.int64).reshape(-1)
    n = ids.shape[0]
    order = list(range(n))
    random.Random(SPLIT_SEED).shuffle(order)  # same stream as random.seed(42); shuffle
    train_fraction, valid_fraction = FULL_FRACTIONS if full else SUBSET_FRACTIONS
    n_train, n_valid = int(train_fraction * n), int(valid_fraction * n)
    order = np.asarray(order, dtype=np.int64)
    return {
        "train": ids[order[:n_train]],
        "valid": ids[order[n_train:n_train + n_valid]],
        "test": ids[order[n_train + n_valid:]],
    }


# --------------------------------------------------------------------------- writing


def encode_record(record: dict) -> bytes:
    """The release's value for ``record``: ``gzip.compress(pickle.dumps(record))``."""
    return gzip.compress(pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL))


def write_lmdb(path: str | os.PathLike, records: dict[int, dict]) -> Path:
    """Write ``{cid: record}`` as a single-file LMDB in the release's exact format.

    ``record`` is the value dict as released (``'pm3'``, ``'hf'``, ``'DFT_1st'``,
    ``'DFT_2nd'`` -> step lists or None; Hartree, Å, Hartree/Bohr). Written under a
    temporary name in the same folder, then renamed, so a crash leaves no partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    values = [(encode_key(cid), encode_record(record)) for cid, record in sorted(records.items())]
    map_size = 2 * sum(len(k) + len(v) + 64 for k, v in values) + (64 << 20)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    os.unlink(tmp)  # LMDB creates the file itself
    try:
        env = lmdb.open(tmp, subdir=False, map_size=map_size, lock=False)
        try:
            with env.begin(write=True) as txn:
                for key, value in values:
                    txn.put(key, value)
            env.sync(True)
        finally:
            env.close()
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, tmp + "-lock"):
            if os.path.exists(leftover):
                os.unlink(leftover)
    return path
