"""Image sources: folders, CSV manifests, MedMNIST ``.npz`` and PatchCamelyon HDF5 -> RGB images.

A source lists its images once, in a deterministic order, so the image index of the store is
reproducible: an ImageFolder or manifest by sorted relative path, an array file by split
(``train``, ``val``, ``test``) then position. Decoding converts any mode (grayscale, RGBA,
palette, 16-bit, float, CMYK) to 8-bit RGB and turns every decoding failure into
:class:`UnreadableImageError`, one line naming the image and the reason.

Which source a DATA argument opens is decided by :func:`open_source`:

====================================================  ===================
DATA                                                  source
====================================================  ===================
directory holding ``*_x.h5`` files (and no folders)   :class:`PCamSource`
any other directory                                   :class:`ImageFolderSource`
``*.csv``                                             :class:`ManifestSource`
``*.npz``                                             :class:`NpzSource`
``*_x.h5`` (or its ``*_y.h5`` partner)                :class:`PCamSource`
====================================================  ===================
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import re
import warnings
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .errors import DataSourceError, UnreadableImageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_IMAGE_PIXELS",
    "ImageRecord",
    "ImageSource",
    "ImageFolderSource",
    "ManifestSource",
    "NpzSource",
    "PCamSource",
    "open_source",
    "RESERVED_COLUMNS",
    "parse_extra_columns",
    "to_rgb",
    "decode_image",
    "preprocess",
]

#: file name extensions read as images (lower case)
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".ppm", ".pgm"}
)
#: images with more pixels than this are refused (decompression-bomb protection): 16k x 16k.
#: Pillow's own hard limit (``2 * PIL.Image.MAX_IMAGE_PIXELS``, about 179 megapixels by default)
#: applies as well, so the effective limit is the smaller of the two.
MAX_IMAGE_PIXELS: int = 16384 * 16384

#: the resampling filters of :func:`preprocess` (torchvision's InterpolationMode names)
_PIL_FILTERS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}
_TIFF_EXTENSIONS = frozenset({".tif", ".tiff"})
#: the splits of array sources, in store order, with the names their files use
_SPLITS: tuple[str, ...] = ("train", "val", "test")
_PCAM_SPLIT_NAMES = {"train": "train", "valid": "val", "val": "val", "test": "test"}
_PCAM_PATTERN = re.compile(r"^(?P<stem>.*?)(?P<split>train|valid|val|test)?_x\.h5$")
_PCAM_CLASSES = ("no_tumor", "tumor")
#: manifest columns that are not kept as extra image coordinates: the manifest's own columns
#: and the names the store and the probe results already use along ``image``
RESERVED_COLUMNS: frozenset[str] = frozenset(
    {"path", "label", "split", "image", "init", "valid", "group", "test_fold", "prediction"})
_COLUMN_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class ImageRecord:
    """One image of a source.

    Attributes
    ----------
    path : str
        Location relative to the source root, with ``/`` separators (for array sources a stable
        id such as ``"train/0000123"``).
    label : int
        Class index into the source's ``classes``.
    split : str or None
        The data's own split (``"train"``, ``"val"``, ``"test"``) when it has one.
    """

    path: str
    label: int
    split: str | None = None


class ImageSource(ABC):
    """An ordered, labelled collection of images.

    Attributes
    ----------
    kind : str
        Short name of the source type (``"imagefolder"``, ``"manifest"``, ``"npz"``, ``"pcam"``).
    root : str
        Directory (or array file) that record paths are relative to.
    classes : list of str
        Class names; a record's ``label`` indexes this list.
    records : list of ImageRecord
        The images in store order.
    """

    kind: str = "abstract"

    def __init__(self, root: str, classes: list[str], records: list[ImageRecord],
                 columns: Mapping[str, Sequence[str]] | None = None) -> None:
        if not records:
            raise DataSourceError(f"no images found in '{root}'")
        self.root = root
        self.classes = classes
        self.records = records
        #: extra per-image text columns (a manifest's ``patient``, ``slide``...): column name ->
        #: one value per record, in record order; empty for sources without them
        self.columns: dict[str, tuple[str, ...]] = {
            name: tuple(str(v) for v in values) for name, values in (columns or {}).items()}

    def __len__(self) -> int:
        return len(self.records)

    @property
    def has_splits(self) -> bool:
        """Whether every record carries a split name."""
        return all(r.split is not None for r in self.records)

    @property
    def labels(self) -> np.ndarray:
        """Class index per image, array of shape (n_images,), int64."""
        return np.array([r.label for r in self.records], dtype=np.int64)

    @abstractmethod
    def load(self, index: int) -> Image.Image:
        """Decode image ``index`` as 8-bit RGB; raise :class:`UnreadableImageError` on failure."""

    def fingerprint(self) -> str:
        """SHA-256 over classes and (path, label, split) of every record, in order.

        Two sources with the same fingerprint give the same store rows; the root directory is not
        part of it, so a moved data folder still matches its store.
        """
        digest = hashlib.sha256()
        digest.update(json.dumps(self.classes).encode())
        for record in self.records:
            digest.update(json.dumps([record.path, record.label, record.split]).encode())
        return digest.hexdigest()

    def describe(self) -> dict[str, Any]:
        """JSON-able summary recorded in the store (``columns`` only when there are some)."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "root": self.root,
            "n_images": len(self.records),
            "classes": list(self.classes),
            "fingerprint": self.fingerprint(),
        }
        if self.columns:
            out["columns"] = list(self.columns)
        return out


