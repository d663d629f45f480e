"""The study file (``featstore study STUDY.toml``): parsed, checked and normalized in one place.

A study names data sets, models, inits and probe settings; :func:`parse_study` turns the TOML
text into a frozen :class:`StudyConfig` or raises :class:`StudyConfigError` -- one line naming
the file, the key, the bad value and what is allowed -- before anything is extracted::

    [study]
    name = "lung-colon"

    [[dataset]]
    name = "lung"
    data = "lc25000_lung"             # relative to the study file: ImageFolder, CSV, npz, PCam
    [[dataset]]
    name = "crc"
    data = "kather2016_crc"
    group_regex = 'CRC-Prim-HE-(\\d+)'  # or: group = "patient" (an extra manifest column)
    folds = 3                         # optional: this data set's folds

    [extract]
    models = ["efficientnet_lite0"]
    inits = ["pretrained", "random:0-4"]
    image_size = 224                  # optional, default the model's
    scheduler = "local:2"             # optional, see featstore.extract

    [probe]
    classifiers = ["logreg"]
    folds = 5
    seed = 0

Only :func:`read_study` touches a file (and checks that each data path exists); the rest is
pure.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final

from .config import DEFAULT_MARGIN
from .errors import FeatstoreInputError

__all__ = [
    "StudyConfigError",
    "DatasetSpec",
    "StudyConfig",
    "STUDY_KEYS",
    "parse_study",
    "read_study",
    "store_name",
]

#: allowed keys of each table of a study file (``dataset`` is an array of tables)
STUDY_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "study": ("name", "description"),
    "dataset": ("name", "data", "group", "group_regex", "folds"),
    "extract": ("models", "inits", "image_size", "scheduler", "batch_size", "device", "layers",
                "pool"),
    "probe": ("classifiers", "folds", "seed", "n_boot", "margin", "leak_check", "scheduler"),
}
#: names of data sets and studies: they become file names
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class StudyConfigError(FeatstoreInputError):
    """A study file is missing, malformed, or names something that does not exist."""


@dataclass(frozen=True)
class DatasetSpec:
    """One data set of a study.

    Attributes
    ----------
    name : str
        Short name (a file name part: letters, digits, ``_ . -``; no ``__``).
    data : str
        Absolute path of the data (ImageFolder, CSV manifest, MedMNIST npz, PCam files).
    group : str or None
        An image coordinate (an extra manifest column such as ``patient``) to group folds by.
    group_regex : str or None
        Or: a regular expression whose first capture group, searched in each image's path, is
        its group.
    folds : int or None
        This data set's number of folds (default: the study's).
    """

    name: str
    data: str
    group: str | None = None
    group_regex: str | None = None
    folds: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {"name": self.name, "data": self.data, "group": self.group,
                "group_regex": self.group_regex, "folds": self.folds}


@dataclass(frozen=True)
class StudyConfig:
    """A whole study: data sets x models, the inits to extract, and how to probe.

    Attributes
    ----------
    name : str
        The study's name.
    datasets : tuple of DatasetSpec
        In file order.
    models : tuple of str
        Model names (``featstore layers --list``).
    inits : tuple of str
        ``--init`` values (seed ranges allowed), e.g. ``("pretrained", "random:0-4")``.
    image_size : int or None
        Side length after resizing; None takes each model's standard size.
    extract_scheduler : str or None
        ``featstore.extract(scheduler=...)``: None (in this process), ``"local:N"``,
        ``"tcp://HOST:PORT"``.
    batch_size : int
    device : str
    layers : tuple of str
        ``("auto",)`` or module paths.
    pool : str
    classifiers : tuple of str
    folds, seed : int
    n_boot : int
        Bootstrap replicates of the gain's interval.
    margin : float
        Non-inferiority margin of the sweet spot.
    leak_check : bool
    probe_scheduler : str or None
    description : str
    """

    name: str
    datasets: tuple[DatasetSpec, ...]
    models: tuple[str, ...]
    inits: tuple[str, ...]
    image_size: int | None = None
    extract_scheduler: str | None = None
    batch_size: int = 32
    device: str = "auto"
    layers: tuple[str, ...] = ("auto",)
    pool: str = "avg"
    classifiers: tuple[str, ...] = ("logreg",)
    folds: int = 5
    seed: int = 0
    n_boot: int = 1000
    margin: float = DEFAULT_MARGIN
    leak_check: bool = True
    probe_scheduler: str | None = None
    description: str = ""
    source: str = field(default="", compare=False)

    def folds_of(self, dataset: DatasetSpec) -> int:
        """The number of folds of one data set."""
        return dataset.folds if dataset.folds is not None else self.folds

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (recorded in ``DIR/study.json``)."""
        return {
            "name": self.name, "description": self.description,
            "datasets": [d.to_dict() for d in self.datasets],
            "models": list(self.models), "inits": list(self.inits),
            "image_size": self.image_size, "extract_scheduler": self.extract_scheduler,
            "batch_size": self.batch_size, "device": self.device, "layers": list(self.layers),
            "pool": self.pool, "classifiers": list(self.classifiers), "folds": self.folds,
            "seed": self.seed, "n_boot": self.n_boot, "margin": self.margin,
            "leak_check": self.leak_check, "probe_scheduler": self.probe_scheduler,
        }


