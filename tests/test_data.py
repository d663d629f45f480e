"""Tests of featstore.data: image sources, hostile files, mode conversion and preprocessing."""

from __future__ import annotations

import io
import math
import os
import pickle
import shutil
import struct
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from featstore import data as D
from featstore.data import (
    ImageFolderSource,
    ImageRecord,
    ManifestSource,
    NpzSource,
    PCamSource,
    decode_image,
    open_source,
    preprocess,
    to_rgb,
)
from featstore.errors import DataSourceError, FeatstoreInputError, UnreadableImageError

# ------------------------------------------------------------------------------------------------
# fixtures


def _png(path: Path, rgb: tuple[int, int, int] = (10, 20, 30), size: int = 6) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), rgb).save(path)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """ImageFolder: 2 classes, nested images, a hidden file, a non-image file."""
    root = tmp_path / "folder"
    _png(root / "b_tumor" / "x2.png", (200, 0, 0))
    _png(root / "b_tumor" / "sub" / "x1.png", (210, 0, 0))
    _png(root / "a_normal" / "y1.png", (0, 200, 0))
    _png(root / "a_normal" / "y0.png", (0, 210, 0))
    _png(root / "a_normal" / ".hidden.png")
    (root / "a_normal" / "notes.txt").write_text("not an image")
    (root / ".git").mkdir()
    return root


