"""``featstore demo``: the whole method, end to end, on real tissue, in a few minutes.

extract (efficientnet_lite0; ImageNet weights, five random-weight seeds, one random seed with its
normalization statistics re-estimated on the images and one shuffled-weights control) -> probe
(logistic regression, 5 folds) -> knowledge gain against each baseline -> report, all under one
output folder::

    featstore-demo/
      data/        the images used (the built-in IHC tiles, or a small subset of a public set)
      store.zarr   the feature store (probe results inside it)
      results.csv  probe scores per layer, init, classifier and metric (mean and std over folds)
      gain.csv     knowledge gain per classifier, layer, metric and baseline
      report/      figures, report.md and report.html

Data, when none is given: a public pathology set already in featstore's dataset cache; else an
attempt to download Kather et al. 2016 (short timeout, so an offline machine falls through in
seconds); else the built-in set: tiles of the immunohistochemistry image that scikit-image ships
(:func:`skimage.data.immunohistochemistry`, colonic glands, DAB-stained FHL2 with haematoxylin
counterstain), labelled by colour deconvolution as ``dab_rich`` or ``hematoxylin_rich`` and
saved as grey levels so that the label is not simply the tiles' colour.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataSourceError, FeatstoreError
from .report import ReportFiles, write_report

__all__ = [
    "DEMO_INITS",
    "IHC_CLASSES",
    "PUBLIC_DATASETS",
    "IHCTile",
    "DemoData",
    "DemoResult",
    "label_ihc_tiles",
    "write_ihc_dataset",
    "choose_demo_data",
    "run_demo",
]

#: inits of the demo: five random seeds (the gain's CI resamples them), one ``+bn`` seed and
#: one shuffled-weights control
DEMO_INITS: tuple[str, ...] = ("pretrained", "random:0-4", "random:0+bn", "shuffled:0")
#: class names of the built-in set, index = label
IHC_CLASSES: tuple[str, str] = ("dab_rich", "hematoxylin_rich")
#: public sets the demo looks for in the dataset cache, in order; the first is also fetched
PUBLIC_DATASETS: tuple[str, ...] = ("kather2016", "pathmnist")

_IHC_SOURCE = """# Built-in demo set: IHC tiles from scikit-image

- Image: `skimage.data.immunohistochemistry()` (512 x 512 RGB, file `ihc.png` shipped with
  scikit-image). Colonic glands; FHL2 protein revealed with DAB (brown), haematoxylin
  counterstain (blue). Acquired at the Center for Microscopy And Molecular Imaging (CMMI);
  "no known copyright restrictions" (scikit-image documentation).
- Tiles: {tile} x {tile} px with stride {stride} px (neighbouring tiles overlap by
  {overlap} px), written as PNG.
- Labels from colour deconvolution (`skimage.color.rgb2hed`): each stain's optical density is
  scaled by its 99th percentile over the whole image; a tile whose mean scaled DAB density
  exceeds its mean scaled haematoxylin density by more than {margin} is `dab_rich` (mostly
  stained epithelium), the reverse `hematoxylin_rich` (mostly stroma and nuclei). Tiles within
  the margin (ambiguous) or with total density below {min_density} (background) are dropped;
  the larger class keeps its most clearly labelled tiles so both classes have {per_class}.
- {colour}
- Caveats: one image, one slide, one patient; overlapping tiles share pixels, so
  cross-validation scores are optimistic; the labels are defined by stain colour, and what
  separates the classes once colour is gone (brightness, nuclear density, membranous
  texture) is simple enough that random convolutional features capture much of it.
