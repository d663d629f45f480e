"""Test helpers importable from every test module (``from helpers import ...``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LC25000 = SHARED_DATA / "lc25000_lung"

def make_image_folder(root: Path, classes: tuple[str, ...] = ("benign", "tumour"),
                      per_class: int = 5, seed: int = 0) -> Path:
    """Write a small ImageFolder of random RGB images of varied sizes; class 1 is brighter."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            side = int(rng.integers(12, 40))
            pixels = rng.integers(0, 160, size=(side, side, 3)) + 80 * label
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
            image.save(folder / f"img{i:03d}.png")
    return root


def lc25000_subset(dest: Path, per_class: int) -> Path:
    """An ImageFolder of symlinks to the first ``per_class`` LC25000 tiles of each class (sorted
    names; the tiles are never copied). Call only when :data:`LC25000` exists."""
    for folder in sorted(p for p in LC25000.iterdir() if p.is_dir()):
        (dest / folder.name).mkdir(parents=True, exist_ok=True)
        for tile in sorted(folder.iterdir())[:per_class]:
            link = dest / folder.name / tile.name
            if not link.exists():
                link.symlink_to(tile)
    return dest