def store_name(dataset: str, model: str) -> str:
    """File name of the store of one data set and model: ``<dataset>__<model>.zarr``; characters
    of the model name that do not belong in a file name (``:``, ``/``, ``(``...) become ``-``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "-", model)
    return f"{dataset}__{safe}.zarr"


class _Reader:
    """Checks one study document, naming the file and the key in every error."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, message: str) -> StudyConfigError:
        return StudyConfigError(f"study file '{self.source}': {key}: {message}")

    def table(self, doc: Mapping[str, Any], name: str, required: bool) -> dict[str, Any]:
        value = doc.get(name)
        if value is None:
            if required:
                raise self.fail(f"[{name}]", f"missing; add a [{name}] table "
                                             f"(keys: {', '.join(STUDY_KEYS[name])})")
            return {}
        if not isinstance(value, dict):
            raise self.fail(name, f"must be a table [{name}], not {type(value).__name__}")
        self.known(value, name)
        return value

    def known(self, table: Mapping[str, Any], name: str) -> None:
        for key in table:
            if key not in STUDY_KEYS[name]:
                raise self.fail(f"{name}.{key}", f"unknown key; allowed in [{name}]: "
                                                 f"{', '.join(STUDY_KEYS[name])}")

    def string(self, table: Mapping[str, Any], key: str, where: str, default: str | None = None,
               required: bool = False) -> str | None:
        value = table.get(key, default)
        if value is None:
            if required:
                raise self.fail(f"{where}.{key}", "missing; it is required")
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(f"{where}.{key}", f"must be a non-empty string, not {value!r}")
        return value.strip()

    def text(self, table: Mapping[str, Any], key: str, where: str,
             default: str | None = None) -> str:
        """A required string (or ``default`` when given and the key is absent)."""
        value = self.string(table, key, where, default=default, required=True)
        if value is None:  # unreachable: string() raised for a missing required key
            raise self.fail(f"{where}.{key}", "missing; it is required")
        return value

    def strings(self, table: Mapping[str, Any], key: str, where: str,
                default: Sequence[str] | None = None) -> tuple[str, ...]:
        value = table.get(key, default)
        if value is None:
            raise self.fail(f"{where}.{key}", "missing; give a list of strings, e.g. "
                                              f"{key} = [\"...\"]")
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple) or not value or not all(
                isinstance(v, str) and v.strip() for v in value):
            raise self.fail(f"{where}.{key}", f"must be a non-empty list of strings, not "
                                              f"{value!r}")
        return tuple(v.strip() for v in value)

    def integer(self, table: Mapping[str, Any], key: str, where: str, default: int | None,
                minimum: int) -> int | None:
        value = table.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(f"{where}.{key}", f"must be an integer >= {minimum}, not {value!r}")
        return int(value)

    def check(self, key: str, parse: Callable[[], object]) -> None:
        """Run an existing ``parse_*`` and name the study key in its error."""
        try:
            parse()
        except FeatstoreInputError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise self.fail(key, first) from None