class _FileSource(ImageSource):
    """A source whose records are image files below ``root``."""

    def load(self, index: int) -> Image.Image:
        record = self.records[index]
        return decode_image(os.path.join(self.root, record.path), display_path=record.path)


class ImageFolderSource(_FileSource):
    """An ImageFolder tree: one subfolder per class, images anywhere below it.

    Classes are the sorted subfolder names (or ``classes`` when given); images are taken in
    sorted path order. Hidden files and folders and files without an image extension are
    ignored. Symbolic links to files are followed; symbolic links to folders below a class
    folder are not descended into (so a link loop cannot recurse), and broken links (dangling,
    or a loop of file links) are skipped and listed in :attr:`skipped`.

    Parameters
    ----------
    root : str or PathLike
        The folder holding one subfolder per class.
    classes : sequence of str, optional
        Class names in label order. Every class folder must be one of them; a class without a
        folder has no images.

    Attributes
    ----------
    skipped : list of str
        Relative paths of broken symbolic links that were left out.
    """

    kind = "imagefolder"

    def __init__(
        self, root: str | os.PathLike[str], classes: Sequence[str] | None = None
    ) -> None:
        root_path = Path(root)
        try:
            folders = sorted(
                p.name for p in root_path.iterdir() if p.is_dir() and not p.name.startswith(".")
            )
        except OSError as exc:
            raise DataSourceError(f"cannot list data folder '{root}': {exc.strerror}") from None
        if not folders:
            raise DataSourceError(
                f"data folder '{root}' has no class subfolders; expected DATA/<class>/<image> "
                "or a CSV manifest with columns path,label[,split]"
            )
        if classes is None:
            names = folders
        else:
            names = _parse_classes(classes)
            unknown = [f for f in folders if f not in names]
            if unknown:
                raise DataSourceError(
                    f"data folder '{root}' has class folder '{unknown[0]}' that is not among "
                    f"the given classes {names}; add it to classes or move the folder away"
                )
        records: list[ImageRecord] = []
        self.skipped: list[str] = []
        label_of = {name: i for i, name in enumerate(names)}
        for name in folders:  # path order, whatever the label order
            found, broken = _walk_images(root_path / name)
            self.skipped.extend(p.relative_to(root_path).as_posix() for p in broken)
            for path in found:
                records.append(ImageRecord(path.relative_to(root_path).as_posix(),
                                           label_of[name]))
        super().__init__(str(root_path), names, records)


class ManifestSource(_FileSource):
    """A CSV manifest with a header and columns ``path,label[,split]`` and any extra columns.

    Paths are relative to the manifest's folder (absolute paths inside it are allowed when they
    stay below that folder); ``..`` components are resolved without following links. Labels are
    class names; classes are sorted (numerically when all labels are numbers) unless
    ``classes`` gives them. Every other column (``patient``, ``slide``...) is kept as text in
    :attr:`columns` and becomes an image coordinate of the store (``featstore probe
    --group-by patient``); its name must not be one of :data:`RESERVED_COLUMNS`.

    Parameters
    ----------
    manifest : str or PathLike
        The CSV file.
    classes : sequence of str, optional
        Class names in label order; a label outside them is an error naming its line.
    """

    kind = "manifest"

    def __init__(
        self, manifest: str | os.PathLike[str], classes: Sequence[str] | None = None
    ) -> None:
        manifest_path = Path(manifest)
        root = manifest_path.parent.resolve()
        rows = _read_manifest(manifest_path)
        if classes is None:
            names = sorted({row["label"] for row in rows}, key=_label_sort_key)
        else:
            names = _parse_classes(classes)
        index = {name: i for i, name in enumerate(names)}
        has_split = all(row.get("split") for row in rows)
        records = []
        seen: dict[str, int] = {}
        for line, row in enumerate(rows, start=2):
            rel = _relative_inside(manifest_path, row["path"], line)
            if rel in seen:
                raise DataSourceError(
                    f"manifest '{manifest_path}' line {line}: duplicate path '{row['path']}' "
                    f"(also on line {seen[rel]}); each image may appear once"
                )
            seen[rel] = line
            if row["label"] not in index:
                raise DataSourceError(
                    f"manifest '{manifest_path}' line {line}: label '{row['label']}' is not "
                    f"among the given classes {names}"
                )
            split = row["split"] if has_split else None
            records.append(ImageRecord(rel, index[row["label"]], split))
        extra = parse_extra_columns(manifest_path, list(rows[0]))
        columns = {name: [row.get(name, "") for row in rows] for name in extra}
        super().__init__(str(root), names, records, columns)


