"""The leak check of a probe run: near-copies of training images among the test images.

:mod:`featstore.leaks` hashes images and finds near-duplicates under the 8 rotations/flips;
this module applies it to the images behind a feature store (when they can still be read) and
counts, for a fold plan, the test images that have a near-copy among their fold's training
images (:func:`featstore.leaks.leaks_across_folds`). ``featstore probe`` prints one warning line
when that count is above zero and records :func:`leak_summary` in the run's attrs; ``featstore
study`` hashes each data set once and reuses the result for every model.

:func:`store_leaks` is the I/O edge (it decodes image files); :func:`leak_summary` and
:func:`not_checked` are pure.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import numpy as np

from .errors import FeatstoreInputError, UnreadableImageError
from .leaks import (
    DEFAULT_THRESHOLD,
    DIHEDRAL,
    LeakResult,
    dihedral_hashes,
    leaks_across_folds,
    thumbnail,
)

__all__ = ["LEAK_ATTR", "store_leaks", "leak_summary", "not_checked", "leak_warning"]

#: key of the leak check in a probe run's attrs (``attrs["featstore_probe"]["leaks"]``)
LEAK_ATTR: Final = "leaks"
#: kinds of data whose images are files below the data root, at the store's ``path``
_FILE_KINDS: Final = ("imagefolder", "manifest")
#: kinds of data that are one array file (the root), reopened and checked by fingerprint
_ARRAY_KINDS: Final = ("npz", "pcam")
#: images decoded per batch
_BATCH: Final = 256


def not_checked(reason: str) -> dict[str, Any]:
    """The attrs entry of a run whose images were not checked, saying why."""
    return {"checked": False, "reason": reason}


def store_leaks(data: Mapping[str, Any], paths: Sequence[str],
                groups: Sequence[str] | None = None, *, threshold: int = DEFAULT_THRESHOLD,
                workers: int | None = None) -> LeakResult | str:
    """Hash the images behind a store and find near-duplicates among them.

    Parameters
    ----------
    data : mapping
        The store description's ``data`` entry (``kind``, ``root``, ``fingerprint``).
    paths : sequence of str, length n_images
        The store's ``path`` coordinate, in store order.
    groups : sequence of str, optional
        Group of each image (patient, slide): copies within a group are not counted by
        :attr:`LeakResult.has_copy`.
    threshold : int
        Largest Hamming distance counted as a near-copy.
    workers : int, optional
        Decoding threads; default ``min(8, cpu count)``.

    Returns
    -------
    LeakResult or str
        The pairs, over exactly the store's images (an image that cannot be decoded is left
        out, as in ``featstore leaks --skip-unreadable``); or, when the images cannot be read
        at all, one line saying why.
    """
    kind = str(data.get("kind", ""))
    root = data.get("root")
    if not root:
        return "the store does not record where its images are"
    root = str(root)
    n_workers = max(1, workers if workers is not None else min(8, os.cpu_count() or 1))
    if kind in _FILE_KINDS:
        if not os.path.isdir(root):
            return f"the data folder '{root}' is not there"
        probe = os.path.join(root, paths[0]) if paths else root
        if not os.path.exists(probe):
            return f"image '{paths[0]}' is not in the data folder '{root}'"

        def load(index: int) -> np.ndarray | None:
            from .data import decode_image

            try:
                return thumbnail(decode_image(os.path.join(root, paths[index]),
                                              display_path=paths[index]))
            except UnreadableImageError:
                return None
    elif kind in _ARRAY_KINDS:
        from .data import open_source

        try:
            source = open_source(root)
        except FeatstoreInputError as exc:
            return f"the data '{root}' cannot be opened ({str(exc).splitlines()[0]})"
        if source.fingerprint() != data.get("fingerprint"):
            return f"the data '{root}' no longer holds the store's images"

        def load(index: int) -> np.ndarray | None:
            try:
                return thumbnail(source.load(index))
            except UnreadableImageError:
                return None
    else:
        return f"images of data kind '{kind or 'unknown'}' cannot be reread"
    n = len(paths)
    hashes = np.zeros((n, len(DIHEDRAL)), dtype=np.uint64)
    valid = np.ones(n, dtype=bool)
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        for start in range(0, n, _BATCH):
            batch = range(start, min(n, start + _BATCH))
            thumbs = list(pool.map(load, batch) if n_workers > 1 else map(load, batch))
            ok = [k for k, t in zip(batch, thumbs, strict=True) if t is not None]
            valid[[k for k, t in zip(batch, thumbs, strict=True) if t is None]] = False
            if ok:
                hashes[ok] = dihedral_hashes(np.stack([t for t in thumbs if t is not None]))
    if not valid.any():
        return f"none of the images in '{root}' can be decoded"
    return LeakResult.from_hashes(hashes, list(paths), threshold=threshold,
                                  groups=None if groups is None else list(groups), valid=valid)


def leak_summary(result: LeakResult, test_fold: np.ndarray,
                 train: np.ndarray | None = None) -> dict[str, Any]:
    """What a probe run records about near-copies (JSON-able).

    Parameters
    ----------
    result : LeakResult
        Pairs over the store's images, in store order.
    test_fold : ndarray of int, shape (n_images,)
        The fold each image is tested in, ``-1`` for none.
    train : ndarray of bool, shape (n_images,), optional
        For a fixed split: the training images (see :func:`leaks_across_folds`).

    Returns
    -------
    dict
        ``checked`` (True), ``threshold``, ``images`` hashed, ``unreadable``, ``pairs``,
        ``images_with_copy`` (a near-copy in another group, or anywhere without groups) and
        ``test_with_train_copy``: test images with a near-copy among their fold's training
        images -- the number that makes the scores optimistic.
    """
    summary = result.summary()
    return {
        "checked": True,
        "threshold": int(result.threshold),
        "images": int(result.n_images),
        "unreadable": int(summary["unreadable"]),
        "pairs": int(summary["exact_pairs"] + summary["near_pairs"]),
        "images_with_copy": int(summary["images_with_copy"]),
        "test_with_train_copy": leaks_across_folds(result, test_fold, train),
        "n_test": int((np.asarray(test_fold) >= 0).sum()),
    }


def leak_warning(leaks: Mapping[str, Any] | None) -> str | None:
    """The one-line warning for a run's recorded leak check, or None when there is nothing to
    say (not checked, or no test image with a near-copy in its training images)."""
    if not leaks or not leaks.get("checked"):
        return None
    count = int(leaks.get("test_with_train_copy", 0))
    if count == 0:
        return None
    n_test = int(leaks.get("n_test", 0))
    return (f"warning: {count} of {n_test} test images have a near-copy (up to rotation/flip, "
            f"<= {leaks.get('threshold')} bits) among the training images of their fold; the "
            "scores are optimistic: group the folds (--group-by COLUMN or --group-regex REGEX) "
            "so copies stay on one side; `featstore leaks DATA` lists the pairs")