def _write_npz(path: Path, gray: bool = False, **extra: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    shape = (4, 5) if gray else (4, 5, 3)
    arrays = {
        "train_images": rng.integers(0, 256, (3, *shape), dtype=np.uint8),
        "train_labels": np.array([[2], [0], [1]], dtype=np.uint8),
        "val_images": rng.integers(0, 256, (1, *shape), dtype=np.uint8),
        "val_labels": np.array([[1]], dtype=np.uint8),
        "test_images": rng.integers(0, 256, (2, *shape), dtype=np.uint8),
        "test_labels": np.array([0, 2]),
    }
    arrays.update(extra)
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
    return arrays


def _write_pcam(folder: Path, splits: tuple[str, ...] = ("train", "valid", "test"),
                n: int = 3) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    written = {}
    for k, split in enumerate(splits):
        x = rng.integers(0, 256, (n + k, 4, 4, 3), dtype=np.uint8)
        y = (np.arange(n + k) % 2).astype(np.uint8).reshape(-1, 1, 1, 1)
        stem = f"camelyonpatch_level_2_split_{split}"
        with h5py.File(folder / f"{stem}_x.h5", "w") as handle:
            handle.create_dataset("x", data=x)
        with h5py.File(folder / f"{stem}_y.h5", "w") as handle:
            handle.create_dataset("y", data=y)
        written[split] = x
    return written


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text and "Traceback" not in text
    return text


# ------------------------------------------------------------------------------------------------
# ImageFolderSource


def test_image_folder_records_labels_and_order(folder: Path) -> None:
    source = ImageFolderSource(folder)
    assert source.kind == "imagefolder"
    assert source.classes == ["a_normal", "b_tumor"]
    assert [r.path for r in source.records] == [
        "a_normal/y0.png", "a_normal/y1.png", "b_tumor/sub/x1.png", "b_tumor/x2.png"]
    assert source.labels.tolist() == [0, 0, 1, 1]
    assert source.labels.dtype == np.int64
    assert not source.has_splits
    assert source.skipped == []
    assert source.load(3).getpixel((0, 0)) == (200, 0, 0)
    assert source.describe()["n_images"] == 4


def test_image_folder_fingerprint_is_deterministic_and_ignores_root(
        folder: Path, tmp_path: Path) -> None:
    first = ImageFolderSource(folder).fingerprint()
    assert ImageFolderSource(folder).fingerprint() == first
    moved = shutil.copytree(folder, tmp_path / "elsewhere")
    assert ImageFolderSource(moved).fingerprint() == first
    _png(moved / "b_tumor" / "x3.png")
    assert ImageFolderSource(moved).fingerprint() != first


def test_image_folder_given_classes_fix_label_order(folder: Path) -> None:
    source = ImageFolderSource(folder, classes=["b_tumor", "a_normal", "empty"])
    assert source.classes == ["b_tumor", "a_normal", "empty"]
    assert source.labels.tolist() == [1, 1, 0, 0]
    with pytest.raises(DataSourceError, match="has class folder 'b_tumor' that is not among"):
        ImageFolderSource(folder, classes=["a_normal"])
    with pytest.raises(DataSourceError, match="more than once"):
        ImageFolderSource(folder, classes=["a_normal", "a_normal"])


def test_image_folder_without_class_folders_or_images(tmp_path: Path) -> None:
    _png(tmp_path / "flat" / "a.png")
    with pytest.raises(DataSourceError, match="has no class subfolders"):
        ImageFolderSource(tmp_path / "flat")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(DataSourceError, match="no images found"):
        ImageFolderSource(tmp_path / "empty")


def test_image_folder_unicode_and_spaces_in_paths(tmp_path: Path) -> None:
    root = tmp_path / "dätä sét"
    _png(root / "tumör grade 2" / "bild 1 ä.png", (1, 2, 3))
    _png(root / "日本" / "画像.png", (4, 5, 6))
    source = open_source(root)
    assert source.classes == ["tumör grade 2", "日本"]
    assert source.load(0).getpixel((0, 0)) == (1, 2, 3)
    assert source.load(1).getpixel((0, 0)) == (4, 5, 6)
    assert source.fingerprint() == open_source(root).fingerprint()


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_image_folder_symlinks_dangling_and_loops_are_skipped(folder: Path, tmp_path: Path) -> None:
    cls = folder / "a_normal"
    os.symlink(cls / "missing.png", cls / "dangling.png")
    os.symlink(cls / "loop_b.png", cls / "loop_a.png")
    os.symlink(cls / "loop_a.png", cls / "loop_b.png")
    os.symlink(cls, cls / "dirloop")  # a folder link back up: not descended into
    outside = _png(tmp_path / "outside.png", (7, 7, 7))
    os.symlink(outside, cls / "linked.png")
    source = ImageFolderSource(folder)
    assert source.skipped == ["a_normal/dangling.png", "a_normal/loop_a.png",
                              "a_normal/loop_b.png"]
    paths = [r.path for r in source.records]
    assert "a_normal/linked.png" in paths
    assert not any("dirloop" in p for p in paths)
    assert source.load(paths.index("a_normal/linked.png")).getpixel((0, 0)) == (7, 7, 7)


# ------------------------------------------------------------------------------------------------
# ManifestSource


def _manifest(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "manifest.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_manifest_records_splits_and_numeric_classes(tmp_path: Path) -> None:
    root = tmp_path / "m"
    for name in ("a.png", "b.png", "sub dir/c ü.png"):
        _png(root / name)
    path = _manifest(root, "path,label,split,extra\na.png,10,train,x\nb.png,9,test,y\n"
                           "sub dir/c ü.png,10,val,z\n")
    source = ManifestSource(path)
    assert source.kind == "manifest"
    assert source.classes == ["9", "10"]
    assert source.records == [ImageRecord("a.png", 1, "train"), ImageRecord("b.png", 0, "test"),
                              ImageRecord("sub dir/c ü.png", 1, "val")]
    assert source.has_splits
    assert source.fingerprint() == ManifestSource(path).fingerprint()
    assert source.load(2).size == (6, 6)


def test_manifest_without_split_column_has_no_splits(tmp_path: Path) -> None:
    path = _manifest(tmp_path, "label,path\ncat,a.png\ndog,b.png\n")
    source = open_source(path)
    assert source.classes == ["cat", "dog"]
    assert not source.has_splits
    with pytest.raises(UnreadableImageError, match="cannot read image 'a.png': file not found"):
        source.load(0)


def test_manifest_given_classes_and_unknown_label(tmp_path: Path) -> None:
    path = _manifest(tmp_path, "path,label\na.png,tumor\nb.png,normal\nc.png,stroma\n")
    source = ManifestSource(path, classes=["normal", "tumor", "stroma", "fat"])
    assert source.classes == ["normal", "tumor", "stroma", "fat"]
    assert source.labels.tolist() == [1, 0, 2]
    with pytest.raises(DataSourceError, match=r"line 4: label 'stroma' is not among") as exc:
        open_source(path, classes=["normal", "tumor"])
    _one_line(exc)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("file,label\na.png,x\n", r"lacks column\(s\) path; found \['file', 'label'\]"),
        ("path\na.png\n", r"lacks column\(s\) label"),
        ("", r"lacks column\(s\) path, label; found no header"),
        ("path,label\n", "lists no images"),
        ("path,label\na.png,\n", "line 2: empty path or label"),
        ("path,label\na.png,x\n./a.png,y\n",
         r"line 3: duplicate path './a.png' \(also on line 2\)"),
        ("path,label\nsub/../a.png,x\na.png,x\n", "line 3: duplicate path"),
        ("path,label\n../x.png,x\n", "line 2: path '../x.png' lies outside"),
        ("path,label\n/etc/passwd.png,x\n", "line 2: path '/etc/passwd.png' lies outside"),
    ],
)
def test_manifest_errors_are_one_clear_line(tmp_path: Path, text: str, pattern: str) -> None:
    path = _manifest(tmp_path / "m", text)
    with pytest.raises(DataSourceError, match=pattern) as exc:
        ManifestSource(path)
    _one_line(exc)