class NpzSource(ImageSource):
    """A MedMNIST-style ``.npz`` file of image and label arrays.

    The file holds ``{split}_images`` of shape (n, height, width) or (n, height, width,
    channels) and ``{split}_labels`` of shape (n,) or (n, 1) for the splits ``train``, ``val``
    and ``test`` (any of them), or plain ``images`` and ``labels`` without a split. Records
    are the splits in that order, each in array order, with paths such as ``"train/0000123"``.
    Classes are ``"0"`` .. ``"K-1"`` unless the file holds a string array ``classes`` or
    ``label_names``, or ``classes`` is given.

    Image arrays are read lazily, one whole split array the first time one of its images is
    loaded, and cached in the process (an ``.npz`` member cannot be memory-mapped). The object
    pickles without its cache, so DataLoader workers read their own copy.

    Parameters
    ----------
    path : str or PathLike
        The ``.npz`` file.
    classes : sequence of str, optional
        Class names in label order; needs at least as many names as label values.
    """

    kind = "npz"

    def __init__(self, path: str | os.PathLike[str], classes: Sequence[str] | None = None) -> None:
        self.path = Path(path)
        self._cache: dict[str, np.ndarray] = {}
        if not zipfile.is_zipfile(self.path):
            raise DataSourceError(
                f"'{path}' is not a .npz array file (not a zip archive); expected a MedMNIST-"
                "style .npz with train_images/train_labels arrays"
            )
        try:
            with np.load(self.path, allow_pickle=False) as npz:
                keys = list(npz.files)
                groups = _npz_groups(self.path, keys)
                labels = {group: _npz_labels(self.path, npz, group) for group in groups}
                stored_classes = _npz_class_names(self.path, npz, keys)
            shapes = {group: _npz_member_shape(self.path, f"{_prefix(group)}images")
                      for group in groups}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise DataSourceError(
                f"cannot read '{path}' as a .npz array file: {_first_line(exc)}"
            ) from None
        records: list[ImageRecord] = []
        for group in groups:
            shape, dtype = shapes[group]
            _check_image_array(self.path, f"{_prefix(group)}images", shape, dtype,
                               len(labels[group]))
            split = group or None
            for i, label in enumerate(labels[group].tolist()):
                path_id = f"{group}/{i:07d}" if group else f"{i:07d}"
                records.append(ImageRecord(path_id, int(label), split))
        self._starts = _starts(groups, labels)
        names = _class_names(self.path, records, classes, stored_classes)
        super().__init__(str(self.path), names, records)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = {}
        return state

    def load(self, index: int) -> Image.Image:
        record = self.records[index]
        group = record.split or ""
        try:
            images = self._images(group)
            return _array_to_rgb(np.asarray(images[index - self._starts[group]]))
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise UnreadableImageError(record.path, _first_line(exc)) from None

    def _images(self, group: str) -> np.ndarray:
        if group not in self._cache:
            with np.load(self.path, allow_pickle=False) as npz:
                self._cache[group] = npz[f"{_prefix(group)}images"]
        return self._cache[group]


