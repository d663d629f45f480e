"""Image sources: a folder tree or a CSV manifest -> ordered, labelled records and RGB images.

A source lists its images once, in a deterministic order (sorted relative paths), so the image
index of the store is reproducible. Decoding converts any mode (grayscale, RGBA, palette, 16-bit,
CMYK) to 8-bit RGB and turns every decoding failure into :class:`UnreadableImageError`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from .errors import DataSourceError, UnreadableImageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_IMAGE_PIXELS",
    "ImageRecord",
    "ImageSource",
    "ImageFolderSource",
    "ManifestSource",
    "open_source",
    "to_rgb",
    "decode_image",
    "preprocess",
]

#: file name extensions read as images (lower case)
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".ppm", ".pgm"}
)
#: images with more pixels than this are refused (decompression-bomb protection): 16k x 16k
MAX_IMAGE_PIXELS: int = 16384 * 16384

_INTERPOLATIONS = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}


@dataclass(frozen=True)
class ImageRecord:
    """One image of a source.

    Attributes
    ----------
    path : str
        Location relative to the source root, with ``/`` separators.
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
        Short name of the source type (``"imagefolder"``, ``"manifest"``...).
    root : str
        Directory that record paths are relative to.
    classes : list of str
        Class names; a record's ``label`` indexes this list.
    records : list of ImageRecord
        The images in store order.
    """

    kind: str = "abstract"

    def __init__(self, root: str, classes: list[str], records: list[ImageRecord]) -> None:
        if not records:
            raise DataSourceError(f"no images found in '{root}'")
        self.root = root
        self.classes = classes
        self.records = records

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
        """JSON-able summary recorded in the store."""
        return {
            "kind": self.kind,
            "root": self.root,
            "n_images": len(self.records),
            "classes": list(self.classes),
            "fingerprint": self.fingerprint(),
        }


class _FileSource(ImageSource):
    """A source whose records are image files below ``root``."""

    def load(self, index: int) -> Image.Image:
        record = self.records[index]
        return decode_image(os.path.join(self.root, record.path), display_path=record.path)


class ImageFolderSource(_FileSource):
    """An ImageFolder tree: one subfolder per class, images anywhere below it.

    Classes are the sorted subfolder names; images are taken in sorted path order. Hidden files
    and files without an image extension are ignored.
    """

    kind = "imagefolder"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        root_path = Path(root)
        classes = sorted(
            p.name for p in root_path.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        if not classes:
            raise DataSourceError(
                f"data folder '{root}' has no class subfolders; expected DATA/<class>/<image> "
                "or a CSV manifest with columns path,label[,split]"
            )
        records: list[ImageRecord] = []
        for label, name in enumerate(classes):
            for path in _walk_images(root_path / name):
                records.append(ImageRecord(path.relative_to(root_path).as_posix(), label))
        super().__init__(str(root_path), classes, records)


class ManifestSource(_FileSource):
    """A CSV manifest with a header and columns ``path,label[,split]``.

    Paths are relative to the manifest's folder (absolute paths inside it are allowed when they
    stay below that folder). Labels are class names; classes are sorted (numerically when all
    labels are integers).
    """

    kind = "manifest"

    def __init__(self, manifest: str | os.PathLike[str]) -> None:
        manifest_path = Path(manifest)
        root = manifest_path.parent.resolve()
        rows = _read_manifest(manifest_path)
        raw_labels = sorted({row["label"] for row in rows}, key=_label_sort_key)
        index = {name: i for i, name in enumerate(raw_labels)}
        has_split = all(row.get("split") for row in rows)
        records = []
        seen: set[str] = set()
        for line, row in enumerate(rows, start=2):
            rel = _relative_inside(root, row["path"], manifest_path, line)
            if rel in seen:
                raise DataSourceError(
                    f"manifest '{manifest_path}' line {line}: duplicate path '{row['path']}'; "
                    "each image may appear once"
                )
            seen.add(rel)
            split = row["split"] if has_split else None
            records.append(ImageRecord(rel, index[row["label"]], split))
        super().__init__(str(root), raw_labels, records)


def open_source(data: str | os.PathLike[str]) -> ImageSource:
    """Open DATA as an image source: an ImageFolder directory or a ``.csv`` manifest.

    Raises
    ------
    DataSourceError
        When DATA does not exist, is empty or has an unsupported type.
    """
    path = Path(data)
    if not path.exists():
        raise DataSourceError(
            f"data '{data}' does not exist; pass an ImageFolder directory or a CSV manifest"
        )
    if path.is_dir():
        return ImageFolderSource(path)
    if path.suffix.lower() == ".csv":
        return ManifestSource(path)
    raise DataSourceError(
        f"data '{data}' is neither a directory nor a .csv manifest; "
        "pass an ImageFolder directory or a CSV manifest with columns path,label[,split]"
    )


def _walk_images(folder: Path) -> list[Path]:
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(Path(dirpath) / name)
    return sorted(found)


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
                row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
                if not row.get("path") or not row.get("label"):
                    raise DataSourceError(
                        f"manifest '{manifest}' line {line}: empty path or label"
                    )
                rows.append(row)
    except UnicodeDecodeError as exc:
        raise DataSourceError(f"manifest '{manifest}' is not UTF-8 text: {exc.reason}") from None
    except csv.Error as exc:
        raise DataSourceError(f"manifest '{manifest}' is not valid CSV: {exc}") from None
    if not rows:
        raise DataSourceError(f"manifest '{manifest}' lists no images")
    return rows


def _relative_inside(root: Path, entry: str, manifest: Path, line: int) -> str:
    candidate = (root / entry).resolve()
    try:
        return candidate.relative_to(root).as_posix()
    except ValueError:
        raise DataSourceError(
            f"manifest '{manifest}' line {line}: path '{entry}' lies outside the manifest's "
            f"folder '{root}'; paths must stay below it"
        ) from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a decoded image of any mode to 8-bit RGB.

    16-bit and 32-bit integer images are scaled from their full range (65535 for 16-bit data),
    float images from [0, 1] (or their max when larger); transparency is composited on white,
    the background of a glass slide.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if mode == "F":
            top = 1.0 if values.max(initial=0.0) <= 1.0 else float(values.max())
        else:
            top = 65535.0 if values.max(initial=0.0) <= 65535 else float(values.max())
        scaled = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(scaled, mode="L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def decode_image(path: str | os.PathLike[str], display_path: str | None = None) -> Image.Image:
    """Read one image file as 8-bit RGB.

    Parameters
    ----------
    path : str or PathLike
        File to decode.
    display_path : str, optional
        Name used in error messages (the path relative to the data root).

    Raises
    ------
    UnreadableImageError
        When the file is missing, truncated, not an image, or larger than
        :data:`MAX_IMAGE_PIXELS`.
    """
    name = display_path if display_path is not None else str(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as handle:
                width, height = handle.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise UnreadableImageError(
                        name,
                        f"{width}x{height} pixels exceed the limit of {MAX_IMAGE_PIXELS} "
                        "(decompression-bomb protection)",
                    )
                handle.load()
                return to_rgb(handle)
    except UnreadableImageError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise UnreadableImageError(name, f"too large ({exc})") from None
    except FileNotFoundError:
        raise UnreadableImageError(name, "file not found") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc) or type(exc).__name__
        raise UnreadableImageError(name, reason.splitlines()[0]) from None


def preprocess(
    image: Image.Image,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    interpolation: str = "bilinear",
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

    Returns
    -------
    torch.Tensor
        Float32 tensor of shape (3, size, size).
    """
    resized = TF.resize(image, [size, size], interpolation=_INTERPOLATIONS[interpolation],
                        antialias=True)
    tensor = TF.pil_to_tensor(resized).to(torch.float32).div_(255.0)
    return TF.normalize(tensor, list(mean), list(std))