def test_manifest_absolute_path_inside_is_relative(tmp_path: Path) -> None:
    root = tmp_path / "m"
    image = _png(root / "img" / "a.png")
    path = _manifest(root, f"path,label\n{image},x\n")
    assert ManifestSource(path).records[0].path == "img/a.png"


def test_manifest_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(b"path,label\n\xff\xfe.png,x\n")
    with pytest.raises(DataSourceError, match="is not UTF-8 text"):
        ManifestSource(path)


# ------------------------------------------------------------------------------------------------
# NpzSource


def test_npz_records_splits_labels_and_pixels(tmp_path: Path) -> None:
    arrays = _write_npz(tmp_path / "path.npz")
    source = open_source(tmp_path / "path.npz")
    assert isinstance(source, NpzSource) and source.kind == "npz"
    assert [r.path for r in source.records] == [
        "train/0000000", "train/0000001", "train/0000002", "val/0000000",
        "test/0000000", "test/0000001"]
    assert [r.split for r in source.records] == ["train"] * 3 + ["val"] + ["test"] * 2
    assert source.labels.tolist() == [2, 0, 1, 1, 0, 2]
    assert source.classes == ["0", "1", "2"]
    assert source.has_splits
    np.testing.assert_array_equal(np.asarray(source.load(1)), arrays["train_images"][1])
    np.testing.assert_array_equal(np.asarray(source.load(5)), arrays["test_images"][1])
    assert source.fingerprint() == NpzSource(tmp_path / "path.npz").fingerprint()


def test_npz_grayscale_and_stored_class_names(tmp_path: Path) -> None:
    arrays = _write_npz(tmp_path / "g.npz", gray=True,
                        label_names=np.array(["fat", "muscle", "tumor"]))
    source = NpzSource(tmp_path / "g.npz")
    assert source.classes == ["fat", "muscle", "tumor"]
    image = np.asarray(source.load(3))
    assert image.shape == (4, 5, 3)
    np.testing.assert_array_equal(image[..., 1], arrays["val_images"][0])
    assert NpzSource(tmp_path / "g.npz", classes=["a", "b", "c", "d"]).classes[3] == "d"
    with pytest.raises(DataSourceError, match="has label 2 but the given classes name only 2"):
        NpzSource(tmp_path / "g.npz", classes=["a", "b"])


def test_npz_without_splits(tmp_path: Path) -> None:
    np.savez(tmp_path / "plain.npz", images=np.zeros((2, 3, 3), np.uint16),
             labels=np.array([1, 0]))
    source = NpzSource(tmp_path / "plain.npz")
    assert [r.path for r in source.records] == ["0000000", "0000001"]
    assert not source.has_splits
    assert source.load(0).mode == "RGB"


def test_npz_pickles_without_its_cache(tmp_path: Path) -> None:
    arrays = _write_npz(tmp_path / "p.npz")
    source = NpzSource(tmp_path / "p.npz")
    source.load(0)
    clone = pickle.loads(pickle.dumps(source))
    assert clone._cache == {}
    np.testing.assert_array_equal(np.asarray(clone.load(2)), arrays["train_images"][2])