class PCamSource(ImageSource):
    """PatchCamelyon HDF5 files as torchvision lays them out.

    A folder holding ``camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5`` (any of the
    three pairs), or one ``..._x.h5`` file with its ``..._y.h5`` partner beside it. Each x file
    holds a dataset ``x`` of shape (n, 96, 96, 3) uint8 and each y file a dataset ``y`` of
    shape (n, 1, 1, 1) with the labels. Splits are named ``train``, ``val`` (from ``valid``)
    and ``test``; record paths are ``"train/0000123"``. Classes are ``no_tumor``, ``tumor``
    unless ``classes`` names them.

    HDF5 files are opened lazily, once per process, on the first :meth:`load` (never in
    ``__init__``), so the object pickles and forked DataLoader workers open their own handles.

    Parameters
    ----------
    path : str or PathLike
        The folder, or an ``_x.h5`` (or ``_y.h5``) file.
    classes : sequence of str, optional
        Class names in label order.
    """

    kind = "pcam"

    def __init__(self, path: str | os.PathLike[str], classes: Sequence[str] | None = None) -> None:
        self.path = Path(path)
        pairs = _pcam_pairs(self.path)
        self._files: dict[str, tuple[str, int]] = {}
        records: list[ImageRecord] = []
        for split, x_file, y_file in pairs:
            labels = _pcam_labels(x_file, y_file)
            group = split or ""
            self._files[group] = (str(x_file), len(records))
            for i, label in enumerate(labels.tolist()):
                path_id = f"{split}/{i:07d}" if split else f"{i:07d}"
                records.append(ImageRecord(path_id, int(label), split))
        self._handles: dict[str, Any] = {}
        self._pid = os.getpid()
        default = list(_PCAM_CLASSES) if max(r.label for r in records) < 2 else None
        names = _class_names(self.path, records, classes, default)
        root = self.path if self.path.is_dir() else self.path.parent
        super().__init__(str(root), names, records)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()

    def load(self, index: int) -> Image.Image:
        record = self.records[index]
        group = record.split or ""
        file_name, start = self._files[group]
        try:
            dataset = self._dataset(group, file_name)
            return _array_to_rgb(np.asarray(dataset[index - start]))
        except (OSError, ValueError, KeyError) as exc:
            raise UnreadableImageError(record.path, _first_line(exc)) from None

    def close(self) -> None:
        """Close the HDF5 handles this process opened (they reopen on the next load)."""
        for handle in self._handles.values():
            handle.close()
        self._handles = {}

    def _dataset(self, group: str, file_name: str) -> Any:
        if self._pid != os.getpid():  # a forked worker: never reuse the parent's handles
            self._handles = {}
            self._pid = os.getpid()
        if group not in self._handles:
            import h5py

            self._handles[group] = h5py.File(file_name, "r")
        return self._handles[group]["x"]


def open_source(
    data: str | os.PathLike[str], classes: Sequence[str] | None = None
) -> ImageSource:
    """Open DATA as an image source, choosing the source type from what DATA is.

    Parameters
    ----------
    data : str or PathLike
        An ImageFolder directory, a ``.csv`` manifest, a MedMNIST ``.npz`` file, a folder of
        PatchCamelyon ``.h5`` files or one PatchCamelyon ``_x.h5`` file.
    classes : sequence of str, optional
        Class names in label order (see each source for how they apply).

    Raises
    ------
    DataSourceError
        When DATA does not exist, is empty, malformed or of an unsupported type.
    """
    path = Path(data)
    if not path.exists():
        raise DataSourceError(
            f"data '{data}' does not exist; pass an ImageFolder directory, a CSV manifest, "
            "a .npz array file or a folder of PatchCamelyon .h5 files"
        )
    if path.is_dir():
        if _is_pcam_folder(path):
            return PCamSource(path, classes)
        return ImageFolderSource(path, classes)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return ManifestSource(path, classes)
    if suffix == ".npz":
        return NpzSource(path, classes)
    if suffix in (".h5", ".hdf5"):
        return PCamSource(path, classes)
    if path.name.lower().endswith(".h5.gz"):
        raise DataSourceError(
            f"data '{data}' is gzip-compressed; decompress it first (gunzip), or use "
            "`featstore datasets fetch pcam`, which does"
        )
    raise DataSourceError(
        f"data '{data}' is not a directory, .csv manifest, .npz or .h5 file; "
        "pass an ImageFolder directory, a CSV manifest with columns path,label[,split], "
        "a MedMNIST .npz or PatchCamelyon .h5 files"
    )


# ---------------------------------------------------------------------------------------------
# listing helpers


def _parse_classes(classes: Sequence[str]) -> list[str]:
    if isinstance(classes, str):
        raise DataSourceError(f"classes must be a list of names, not the string '{classes}'")
    names = [str(c) for c in classes]
    if not names:
        raise DataSourceError("classes is empty; give at least one class name")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DataSourceError(f"classes lists '{duplicates[0]}' more than once")
    return names


def _class_names(
    where: Path,
    records: list[ImageRecord],
    classes: Sequence[str] | None,
    default: list[str] | None,
) -> list[str]:
    """Names of integer labels: the given ones, the file's own, or ``"0"`` .. ``"K-1"``."""
    n_labels = max(r.label for r in records) + 1 if records else 0
    if classes is not None:
        names = _parse_classes(classes)
        origin = "the given classes"
    elif default is not None:
        names = list(default)
        origin = f"the class names stored in '{where}'"
    else:
        return [str(i) for i in range(n_labels)]
    if len(names) < n_labels:
        raise DataSourceError(
            f"'{where}' has label {n_labels - 1} but {origin} name only {len(names)} classes "
            f"({names}); give one name per label value"
        )
    return names


def _walk_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """Image files below ``folder`` (sorted) and broken symbolic links found on the way."""
    found: list[Path] = []
    broken: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            path = Path(dirpath) / name
            if path.is_symlink() and not path.is_file():
                broken.append(path)  # dangling, or a loop of links
                continue
            found.append(path)
    return sorted(found), sorted(broken)


