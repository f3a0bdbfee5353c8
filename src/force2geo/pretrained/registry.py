"""The registry of shipped models, and the one resolver of every way to name a model.

The shipped models live in one folder, :data:`WEIGHTS_DIR` (package data,
``force2geo/pretrained/weights/``; the environment variable ``FORCE2GEO_WEIGHTS`` names
another): the weight files (inference checkpoints written by
:func:`~force2geo.pretrained.export.export_pretrained`), a model card per model and
``registry.json``, which lists each model with its files, their SHA-256 and size, the level
of theory of its training labels and its units. A model of several files is an ensemble.
An entry's ``kind`` says what it predicts: ``mlip`` (a potential: energy and forces; read
by :func:`resolve_model`) or ``property`` (a property model of ``force2geo finetune``, e.g.
the HOMO-LUMO gap; read by :func:`~force2geo.pretrained.properties.load_property_model`).
A file is loaded only after its SHA-256 matches the registry, so a truncated download, a
damaged install or a file replaced without re-registering fails loudly instead of giving
wrong energies.

``registry.json``::

    {"format": "force2geo-pretrained-registry", "format_version": 1,
     "models": {"force2geo-painn-xtb": {"description": ..., "level_of_theory": ...,
                "units": {...}, "license": "MIT", "card": "force2geo-painn-xtb.md",
                "kind": "mlip",
                "files": [{"file": "force2geo-painn-xtb.pt", "sha256": ..., "size": ...}]}}}

(A registry written before ``kind`` existed lists potentials only: a missing ``kind`` is
``mlip``.)
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from force2geo.atomic import write_json
from force2geo.errors import InputError
from force2geo.units import UNITS

DEFAULT = "force2geo-painn-xtb"
DEFAULT_PROPERTY = "force2geo-gap-xtb"  # the shipped HOMO-LUMO gap model of force2geo predict
KINDS = ("mlip", "property")
KIND_WORDS = {"mlip": "potential (an MLIP: energy and forces)",
              "property": "property model (force2geo finetune)"}
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
WEIGHTS_ENV = "FORCE2GEO_WEIGHTS"
REGISTRY = "registry.json"
REGISTRY_FORMAT = "force2geo-pretrained-registry"
REGISTRY_VERSION = 1
RUN_CHECKPOINTS = ("best.pt", "last.pt")  # in a run folder, the first that exists is used
HOW_TO_MAKE = ("make it with scripts/make_pretrained.sh, or pass --model with a checkpoint "
               "of 'force2geo train' (or its run folder) or the paper's released PaiNN "
               "checkpoint")
HOW_TO_MAKE_PROPERTY = ("train one with 'force2geo finetune' and export its best.pt with "
                        "'python -m force2geo.pretrained export RUN_DIR --name "
                        f"{DEFAULT_PROPERTY}', or pass --property-model with a property "
                        "checkpoint (best.pt of 'force2geo finetune') or its run folder")


@dataclass(frozen=True)
class WeightFile:
    """One weight file of a shipped model: its name in the weights folder, SHA-256, bytes."""

    file: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Entry:
    """A shipped model: its ``files`` (several: an ensemble), what it is (``description``),
    the ``level_of_theory`` of its training labels, ``units`` of its outputs, ``license``,
    the file name of its model ``card`` (None until one is written) and its ``kind``
    (:data:`KINDS`: ``mlip`` a potential, ``property`` a property model). An ensemble's
    ``ensemble`` settings (``drive``, ``flag_forces_std``) are passed to
    :class:`~force2geo.pretrained.Ensemble` when it is loaded by name."""

    name: str
    files: tuple[WeightFile, ...]
    description: str = ""
    level_of_theory: str = ""
    units: dict = field(default_factory=lambda: dict(UNITS))
    license: str = "MIT"
    card: str | None = None
    kind: str = "mlip"
    ensemble: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"model {self.name}: kind must be one of {KINDS}, got "
                             f"{self.kind!r}")

    @property
    def is_ensemble(self) -> bool:
        return len(self.files) > 1

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        del out["name"]
        return out

    @classmethod
    def from_dict(cls, name: str, values: dict) -> Entry:
        files = tuple(WeightFile(**f) for f in values.get("files", ()))
        rest = {k: v for k, v in values.items() if k != "files"}
        return cls(name=name, files=files, **rest)


def weights_dir() -> Path:
    """The folder of the shipped models: ``$FORCE2GEO_WEIGHTS`` when set (a folder of one's
    own exported models), else :data:`WEIGHTS_DIR` (both read when called)."""
    return Path(os.environ.get(WEIGHTS_ENV) or WEIGHTS_DIR)


def read_registry(folder: str | os.PathLike | None = None) -> dict[str, Entry]:
    """The models listed in ``folder/registry.json`` (default folder: :func:`weights_dir`);
    {} when there is no registry file."""
    path = Path(folder or weights_dir()) / REGISTRY
    if not path.is_file():
        return {}
    try:
        content = json.loads(path.read_text())
        if content.get("format") != REGISTRY_FORMAT:
            raise ValueError(f"format is {content.get('format')!r}, not {REGISTRY_FORMAT!r}")
        return {name: Entry.from_dict(name, values)
                for name, values in content.get("models", {}).items()}
    except (ValueError, TypeError, AttributeError) as exc:
        raise InputError(path, f"not a readable model registry ({exc})") from None


def register(entry: Entry, folder: str | os.PathLike | None = None) -> Path:
    """Add ``entry`` to ``folder/registry.json`` (replacing a model of the same name),
    atomically; return the registry's path."""
    folder = Path(folder or weights_dir())
    models = {name: e.to_dict() for name, e in read_registry(folder).items()}
    models[entry.name] = entry.to_dict()
    content = {"format": REGISTRY_FORMAT, "format_version": REGISTRY_VERSION,
               "models": dict(sorted(models.items()))}
    return write_json(folder / REGISTRY, content, indent=1)