@pytest.mark.parametrize(
    ("arrays", "pattern"),
    [
        ({"x": np.zeros(3)}, r"holds no image arrays; expected train_images.*found \['x'\]"),
        ({"train_images": np.zeros((2, 4, 4), np.uint8)}, "has train_images but no train_labels"),
        ({"train_images": np.zeros((2, 4, 4), np.uint8), "train_labels": np.zeros((2, 3))},
         r"train_labels has shape \(2, 3\).*multi-label"),
        ({"train_images": np.zeros((3, 4, 4), np.uint8), "train_labels": np.zeros(2, int)},
         "holds 3 images but its labels hold 2"),
        ({"train_images": np.zeros((2, 4), np.uint8), "train_labels": np.zeros(2, int)},
         r"train_images has shape \(2, 4\)"),
        ({"train_images": np.zeros((2, 4, 4), np.uint8), "train_labels": np.array([0, -1])},
         "negative label -1"),
        ({"train_images": np.zeros((1, 4, 4), np.uint8), "train_labels": np.array(["a"])},
         "dtype <U1; expected integers"),
    ],
)
def test_npz_malformed(tmp_path: Path, arrays: dict[str, np.ndarray], pattern: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)  # type: ignore[arg-type]
    with pytest.raises(DataSourceError, match=pattern) as exc:
        NpzSource(tmp_path / "bad.npz")
    _one_line(exc)


def test_npz_not_an_archive(tmp_path: Path) -> None:
    (tmp_path / "fake.npz").write_bytes(b"hello")
    with pytest.raises(DataSourceError, match="is not a .npz array file"):
        open_source(tmp_path / "fake.npz")
    np.save(tmp_path / "array.npy", np.zeros(3))
    os.rename(tmp_path / "array.npy", tmp_path / "array.npz")
    with pytest.raises(DataSourceError, match="not a zip archive"):
        open_source(tmp_path / "array.npz")


# ------------------------------------------------------------------------------------------------
# PCamSource


def test_pcam_folder_records_splits_and_pixels(tmp_path: Path) -> None:
    written = _write_pcam(tmp_path / "pcam")
    source = open_source(tmp_path / "pcam")
    assert isinstance(source, PCamSource) and source.kind == "pcam"
    assert source.classes == ["no_tumor", "tumor"]
    splits = [r.split for r in source.records]
    assert splits == ["train"] * 3 + ["val"] * 4 + ["test"] * 5
    assert source.records[3].path == "val/0000000"
    assert source.labels.tolist() == [0, 1, 0, 0, 1, 0, 1, 0, 1, 0, 1, 0]
    np.testing.assert_array_equal(np.asarray(source.load(4)), written["valid"][1])
    np.testing.assert_array_equal(np.asarray(source.load(11)), written["test"][4])
    assert source.fingerprint() == PCamSource(tmp_path / "pcam").fingerprint()
    source.close()


def test_pcam_single_pair_and_y_file(tmp_path: Path) -> None:
    written = _write_pcam(tmp_path / "p", splits=("test",))
    x_file = tmp_path / "p" / "camelyonpatch_level_2_split_test_x.h5"
    source = open_source(x_file, classes=["normal", "metastasis"])
    assert source.classes == ["normal", "metastasis"]
    assert [r.split for r in source.records] == ["test"] * 3
    np.testing.assert_array_equal(np.asarray(source.load(2)), written["test"][2])
    same = open_source(x_file.with_name("camelyonpatch_level_2_split_test_y.h5"))
    assert [r.path for r in same.records] == [r.path for r in source.records]


def test_pcam_is_picklable_and_reopens_in_workers(tmp_path: Path) -> None:
    written = _write_pcam(tmp_path / "pcam", splits=("train",), n=4)
    source = PCamSource(tmp_path / "pcam")
    assert source._handles == {}  # nothing opened in __init__
    source.load(0)
    clone = pickle.loads(pickle.dumps(source))
    assert clone._handles == {}
    np.testing.assert_array_equal(np.asarray(clone.load(3)), written["train"][3])

    class _Pixels(torch.utils.data.Dataset[torch.Tensor]):
        def __len__(self) -> int:
            return len(source)

        def __getitem__(self, index: int) -> torch.Tensor:
            return torch.from_numpy(np.asarray(source.load(index)).copy())

    loader = torch.utils.data.DataLoader(_Pixels(), batch_size=2, num_workers=1,
                                         multiprocessing_context="fork")
    batches = torch.cat(list(loader)).numpy()
    np.testing.assert_array_equal(batches, written["train"])
    source.close()
    clone.close()