def _label_sort_key(label: str) -> tuple[int, float, str]:
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def _read_manifest(manifest: Path) -> list[dict[str, str]]:
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in ("path", "label") if c not in columns]
            if missing:
                raise DataSourceError(
                    f"manifest '{manifest}' lacks column(s) {', '.join(missing)}; "
                    f"found {columns or 'no header'}; expected a header path,label[,split]"
                )
            rows = []
            for line, raw in enumerate(reader, start=2):
                row = {(k or "").strip(): _cell(v) for k, v in raw.items()}
                if not row.get("path") or not row.get("label"):
                    raise DataSourceError(
                        f"manifest '{manifest}' line {line}: empty path or label"
                    )
                rows.append(row)
    except UnicodeDecodeError as exc:
        raise DataSourceError(f"manifest '{manifest}' is not UTF-8 text: {exc.reason}") from None
    except csv.Error as exc:
        raise DataSourceError(f"manifest '{manifest}' is not valid CSV: {exc}") from None
    except OSError as exc:
        raise DataSourceError(f"cannot read manifest '{manifest}': {exc.strerror}") from None
    if not rows:
        raise DataSourceError(f"manifest '{manifest}' lists no images")
    return rows


def parse_extra_columns(manifest: str | os.PathLike[str], columns: Sequence[str]) -> list[str]:
    """The extra columns of a manifest header, in header order, checked as coordinate names.

    Parameters
    ----------
    manifest : str or PathLike
        The manifest (named in errors).
    columns : sequence of str
        Its header, stripped; empty names (a trailing comma) are ignored.

    Returns
    -------
    list of str
        Every column except ``path``, ``label`` and ``split``.

    Raises
    ------
    DataSourceError
        For a name the store already uses along ``image`` (:data:`RESERVED_COLUMNS`), a name
        that is not a letter followed by letters, digits, ``_``, ``.`` or ``-``, or a repeat.
    """
    out: list[str] = []
    for name in columns:
        if not name or name in ("path", "label", "split"):
            continue
        if name in RESERVED_COLUMNS or not _COLUMN_NAME.match(name) or name.startswith("unit_"):
            raise DataSourceError(
                f"manifest '{manifest}' column '{name}' cannot become an image coordinate; "
                "extra columns need a name that starts with a letter (letters, digits, _ . -) "
                f"and is none of {', '.join(sorted(RESERVED_COLUMNS))}: rename it"
            )
        if name in out:
            raise DataSourceError(f"manifest '{manifest}' has column '{name}' twice")
        out.append(name)
    return out


def _cell(value: str | list[str] | None) -> str:
    """A CSV cell as text (extra cells of a row beyond the header come as a list)."""
    if isinstance(value, list):
        return ",".join(value).strip()
    return (value or "").strip()


def _relative_inside(manifest: Path, entry: str, line: int) -> str:
    """``entry`` relative to the manifest's folder, normalized lexically (links not followed)."""
    roots = [Path(os.path.abspath(manifest.parent)), manifest.parent.resolve()]
    for root in roots:
        candidate = Path(os.path.normpath(root / entry))
        try:
            rel = candidate.relative_to(root).as_posix()
        except ValueError:
            continue
        if rel not in ("", "."):
            return rel
    raise DataSourceError(
        f"manifest '{manifest}' line {line}: path '{entry}' lies outside the manifest's "
        f"folder '{roots[0]}'; paths must stay below it"
    )


def _prefix(group: str) -> str:
    return f"{group}_" if group else ""


def _npz_groups(path: Path, keys: list[str]) -> list[str]:
    groups = [s for s in _SPLITS if f"{s}_images" in keys]
    if not groups and "images" in keys:
        groups = [""]
    if not groups:
        raise DataSourceError(
            f"'{path}' holds no image arrays; expected train_images/train_labels "
            f"(and val_*, test_*) or images/labels, found {sorted(keys)}"
        )
    for group in groups:
        if f"{_prefix(group)}labels" not in keys:
            raise DataSourceError(
                f"'{path}' has {_prefix(group)}images but no {_prefix(group)}labels"
            )
    return groups


def _npz_labels(path: Path, npz: Any, group: str) -> np.ndarray:
    key = f"{_prefix(group)}labels"
    labels = np.asarray(npz[key])
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataSourceError(
            f"'{path}' {key} has shape {labels.shape}; expected (n,) or (n, 1) integer class "
            "labels (multi-label data is not supported)"
        )
    return _integer_labels(path, key, labels)


def _integer_labels(path: Path, key: str, labels: np.ndarray) -> np.ndarray:
    if labels.dtype.kind == "f" and np.all(np.isfinite(labels)) and np.all(labels % 1 == 0):
        labels = labels.astype(np.int64)
    if labels.dtype.kind not in "iub":
        raise DataSourceError(f"'{path}' {key} has dtype {labels.dtype}; expected integers")
    if labels.size and labels.min() < 0:
        raise DataSourceError(
            f"'{path}' {key} holds the negative label {int(labels.min())}; labels must be >= 0"
        )
    return labels.astype(np.int64)


