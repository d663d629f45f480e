"""Near-duplicate images under the 8 rotations and flips: a leak check for train/test splits.

Tiles cut from one field of view, or augmented copies of one image (LC25000 is 750 lung images
rotated and flipped into 15,000), make image-level folds optimistic when a copy lands in the
training set and another in the test set. This module finds such copies.

The hash
--------
Each image becomes a grayscale thumbnail of :data:`THUMBNAIL_SIZE` x :data:`THUMBNAIL_SIZE`
pixels (area averaging). Its orthonormal 2-D DCT-II is taken, and the 8 x 8 block of the lowest
frequencies ``C[u, v]`` (``u`` vertical, ``v`` horizontal frequency) gives one bit per
coefficient: ``C[u, v] > 0``. The DC coefficient (``u = v = 0``, the mean brightness) is left
out, so a hash has :data:`HASH_BITS` = 63 informative bits, stored in a ``uint64`` whose bit
``8 u + v`` is the sign of ``C[u, v]`` (bit 0 is always 0). A sign bit, unlike the median
threshold of the classic pHash, does not change when brightness or contrast is scaled.

The dihedral group acts on DCT coefficients without recomputing anything: mirroring the image
left-right multiplies ``C[u, v]`` by ``(-1)**v``, flipping it upside down by ``(-1)**u``, and
transposing it transposes ``C``. So the hash of every rotated or flipped version comes from one
DCT, and the 8 hashes of an image are those of ``np.rot90(np.fliplr(x) if mirror else x, k)``
for ``k = 0..3`` (:data:`DIHEDRAL` names them in that order).

The distance
------------
The distance between images ``i < j`` is ``min_g popcount(h_i XOR g(h_j))`` over the 8 elements
``g``: how many bits separate image ``i`` from the closest rotated/flipped version of image ``j``.
Distance 0 is an *exact* match (same hash; usually the same pixels up to rotation, flip and
re-encoding), ``1..threshold`` a *near* match.

Why the default threshold is 6 (of 63 bits): re-encoding a tile as JPEG (quality 75 or 90) or
resizing it flips 0 to 2 bits of its hash on the shared LC25000 tiles and on textured synthetic
images, so 6 leaves a wide margin for true copies. Two unrelated images differ in about
31.5 +- 4 bits; for independent bits the chance that an unrelated pair comes within 6 bits under
any of the 8 variants is 7e-11 (0.08 false pairs among the 1.25e9 pairs of 50,000 images). Real
tiles have correlated bits, so the measured tail is heavier: among the 3 million pairs of the
shared LC25000 tiles that belong to different classes (so cannot be copies) none is within 9
bits, 1 is at 10, 9 within 12. 6 therefore keeps false pairs near zero up to tens of thousands of
images. LC25000's augmentations also rotate by small angles, which no dihedral element undoes;
such copies sit at 7 to about 13 bits (``--threshold 10`` finds about 70 % more LC25000 pairs at
a measured false-pair rate of 3e-7 per pair).

Compute is pure (:func:`thumbnail`, :func:`dihedral_hashes`, :func:`near_duplicates`,
:class:`LeakResult`, :func:`leaks_across_folds`); :func:`find_leaks` is the I/O edge that opens a
data source and decodes its images on a thread pool.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from .config import parse_positive_int
from .errors import FeatstoreInputError, UnreadableImageError

__all__ = [
    "DIHEDRAL",
    "THUMBNAIL_SIZE",
    "HASH_BITS",
    "DEFAULT_THRESHOLD",
    "LeakProgress",
    "LeakResult",
    "thumbnail",
    "dihedral_hashes",
    "near_duplicates",
    "parse_threshold",
    "parse_group_regex",
    "groups_from_paths",
    "leaks_across_folds",
    "find_leaks",
    "write_pairs",
]

#: the 8 elements of the dihedral group, in the column order of :func:`dihedral_hashes`:
#: element ``4 * mirror + k`` is ``np.rot90(np.fliplr(x) if mirror else x, k)``
DIHEDRAL: tuple[str, ...] = (
    "identity", "rot90", "rot180", "rot270",
    "mirror", "mirror+rot90", "mirror+rot180", "mirror+rot270",
)
#: side of the grayscale thumbnail an image is reduced to before hashing, pixels
THUMBNAIL_SIZE: int = 32
#: side of the block of low-frequency DCT coefficients that gives the bits
_BLOCK: int = 8
#: informative bits of a hash (the 8 x 8 block without its DC coefficient)
HASH_BITS: int = _BLOCK * _BLOCK - 1
#: largest Hamming distance (of HASH_BITS) reported as a near-duplicate by default
DEFAULT_THRESHOLD: int = 6
#: coefficients with |C| below this (gray levels) count as 0: a flat or mirror-symmetric
#: thumbnail has exact zeros whose floating-point sign would otherwise be noise (float32
#: thumbnails of rotated copies differ by about 1e-5)
_ZERO_TOL: float = 1e-3
#: bytes of scratch memory the all-pairs search may use per block of rows
_SEARCH_BYTES: int = 32 * 2**20
#: images decoded per task batch of :func:`find_leaks`
_DECODE_BATCH: int = 256


class LeakProgress(Protocol):
    """Receives progress of :func:`find_leaks` (the CLI shows a rich progress bar)."""

    def start(self, name: str, total_images: int) -> None:
        """Hashing begins; ``total_images`` images will be decoded."""

    def advance(self, images: int) -> None:
        """``images`` more images were decoded and hashed."""

    def finish(self, name: str) -> None:
        """Hashing is complete."""


# ---------------------------------------------------------------------------------------------
# pure compute: thumbnails, hashes, search


def thumbnail(image: Image.Image, size: int = THUMBNAIL_SIZE) -> np.ndarray:
    """Grayscale thumbnail of an image, the input of :func:`dihedral_hashes`.

    Parameters
    ----------
    image : PIL.Image.Image
        A decoded image (any mode Pillow converts to ``"L"``, e.g. RGB).
    size : int
        Side of the square thumbnail.

    Returns
    -------
    ndarray of float32, shape (size, size)
        ITU-R 601 luma (0..255), each pixel the area average of the image region it covers.
        Computed in floating point throughout: 8-bit intermediate rounding would depend on the
        image's orientation and make rotated copies differ.
    """
    gray = image if image.mode == "F" else image.convert("F")
    return np.asarray(gray.resize((size, size), Image.Resampling.BOX), dtype=np.float32)


def _dct_matrix(n: int, rows: int) -> np.ndarray:
    """The first ``rows`` rows of the orthonormal DCT-II matrix of size n, shape (rows, n)."""
    k = np.arange(rows, dtype=np.float64)[:, None]
    x = np.arange(n, dtype=np.float64)[None, :]
    matrix = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    matrix[0] /= np.sqrt(2.0)
    return matrix


def dihedral_hashes(thumbnails: np.ndarray) -> np.ndarray:
    """Perceptual hashes of images under the 8 rotations and flips.

    Parameters
    ----------
    thumbnails : ndarray, shape (n_images, height, width) or (height, width)
        Grayscale images (e.g. from :func:`thumbnail`), any real dtype; height and width >= 8.

    Returns
    -------
    ndarray of uint64, shape (n_images, 8) (or (8,) for one image)
        Column ``g`` is the hash of ``DIHEDRAL[g]`` applied to the image; column 0 is the
        image as it is. Bit ``8 u + v`` of a hash is ``C[u, v] > 0`` for the DCT-II coefficient
        ``C[u, v]``, ``0 <= u, v < 8``, bit 0 (the DC coefficient) always 0.

    Raises
    ------
    ValueError
        When the array is not 2-D or 3-D, or an image side is below 8.
    """
    array = np.asarray(thumbnails)
    single = array.ndim == 2
    if single:
        array = array[None]
    if array.ndim != 3 or min(array.shape[1:]) < _BLOCK:
        raise ValueError(
            f"thumbnails must have shape (n_images, height, width) with sides >= {_BLOCK}, "
            f"got {np.shape(thumbnails)}"
        )
    n, height, width = array.shape
    rows = _dct_matrix(height, _BLOCK)
    cols = _dct_matrix(width, _BLOCK)
    coefficients = rows @ array.astype(np.float64) @ cols.T  # (n, 8, 8): C[u, v]
    coefficients[np.abs(coefficients) < _ZERO_TOL] = 0.0

    sign = (-1.0) ** np.arange(_BLOCK)
    variants = np.empty((n, len(DIHEDRAL), _BLOCK, _BLOCK), dtype=np.float64)
    for mirror in (0, 1):
        # fliplr reverses columns: C[u, v] -> (-1)**v C[u, v]
        current = coefficients * sign[None, None, :] if mirror else coefficients
        for k in range(4):
            variants[:, 4 * mirror + k] = current
            # np.rot90(x) == flipud(x.T): transpose, then C[u, v] -> (-1)**u C[u, v]
            current = np.swapaxes(current, 1, 2) * sign[None, :, None]
    bits = variants.reshape(n, len(DIHEDRAL), _BLOCK * _BLOCK) > 0
    bits[..., 0] = False
    packed = np.packbits(bits, axis=-1, bitorder="little")  # (n, 8, 8) bytes, bit p -> byte p//8
    hashes = packed.view(np.dtype("<u8"))[..., 0].astype(np.uint64)
    return hashes[0] if single else hashes


def near_duplicates(
    hashes: np.ndarray, threshold: int = DEFAULT_THRESHOLD
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs of images whose hashes are within ``threshold`` bits under some rotation/flip.

    Compares every pair once (n (n - 1) / 2 pairs x 8 variants of XOR + popcount), a block of
    rows at a time so that scratch memory stays near 32 MiB whatever ``n``.

    Parameters
    ----------
    hashes : ndarray of uint64, shape (n_images, 8)
        :func:`dihedral_hashes` of the images.
    threshold : int
        Largest Hamming distance reported, 0..63.

    Returns
    -------
    pairs : ndarray of int64, shape (n_pairs, 2)
        Image indices ``(i, j)`` with ``i < j``, sorted by distance, then ``i``, then ``j``.
    distances : ndarray of int64, shape (n_pairs,)
        ``min_g popcount(hashes[i, 0] ^ hashes[j, g])``.
    transforms : ndarray of int64, shape (n_pairs,)
        The minimizing ``g`` (first one on ties): image ``i`` looks like ``DIHEDRAL[g]``
        applied to image ``j``.
    """
    table = np.ascontiguousarray(hashes, dtype=np.uint64)
    if table.ndim != 2 or table.shape[1] != len(DIHEDRAL):
        raise ValueError(f"hashes must have shape (n_images, 8), got {np.shape(hashes)}")
    threshold = parse_threshold(threshold)
    n = table.shape[0]
    found_i: list[np.ndarray] = []
    found_j: list[np.ndarray] = []
    columns = np.ascontiguousarray(table.T)  # (8, n): one contiguous row per variant
    for start, stop in _row_blocks(n):
        width = n - start  # compare rows start..stop-1 with columns start..n-1
        rows = table[start:stop, 0][:, None]
        scratch = np.empty((stop - start, width), dtype=np.uint64)
        counts = np.empty((stop - start, width), dtype=np.uint8)
        best = np.full((stop - start, width), 255, dtype=np.uint8)
        for g in range(len(DIHEDRAL)):
            np.bitwise_xor(rows, columns[g, start:][None, :], out=scratch)
            np.bitwise_count(scratch, out=counts)
            np.minimum(best, counts, out=best)
        # keep j > i only: within the block's own square, columns 0..r of row r are j <= i
        lower = np.tril_indices(stop - start, 0, width)
        best[lower] = 255
        r, c = np.nonzero(best <= threshold)
        found_i.append(r + start)
        found_j.append(c + start)
    i = np.concatenate(found_i).astype(np.int64) if found_i else np.zeros(0, np.int64)
    j = np.concatenate(found_j).astype(np.int64) if found_j else np.zeros(0, np.int64)
    per_variant = np.bitwise_count(table[i, 0][:, None] ^ table[j]).astype(np.int64)  # (m, 8)
    transforms = np.argmin(per_variant, axis=1).astype(np.int64)
    distances = per_variant[np.arange(len(i)), transforms]
    order = np.lexsort((j, i, distances))
    return np.stack([i[order], j[order]], axis=1), distances[order], transforms[order]