def test_pcam_errors(tmp_path: Path) -> None:
    _write_pcam(tmp_path / "p", splits=("train",))
    (tmp_path / "p" / "camelyonpatch_level_2_split_train_y.h5").unlink()
    with pytest.raises(DataSourceError, match="has no labels file 'camelyonpatch_level_2_split_tr"):
        open_source(tmp_path / "p")
    gz = tmp_path / "gz"
    gz.mkdir()
    (gz / "camelyonpatch_level_2_split_train_x.h5.gz").write_bytes(b"")
    with pytest.raises(DataSourceError, match="holds no PatchCamelyon"):
        PCamSource(gz)
    with pytest.raises(DataSourceError, match="is gzip-compressed; decompress it first"):
        open_source(gz / "camelyonpatch_level_2_split_train_x.h5.gz")
    (tmp_path / "bad_x.h5").write_bytes(b"not hdf5")
    (tmp_path / "bad_y.h5").write_bytes(b"not hdf5")
    with pytest.raises(DataSourceError, match="cannot read PatchCamelyon files") as exc:
        open_source(tmp_path / "bad_x.h5")
    _one_line(exc)
    with h5py.File(tmp_path / "k_x.h5", "w") as handle:
        handle.create_dataset("images", data=np.zeros((1, 2, 2, 3), np.uint8))
    with h5py.File(tmp_path / "k_y.h5", "w") as handle:
        handle.create_dataset("y", data=np.zeros((1, 1, 1, 1), np.uint8))
    with pytest.raises(DataSourceError, match=r"has no dataset 'x'; found \['images'\]"):
        open_source(tmp_path / "k_x.h5")


# ------------------------------------------------------------------------------------------------
# open_source dispatch


def test_open_source_dispatch_and_errors(tmp_path: Path, folder: Path) -> None:
    assert isinstance(open_source(folder), ImageFolderSource)
    assert isinstance(open_source(str(folder)), ImageFolderSource)
    with pytest.raises(DataSourceError, match="does not exist; pass an ImageFolder") as exc:
        open_source(tmp_path / "nope")
    _one_line(exc)
    (tmp_path / "data.parquet").write_bytes(b"x")
    with pytest.raises(DataSourceError, match="is not a directory, .csv manifest, .npz or .h5"):
        open_source(tmp_path / "data.parquet")
    assert issubclass(DataSourceError, FeatstoreInputError)


# ------------------------------------------------------------------------------------------------
# hostile image files


