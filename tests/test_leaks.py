"""featstore.leaks and ``featstore leaks``: dihedral perceptual hashes and near-duplicate search."""

from __future__ import annotations

import csv
import io
import itertools
from pathlib import Path

import numpy as np
import pytest
from featstore.cli.app import main
from PIL import Image
from scipy.fft import dctn

from featstore.errors import FeatstoreInputError, UnreadableImageError
from featstore.leaks import (
    DEFAULT_THRESHOLD,
    DIHEDRAL,
    HASH_BITS,
    LeakResult,
    dihedral_hashes,
    find_leaks,
    groups_from_paths,
    leaks_across_folds,
    near_duplicates,
    parse_group_regex,
    parse_threshold,
    thumbnail,
)
from helpers import LC25000

# ---------------------------------------------------------------------------------------------
# fixtures and independent references


def texture(seed: int, side: int = 64) -> np.ndarray:
    """A smooth random RGB texture, uint8 array of shape (side, side, 3)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((side, side, 3))
    for cells, weight in ((4, 1.0), (8, 0.6), (16, 0.3)):
        grid = rng.integers(0, 256, size=(cells, cells, 3), dtype=np.uint8)
        out += weight * np.asarray(Image.fromarray(grid).resize((side, side),
                                                                Image.Resampling.BICUBIC))
    return np.clip(out / 1.9, 0, 255).astype(np.uint8)


def transform(pixels: np.ndarray, g: int) -> np.ndarray:
    """DIHEDRAL[g] applied to an image array: rot90(fliplr(x) if mirror else x, k)."""
    mirror, k = divmod(g, 4)
    return np.ascontiguousarray(np.rot90(np.fliplr(pixels) if mirror else pixels, k))


def jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def reference_hash(gray: np.ndarray) -> int:
    """Hash of one grayscale array as a Python int, straight from the definition."""
    coefficients = dctn(np.asarray(gray, dtype=np.float64), norm="ortho")
    value = 0
    for u in range(8):
        for v in range(8):
            if (u, v) != (0, 0) and coefficients[u, v] > 1e-3:
                value |= 1 << (8 * u + v)
    return value


def reference_distance(a: np.ndarray, b: np.ndarray) -> int:
    """min over the 8 pixel transforms g of b of the bits between hash(a) and hash(g(b))."""
    ha = reference_hash(a)
    return min(bin(ha ^ reference_hash(transform(b, g))).count("1") for g in range(8))


def save(path: Path, pixels: np.ndarray, fmt: str = "png") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jpeg":
        path.write_bytes(jpeg(pixels))
    else:
        Image.fromarray(pixels).save(path)


@pytest.fixture
def copies_folder(tmp_path: Path) -> tuple[Path, set[frozenset[str]], set[frozenset[str]]]:
    """ImageFolder: image A with its 7 rotations/flips (PNG), image B with 3 JPEG q90 copies
    (plain, rot90, mirror+rot270), and 10 unrelated textures. Returns the folder, the expected
    pairs and the subset of them that are exact pixel copies."""
    root = tmp_path / "copies"
    a, b = texture(1), texture(2)
    family_a = [f"x/a_{DIHEDRAL[g]}.png" for g in range(8)]
    for g, name in enumerate(family_a):
        save(root / name, transform(a, g))
    family_b = ["y/b.png", "y/b_q90.jpeg", "x/b_rot90_q90.jpeg", "y/b_mirror+rot270_q90.jpeg"]
    save(root / family_b[0], b)
    save(root / family_b[1], b, "jpeg")
    save(root / family_b[2], transform(b, 1), "jpeg")
    save(root / family_b[3], transform(b, 7), "jpeg")
    for k in range(10):
        save(root / ("x" if k % 2 else "y") / f"other{k}.png", texture(100 + k))
    exact = {frozenset(p) for p in itertools.combinations(family_a, 2)}
    near = {frozenset(p) for p in itertools.combinations(family_b, 2)}
    return root, exact | near, exact


# ---------------------------------------------------------------------------------------------
# the hash


@pytest.mark.parametrize("shape", [(32, 32), (24, 40)])
def test_dihedral_hashes_equal_reference_on_transformed_pixels(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(4, *shape))
    hashes = dihedral_hashes(images)
    assert hashes.shape == (4, 8) and hashes.dtype == np.uint64
    for n, image in enumerate(images):
        for g in range(8):
            assert int(hashes[n, g]) == reference_hash(transform(image, g)), (n, DIHEDRAL[g])
    assert np.array_equal(dihedral_hashes(images[0]), hashes[0])  # one image -> shape (8,)


def test_hash_bits_and_invariances() -> None:
    gray = np.asarray(Image.fromarray(texture(3)).convert("L"), dtype=np.float64)
    h = int(dihedral_hashes(gray)[0])
    assert h & 1 == 0  # DC bit never set
    assert 15 < bin(h).count("1") < 48  # roughly balanced signs on a texture
    # sign bits ignore brightness offset and positive contrast scaling
    assert int(dihedral_hashes(0.5 * gray + 40)[0]) == h
    # a flat image has no AC energy: every variant hashes to 0
    assert not dihedral_hashes(np.full((32, 32), 128.0)).any()
    with pytest.raises(ValueError, match="sides >= 8"):
        dihedral_hashes(np.zeros((2, 4, 4)))


def test_thumbnail_is_area_average_of_luma() -> None:
    pixels = texture(4)
    thumb = thumbnail(Image.fromarray(pixels))
    assert thumb.shape == (32, 32) and thumb.dtype == np.float32
    luma = pixels @ np.array([0.299, 0.587, 0.114])
    expected = luma.reshape(32, 2, 32, 2).mean(axis=(1, 3))
    assert np.abs(thumb - expected).max() < 1e-3
    # rotating the image rotates the thumbnail (no orientation-dependent rounding)
    for g in range(8):
        rotated = thumbnail(Image.fromarray(transform(pixels, g)))
        assert np.abs(rotated - transform(thumb, g)).max() < 1e-3


# ---------------------------------------------------------------------------------------------
# the search


def test_distances_equal_brute_force_reference() -> None:
    base = [np.asarray(Image.fromarray(texture(s)).convert("L"), dtype=np.float64)
            for s in (10, 11, 12)]
    grays = [*base, transform(base[0], 5), transform(base[1], 2) + 3.0,
             np.asarray(Image.open(io.BytesIO(jpeg(transform(texture(12), 3)))).convert("L"),
                        dtype=np.float64)]
    pairs, distances, transforms = near_duplicates(dihedral_hashes(np.stack(grays)),
                                                   threshold=HASH_BITS)
    n = len(grays)
    assert len(pairs) == n * (n - 1) // 2  # threshold 63 reports every pair
    assert np.all(pairs[:, 0] < pairs[:, 1]) and np.all(np.diff(distances) >= 0)
    for (i, j), d, g in zip(pairs.tolist(), distances, transforms, strict=True):
        assert d == reference_distance(grays[i], grays[j]), (i, j)
        # symmetric: the hash is an isometry of the group action
        assert d == reference_distance(grays[j], grays[i]), (j, i)
        assert bin(reference_hash(grays[i]) ^ reference_hash(transform(grays[j], int(g)))
                   ).count("1") == d
    found = {(i, j): int(d) for (i, j), d in zip(pairs.tolist(), distances, strict=True)}
    assert found[(0, 3)] == 0 and found[(1, 4)] == 0 and found[(2, 5)] <= 2
    assert min(d for (i, j), d in found.items() if (i, j) not in {(0, 3), (1, 4), (2, 5)}) > 12


def test_search_blocks_cover_every_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    import featstore.leaks as leaks

    rng = np.random.default_rng(1)
    hashes = rng.integers(0, 2**63, size=(40, 8), dtype=np.uint64)
    full = near_duplicates(hashes, threshold=30)
    monkeypatch.setattr(leaks, "_SEARCH_BYTES", 10 * 7)  # blocks of a few rows
    blocked = near_duplicates(hashes, threshold=30)
    for x, y in zip(full, blocked, strict=True):
        assert np.array_equal(x, y)
    # the same pairs as a direct all-pairs computation
    direct = np.bitwise_count(hashes[:, None, 0:1] ^ hashes[None, :, :]).min(axis=2)
    expected = {(i, j) for i in range(40) for j in range(i + 1, 40) if direct[i, j] <= 30}
    assert {tuple(p) for p in full[0].tolist()} == expected
    assert near_duplicates(hashes[:1])[0].shape == (0, 2)
    assert near_duplicates(hashes[:0])[0].shape == (0, 2)


def test_finds_every_rotated_flipped_and_reencoded_copy(copies_folder) -> None:  # type: ignore[no-untyped-def]
    root, expected, exact = copies_folder
    result = find_leaks(root, workers=2)
    found = {frozenset((result.paths[i], result.paths[j])) for i, j in result.pairs.tolist()}
    assert found == expected
    exact_found = {frozenset((result.paths[i], result.paths[j]))
                   for i, j in result.pairs[result.exact].tolist()}
    assert exact <= exact_found
    assert np.all(result.distances <= DEFAULT_THRESHOLD)
    # the reported transform maps image j onto image i (exact PNG copies: pixel for pixel)
    for (i, j), g in zip(result.pairs.tolist(), result.transforms, strict=True):
        if frozenset((result.paths[i], result.paths[j])) in exact:
            a = np.asarray(Image.open(root / result.paths[i]))
            b = np.asarray(Image.open(root / result.paths[j]))
            assert np.array_equal(a, transform(b, int(g)))
    summary = result.summary()
    assert summary["images"] == 22 and summary["exact_pairs"] + summary["near_pairs"] == 34
    assert summary["images_with_copy"] == 12 and summary["grouped"] is False
    assert result.n_with_copy == 12


def test_unrelated_images_have_no_pairs(tmp_path: Path) -> None:
    for k in range(24):
        save(tmp_path / "d" / f"c{k % 3}" / f"img{k}.jpeg", texture(500 + k), "jpeg")
    result = find_leaks(tmp_path / "d", workers=1)
    assert len(result.pairs) == 0 and result.n_with_copy == 0
    assert result.summary()["exact_pairs"] == 0 and result.rows() == []


# ---------------------------------------------------------------------------------------------
# groups and folds


def test_copies_within_a_group_are_not_cross_group(tmp_path: Path) -> None:
    root = tmp_path / "g"
    a, b = texture(20), texture(21)
    save(root / "cls" / "p01_a.png", a)
    save(root / "cls" / "p01_b.png", transform(a, 1))   # same patient
    save(root / "cls" / "p02_a.png", transform(a, 4))   # another patient
    save(root / "cls" / "p03_a.png", b)
    save(root / "cls" / "p03_b.jpeg", transform(b, 6), "jpeg")  # same patient
    save(root / "cls" / "p04_a.png", texture(22))
    grouped = find_leaks(root, group_regex=r"^[^/]+/p(\d+)_")
    assert grouped.groups == ("01", "01", "02", "03", "03", "04")
    pairs = {(grouped.paths[i], grouped.paths[j]): bool(c)
             for (i, j), c in zip(grouped.pairs.tolist(), grouped.cross_group, strict=True)}
    assert pairs == {("cls/p01_a.png", "cls/p01_b.png"): False,
                     ("cls/p01_a.png", "cls/p02_a.png"): True,
                     ("cls/p01_b.png", "cls/p02_a.png"): True,
                     ("cls/p03_a.png", "cls/p03_b.jpeg"): False}
    assert grouped.has_copy.tolist() == [True, True, True, False, False, False]
    assert grouped.summary()["cross_group_pairs"] == 2 and grouped.summary()["groups"] == 4
    ungrouped = find_leaks(root)
    assert ungrouped.n_with_copy == 5


def naive_fold_leaks(pairs: list[tuple[int, int]], fold: list[int],
                     train: list[bool] | None = None) -> int:
    leaked = set()
    for i, j in pairs:
        for test, other in ((i, j), (j, i)):
            if fold[test] < 0 or fold[other] == fold[test]:
                continue
            trains = train[other] if train is not None else fold[other] >= 0
            if trains:
                leaked.add(test)
    return len(leaked)


def _result(n: int, pairs: list[tuple[int, int]]) -> LeakResult:
    array = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    return LeakResult(tuple(f"img{k}" for k in range(n)), array,
                      np.ones(len(array), np.int64), np.zeros(len(array), np.int64), 6)


def test_leaks_across_folds() -> None:
    result = _result(6, [(0, 1), (2, 3), (4, 5)])
    # (0, 1) in folds 0 and 1: each is in the other's training set; (2, 3) share fold 0;
    # image 4 is unused, so fold 1 does not train on it
    assert leaks_across_folds(result, np.array([0, 1, 0, 0, -1, 1])) == 2
    # a fixed split: train images are never tested (test_fold -1)
    fold, train = np.array([0, -1, 0, -1, 0, 0]), np.array([0, 1, 0, 1, 0, 0], bool)
    assert leaks_across_folds(result, fold, train=train) == 2
    assert leaks_across_folds(result, np.full(6, -1)) == 0
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = 30
        pairs = sorted({tuple(sorted(rng.choice(n, 2, replace=False).tolist()))
                        for _ in range(25)})
        fold = rng.integers(-1, 4, size=n)
        train = rng.random(n) < 0.5
        res = _result(n, pairs)  # type: ignore[arg-type]
        assert leaks_across_folds(res, fold) == naive_fold_leaks(pairs, fold.tolist())  # type: ignore[arg-type]
        assert leaks_across_folds(res, fold, train) == naive_fold_leaks(
            pairs, fold.tolist(), train.tolist())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="test_fold has shape"):
        leaks_across_folds(result, np.zeros(5))


# ---------------------------------------------------------------------------------------------
# user input


def test_parse_threshold_and_group_regex_errors() -> None:
    assert parse_threshold(0) == 0 and parse_threshold(HASH_BITS) == HASH_BITS
    for bad in (-1, HASH_BITS + 1, 2.5, True):
        with pytest.raises(FeatstoreInputError, match=r"invalid --threshold .*0\.\.63"):
            parse_threshold(bad)  # type: ignore[arg-type]
    with pytest.raises(FeatstoreInputError, match=r"--group-regex '\(' does not compile"):
        parse_group_regex("(")
    with pytest.raises(FeatstoreInputError, match=r"--group-regex 'p\\\\d\+' has no capture"):
        parse_group_regex(r"p\d+")
    assert groups_from_paths(["a/12_x.png", "b/7_y.png"], r"^[^/]+/(\d+)_") == ("12", "7")
    with pytest.raises(FeatstoreInputError,
                       match=r"--group-regex .* does not match image 'b/y\.png'"):
        groups_from_paths(["a/12_x.png", "b/y.png"], r"^[^/]+/(\d+)_")


def test_unreadable_image_stops_or_is_skipped(tmp_path: Path) -> None:
    root = tmp_path / "u"
    save(root / "c" / "a.png", texture(30))
    save(root / "c" / "a_copy.png", transform(texture(30), 2))
    (root / "c" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(UnreadableImageError, match="broken.png"):
        find_leaks(root)
    result = find_leaks(root, skip_unreadable=True)
    assert result.unreadable == (2,) and result.summary()["unreadable"] == 1
    assert result.pairs.tolist() == [[0, 1]]


# ---------------------------------------------------------------------------------------------
# command line


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def test_cli_reports_and_writes_pairs(copies_folder, tmp_path: Path,  # type: ignore[no-untyped-def]
                                      capsys: pytest.CaptureFixture[str]) -> None:
    root, expected, _ = copies_folder
    out_csv = tmp_path / "pairs.csv"
    code, out, err = run(["leaks", str(root), "--quiet", "--out", str(out_csv)], capsys)
    assert code == 0, err
    assert "images scanned  22" in out and "elsewhere in the data" in out
    assert "12 of 22" in out and "first 10 of 34 pairs" in out
    with out_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    assert {frozenset((r["path_a"], r["path_b"])) for r in rows} == expected
    assert {r["match"] for r in rows} <= {"exact", "near"} and set(rows[0]) == {
        "path_a", "path_b", "distance", "match", "transform"}

    code, out, err = run(["leaks", str(root), "-q", "--group-regex", r"^([^/]+)/"], capsys)
    assert code == 0, err
    assert "in another group (2 groups)" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["--group-regex", "("], "does not compile"),
    (["--group-regex", r"\d+"], "has no capture group"),
    (["--group-regex", r"^(zzz)"], "does not match image"),
    (["--threshold", "64"], "invalid --threshold 64"),
    (["--out", "/nonexistent-folder/pairs.csv"], "cannot write --out"),
])
def test_cli_bad_input_exits_2_with_one_line(copies_folder, argv: list[str], message: str,  # type: ignore[no-untyped-def]
                                             capsys: pytest.CaptureFixture[str]) -> None:
    root, _, _ = copies_folder
    code, _, err = run(["leaks", str(root), "--quiet", *argv], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in err


# ---------------------------------------------------------------------------------------------
# real tiles


def test_lc25000_tiles_with_planted_copies(tmp_path: Path) -> None:
    if not LC25000.exists():
        pytest.skip(f"shared LC25000 tiles not found at {LC25000}")
    root = tmp_path / "lc"
    classes = sorted(p for p in LC25000.iterdir() if p.is_dir())
    planted: list[frozenset[str]] = []
    for cls in classes:
        (root / cls.name).mkdir(parents=True)
        files = sorted(f for f in cls.iterdir() if f.suffix.lower() in (".jpeg", ".jpg"))[:98]
        for f in files:
            (root / cls.name / f.name).symlink_to(f.resolve())
        # plant two copies of one tile: rotated by 90 degrees and re-encoded, mirrored (PNG)
        pixels = np.asarray(Image.open(files[0]).convert("RGB"))
        save(root / cls.name / "zz_rot90_q90.jpeg", transform(pixels, 1), "jpeg")
        save(root / cls.name / "zz_mirror.png", transform(pixels, 4))
        names = [f"{cls.name}/{files[0].name}", f"{cls.name}/zz_rot90_q90.jpeg",
                 f"{cls.name}/zz_mirror.png"]
        planted += [frozenset(p) for p in itertools.combinations(names, 2)]
    result = find_leaks(root, group_regex=r"^([^/]+)/")
    assert result.n_images == 300
    found = {frozenset((result.paths[i], result.paths[j])) for i, j in result.pairs.tolist()}
    assert set(planted) <= found
    # copies of a tile stay in its class: no pair may cross classes
    assert not result.cross_group.any() and result.n_with_copy == 0
    # pairs besides the planted ones are LC25000's own augmented copies: few, and the exact ones
    # are the same tissue (pixel correlation after the reported transform)
    assert len(found - set(planted)) < 30
    for (i, j), g, exact in zip(result.pairs.tolist(), result.transforms, result.exact,
                                strict=True):
        a = np.asarray(Image.open(root / result.paths[i]).convert("L"), dtype=np.float64)
        b = transform(np.asarray(Image.open(root / result.paths[j]).convert("L"),
                                 dtype=np.float64), int(g))
        if exact:
            assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9, (result.paths[i],
                                                                 result.paths[j])
