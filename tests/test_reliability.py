"""Reliability under faults: SIGKILLs, damaged chunks and --repair, concurrent writers, a full disk,
remote stores and hostile inputs, all through `featstore extract` / `featstore verify`.

The SIGKILL tests run real processes forked from a pre-imported server (tools/fault_injection.py,
whose full campaign writes RELIABILITY.md); the others run in this process. Everything runs on
the registered test model ``tiny_cnn`` (tests/_tiny_model.py) at 16 px; the campaigns extract 8
of its layers so that each failpoint count (``kill@N``) lands where it does with the 18 layers
of efficientnet_lite0, the full campaign's model.
"""

from __future__ import annotations

import errno
import sys
import uuid
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
import torch
import xarray as xr
from featstore.cli.app import main
from PIL import Image

import featstore
from featstore.errors import FeatstoreRuntimeError, StoreLockedError
from featstore.lock import LOCK_KEY, StoreLock, lock_holder
from featstore.store import FeatureStore
from featstore.verify import verify_store

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import fault_injection as FI  # noqa: E402

SMALL: dict[str, Any] = {"model": "tiny_cnn", "image_size": 16, "batch_size": 2,
                         "chunk_images": 2, "device": "cpu"}
CLI_SMALL = ["--model", "tiny_cnn", "--image-size", "16", "--batch-size", "2", "--chunk-images",
             "2", "--device", "cpu", "-q"]