def _bytes_of(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares a huge image (its pixel data is a few bytes)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize(
    ("name", "content", "pattern"),
    [
        ("empty.png", b"", "the file is empty"),
        ("empty.jpg", b"", "the file is empty"),
        ("text.png", b"this is not an image at all", "cannot identify image file"),
        ("text.tif", b"II*\x00garbage", "cannot"),
        ("truncated.jpg",
         _bytes_of(Image.linear_gradient("L").convert("RGB"), "JPEG")[:600], "truncated"),
        ("truncated.png",
         _bytes_of(Image.linear_gradient("L").convert("RGB"), "PNG")[:300], "truncated|broken"),
        ("bomb.png", _png_claiming(100_000, 100_000), "decompression-bomb"),
    ],
)
def test_hostile_files_raise_one_line(tmp_path: Path, name: str, content: bytes,
                                      pattern: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UnreadableImageError, match=pattern) as exc:
        decode_image(path, display_path=f"cls/{name}")
    assert exc.value.path == f"cls/{name}"
    assert _one_line(exc).startswith(f"cannot read image 'cls/{name}': ")


def test_pixel_limit_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _png(tmp_path / "a.png", size=8)
    monkeypatch.setattr(D, "MAX_IMAGE_PIXELS", 63)
    with pytest.raises(UnreadableImageError, match="8x8 pixels exceed the limit of 63"):
        decode_image(path)
    tiff = tmp_path / "wide.tif"
    tifffile.imwrite(tiff, np.zeros((8, 8, 3), np.uint16), photometric="rgb")
    with pytest.raises(UnreadableImageError, match="8x8 pixels exceed the limit of 63"):
        decode_image(tiff)
    monkeypatch.setattr(D, "MAX_IMAGE_PIXELS", 64)
    assert decode_image(path).size == (8, 8)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(UnreadableImageError, match="file not found"):
        decode_image(tmp_path / "missing.png")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(UnreadableImageError, match="is a directory"):
        decode_image(tmp_path / "dir.png")


def test_16bit_grayscale_png_and_tiff(tmp_path: Path) -> None:
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    tifffile.imwrite(tmp_path / "g16.tif", values)
    for name in ("g16.png", "g16.tif"):
        image = decode_image(tmp_path / name)
        assert image.mode == "RGB"
        assert np.asarray(image)[0].tolist() == [[0, 0, 0], [128, 128, 128], [255, 255, 255]]


@pytest.mark.parametrize("planar", ["contig", "separate"])
def test_16bit_rgb_tiff_is_read_exactly(tmp_path: Path, planar: str) -> None:
    rgb = np.array([[[65535, 0, 257], [32768, 65535, 0]]], dtype=np.uint16)
    data = rgb if planar == "contig" else np.moveaxis(rgb, -1, 0)
    tifffile.imwrite(tmp_path / "rgb16.tiff", data, photometric="rgb", planarconfig=planar)
    image = decode_image(tmp_path / "rgb16.tiff")
    assert np.asarray(image).tolist() == [[[255, 0, 1], [128, 255, 0]]]


def test_float_tiff(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "f.tif", np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert np.asarray(decode_image(tmp_path / "f.tif"))[0, :, 0].tolist() == [0, 128, 255]


def test_8bit_tiff_goes_through_pillow(tmp_path: Path) -> None:
    Image.new("RGB", (3, 2), (9, 8, 7)).save(tmp_path / "a.tif")
    assert decode_image(tmp_path / "a.tif").getpixel((2, 1)) == (9, 8, 7)


def test_cmyk_jpeg(tmp_path: Path) -> None:
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    with Image.open(tmp_path / "cmyk.jpg") as handle:
        assert handle.mode == "CMYK"
    red = np.asarray(decode_image(tmp_path / "cmyk.jpg")).astype(int)
    assert np.abs(red - [255, 0, 0]).max() <= 3


def test_palette_with_transparency_and_rgba_png(tmp_path: Path) -> None:
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.save(tmp_path / "p.png", transparency=0)
    assert np.asarray(decode_image(tmp_path / "p.png")).tolist() == [[[255, 255, 255],
                                                                       [255, 0, 0]]]
    rgba = Image.fromarray(np.array([[[0, 0, 0, 0], [0, 0, 255, 255], [0, 0, 0, 128]]],
                                    dtype=np.uint8), mode="RGBA")
    rgba.save(tmp_path / "rgba.png")
    assert np.asarray(decode_image(tmp_path / "rgba.png")).tolist() == [
        [[255, 255, 255], [0, 0, 255], [127, 127, 127]]]


# ------------------------------------------------------------------------------------------------
# to_rgb per mode


def _mode_image(mode: str, value: object) -> Image.Image:
    return Image.new(mode, (2, 2), value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [
        ("L", 100, (100, 100, 100)),
        ("1", 1, (255, 255, 255)),
        ("I;16", 65535, (255, 255, 255)),
        ("I;16", 32768, (128, 128, 128)),
        ("I;16B", 257, (1, 1, 1)),
        ("I", 65535, (255, 255, 255)),
        ("I", -5, (0, 0, 0)),
        ("F", 0.5, (128, 128, 128)),
        ("F", 1.0, (255, 255, 255)),
        ("RGBA", (10, 20, 30, 255), (10, 20, 30)),
        ("RGBA", (10, 20, 30, 0), (255, 255, 255)),
        ("LA", (0, 0), (255, 255, 255)),
        ("LA", (40, 255), (40, 40, 40)),
        ("CMYK", (0, 0, 0, 0), (255, 255, 255)),
        ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
        ("YCbCr", (255, 128, 128), (255, 255, 255)),
    ],
)
def test_to_rgb_exact_values(mode: str, value: object, expected: tuple[int, int, int]) -> None:
    converted = to_rgb(_mode_image(mode, value))
    assert converted.mode == "RGB"
    assert converted.size == (2, 2)
    assert converted.getpixel((1, 1)) == expected


def test_to_rgb_large_ints_scale_by_maximum() -> None:
    image = Image.fromarray(np.array([[0, 65536 * 2]], dtype=np.int32), mode="I")
    assert np.asarray(to_rgb(image))[0, :, 0].tolist() == [0, 255]


def test_to_rgb_palette_with_and_without_transparency() -> None:
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 255, 0, 255, 0] + [0] * 762)
    image.putpixel((1, 0), 1)
    assert np.asarray(to_rgb(image)).tolist() == [[[0, 0, 255], [0, 255, 0]]]
    image.info["transparency"] = 1
    assert np.asarray(to_rgb(image)).tolist() == [[[0, 0, 255], [255, 255, 255]]]