def _entry(name: str, folder: Path, kind: str = "mlip") -> Entry:
    registry = read_registry(folder)
    if name in registry and registry[name].files:
        if registry[name].kind != kind:
            raise InputError(name, f"is a shipped {KIND_WORDS[registry[name].kind]}; "
                             f"{KIND_WORDS[kind]} is needed here")
        return registry[name]
    if name == DEFAULT and kind == "mlip":
        raise InputError(folder / REGISTRY, f"no shipped model yet ({DEFAULT} is not "
                         f"there): {HOW_TO_MAKE}")
    if name == DEFAULT_PROPERTY and kind == "property":
        raise InputError(folder / REGISTRY, f"no shipped property model yet "
                         f"({DEFAULT_PROPERTY} is not there): {HOW_TO_MAKE_PROPERTY}")
    shipped = ", ".join(sorted(n for n, e in registry.items() if e.kind == kind)) or "none"
    raise InputError(name, f"no such checkpoint file, run folder or shipped {kind} model "
                     f"(shipped: {shipped})")


def shipped_files(name: str | None = None, folder: str | os.PathLike | None = None,
                  kind: str = "mlip") -> list[Path]:
    """The weight files of shipped model ``name`` of ``kind`` (default: :data:`DEFAULT`,
    or :data:`DEFAULT_PROPERTY` for ``property``), each checked against the registry's
    SHA-256; :class:`InputError` when one is missing or differs, or the entry is of
    another kind."""
    from force2geo.atomic import file_sha256

    folder = Path(folder or weights_dir())
    entry = _entry(name or (DEFAULT_PROPERTY if kind == "property" else DEFAULT), folder, kind)
    paths = []
    for weight in entry.files:
        path = folder / weight.file
        if not path.is_file():
            raise InputError(path, f"listed for {entry.name} in {REGISTRY} but missing: "
                             f"reinstall force2geo, or {HOW_TO_MAKE}")
        digest = file_sha256(path)
        if digest != weight.sha256:
            raise InputError(path, f"SHA-256 {digest} differs from the registry's "
                             f"{weight.sha256}: the file is damaged or was replaced without "
                             f"being registered; reinstall force2geo or export it again")
        paths.append(path)
    return paths