def _npz_class_names(path: Path, npz: Any, keys: list[str]) -> list[str] | None:
    for key in ("classes", "label_names"):
        if key in keys:
            names = np.asarray(npz[key])
            if names.ndim != 1 or names.dtype.kind not in "USO":
                raise DataSourceError(
                    f"'{path}' {key} must be a 1-d array of class names, "
                    f"got shape {names.shape} dtype {names.dtype}"
                )
            return [n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist()]
    return None


def _npz_member_shape(path: Path, key: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """Shape and dtype of one ``.npz`` member, read from its header without loading it."""
    with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(member)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(member)
    return tuple(shape), dtype


def _check_image_array(
    path: Path, key: str, shape: tuple[int, ...], dtype: np.dtype[Any], n_labels: int
) -> None:
    ok_shape = len(shape) == 3 or (len(shape) == 4 and shape[3] in (1, 2, 3, 4))
    if not ok_shape or dtype.kind not in "uif":
        raise DataSourceError(
            f"'{path}' {key} has shape {shape} dtype {dtype}; expected numeric images of shape "
            "(n, height, width) or (n, height, width, channels)"
        )
    if shape[0] != n_labels:
        raise DataSourceError(
            f"'{path}' {key} holds {shape[0]} images but its labels hold {n_labels}"
        )


def _starts(groups: list[str], labels: dict[str, np.ndarray]) -> dict[str, int]:
    starts, offset = {}, 0
    for group in groups:
        starts[group] = offset
        offset += len(labels[group])
    return starts


def _is_pcam_folder(folder: Path) -> bool:
    try:
        entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    except OSError:
        return False
    has_x = any(p.name.endswith("_x.h5") and p.is_file() for p in entries)
    has_folders = any(p.is_dir() for p in entries)
    return has_x and not has_folders


def _pcam_pairs(path: Path) -> list[tuple[str | None, Path, Path]]:
    """(split, x file, y file) for a PCam folder or single x file, splits in store order."""
    if path.is_dir():
        x_files = sorted(p for p in path.iterdir() if p.name.endswith("_x.h5"))
        if not x_files:
            gz = sorted(p.name for p in path.iterdir() if p.name.endswith("_x.h5.gz"))
            hint = (f"; found {gz[0]}: decompress it first (gunzip)" if gz else
                    "; expected camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5")
            raise DataSourceError(f"folder '{path}' holds no PatchCamelyon *_x.h5 files{hint}")
    else:
        x_path = path
        if path.name.endswith("_y.h5"):
            x_path = path.with_name(path.name[: -len("_y.h5")] + "_x.h5")
        if not x_path.name.endswith("_x.h5"):
            raise DataSourceError(
                f"'{path}' is not a PatchCamelyon image file; expected a name ending in _x.h5 "
                "with its _y.h5 labels beside it"
            )
        x_files = [x_path]
    pairs: list[tuple[str | None, Path, Path]] = []
    for x_file in x_files:
        match = _PCAM_PATTERN.match(x_file.name)
        split_name = match.group("split") if match else None
        split = _PCAM_SPLIT_NAMES[split_name] if split_name else None
        y_file = x_file.with_name(x_file.name[: -len("_x.h5")] + "_y.h5")
        if not x_file.is_file():
            raise DataSourceError(f"PatchCamelyon image file '{x_file}' does not exist")
        if not y_file.is_file():
            raise DataSourceError(
                f"PatchCamelyon image file '{x_file}' has no labels file '{y_file.name}' beside it"
            )
        pairs.append((split, x_file, y_file))
    splits = [s for s, _, _ in pairs]
    if len(pairs) > 1 and (None in splits or len(set(splits)) != len(splits)):
        raise DataSourceError(
            f"folder '{path}' holds several *_x.h5 files that are not one train/valid/test "
            f"set ({', '.join(x.name for _, x, _ in pairs)}); pass one _x.h5 file instead"
        )
    order = {s: i for i, s in enumerate(_SPLITS)}
    return sorted(pairs, key=lambda p: order.get(p[0] or "", -1))


def _pcam_labels(x_file: Path, y_file: Path) -> np.ndarray:
    import h5py

    try:
        with h5py.File(x_file, "r") as xf, h5py.File(y_file, "r") as yf:
            for handle, key, name in ((xf, "x", x_file), (yf, "y", y_file)):
                if key not in handle:
                    raise DataSourceError(
                        f"'{name}' has no dataset '{key}'; found {sorted(handle.keys())}"
                    )
            x_shape, x_dtype = xf["x"].shape, xf["x"].dtype
            labels = np.asarray(yf["y"][()])
    except OSError as exc:
        raise DataSourceError(
            f"cannot read PatchCamelyon files '{x_file.name}'/'{y_file.name}': "
            f"{_first_line(exc)}"
        ) from None
    labels = labels.reshape(labels.shape[0], -1) if labels.ndim > 1 else labels
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataSourceError(
            f"'{y_file}' y has shape {labels.shape}; expected one label per image"
        )
    _check_image_array(x_file, "x", tuple(x_shape), np.dtype(x_dtype), len(labels))
    return _integer_labels(y_file, "y", labels)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


# ---------------------------------------------------------------------------------------------
# decoding


def _scale_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map an integer or float array to uint8.

    uint8 stays as is; other integers are scaled from their full 16-bit range (65535) or their
    maximum when larger; floats from [0, 1] or their maximum when larger. Rounds half up.
    """
    if values.dtype == np.uint8:
        return values
    if values.dtype == np.bool_:
        return values.astype(np.uint8) * 255
    data = values.astype(np.float64)
    if values.dtype.kind == "f":
        data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
        peak = float(data.max(initial=0.0))
        top = 1.0 if peak <= 1.0 else peak
    else:
        peak = float(data.max(initial=0.0))
        top = 65535.0 if peak <= 65535 else peak
    return np.clip(np.floor(data / top * 255.0 + 0.5), 0, 255).astype(np.uint8)


def _composite_on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Composite uint8 (h, w, 3) colours with uint8 (h, w) alpha over white."""
    a = alpha.astype(np.float64)[..., None] / 255.0
    out = rgb.astype(np.float64) * a + 255.0 * (1.0 - a)
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


def _array_to_rgb(array: np.ndarray) -> Image.Image:
    """An image array of shape (h, w) or (h, w, c), c in 1..4, as an 8-bit RGB image.

    Two channels are gray and alpha, four are RGBA; transparency is composited on white.
    """
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        gray = _scale_to_uint8(array)
        return Image.fromarray(np.repeat(gray[..., None], 3, axis=2), mode="RGB")
    if array.ndim != 3 or array.shape[2] not in (2, 3, 4):
        raise ValueError(f"array of shape {array.shape} is not an image")
    data = _scale_to_uint8(array)
    if data.shape[2] == 2:
        rgb = _composite_on_white(np.repeat(data[..., :1], 3, axis=2), data[..., 1])
    elif data.shape[2] == 4:
        rgb = _composite_on_white(data[..., :3], data[..., 3])
    else:
        rgb = data
    return Image.fromarray(np.ascontiguousarray(rgb), mode="RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a decoded image of any mode to 8-bit RGB.

    16-bit and 32-bit integer images are scaled from their full range (65535 for 16-bit data,
    their maximum when larger), float images from [0, 1] (or their max when larger);
    transparency (RGBA, LA, PA, palette or grayscale with a transparent colour) is composited
    on white, the background of a glass slide. CMYK and YCbCr go through Pillow's conversion.

    Parameters
    ----------
    image : PIL.Image.Image
        A decoded image.

    Returns
    -------
    PIL.Image.Image
        The image in mode ``"RGB"`` (the same object when it already is).
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I") or mode == "F":
        return _array_to_rgb(np.asarray(image))
    if mode in ("P", "L") and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _check_pixels(name: str, width: int, height: int) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise UnreadableImageError(
            name,
            f"{width}x{height} pixels exceed the limit of {MAX_IMAGE_PIXELS} "
            "(decompression-bomb protection)",
        )


def _is_wide_tiff(handle: Image.Image) -> bool:
    """Whether an opened TIFF has samples wider than 8 bits (which Pillow may misread)."""
    tags = getattr(handle, "tag_v2", None)
    if tags is None:
        return False
    bits = tags.get(258, 8)  # BitsPerSample
    values = bits if isinstance(bits, tuple) else (bits,)
    return any(int(b) > 8 for b in values)


class _DropRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


def _read_tiff(path: str | os.PathLike[str], name: str) -> Image.Image | None:
    """Decode a grayscale or RGB TIFF with tifffile; None when tifffile cannot.

    Pillow reads 16-bit RGB as 8-bit by dropping the low byte and misreads planar (separate)
    16-bit RGB; tifffile reads grayscale and RGB samples of any width exactly. Other
    photometric interpretations (palette, CMYK, YCbCr...) are left to Pillow.
    """
    try:
        import tifffile
    except ImportError:  # pragma: no cover - tifffile comes with scikit-image
        return None
    logger = logging.getLogger("tifffile")
    quiet = _DropRecords()
    logger.addFilter(quiet)  # tifffile logs what it cannot parse; the caller reports it
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            if int(getattr(page, "photometric", -1)) not in (1, 2):  # MINISBLACK, RGB
                return None
            axes = str(page.axes)
            if not set(axes) <= set("YXS"):
                return None
            shape = dict(zip(axes, page.shape, strict=True))
            _check_pixels(name, int(shape.get("X", 0)), int(shape.get("Y", 0)))
            array = np.asarray(page.asarray())
    except UnreadableImageError:
        raise
    except Exception:  # noqa: BLE001 - not a TIFF tifffile reads: Pillow's error stands
        return None
    finally:
        logger.removeFilter(quiet)
    if array.ndim != len(axes):
        return None
    return _array_to_rgb(np.transpose(array, [axes.index(a) for a in "YXS" if a in axes]))


def decode_image(path: str | os.PathLike[str], display_path: str | None = None) -> Image.Image:
    """Read one image file as 8-bit RGB.

    Pillow decodes; grayscale and RGB TIFF files with samples wider than 8 bits (16-bit RGB,
    32-bit, float), and TIFF files Pillow cannot read, go to tifffile instead. See
    :func:`to_rgb` for the conversion to 8-bit RGB. Pillow's warnings (corrupt EXIF, its own
    soft size limit) are silenced: a file either decodes or raises.

    Parameters
    ----------
    path : str or PathLike
        File to decode.
    display_path : str, optional
        Name used in error messages (the path relative to the data root).

    Returns
    -------
    PIL.Image.Image
        The decoded image in mode ``"RGB"``.

    Raises
    ------
    UnreadableImageError
        When the file is missing, empty, truncated, not an image, of an unsupported mode, or
        larger than :data:`MAX_IMAGE_PIXELS` (or Pillow's own decompression-bomb limit).
    """
    name = display_path if display_path is not None else str(path)
    is_tiff = Path(path).suffix.lower() in _TIFF_EXTENSIONS
    try:
        if os.path.getsize(path) == 0:
            raise UnreadableImageError(name, "the file is empty (0 bytes)")
        with warnings.catch_warnings():
            # Pillow warns above its soft limit; MAX_IMAGE_PIXELS is the limit checked here
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
            try:
                with Image.open(path) as handle:
                    width, height = handle.size
                    _check_pixels(name, width, height)
                    wide = _read_tiff(path, name) if is_tiff and _is_wide_tiff(handle) else None
                    if wide is not None:
                        return wide
                    handle.load()
                    return to_rgb(handle)
            except (UnreadableImageError, Image.DecompressionBombError, FileNotFoundError):
                raise
            except (OSError, SyntaxError, ValueError, EOFError):
                fallback = _read_tiff(path, name) if is_tiff else None
                if fallback is None:
                    raise
                return fallback
    except UnreadableImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise UnreadableImageError(
            name, f"too large, decompression-bomb protection ({_first_line(exc)})"
        ) from None
    except FileNotFoundError:
        raise UnreadableImageError(name, "file not found") from None
    except IsADirectoryError:
        raise UnreadableImageError(name, "is a directory, not an image file") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise UnreadableImageError(name, _first_line(exc)) from None


def preprocess(
    image: Image.Image,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    interpolation: str = "bilinear",
    crop_pct: float = 1.0,
) -> torch.Tensor:
    """Resize an RGB image to ``size x size`` and normalize it.

    Parameters
    ----------
    image : PIL.Image.Image
        8-bit RGB image.
    size : int
        Output side length in pixels.
    mean, std : sequence of 3 floats
        Per-channel normalization applied to values in [0, 1].
    interpolation : {"bilinear", "bicubic", "nearest"}
        Resampling filter (antialiased).
    crop_pct : float
        Below 1: resize the whole image to ``floor(size / crop_pct)`` square first, then keep
        the central ``size x size`` pixels (timm's evaluation crop; see
        :class:`featstore.models.TransformSpec`).

    Returns
    -------
    torch.Tensor
        Float32 tensor of shape (3, size, size).
    """
    # Pillow does the resampling, exactly as torchvision's resize of a PIL image does (a test
    # checks equality with torchvision); importing torchvision here would cost every extraction
    # process seconds (its detection ops) for four lines of arithmetic
    side = size if crop_pct == 1.0 else math.floor(size / crop_pct)
    resized = image.resize((side, side), _PIL_FILTERS[interpolation])
    if side != size:
        offset = int(round((side - size) / 2.0))
        resized = resized.crop((offset, offset, offset + size, offset + size))
    pixels = torch.from_numpy(np.array(resized, dtype=np.uint8, copy=True)).permute(2, 0, 1)
    tensor = pixels.to(torch.float32).div_(255.0)
    mean_t = torch.as_tensor(mean, dtype=torch.float32)[:, None, None]
    std_t = torch.as_tensor(std, dtype=torch.float32)[:, None, None]
    return tensor.sub_(mean_t).div_(std_t)