def _row_blocks(n: int) -> Iterator[tuple[int, int]]:
    """Row ranges [start, stop) whose comparisons with the columns >= start fit the budget."""
    start = 0
    per_element = 10  # bytes: uint64 scratch + uint8 counts + uint8 best
    while start < n:
        rows = max(1, _SEARCH_BYTES // (per_element * (n - start)))
        stop = min(n, start + rows)
        yield start, stop
        start = stop


# ---------------------------------------------------------------------------------------------
# user input


def parse_threshold(value: int) -> int:
    """Return ``value`` when it is an integer distance ``0..HASH_BITS``, else raise.

    Raises
    ------
    FeatstoreInputError
        Naming ``--threshold``, the value and the allowed range.
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer) \
            or not 0 <= value <= HASH_BITS:
        raise FeatstoreInputError(
            f"invalid --threshold {value!r}; must be an integer number of bits 0..{HASH_BITS} "
            f"(default {DEFAULT_THRESHOLD}; 0 finds exact matches only)"
        )
    return int(value)


def parse_group_regex(value: str | re.Pattern[str]) -> re.Pattern[str]:
    """Compile a ``--group-regex`` whose first capture group names an image's group.

    Raises
    ------
    FeatstoreInputError
        When the expression does not compile or has no capture group.
    """
    if isinstance(value, re.Pattern):
        pattern = value
    else:
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise FeatstoreInputError(
                f"--group-regex {value!r} does not compile ({exc}); give a Python regular "
                r"expression whose first group captures the group, e.g. '^[^/]+/(\d+)_'"
            ) from None
    if pattern.groups < 1:
        raise FeatstoreInputError(
            f"--group-regex {pattern.pattern!r} has no capture group; put the part of the "
            r"path that names the group in parentheses, e.g. '^[^/]+/(\d+)_'"
        )
    return pattern


def groups_from_paths(paths: Sequence[str], regex: str | re.Pattern[str]) -> tuple[str, ...]:
    """The group of each image: the first capture group of ``regex`` searched in its path.

    Parameters
    ----------
    paths : sequence of str
        Image paths relative to the data root, ``/`` separators.
    regex : str or re.Pattern
        See :func:`parse_group_regex`.

    Returns
    -------
    tuple of str, length n_images

    Raises
    ------
    FeatstoreInputError
        When the regex is invalid, or naming the first path it does not match.
    """
    pattern = parse_group_regex(regex)
    groups = []
    for path in paths:
        match = pattern.search(path)
        if match is None or match.group(1) is None:
            raise FeatstoreInputError(
                f"--group-regex {pattern.pattern!r} does not match image '{path}' (or its "
                "first group captures nothing); every image path needs a group"
            )
        groups.append(match.group(1))
    return tuple(groups)


# ---------------------------------------------------------------------------------------------
# the result


@dataclass(frozen=True, eq=False)
class LeakResult:
    """Near-duplicate pairs of a collection of images.

    Attributes
    ----------
    paths : tuple of str, length n_images
        Image paths relative to the data root, in the source's order (indices of ``pairs``).
    pairs : ndarray of int64, shape (n_pairs, 2)
        ``(i, j)``, ``i < j``, sorted by distance (exact matches first), then ``i``, ``j``.
    distances : ndarray of int64, shape (n_pairs,)
        Hamming distance (bits of :data:`HASH_BITS`) of the closest rotation/flip.
    transforms : ndarray of int64, shape (n_pairs,)
        Index into :data:`DIHEDRAL`: image ``i`` looks like that transform of image ``j``.
    threshold : int
        Largest distance reported.
    groups : tuple of str or None
        Group of each image (patient, slide, field of view), when known.
    unreadable : tuple of int
        Indices of images that could not be decoded and were left out.
    """

    paths: tuple[str, ...]
    pairs: np.ndarray
    distances: np.ndarray
    transforms: np.ndarray
    threshold: int
    groups: tuple[str, ...] | None = None
    unreadable: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.groups is not None and len(self.groups) != len(self.paths):
            raise ValueError(f"{len(self.groups)} groups for {len(self.paths)} images")

    @classmethod
    def from_hashes(
        cls,
        hashes: np.ndarray,
        paths: Sequence[str],
        *,
        threshold: int = DEFAULT_THRESHOLD,
        groups: Sequence[str] | None = None,
        valid: np.ndarray | None = None,
    ) -> LeakResult:
        """Search :func:`dihedral_hashes` for near-duplicates.

        Parameters
        ----------
        hashes : ndarray of uint64, shape (n_images, 8)
        paths : sequence of str, length n_images
        threshold : int
        groups : sequence of str, optional, length n_images
        valid : ndarray of bool, shape (n_images,), optional
            Images whose hash is meaningful; the others (unreadable) are left out.
        """
        table = np.asarray(hashes, dtype=np.uint64)
        keep = np.ones(len(table), dtype=bool) if valid is None else np.asarray(valid, bool)
        index = np.flatnonzero(keep)
        pairs, distances, transforms = near_duplicates(table[index], threshold)
        return cls(tuple(paths), index[pairs].reshape(-1, 2), distances, transforms,
                   parse_threshold(threshold), None if groups is None else tuple(groups),
                   tuple(int(k) for k in np.flatnonzero(~keep)))

    @property
    def n_images(self) -> int:
        """Images in the collection, readable or not."""
        return len(self.paths)

    @property
    def exact(self) -> np.ndarray:
        """Bool array of shape (n_pairs,): the pair's hashes are equal (distance 0)."""
        return self.distances == 0

    @property
    def cross_group(self) -> np.ndarray:
        """Bool array of shape (n_pairs,): the two images are in different groups.

        All True without groups (every other image counts as "elsewhere").
        """
        if self.groups is None:
            return np.ones(len(self.distances), dtype=bool)
        names = np.asarray(self.groups, dtype=object)
        return np.asarray(names[self.pairs[:, 0]] != names[self.pairs[:, 1]], dtype=bool)

    @property
    def has_copy(self) -> np.ndarray:
        """Bool array of shape (n_images,): the image has a near-copy in another group.

        Without groups: a near-copy anywhere else in the collection.
        """
        out = np.zeros(self.n_images, dtype=bool)
        out[self.pairs[self.cross_group].ravel()] = True
        return out

    @property
    def n_with_copy(self) -> int:
        """Images with a near-copy in another group (without groups: anywhere else)."""
        return int(self.has_copy.sum())

    def summary(self) -> dict[str, Any]:
        """JSON-able counts: images, exact and near pairs, images with a copy elsewhere."""
        cross = self.cross_group
        return {
            "images": self.n_images,
            "unreadable": len(self.unreadable),
            "threshold": self.threshold,
            "hash_bits": HASH_BITS,
            "exact_pairs": int(self.exact.sum()),
            "near_pairs": int((~self.exact).sum()),
            "cross_group_pairs": int(cross.sum()),
            "grouped": self.groups is not None,
            "groups": None if self.groups is None else len(set(self.groups)),
            "images_with_copy": self.n_with_copy,
        }

    def rows(self) -> list[dict[str, Any]]:
        """One dict per pair: path_a, path_b, distance, match, transform (and groups)."""
        out = []
        cross = self.cross_group
        for k, (i, j) in enumerate(self.pairs.tolist()):
            row: dict[str, Any] = {
                "path_a": self.paths[i], "path_b": self.paths[j],
                "distance": int(self.distances[k]),
                "match": "exact" if self.distances[k] == 0 else "near",
                "transform": DIHEDRAL[int(self.transforms[k])],
            }
            if self.groups is not None:
                row.update(group_a=self.groups[i], group_b=self.groups[j],
                           cross_group=bool(cross[k]))
            out.append(row)
        return out


def leaks_across_folds(
    result: LeakResult, test_fold: np.ndarray, train: np.ndarray | None = None
) -> int:
    """Test images that have a near-copy among the training images of their own fold.

    Parameters
    ----------
    result : LeakResult
        Pairs over the same images, in the same order, as ``test_fold``.
    test_fold : ndarray of int, shape (n_images,)
        Fold each image is tested in, ``-1`` for none. In k-fold cross-validation the training
        images of fold ``f`` are the images tested in any other fold.
    train : ndarray of bool, shape (n_images,), optional
        The training images of every fold, for a fixed split (the data's own train/test split,
        where training images are never tested and so have ``test_fold == -1``).

    Returns
    -------
    int
        Number of images ``i`` with ``test_fold[i] >= 0`` and a near-copy ``j`` (any distance
        up to the result's threshold, any group) that fold ``test_fold[i]`` trains on.
    """
    fold = np.asarray(test_fold, dtype=np.int64)
    if fold.shape != (result.n_images,):
        raise ValueError(f"test_fold has shape {fold.shape}; expected ({result.n_images},)")
    if train is not None:
        train_mask = np.asarray(train, dtype=bool)
        if train_mask.shape != fold.shape:
            raise ValueError(f"train has shape {train_mask.shape}; expected {fold.shape}")
    a, b = result.pairs[:, 0], result.pairs[:, 1]
    leaked = np.zeros(result.n_images, dtype=bool)
    for test, other in ((a, b), (b, a)):
        if train is None:
            trains_on = (fold[other] >= 0) & (fold[other] != fold[test])
        else:
            trains_on = train_mask[other] & (fold[other] != fold[test])
        leaked[test[(fold[test] >= 0) & trains_on]] = True
    return int(leaked.sum())


# ---------------------------------------------------------------------------------------------
# I/O edge


def find_leaks(
    data: str | os.PathLike[str],
    *,
    threshold: int = DEFAULT_THRESHOLD,
    group_regex: str | None = None,
    workers: int | None = None,
    skip_unreadable: bool = False,
    progress: LeakProgress | None = None,
) -> LeakResult:
    """Find near-duplicate images (up to rotation and flip) in a data source.

    Parameters
    ----------
    data : str or PathLike
        Anything :func:`featstore.data.open_source` opens: an ImageFolder directory, a CSV
        manifest, a MedMNIST ``.npz``, PatchCamelyon ``.h5`` files.
    threshold : int
        Largest Hamming distance (of 63 bits) counted as a near-duplicate; see the module text
        for why the default is 6.
    group_regex : str, optional
        Regular expression searched in each image's relative path; its first capture group is
        the image's group (e.g. ``'^[^/]+/(\\d+)_'``). Copies within one group are not counted
        by :attr:`LeakResult.has_copy`.
    workers : int, optional
        Decoding threads; default ``min(8, cpu count)``.
    skip_unreadable : bool
        Leave undecodable images out (listed in ``unreadable``) instead of raising.
    progress : LeakProgress, optional
        Told how many images were hashed.

    Returns
    -------
    LeakResult

    Raises
    ------
    FeatstoreInputError
        Bad threshold or regex, a path the regex does not match, missing or malformed data,
        or an unreadable image (without ``skip_unreadable``).
    """
    from .data import open_source

    threshold = parse_threshold(threshold)
    n_workers = parse_positive_int("--workers", workers if workers is not None
                                   else min(8, os.cpu_count() or 1))
    pattern = None if group_regex is None else parse_group_regex(group_regex)
    source = open_source(data)
    paths = [record.path for record in source.records]
    groups = None if pattern is None else groups_from_paths(paths, pattern)

    n = len(source)
    hashes = np.zeros((n, len(DIHEDRAL)), dtype=np.uint64)
    valid = np.ones(n, dtype=bool)

    def load(index: int) -> np.ndarray | None:
        try:
            return thumbnail(source.load(index))
        except UnreadableImageError:
            if skip_unreadable:
                return None
            raise

    if progress is not None:
        progress.start("hashing", n)
    batches = [range(s, min(n, s + _DECODE_BATCH)) for s in range(0, n, _DECODE_BATCH)]
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        for batch in batches:
            # one worker decodes in this thread: no hand-off between threads per image
            thumbs = list(pool.map(load, batch) if n_workers > 1 else map(load, batch))
            ok = [k for k, t in zip(batch, thumbs, strict=True) if t is not None]
            valid[[k for k, t in zip(batch, thumbs, strict=True) if t is None]] = False
            if ok:
                stack = np.stack([t for t in thumbs if t is not None])
                hashes[ok] = dihedral_hashes(stack)
            if progress is not None:
                progress.advance(len(batch))
    if progress is not None:
        progress.finish("hashing")
    return LeakResult.from_hashes(hashes, paths, threshold=threshold, groups=groups,
                                  valid=valid)


def write_pairs(result: LeakResult, path: str | os.PathLike[str]) -> Path:
    """Write the pairs as CSV: path_a, path_b, distance, match, transform[, groups].

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    FeatstoreInputError
        When the file cannot be written (missing folder, no permission).
    """
    target = Path(path)
    columns = ["path_a", "path_b", "distance", "match", "transform"]
    if result.groups is not None:
        columns += ["group_a", "group_b", "cross_group"]
    try:
        with target.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(result.rows())
    except OSError as exc:
        raise FeatstoreInputError(
            f"cannot write --out '{target}': {exc.strerror or exc}; give a file path in an "
            "existing, writable folder"
        ) from None
    return target