def model_files(spec: str | os.PathLike | None = None,
                folder: str | os.PathLike | None = None, kind: str = "mlip") -> list[Path]:
    """The files a model ``spec`` names (see :func:`resolve_model`), shipped ones checked;
    ``kind`` says which shipped models a name (or None, the default) may pick.

    A run folder of ``force2geo train`` (or ``force2geo finetune``) stands for its
    ``best.pt`` (else ``last.pt``).
    """
    if spec is None:
        return shipped_files(None, folder, kind)
    path = Path(spec)
    if path.exists():
        return [run_checkpoint(path)]
    return shipped_files(os.fspath(spec), folder, kind)


def run_checkpoint(path: str | os.PathLike) -> Path:
    """``path`` itself when it is a file; for a run folder of ``force2geo train`` its
    ``best.pt``, else its ``last.pt``."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise InputError(path, "no such checkpoint file or run folder")
    for name in RUN_CHECKPOINTS:
        if (path / name).is_file():
            return path / name
    raise InputError(path, f"a folder without {' or '.join(RUN_CHECKPOINTS)} "
                     "(not a run of force2geo train)")


def load_pretrained(name: str | None = None, device: str | torch.device = "cpu",
                    dtype: torch.dtype | None = None,
                    folder: str | os.PathLike | None = None):
    """The shipped model ``name`` (default :data:`DEFAULT`): a
    :class:`~force2geo.models.Potential`, or an :class:`~force2geo.pretrained.Ensemble`
    when it has several files; in eval mode on ``device``, in ``dtype`` (default: the
    stored float32). Raises :class:`InputError` saying what to do when none is shipped."""
    return _load(shipped_files(name, folder), device, dtype, ensemble_settings(name, folder))


def resolve_model(spec: str | os.PathLike | Sequence | None = None,
                  device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                  folder: str | os.PathLike | None = None):
    """The model ``spec`` names, ready for inference (eval mode, on ``device``).

    ``spec``: None (the default shipped model), a shipped model's name, a checkpoint of
    ``force2geo train`` (or its run folder), an exported model file, the paper's released
    PaiNN checkpoint (or a fairchem/OC20 PaiNN checkpoint), or a list of such specs,
    which makes an :class:`~force2geo.pretrained.Ensemble`. Files are read by
    :func:`~force2geo.training.checkpoint.load_potential`.
    """
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise InputError("model", "an empty list of models")
        paths = [p for item in spec for p in model_files(item, folder)]
        settings = {}
    else:
        paths = model_files(spec, folder)
        settings = {} if spec is not None and Path(spec).exists() else \
            ensemble_settings(spec, folder)
    return _load(paths, device, dtype, settings)


def ensemble_settings(name: str | None = None, folder: str | os.PathLike | None = None
                      ) -> dict:
    """The registered ``ensemble`` settings of shipped model ``name`` (default
    :data:`DEFAULT`); {} when it has none."""
    folder = Path(folder or weights_dir())
    entry = read_registry(folder).get(name or DEFAULT)
    return dict(entry.ensemble) if entry is not None else {}


def _load(paths: list[Path], device, dtype, settings: dict | None = None):
    from force2geo.pretrained.ensemble import Ensemble
    from force2geo.training.checkpoint import load_potential

    members = [load_potential(p, device=device, dtype=dtype) for p in paths]
    if len(members) == 1:
        return members[0]
    settings = settings or {}
    return Ensemble(members, drive=settings.get("drive", "mean"),
                    flag_forces_std=settings.get("flag_forces_std")).eval()


def model_identity(spec: str | os.PathLike | Sequence | None = None) -> dict:
    """What identifies the model ``spec`` names, for run records and resume checks:
    the spec as given and the absolute path and SHA-256 of each of its files."""
    from force2geo.atomic import file_sha256

    items = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    paths = [p.resolve() for item in items for p in model_files(item)]
    given = [None if s is None else os.fspath(s) for s in items]
    return {"spec": given if isinstance(spec, (list, tuple)) else given[0],
            "files": [{"path": str(p), "sha256": file_sha256(p)} for p in paths]}