def test_to_rgb_returns_rgb_unchanged() -> None:
    image = Image.new("RGB", (2, 2), (1, 2, 3))
    assert to_rgb(image) is image


# ------------------------------------------------------------------------------------------------
# preprocess


def test_preprocess_shape_dtype_and_normalization() -> None:
    image = Image.new("RGB", (17, 9), (51, 102, 255))
    mean, std = (0.5, 0.25, 0.0), (0.5, 0.25, 2.0)
    tensor = preprocess(image, 8, mean, std)
    assert tensor.shape == (3, 8, 8) and tensor.dtype == torch.float32
    expected = [(51 / 255 - 0.5) / 0.5, (102 / 255 - 0.25) / 0.25, (255 / 255) / 2.0]
    for channel, value in enumerate(expected):
        torch.testing.assert_close(tensor[channel], torch.full((8, 8), value))


#: the Pillow filter each interpolation name must select (Pillow's filters are antialiased)
PIL_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
               "nearest": Image.Resampling.NEAREST}


@pytest.mark.parametrize("interpolation", list(PIL_FILTERS))
def test_preprocess_interpolations_equal_pillow_resize(interpolation: str) -> None:
    """Each name resizes exactly as Pillow's filter of that name (a 30x20 image to 12x12)."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (30, 20, 3), dtype=np.uint8))
    tensor = preprocess(image, 12, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), interpolation)
    assert tensor.shape == (3, 12, 12)
    want = np.asarray(image.resize((12, 12), PIL_FILTERS[interpolation]), dtype=np.float32)
    np.testing.assert_array_equal(tensor.permute(1, 2, 0).numpy(), want / np.float32(255))
    others = [np.asarray(image.resize((12, 12), f)) for n, f in PIL_FILTERS.items()
              if n != interpolation]
    assert all(not np.array_equal(other, want) for other in others)  # the filters differ here


@pytest.mark.parametrize("crop_pct", [1.0, 0.875, 0.9])
@pytest.mark.parametrize("interpolation", list(PIL_FILTERS))
def test_preprocess_equals_torchvision_bit_for_bit(interpolation: str, crop_pct: float) -> None:
    """preprocess == torchvision's resize, center crop, to-tensor and normalize, every bit
    (featstore does it with Pillow directly, so extraction never imports torchvision)."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (37, 29, 3), dtype=np.uint8))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    size = 15
    side = size if crop_pct == 1.0 else math.floor(size / crop_pct)
    reference = TF.resize(image, [side, side], interpolation=InterpolationMode(interpolation),
                          antialias=True)
    reference = TF.center_crop(reference, [size, size])
    want = TF.normalize(TF.pil_to_tensor(reference).to(torch.float32).div_(255.0), list(mean),
                        list(std))
    got = preprocess(image, size, mean, std, interpolation, crop_pct)
    assert got.dtype == want.dtype and got.shape == want.shape == (3, size, size)
    assert torch.equal(got, want)