#: model options of the fault-injection campaigns: 8 layers (tiny_cnn's auto set is stem, block)
MODEL = ("--model", "tiny_cnn", "--layers",
         "stem.0,stem.1,stem.2,stem,block.0,block.1,block.2,block", "--image-size", "16")


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: faster on small inputs and free of oversubscription on 2 cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> FI.ForkRunner:
    return FI.ForkRunner(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Two classes x 3 images: 3 chunks of 2 images per init."""
    return FI.make_images(tmp_path_factory.mktemp("data"), per_class=3)


@pytest.fixture(scope="module")
def clean(data, tmp_path_factory) -> xr.Dataset:
    """An uninterrupted extraction of two inits, loaded."""
    url = str(tmp_path_factory.mktemp("clean") / "clean.zarr")
    torch.set_num_threads(1)
    return featstore.extract(str(data), url, inits=("random:0", "random:1"), **SMALL).load()


@pytest.fixture(params=["local", "file", "memory"])
def url(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "s.zarr")
    if request.param == "file":
        return f"file://{tmp_path / 's.zarr'}"
    return f"memory://featstore-reliability-{uuid.uuid4().hex}/s.zarr"


def identical(ds: xr.Dataset, other: xr.Dataset) -> None:
    xr.testing.assert_identical(ds.load().drop_attrs(deep=False), other.drop_attrs(deep=False))


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def flip(url: str, key: str) -> None:
    if url.startswith("memory://"):
        fs = fsspec.filesystem("memory")
        raw = bytearray(fs.cat_file(f"{url[9:]}/{key}"))
        raw[len(raw) // 2] ^= 0xFF
        fs.pipe_file(f"{url[9:]}/{key}", bytes(raw))
    else:
        FI.flip_byte(Path(url.removeprefix("file://")) / key)


# ------------------------------------------------------------------------------------------------
# 1. crash safety, by SIGKILL of real processes


@pytest.mark.slow
def test_random_sigkills_each_resumed_end_equal_to_uninterrupted(runner, tmp_path):
    outcome = FI.kill_campaign(runner, tmp_path, kills=3, per_class=3, seed=1, model=MODEL)
    assert outcome.ok, outcome.failures
    assert outcome.tried == 3 and outcome.lost == 0
    assert all(row[4] == "0" and row[5] == "0" for row in outcome.rows)  # no damage, no redo


@pytest.mark.slow
def test_sigkill_during_creation_replacement_append_and_chunk_writes(runner, tmp_path):
    points = ("create.array=kill@3", "create.array=kill@5", "add_inits.resize=kill@4",
              "write_chunk.before_marker=kill@2")
    outcome = FI.failpoint_campaign(runner, tmp_path, per_class=2, only=points, model=MODEL)
    assert outcome.tried == len(points)
    assert outcome.ok, outcome.failures
    phases = [row[3] for row in outcome.rows]
    assert "while creating the store" in phases and "while appending an init" in phases


def test_failpoints_do_nothing_unless_asked(monkeypatch):
    from featstore.store import failpoint

    monkeypatch.setenv("FEATSTORE_FAILPOINTS", "some.other.point=kill,x=sleep:0")
    failpoint("write_chunk.layer")  # not named: returns
    failpoint("x")  # sleeps 0 s
    monkeypatch.delenv("FEATSTORE_FAILPOINTS")
    failpoint("x")


# ------------------------------------------------------------------------------------------------
# 2. integrity: verify and --repair


def test_flipped_byte_reported_then_repaired_to_equal_untouched(url, data, clean):
    featstore.extract(str(data), url, inits=("random:0", "random:1"), **SMALL)
    store = FeatureStore.open(url)
    flip(url, store.chunk_key("block", (1, 2, 0)))
    report = verify_store(url)
    assert [(p.kind, p.variable, p.init, p.start, p.stop) for p in report.problems] == [
        ("corrupt", "block", "random:1", 4, 6)]
    seen = []
    original = featstore.extraction.extract_chunks

    def spy(plan, store, dataset, model, init_index, init_name, pending, progress):
        seen.append((init_name, list(pending)))
        return original(plan, store, dataset, model, init_index, init_name, pending, progress)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(featstore.extraction, "extract_chunks", spy)
        ds = featstore.extract(str(data), url, inits=("random:0",), repair=True, **SMALL)
    assert seen == [("random:1", [2])]  # exactly the bad chunk, of an init not named
    assert verify_store(url).ok
    identical(ds, clean)


def test_cli_verify_then_extract_repair(data, clean, tmp_path, capsys):
    url = str(tmp_path / "s.zarr")
    args = ["extract", str(data), "--store", url, "--init", "random:0", "--init", "random:1",
            *CLI_SMALL]
    assert run_cli(args, capsys)[0] == 0
    store = FeatureStore.open(url)
    flip(url, store.chunk_key("stem", (0, 1, 0)))
    (Path(url) / store.chunk_key("block", (1, 0, 0))).unlink()
    code, out, err = run_cli(["verify", url], capsys)
    assert code == 1 and err.count("\n") == 1
    assert "1 chunk corrupt, 1 chunk missing" in err and "--repair" in err
    assert "stem" in out and "block" in out and "2-3" in out and "0-1" in out
    code, _, err = run_cli([*args, "--repair"], capsys)
    assert code == 0 and "recomputing 2 damaged chunks" in err
    assert run_cli(["verify", url], capsys)[0] == 0
    identical(featstore.open_store(url), clean)


def test_repair_of_a_store_that_does_not_exist(data, tmp_path, capsys):
    code, _, err = run_cli(["extract", str(data), "--store", str(tmp_path / "no.zarr"),
                            "--repair", *CLI_SMALL], capsys)
    assert code == 2 and "nothing to repair" in err and err.count("\n") == 1
    assert not (tmp_path / "no.zarr").exists()


def test_corruption_campaign_every_kind_detected_and_repaired(runner, tmp_path):
    outcome = FI.corruption_campaign(runner, tmp_path, per_class=2, seed=3, model=MODEL)
    assert outcome.tried == 9
    assert outcome.ok, outcome.failures


# ------------------------------------------------------------------------------------------------
# 3. concurrency


def test_second_extract_exits_2_at_once_naming_the_holder(url, data, capsys):
    args = ["extract", str(data), "--store", url, "--init", "random:0", *CLI_SMALL]
    with StoreLock(url, command="featstore extract elsewhere") as lock:
        assert lock_holder(url) == lock.info
        code, _, err = run_cli(args, capsys)
        assert code == 2 and err.count("\n") == 1
        assert f"is locked by pid {lock.info.pid} on host {lock.info.host}" in err
        assert "featstore extract elsewhere" in err
        with pytest.raises(StoreLockedError):
            featstore.extract(str(data), url, inits=("random:0",), **SMALL)
    assert run_cli(args, capsys)[0] == 0
    assert FeatureStore.open(url).lock_holder() is None


def test_lock_is_released_after_a_crash_and_not_left_in_the_store(data, tmp_path, monkeypatch):
    url = str(tmp_path / "s.zarr")
    original = FeatureStore.write_chunk
    calls = {"n": 0}

    def crashing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(FeatureStore, "write_chunk", crashing)
    with pytest.raises(KeyboardInterrupt):
        featstore.extract(str(data), url, inits=("random:0",), **SMALL)
    assert lock_holder(url) is None and not (Path(url) / LOCK_KEY).exists()


def test_concurrent_processes_second_refused_first_correct_stale_taken_over(runner, tmp_path):
    outcome = FI.concurrency(runner, tmp_path, per_class=2, model=MODEL)
    assert outcome.ok, outcome.failures
    assert "exit 2" in outcome.rows[0][1] and "is locked by pid" in outcome.rows[0][1]


# ------------------------------------------------------------------------------------------------
# 4. disk full


def test_disk_full_one_line_exit_1_and_resumable(data, clean, tmp_path, monkeypatch, capsys):
    """ENOSPC on the third chunk write (simulated): one line, finished chunks kept, resumable."""
    url = str(tmp_path / "s.zarr")
    original = FeatureStore.write_chunk
    calls = {"n": 0}

    def full_disk(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(FeatureStore, "write_chunk", full_disk)
    args = ["extract", str(data), "--store", url, "--init", "random:0", "--init", "random:1",
            *CLI_SMALL]
    code, _, err = run_cli(args, capsys)
    assert code == 1 and err.count("\n") == 1
    assert err == (f"featstore: error: no space left on device while writing '{url}'; finished "
                   "chunks are kept; free space and rerun the same command to resume\n")
    assert FeatureStore.open(url).progress().sum() == 2
    monkeypatch.setattr(FeatureStore, "write_chunk", original)
    assert run_cli(args, capsys)[0] == 0
    identical(featstore.open_store(url), clean)


def test_disk_full_in_the_library_is_a_runtime_error(data, tmp_path, monkeypatch):
    def full_disk(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(FeatureStore, "add_inits", full_disk)
    with pytest.raises(FeatstoreRuntimeError, match="no space left on device while writing"):
        featstore.extract(str(data), str(tmp_path / "s.zarr"), inits=("random:0",), **SMALL)


@pytest.mark.slow
def test_disk_full_on_a_real_tiny_tmpfs(runner, tmp_path):
    outcome = FI.disk_full(runner, tmp_path, per_class=2, model=MODEL)
    if outcome.skipped:
        pytest.skip(outcome.skipped)
    assert outcome.ok, outcome.failures


# ------------------------------------------------------------------------------------------------
# 5. remote stores behave like local directories


def test_resume_after_crash_equals_clean_run(url, data, clean, monkeypatch):
    original = FeatureStore.write_chunk
    calls = {"n": 0}

    def crashing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(FeatureStore, "write_chunk", crashing)
    with pytest.raises(KeyboardInterrupt):
        featstore.extract(str(data), url, inits=("random:0", "random:1"), **SMALL)
    monkeypatch.setattr(FeatureStore, "write_chunk", original)
    partial = FeatureStore.open(url)
    assert partial.pending_chunks(0) == [2]
    assert lock_holder(url) is None
    identical(featstore.extract(str(data), url, inits=("random:0", "random:1"), **SMALL), clean)


def test_append_init_equals_clean_run(url, data, clean):
    first = featstore.extract(str(data), url, inits=("random:0",), **SMALL).load()
    assert list(first["init"].values) == ["random:0"]
    both = featstore.extract(str(data), url, inits=("random:0", "random:1"), **SMALL)
    identical(both, clean)
    assert verify_store(url).ok


def test_interrupted_creation_is_redone(url, data, clean, monkeypatch):
    import featstore.store as store_module

    original = store_module.FeatureStore.add_inits

    def die(self, inits):
        if not self.init_names and inits:
            raise KeyboardInterrupt  # the store exists, its first init is being appended
        return original(self, inits)

    monkeypatch.setattr(store_module.FeatureStore, "add_inits", die)
    with pytest.raises(KeyboardInterrupt):
        featstore.extract(str(data), url, inits=("random:0", "random:1"), **SMALL)
    monkeypatch.setattr(store_module.FeatureStore, "add_inits", original)
    identical(featstore.extract(str(data), url, inits=("random:0", "random:1"), **SMALL), clean)


# ------------------------------------------------------------------------------------------------
# 6. hostile inputs through the command line


@pytest.mark.parametrize(("case", "name", "content"), FI.BAD_IMAGES,
                         ids=[c[1] for c in FI.BAD_IMAGES])
def test_bad_image_one_line_exit_2_or_recorded_skip(case, name, content, tmp_path, capsys):
    data = FI.make_images(tmp_path / "data", per_class=2)
    (data / "tumour" / name).write_bytes(content())
    url = str(tmp_path / "s.zarr")
    args = ["extract", str(data), "--store", url, "--init", "random:0", *CLI_SMALL]
    code, _, err = run_cli(args, capsys)
    assert code == 2, case
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"featstore: error: cannot read image 'tumour/{name}': ")
    assert "--skip-unreadable" in err
    ds = featstore.open_store(url)
    paths = [str(p) for p in ds["path"].values]
    bad_chunk = paths.index(f"tumour/{name}") // 2
    assert FeatureStore.open(url).pending_chunks(0) == list(range(bad_chunk, 3))  # rest kept
    code, _, _ = run_cli([*args, "--skip-unreadable"], capsys)
    assert code == 0
    ds = featstore.open_store(url)
    assert ds["valid"].values.tolist() == [p != f"tumour/{name}" for p in paths]
    assert np.isnan(ds["block"].isel(init=0, image=paths.index(f"tumour/{name}")).values).all()


def test_16bit_cmyk_unicode_spaces_and_symlink_loops_work(tmp_path, capsys):
    data = tmp_path / "dätä sèt 名"
    (data / "klasse ä").mkdir(parents=True)
    (data / "b").mkdir()
    Image.fromarray(np.full((20, 20), 40000, dtype=np.uint16)).save(data / "klasse ä" / "g16.png")
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(data / "klasse ä" / "cmyk 1.jpg")
    Image.new("RGB", (16, 16), (9, 9, 9)).save(data / "b" / "bild 名.png")
    (data / "b" / "loop1.png").symlink_to(data / "b" / "loop2.png")
    (data / "b" / "loop2.png").symlink_to(data / "b" / "loop1.png")
    url = str(tmp_path / "ünï cödé.zarr")
    code, _, err = run_cli(["extract", str(data), "--store", url, "--init", "random:0",
                            *CLI_SMALL], capsys)
    assert code == 0, err
    ds = featstore.open_store(url)
    assert ds["path"].values.tolist() == ["b/bild 名.png", "klasse ä/cmyk 1.jpg",
                                          "klasse ä/g16.png"]
    assert np.isfinite(ds["block"].values).all()


@pytest.mark.parametrize(("text", "message"), [
    ("path,klass\nbenign/img000.png,a\n", "lacks column(s) label"),
    ("path,label\nbenign/img000.png,\n", "empty path or label"),
    ("path,label\nbenign/img000.png,a\n./benign/img000.png,b\n", "duplicate path"),
    ("path,label\n../outside.png,a\n", "lies outside"),
    ("path,label\n/etc/passwd.png,a\n", "lies outside"),
])
def test_bad_manifest_one_line_exit_2_nothing_written(text, message, tmp_path, capsys):
    data = FI.make_images(tmp_path / "data", per_class=1)
    (data / "list.csv").write_text(text, encoding="utf-8")
    url = tmp_path / "s.zarr"
    code, _, err = run_cli(["extract", str(data / "list.csv"), "--store", str(url),
                            "--init", "random:0", *CLI_SMALL], capsys)
    assert code == 2 and err.count("\n") == 1 and message in err
    assert not url.exists()


def test_manifest_listing_a_missing_file(tmp_path, capsys):
    data = FI.make_images(tmp_path / "data", per_class=1)
    (data / "list.csv").write_text("path,label\nbenign/img000.png,a\nnope.png,b\n")
    args = ["extract", str(data / "list.csv"), "--store", str(tmp_path / "s.zarr"),
            "--init", "random:0", *CLI_SMALL]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and err.count("\n") == 1
    assert "cannot read image 'nope.png': file not found" in err
    assert run_cli([*args, "--skip-unreadable"], capsys)[0] == 0
    assert featstore.open_store(str(tmp_path / "s.zarr"))["valid"].values.tolist() == [True,
                                                                                      False]