def parse_study(text: str, base: str | Path = ".", source: str = "<study>",
                exists: Callable[[str], bool] | None = None) -> StudyConfig:
    """Parse and check a study document.

    Parameters
    ----------
    text : str
        TOML text.
    base : str or Path
        Folder that relative ``data`` paths are relative to (the study file's folder).
    source : str
        Name of the document in error messages.
    exists : callable, optional
        ``exists(path) -> bool`` for data paths; default: no check (pure).

    Returns
    -------
    StudyConfig

    Raises
    ------
    StudyConfigError
        One line naming the key: unknown keys, missing or mistyped values, duplicate data set
        names, data that does not exist, unknown models, bad inits or classifiers, inits
        without a ``pretrained`` and a baseline init.
    """
    reader = _Reader(source)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise StudyConfigError(f"study file '{source}' is not valid TOML: {exc}") from None
    for key in doc:
        if key not in STUDY_KEYS:
            raise reader.fail(key, f"unknown table or key; allowed: "
                                   f"{', '.join('[' + k + ']' for k in STUDY_KEYS)}")
    study = reader.table(doc, "study", required=False)
    name = reader.text(study, "name", "study", default=Path(source).stem or "study")
    if not _NAME.match(name):
        raise reader.fail("study.name", f"{name!r} must be letters, digits, _ . - only")
    description = reader.string(study, "description", "study", default="") \
        if study.get("description") else ""
    datasets = _datasets(reader, doc.get("dataset"), Path(base), exists)
    extract = reader.table(doc, "extract", required=True)
    probe = reader.table(doc, "probe", required=False)
    config = StudyConfig(
        name=name,
        description=description or "",
        datasets=datasets,
        models=reader.strings(extract, "models", "extract"),
        inits=reader.strings(extract, "inits", "extract"),
        image_size=reader.integer(extract, "image_size", "extract", None, 8),
        extract_scheduler=reader.string(extract, "scheduler", "extract"),
        batch_size=reader.integer(extract, "batch_size", "extract", 32, 1) or 32,
        device=reader.string(extract, "device", "extract", default="auto") or "auto",
        layers=reader.strings(extract, "layers", "extract", default=("auto",)),
        pool=reader.string(extract, "pool", "extract", default="avg") or "avg",
        classifiers=reader.strings(probe, "classifiers", "probe", default=("logreg",)),
        folds=reader.integer(probe, "folds", "probe", 5, 2) or 5,
        seed=reader.integer(probe, "seed", "probe", 0, 0) or 0,
        n_boot=reader.integer(probe, "n_boot", "probe", 1000, 1) or 1000,
        margin=_margin(reader, probe),
        leak_check=_boolean(reader, probe, "leak_check", "probe", True),
        probe_scheduler=reader.string(probe, "scheduler", "probe"),
        source=source,
    )
    _check_semantics(reader, config)
    return config


def _margin(reader: _Reader, probe: Mapping[str, Any]) -> float:
    value = probe.get("margin", DEFAULT_MARGIN)
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or not 0 < value < 1:
        raise reader.fail("probe.margin", f"must be a number in (0, 1), not {value!r}")
    return float(value)