"""

_GRAY_NOTE = (
    "Tiles are saved as grey levels (three equal channels): in colour, the label can be read\n"
    "  straight off the mean colour that defined it and every layer of every network scores\n"
    "  ~100%; without colour the probe has to use the tissue's structure."
)


@dataclass(frozen=True)
class IHCTile:
    """One tile of the built-in set: top-left corner, label and stain densities.

    Attributes
    ----------
    y, x : int
        Top-left corner in pixels.
    label : int
        Index into :data:`IHC_CLASSES`.
    dab, hematoxylin : float
        Mean scaled optical density of each stain over the tile.
    """

    y: int
    x: int
    label: int
    dab: float
    hematoxylin: float

    @property
    def name(self) -> str:
        """File name stem, e.g. ``"ihc_y032_x096"``."""
        return f"ihc_y{self.y:03d}_x{self.x:03d}"


def label_ihc_tiles(
    image: np.ndarray,
    tile: int = 64,
    stride: int = 32,
    margin: float = 0.05,
    min_density: float = 0.25,
    balance: bool = True,
) -> list[IHCTile]:
    """Tile an IHC image and label each tile by its dominant stain (pure computation).

    Parameters
    ----------
    image : ndarray of shape (height, width, 3), uint8
        RGB image with DAB and haematoxylin stains.
    tile, stride : int
        Tile side and step in pixels.
    margin : float
        Minimum difference of mean scaled densities (DAB minus haematoxylin) for a label;
        tiles within it are dropped as ambiguous.
    min_density : float
        Tiles whose mean scaled DAB plus haematoxylin density is below this are dropped as
        background.
    balance : bool
        Keep the same number of tiles per class (the most clearly labelled ones).

    Returns
    -------
    list of IHCTile
        In raster order (by ``y``, then ``x``).
    """
    from skimage.color import rgb2hed

    if image.ndim != 3 or image.shape[2] != 3:
        raise DataSourceError(f"expected an RGB image of shape (h, w, 3), got {image.shape}")
    if tile < 8 or stride < 1:
        raise DataSourceError(f"invalid tile {tile} / stride {stride}; need tile >= 8, stride >= 1")
    hed = rgb2hed(image)
    scaled = []
    for channel in (2, 0):  # DAB, haematoxylin
        od = hed[..., channel]
        top = float(np.percentile(od, 99))
        scaled.append(od / top if top > 0 else od)
    dab_map, hem_map = scaled
    height, width = image.shape[:2]
    tiles: list[IHCTile] = []
    for y in range(0, height - tile + 1, stride):
        for x in range(0, width - tile + 1, stride):
            dab = float(dab_map[y:y + tile, x:x + tile].mean())
            hem = float(hem_map[y:y + tile, x:x + tile].mean())
            if dab + hem < min_density or abs(dab - hem) <= margin:
                continue
            tiles.append(IHCTile(y, x, 0 if dab > hem else 1, dab, hem))
    if balance:
        per_class = min(sum(t.label == k for t in tiles) for k in range(len(IHC_CLASSES)))
        kept: list[IHCTile] = []
        for k in range(len(IHC_CLASSES)):
            ranked = sorted((t for t in tiles if t.label == k),
                            key=lambda t: (-abs(t.dab - t.hematoxylin), t.y, t.x))
            kept.extend(ranked[:per_class])
        tiles = kept
    return sorted(tiles, key=lambda t: (t.y, t.x))


def write_ihc_dataset(root: str | os.PathLike[str], tile: int = 64, stride: int = 32,
                      margin: float = 0.05, min_density: float = 0.25,
                      grayscale: bool = True) -> Path:
    """Write the built-in IHC tile set as an ImageFolder (``root/<class>/<tile>.png``).

    Existing contents of ``root`` are replaced. A ``SOURCE.md`` beside the class folders
    records provenance and the labelling rule.

    Parameters
    ----------
    root : str or PathLike
        Output folder.
    tile, stride, margin, min_density
        See :func:`label_ihc_tiles`.
    grayscale : bool
        Save the tiles as grey levels (3 equal channels). The labels come from the stains'
        colours, so in colour a probe reads them straight off the mean colour and every layer of
        every network scores ~100%; without colour it has to use the tissue's structure
        (membranous epithelium vs stroma and nuclei), which is what a transfer study is about.

    Returns
    -------
    pathlib.Path
        ``root``.
    """
    from PIL import Image
    from skimage.data import immunohistochemistry

    image = immunohistochemistry()
    tiles = label_ihc_tiles(image, tile, stride, margin, min_density)
    out = Path(root)
    if out.exists():
        shutil.rmtree(out)
    for name in IHC_CLASSES:
        (out / name).mkdir(parents=True)
    for t in tiles:
        picture = Image.fromarray(image[t.y:t.y + tile, t.x:t.x + tile])
        if grayscale:
            picture = picture.convert("L").convert("RGB")
        picture.save(out / IHC_CLASSES[t.label] / f"{t.name}.png")
    per_class = sum(t.label == 0 for t in tiles)
    (out / "SOURCE.md").write_text(_IHC_SOURCE.format(
        tile=tile, stride=stride, overlap=max(tile - stride, 0), margin=margin,
        min_density=min_density, per_class=per_class,
        colour=_GRAY_NOTE if grayscale else "Tiles keep their colour."), encoding="utf-8")
    return out


@dataclass(frozen=True)
class DemoData:
    """The images a demo runs on.

    Attributes
    ----------
    path : pathlib.Path
        ImageFolder (or other source ``featstore extract`` reads).
    name : str
        Short name (``"ihc-builtin"``, ``"kather2016"``, or the folder name).
    origin : str
        ``"given"``, ``"cache"``, ``"download"`` or ``"builtin"``.
    description : str
        One line saying plainly what the data is.
    """

    path: Path
    name: str
    origin: str
    description: str


def _subset_source(source_path: Path, dest: Path, per_class: int) -> Path:
    """Write the first ``per_class`` images of each class of a source as a PNG ImageFolder."""
    from .data import open_source

    source = open_source(source_path)
    if dest.exists():
        shutil.rmtree(dest)
    taken = dict.fromkeys(range(len(source.classes)), 0)
    for index, record in enumerate(source.records):
        if taken[record.label] >= per_class:
            continue
        folder = dest / str(source.classes[record.label])
        folder.mkdir(parents=True, exist_ok=True)
        stem = Path(record.path).with_suffix("").as_posix().replace("/", "__")
        source.load(index).save(folder / f"{stem}.png")
        taken[record.label] += 1
    return dest


def _datasets_module() -> Any | None:
    try:
        from . import datasets
    except ImportError:
        return None
    return datasets


def choose_demo_data(
    data: str | os.PathLike[str] | None,
    out: str | os.PathLike[str],
    *,
    fetch: bool = True,
    fetch_timeout: float = 3.0,
    per_class: int = 30,
    log: Callable[[str], None] | None = None,
) -> DemoData:
    """Pick the demo's images: DATA when given, else a cached or downloaded public set, else
    the built-in IHC tiles (written under ``OUT/data``).

    Parameters
    ----------
    data : str or PathLike, optional
        Images to use as they are (ImageFolder or manifest).
    out : str or PathLike
        Demo output folder.
    fetch : bool
        Try to download :data:`PUBLIC_DATASETS` ``[0]`` when nothing is cached.
    fetch_timeout : float
        Connect timeout of that attempt in seconds.
    per_class : int
        Images per class taken from a public set (the demo must stay small on a CPU).
    log : callable, optional
        Receives one line per decision.
    """
    say = log or (lambda _line: None)
    out_dir = Path(out)
    if data is not None:
        path = Path(data)
        if not path.exists():
            raise DataSourceError(
                f"demo data '{data}' does not exist; pass an ImageFolder directory or a CSV "
                "manifest, or no DATA to use a public or the built-in set"
            )
        return DemoData(path, path.name or str(path), "given", f"your data at {path}")
    datasets = _datasets_module()
    if datasets is not None:
        for name in PUBLIC_DATASETS:
            try:
                cached = datasets.dataset_path(name)
            except FeatstoreError:
                cached = None
            if cached is not None:
                say(f"found {name} in the dataset cache at {cached}")
                subset = _subset_source(Path(cached), out_dir / "data" / name, per_class)
                return DemoData(subset, name, "cache",
                                f"{name} (public, from the dataset cache), first {per_class} "
                                "images per class")
        if fetch:
            name = PUBLIC_DATASETS[0]
            say(f"trying to download {name} (timeout {fetch_timeout:g} s)...")
            try:
                fetched = datasets.fetch_dataset(name, timeout=fetch_timeout)
            except FeatstoreError as exc:
                say(f"could not download {name}: {str(exc).splitlines()[0] if str(exc) else exc}")
            else:
                subset = _subset_source(Path(fetched), out_dir / "data" / name, per_class)
                return DemoData(subset, name, "download",
                                f"{name} (public, just downloaded), first {per_class} images "
                                "per class")
    root = write_ihc_dataset(out_dir / "data" / "ihc-builtin")
    counts = {name: len(list((root / name).glob("*.png"))) for name in IHC_CLASSES}
    return DemoData(
        root, "ihc-builtin", "builtin",
        "the built-in set: "
        + " + ".join(f"{n} {c}" for c, n in counts.items())
        + " grey-level tiles (64x64 px) of scikit-image's immunohistochemistry image, "
          "labelled by colour deconvolution",
    )


@dataclass
class DemoResult:
    """What :func:`run_demo` made, and how long each step took (seconds)."""

    data: DemoData
    out: Path
    store: str
    results_csv: Path
    gain_csv: Path
    report: ReportFiles
    timings: dict[str, float] = field(default_factory=dict)


def run_demo(
    data: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] = "featstore-demo",
    *,
    model: str = "efficientnet_lite0",
    inits: Sequence[str] = DEMO_INITS,
    classifiers: Sequence[str] = ("logreg",),
    folds: int = 5,
    seed: int = 0,
    per_class: int = 30,
    fetch: bool = True,
    fetch_timeout: float = 3.0,
    device: str = "auto",
    batch_size: int = 32,
    image_size: int | None = None,
    n_boot: int = 1000,
    log: Callable[[str], None] | None = None,
    progress: Any | None = None,
) -> DemoResult:
    """Run extract -> probe -> report end to end under ``out``.

    Parameters
    ----------
    data : str or PathLike, optional
        Images; default a public set or the built-in IHC tiles (see :func:`choose_demo_data`).
    out : str or PathLike
        Output folder (created); a rerun reuses the finished extraction.
    model : str
        Network.
    inits : sequence of str
        ``pretrained`` and baseline inits (seed ranges such as ``random:0-4`` expand); default
        :data:`DEMO_INITS`: five random seeds, so that the gain's interval carries the variance
        between seeds.
    classifiers : sequence of str
        Probe classifiers.
    folds, seed : int
        Cross-validation folds and seed.
    per_class : int
        Images per class taken from a public set.
    fetch, fetch_timeout : bool, float
        Whether and how patiently to try downloading a public set.
    device, batch_size : str, int
        Extraction settings.
    image_size : int, optional
        Side the images are resized to; default the model's standard size (224 for
        efficientnet_lite0).
    n_boot : int
        Bootstrap resamples of the gain's confidence interval.
    log : callable, optional
        Receives one line per step.
    progress : featstore.progress.Progress, optional
        Receives extraction progress.

    Returns
    -------
    DemoResult
    """
    from .extraction import extract
    from .gain import knowledge_gain
    from .results import write_gain_csv, write_results_csv
    from .sweep import probe

    say = log or (lambda _line: None)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    chosen = choose_demo_data(data, out_dir, fetch=fetch, fetch_timeout=fetch_timeout,
                              per_class=per_class, log=say)
    timings["data"] = time.perf_counter() - start
    say(f"data: {chosen.description} ({chosen.path})")

    store = str(out_dir / "store.zarr")
    start = time.perf_counter()
    say(f"extract: {model}, inits {', '.join(inits)} -> {store}")
    extract(str(chosen.path), store, model=model, inits=tuple(inits), device=device,
            batch_size=batch_size, image_size=image_size, overwrite=True, progress=progress)
    timings["extract"] = time.perf_counter() - start

    start = time.perf_counter()
    say(f"probe: {', '.join(classifiers)}, {folds} folds, seed {seed}")
    results = probe(store, classifiers=tuple(classifiers), folds=folds, seed=seed)
    timings["probe"] = time.perf_counter() - start

    start = time.perf_counter()
    results_csv = out_dir / "results.csv"
    write_results_csv(results, results_csv)
    gain_csv = out_dir / "gain.csv"
    write_gain_csv(knowledge_gain(results, n_boot=n_boot, seed=seed), gain_csv)
    report = write_report(store, out_dir / "report", n_boot=n_boot, seed=seed, log=say)
    timings["report"] = time.perf_counter() - start
    return DemoResult(chosen, out_dir, store, results_csv, gain_csv, report, timings)
