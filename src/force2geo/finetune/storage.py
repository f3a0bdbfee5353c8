"""The folder format of a property dataset: ``.npy`` columns + ``meta.json``, whole or not
at all (written in a temporary sibling folder, synced, then renamed into place)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from force2geo.atomic import file_sha256, fsync_dir
from force2geo.errors import InputError

FORMAT = "force2geo-property-dataset"
FORMAT_VERSION = 1
META = "meta.json"


def offsets(sizes: Sequence[int] | np.ndarray) -> np.ndarray:
    """``[0, s0, s0 + s1, ...]`` int64, ``len(sizes) + 1`` entries."""
    return np.concatenate([[0], np.cumsum(np.asarray(sizes, dtype=np.int64))]).astype(np.int64)


def pack_strings(values: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 bytes ``uint8 [n_bytes]`` and offsets ``int64 [n + 1]`` of ``values``."""
    encoded = [v.encode("utf-8") for v in values]
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets([len(e) for e in encoded])


def unpack_strings(data: np.ndarray, offset: np.ndarray) -> list[str]:
    raw = np.asarray(data).tobytes()
    return [raw[a:b].decode("utf-8") for a, b in zip(offset[:-1], offset[1:], strict=True)]


def write_folder(folder: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict,
                 overwrite: bool = False) -> Path:
    """Write ``arrays`` as ``NAME.npy`` and ``meta`` (plus ``format``, ``format_version``
    and ``files``: name -> SHA-256) as ``meta.json`` into ``folder``, atomically.

    An existing ``folder`` is replaced only with ``overwrite`` and only when it holds a
    ``meta.json`` of this format (never an unrelated folder).
    """
    folder = Path(folder)
    if folder.exists():
        if not overwrite:
            raise InputError(folder, "exists; pass overwrite=True (--overwrite) to replace it")
        read_meta(folder)  # refuses anything but a property dataset
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        files = {}
        for name, array in arrays.items():
            path = tmp / f"{name}.npy"
            with open(path, "wb") as handle:
                np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
                handle.flush()
                os.fsync(handle.fileno())
            files[path.name] = file_sha256(path)
        record = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta, "files": files}
        with open(tmp / META, "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        fsync_dir(tmp)
        _replace_folder(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return folder


def read_meta(folder: str | os.PathLike) -> dict:
    """``meta.json`` of a dataset folder; InputError naming the folder when it is missing,
    unreadable, of another format, or of a newer format version."""
    folder = Path(folder)
    path = folder / META
    if not folder.is_dir():
        raise InputError(folder, "no such dataset folder")
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(folder, f"not a property dataset (no {META})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"unreadable ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(path, f"not a {FORMAT} folder")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise InputError(path, f"format {meta['format_version']} is newer than this "
                         f"force2geo ({FORMAT_VERSION}); upgrade force2geo")
    return meta


def read_columns(folder: str | os.PathLike, names: Sequence[str],
                 mmap: bool = True) -> dict[str, np.ndarray]:
    """The ``NAME.npy`` arrays of ``folder`` (memory-mapped read-only with ``mmap``)."""
    folder = Path(folder)
    arrays = {}
    for name in names:
        path = folder / f"{name}.npy"
        try:
            arrays[name] = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except FileNotFoundError:
            raise InputError(folder, f"missing column file {path.name}") from None
        except ValueError as exc:
            raise InputError(path, f"not a readable .npy column ({exc})") from None
    return arrays


def verify_files(folder: str | os.PathLike, files: dict[str, str]) -> None:
    """Raise InputError on the first file whose SHA-256 differs from ``files``."""
    for name, digest in files.items():
        path = Path(folder) / name
        if not path.is_file():
            raise InputError(path, "missing dataset file")
        if file_sha256(path) != digest:
            raise InputError(path, "checksum mismatch (corrupt file)")


def _replace_folder(tmp: Path, folder: Path) -> None:
    """Rename ``tmp`` to ``folder``; an existing ``folder`` is moved aside first and
    removed only after the new one is in place."""
    old = None
    if folder.exists():
        old = folder.parent / f".{folder.name}.old-{os.getpid()}"
        os.rename(folder, old)
    os.rename(tmp, folder)
    fsync_dir(folder.parent)
    if old is not None:
        shutil.rmtree(old)