def _boolean(reader: _Reader, table: Mapping[str, Any], key: str, where: str,
             default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise reader.fail(f"{where}.{key}", f"must be true or false, not {value!r}")
    return value


def _datasets(reader: _Reader, value: Any, base: Path,
              exists: Callable[[str], bool] | None) -> tuple[DatasetSpec, ...]:
    if value is None:
        raise reader.fail("[[dataset]]", "missing; add one [[dataset]] table per data set "
                                         "with name and data")
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise reader.fail("dataset", "must be an array of tables [[dataset]]")
    out: list[DatasetSpec] = []
    seen: set[str] = set()
    for k, table in enumerate(value):
        where = f"dataset[{k}]"
        reader.known(table, "dataset")
        name = reader.text(table, "name", where)
        where = f"dataset '{name}'"
        if not _NAME.match(name) or "__" in name:
            raise reader.fail(f"{where}.name", "must be letters, digits, _ . - without '__' "
                                               "(it names the store files)")
        if name in seen:
            raise reader.fail(f"{where}.name", f"duplicate data set name {name!r}; every "
                                               "[[dataset]] needs its own name")
        seen.add(name)
        data = reader.text(table, "data", where)
        path = Path(data).expanduser()
        full = str(path if path.is_absolute() else (base / path))
        if exists is not None and not exists(full):
            raise reader.fail(f"{where}.data", f"'{data}' does not exist (looked for {full}); "
                                               "paths are relative to the study file")
        group = reader.string(table, "group", where)
        regex = reader.string(table, "group_regex", where)
        if group is not None and regex is not None:
            raise reader.fail(f"{where}.group", "give group (an image coordinate) or "
                                                "group_regex (on the paths), not both")
        if regex is not None:
            from .leaks import parse_group_regex

            reader.check(f"{where}.group_regex", partial(parse_group_regex, regex))
        out.append(DatasetSpec(name, full, group, regex,
                               reader.integer(table, "folds", where, None, 2)))
    if not out:
        raise reader.fail("[[dataset]]", "no data set; add at least one [[dataset]]")
    return tuple(out)


def _check_semantics(reader: _Reader, config: StudyConfig) -> None:
    """Models, inits, classifiers and schedulers through featstore's own parsers."""
    from .config import parse_choice
    from .gain import check_gain_inits
    from .inits import parse_inits
    from .models import model_entry
    from .probing import parse_classifiers
    from .scheduler import parse_scheduler

    models = list(config.models)
    if len(set(models)) != len(models):
        twice = next(m for m in models if models.count(m) > 1)
        raise reader.fail("extract.models", f"model {twice!r} is listed twice")
    names = {store_name("x", m) for m in models}
    if len(names) != len(models):
        raise reader.fail("extract.models", "two model names give the same store file name")
    for model in models:
        reader.check("extract.models", partial(model_entry, model))
    specs: list[Any] = []
    reader.check("extract.inits", lambda: specs.extend(parse_inits(list(config.inits))))
    reader.check("extract.inits", lambda: check_gain_inits([s.name for s in specs]))
    reader.check("extract.pool", lambda: parse_choice("pool", config.pool, ("avg", "max", "cls")))
    reader.check("extract.device", lambda: parse_choice("device", config.device,
                                                        ("auto", "cpu", "cuda")))
    reader.check("probe.classifiers", lambda: parse_classifiers(list(config.classifiers)))
    if config.probe_scheduler is not None:
        reader.check("probe.scheduler", lambda: parse_scheduler(config.probe_scheduler))
    if config.extract_scheduler is not None:
        kind: list[str] = []
        reader.check("extract.scheduler",
                     lambda: kind.append(parse_scheduler(config.extract_scheduler)[0]))
        if kind[0] not in ("local", "distributed"):
            raise reader.fail("extract.scheduler", f"{config.extract_scheduler!r}: extraction "
                                                   "runs as dask tasks with local:N or "
                                                   "tcp://HOST:PORT; leave it out to extract "
                                                   "in this process")


def read_study(path: str | Path) -> StudyConfig:
    """Read, parse and check a study file; relative data paths are relative to its folder.

    Raises
    ------
    StudyConfigError
        When the file cannot be read, or see :func:`parse_study`.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StudyConfigError(f"study file '{file}' does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StudyConfigError(f"cannot read study file '{file}': {exc}") from None
    return parse_study(text, file.resolve().parent, str(file),
                       exists=lambda p: Path(p).exists())
