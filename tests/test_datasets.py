"""Tests of featstore.datasets and `featstore datasets`, against a local HTTP server."""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import socket
import threading
import time
import urllib.parse
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from featstore import datasets as DS
from featstore.data import ImageFolderSource, NpzSource, PCamSource, open_source
from featstore.datasets import (
    DatasetInfo,
    RemoteFile,
    dataset_dir,
    dataset_path,
    fetch_dataset,
    get_dataset,
    list_datasets,
)
from featstore.errors import ChecksumMismatchError, DatasetFetchError, FeatstoreInputError

# ------------------------------------------------------------------------------------------------
# a local HTTP server with optional Range support


class _FileServer:
    """Serves ``files`` by name on 127.0.0.1; records (name, Range header) of every request."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.ranges = True
        self.cut_after: int | None = None
        self.requests: list[tuple[str, str | None]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                name = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path.lstrip("/"))
                requested = self.headers.get("Range")
                owner.requests.append((name, requested))
                body = owner.files.get(name)
                if body is None:
                    self.send_error(404, "no such file")
                    return
                start = 0
                if requested and owner.ranges:
                    start = int(requested.split("=", 1)[1].split("-", 1)[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                payload = body[start:]
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if owner.cut_after is not None:
                    payload = payload[: owner.cut_after]
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[_FileServer]:
    running = _FileServer()
    yield running
    running.close()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("FEATSTORE_DATA", str(cache))
    monkeypatch.delenv("FEATSTORE_DATASETS_MIRROR", raising=False)
    for proxy in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                  "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)  # the test server is local
    return cache


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _png_bytes(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (value, value, value)).save(buffer, format="PNG")
    return buffer.getvalue()


def _folder_zip() -> bytes:
    """A zip of tiny/Tiny/<class>/<image>.png (a wrapper folder like Kather's archive)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for label, name in enumerate(("01_TUMOR", "02_STROMA")):
            for i in range(3):
                archive.writestr(f"Tiny/{name}/img{i}.png", _png_bytes(40 * label + i))
        archive.writestr("__MACOSX/._junk", b"")
    return buffer.getvalue()


def _npz_bytes() -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    np.savez_compressed(buffer, train_images=rng.integers(0, 256, (4, 5, 5, 3), dtype=np.uint8),
                        train_labels=np.array([[0], [1], [2], [1]], dtype=np.uint8),
                        test_images=np.zeros((2, 5, 5, 3), np.uint8),
                        test_labels=np.array([[2], [0]], dtype=np.uint8))
    return buffer.getvalue()


def _h5_gz(key: str, array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        handle.create_dataset(key, data=array)
    return gzip.compress(buffer.getvalue())


def _entry(name: str, files: dict[str, bytes], data: str, classes: tuple[str, ...],
           unpack: str | None = None, **overrides: object) -> DatasetInfo:
    remotes = tuple(
        RemoteFile(name=file, url=f"http://example.invalid/{file}", size=len(body),
                   md5=_md5(body), unpack=unpack)  # type: ignore[arg-type]
        for file, body in files.items()
    )
    info = DatasetInfo(name=name, title=f"tiny {name}", files=remotes, data=data, n_images=6,
                       classes=classes, homepage="", license="CC0", citation="",
                       approx_size=sum(len(b) for b in files.values()))
    return replace(info, **overrides)  # type: ignore[arg-type]


@pytest.fixture
def tiny(server: _FileServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, DatasetInfo]:
    """Three tiny sets registered under their names, their files on the server."""
    zipped = {"tiny.zip": _folder_zip()}
    npz = {"tiny.npz": _npz_bytes()}
    y = np.array([0, 1, 1], dtype=np.uint8).reshape(-1, 1, 1, 1)
    h5 = {"camelyonpatch_level_2_split_train_x.h5.gz": _h5_gz("x", np.zeros((3, 4, 4, 3),
                                                                             np.uint8)),
          "camelyonpatch_level_2_split_train_y.h5.gz": _h5_gz("y", y)}
    for files in (zipped, npz, h5):
        server.files.update(files)
    entries = {
        "tinyfolder": _entry("tinyfolder", zipped, "tiny", ("01_TUMOR", "02_STROMA"), "zip"),
        "tinynpz": _entry("tinynpz", npz, "tiny.npz", ("a", "b", "c")),
        "tinypcam": _entry("tinypcam", h5, ".", ("no_tumor", "tumor"), "gz"),
    }
    monkeypatch.setattr(DS, "_REGISTRY", {**DS._REGISTRY, **entries})
    return entries


class _Recorder:
    """A featstore.progress.Progress that records what it is told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, int | None]] = []
        self.advanced = 0

    def start(self, task: str, total: int | None, completed: int = 0) -> None:
        self.events.append(("start", task, total))
        self.advanced += completed

    def advance(self, amount: int) -> None:
        self.advanced += amount

    def finish(self, task: str) -> None:
        self.events.append(("finish", task, None))


# ------------------------------------------------------------------------------------------------
# registry


def test_registry_holds_the_published_sets() -> None:
    names = [info.name for info in list_datasets()]
    assert names == ["kather2016", "pathmnist", "pcam"]
    for info in list_datasets():
        for remote in info.files:
            assert remote.md5 is None or re.fullmatch(r"[0-9a-f]{32}", remote.md5)
            assert remote.url.startswith("https://zenodo.org/records/")
    kather = get_dataset("kather2016")
    assert kather.files[0].name == "Kather_texture_2016_image_tiles_5000.zip"
    assert kather.files[0].md5 == "0ddbebfc56344752028fda72602aaade"
    assert len(kather.classes) == 8
    assert get_dataset("pathmnist").files[0].md5 == "a8b06965200029087d5bd730944a56c1"
    pcam = get_dataset("pcam")
    assert [f.output for f in pcam.files][0] == "camelyonpatch_level_2_split_train_x.h5"
    assert {f.md5 for f in pcam.files} >= {"1571f514728f59376b705fc836ff4b63"}
    assert all(info.checksums_known for info in list_datasets())


def test_unknown_dataset_names_the_known_ones() -> None:
    with pytest.raises(FeatstoreInputError, match=r"unknown dataset 'pcm'; did you mean 'pcam'\? "
                                                  r"known datasets: kather2016, pathmnist, pcam"):
        get_dataset("pcm")
    with pytest.raises(FeatstoreInputError, match="unknown dataset 'nope'; known datasets"):
        fetch_dataset("nope")


def test_dataset_dir_follows_argument_then_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert dataset_dir("pcam", tmp_path / "x") == tmp_path / "x" / "pcam"
    assert dataset_dir("pcam") == tmp_path / "cache" / "pcam"
    monkeypatch.delenv("FEATSTORE_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert dataset_dir("pcam") == tmp_path / "xdg" / "featstore" / "datasets" / "pcam"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert dataset_dir("kather2016") == (
        tmp_path / "home" / ".cache" / "featstore" / "datasets" / "kather2016")
    assert dataset_path("kather2016") is None


# ------------------------------------------------------------------------------------------------
# fetching


def test_fetch_zip_gives_an_image_folder_and_is_cached(
        server: _FileServer, tiny: dict[str, DatasetInfo], _isolated_cache: Path) -> None:
    recorder = _Recorder()
    path = fetch_dataset("tinyfolder", base_url=server.url, progress=recorder)
    assert path == _isolated_cache / "tinyfolder" / "tiny" / "Tiny"
    source = open_source(path)
    assert isinstance(source, ImageFolderSource)
    assert source.classes == ["01_TUMOR", "02_STROMA"] and len(source) == 6
    assert source.load(4).getpixel((0, 0)) == (41, 41, 41)
    assert dataset_path("tinyfolder") == path
    assert not (_isolated_cache / "tinyfolder" / "tiny.zip").exists()  # archive removed
    tasks = [task for kind, task, _ in recorder.events if kind == "start"]
    assert tasks == ["download tiny.zip", "verify tiny.zip", "unpack tiny.zip"]
    assert server.requests == [("tiny.zip", None)]
    assert fetch_dataset("tinyfolder", base_url=server.url) == path
    assert len(server.requests) == 1  # cached: no network


def test_fetch_npz_and_gzipped_pcam(server: _FileServer, tiny: dict[str, DatasetInfo],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATSTORE_DATASETS_MIRROR", server.url + "/")
    npz = fetch_dataset("tinynpz")
    assert npz.name == "tiny.npz"
    source = open_source(npz, classes=tiny["tinynpz"].classes)
    assert isinstance(source, NpzSource) and source.classes == ["a", "b", "c"]
    assert [r.split for r in source.records] == ["train"] * 4 + ["test"] * 2
    folder = fetch_dataset("tinypcam")
    assert folder == dataset_dir("tinypcam")
    pcam = open_source(folder)
    assert isinstance(pcam, PCamSource) and pcam.labels.tolist() == [0, 1, 1]
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
        "camelyonpatch_level_2_split_train_x.h5", "camelyonpatch_level_2_split_train_y.h5"]


def test_resume_from_a_partial_download(server: _FileServer, tiny: dict[str, DatasetInfo],
                                        _isolated_cache: Path) -> None:
    body = server.files["tiny.npz"]
    folder = _isolated_cache / "tinynpz"
    folder.mkdir(parents=True)
    (folder / "tiny.npz.part").write_bytes(body[:100])
    recorder = _Recorder()
    path = fetch_dataset("tinynpz", base_url=server.url, progress=recorder)
    assert server.requests == [("tiny.npz", "bytes=100-")]
    assert path.read_bytes() == body
    assert ("start", "download tiny.npz", len(body)) in recorder.events
    assert not (folder / "tiny.npz.part").exists()


def test_server_ignoring_range_restarts_the_download(
        server: _FileServer, tiny: dict[str, DatasetInfo], _isolated_cache: Path) -> None:
    server.ranges = False
    body = server.files["tiny.npz"]
    folder = _isolated_cache / "tinynpz"
    folder.mkdir(parents=True)
    (folder / "tiny.npz.part").write_bytes(b"\0" * 100)  # wrong bytes: must not be kept
    path = fetch_dataset("tinynpz", base_url=server.url)
    assert server.requests == [("tiny.npz", "bytes=100-")]
    assert path.read_bytes() == body


def test_broken_connection_keeps_the_part_and_the_next_fetch_resumes(
        server: _FileServer, tiny: dict[str, DatasetInfo], _isolated_cache: Path) -> None:
    body = server.files["tiny.npz"]
    server.cut_after = 50
    with pytest.raises(DatasetFetchError, match=rf"ended after 50 of {len(body)} bytes; rerun "
                                                "to resume"):
        fetch_dataset("tinynpz", base_url=server.url)
    part = _isolated_cache / "tinynpz" / "tiny.npz.part"
    assert part.read_bytes() == body[:50]
    server.cut_after = None
    assert fetch_dataset("tinynpz", base_url=server.url).read_bytes() == body
    assert server.requests[-1] == ("tiny.npz", "bytes=50-")


def test_part_as_long_as_the_file_is_only_verified(
        server: _FileServer, tiny: dict[str, DatasetInfo], _isolated_cache: Path) -> None:
    body = server.files["tiny.npz"]
    folder = _isolated_cache / "tinynpz"
    folder.mkdir(parents=True)
    (folder / "tiny.npz.part").write_bytes(body)
    assert fetch_dataset("tinynpz", base_url=server.url).read_bytes() == body
    assert server.requests == []


def test_wrong_checksum_is_refused_and_the_file_deleted(
        server: _FileServer, tiny: dict[str, DatasetInfo], _isolated_cache: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    body = server.files["tiny.npz"]
    bad = replace(tiny["tinynpz"], files=(replace(tiny["tinynpz"].files[0], md5="0" * 32),))
    monkeypatch.setitem(DS._REGISTRY, "tinynpz", bad)
    pattern = rf"^tiny\.npz: checksum mismatch, expected md5 0{{32}}, got {_md5(body)}; " \
              "the download was deleted"
    with pytest.raises(ChecksumMismatchError, match=pattern):
        fetch_dataset("tinynpz", base_url=server.url)
    folder = _isolated_cache / "tinynpz"
    assert sorted(p.name for p in folder.iterdir()) == [".lock"]
    assert dataset_path("tinynpz") is None
    wrong_size = replace(bad, files=(replace(bad.files[0], size=len(body) + 1, md5=None),))
    with pytest.raises(ChecksumMismatchError,
                       match=rf"tiny\.npz: expected {len(body) + 1} bytes, got {len(body)}"):
        fetch_dataset(wrong_size, base_url=server.url)


def test_size_only_verification_when_no_checksum_is_published(
        server: _FileServer, tiny: dict[str, DatasetInfo]) -> None:
    info = tiny["tinynpz"]
    unsure = replace(info, name="unsure", files=(replace(info.files[0], md5=None),))
    assert not unsure.checksums_known
    assert fetch_dataset(unsure, base_url=server.url).read_bytes() == server.files["tiny.npz"]


def test_unreachable_server_fails_fast(tiny: dict[str, DatasetInfo]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(DatasetFetchError, match=rf"cannot reach 127\.0\.0\.1:{port} to download "
                                                r"tiny\.npz .*FEATSTORE_DATASETS_MIRROR"):
        fetch_dataset("tinynpz", base_url=f"http://127.0.0.1:{port}", timeout=3.0)
    assert time.monotonic() - started < 3.0


def test_silent_server_times_out(tiny: dict[str, DatasetInfo]) -> None:
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(DatasetFetchError, match=r"timeout 0\.3 s"):
            fetch_dataset("tinynpz", base_url=f"http://127.0.0.1:{port}", timeout=0.3)
        assert time.monotonic() - started < 3.0


def test_http_error_and_bad_timeout(server: _FileServer, tiny: dict[str, DatasetInfo]) -> None:
    del server.files["tiny.npz"]
    with pytest.raises(DatasetFetchError, match=r"cannot download tiny\.npz from 127\.0\.0\.1:"
                                                r"\d+: HTTP 404"):
        fetch_dataset("tinynpz", base_url=server.url)
    with pytest.raises(FeatstoreInputError, match="--timeout must be a positive number"):
        fetch_dataset("tinynpz", base_url=server.url, timeout=0)


def test_a_second_concurrent_fetch_is_refused(
        server: _FileServer, tiny: dict[str, DatasetInfo], _isolated_cache: Path) -> None:
    fcntl = pytest.importorskip("fcntl")
    folder = _isolated_cache / "tinynpz"
    folder.mkdir(parents=True)
    with open(folder / ".lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        with pytest.raises(DatasetFetchError, match="another fetch of 'tinynpz' is running"):
            fetch_dataset("tinynpz", base_url=server.url)
    assert fetch_dataset("tinynpz", base_url=server.url).exists()


def test_unsafe_zip_member_is_refused(server: _FileServer, tiny: dict[str, DatasetInfo],
                                      _isolated_cache: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../escape.png", _png_bytes(1))
    server.files["evil.zip"] = buffer.getvalue()
    evil = _entry("evil", {"evil.zip": buffer.getvalue()}, "evil", ("a",), "zip")
    with pytest.raises(DatasetFetchError, match="holds the unsafe path '../escape.png'"):
        fetch_dataset(evil, base_url=server.url)
    assert not (_isolated_cache / "escape.png").exists()


# ------------------------------------------------------------------------------------------------
# command line


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from featstore.cli.app import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_cli_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["datasets", "list"], capsys)
    assert code == 0
    for name in ("kather2016", "pathmnist", "pcam"):
        assert name in out


def test_cli_fetch_prints_the_data_path(
        server: _FileServer, tiny: dict[str, DatasetInfo], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(["datasets", "fetch", "tinynpz", "--cache-dir", str(tmp_path / "c"),
                           "--mirror", server.url, "--timeout", "5"], capsys)
    assert code == 0, err
    assert out.strip() == str(tmp_path / "c" / "tinynpz" / "tiny.npz")
    code, out, _ = _run(["datasets", "list", "--cache-dir", str(tmp_path / "c")], capsys)
    assert code == 0


@pytest.mark.parametrize(
    ("argv", "status", "pattern"),
    [
        (["datasets", "fetch", "nope"], 2, r"unknown dataset 'nope'; known datasets: .*pcam"),
        (["datasets", "fetch", "tinynpz", "--timeout", "-1"], 2, "--timeout must be positive"),
    ],
)
def test_cli_input_errors(argv: list[str], status: int, pattern: str, tiny: dict[str, DatasetInfo],
                          capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(argv, capsys)
    assert code == status
    assert err.count("\n") == 1 and err.startswith("featstore: error: ")
    assert re.search(pattern.replace("must be positive", "must be a positive"), err)


def test_cli_checksum_mismatch_exits_2_and_network_failure_exits_1(
        server: _FileServer, tiny: dict[str, DatasetInfo], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    info = tiny["tinynpz"]
    monkeypatch.setitem(DS._REGISTRY, "tinynpz",
                        replace(info, files=(replace(info.files[0], md5="f" * 32),)))
    code, _, err = _run(["datasets", "fetch", "tinynpz", "-q", "--mirror", server.url], capsys)
    assert code == 2
    assert err.count("\n") == 1 and "tiny.npz: checksum mismatch, expected md5 ffff" in err
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, _, err = _run(["datasets", "fetch", "tinynpz", "-q", "--mirror",
                         f"http://127.0.0.1:{port}"], capsys)
    assert code == 1
    assert err.count("\n") == 1 and "cannot reach 127.0.0.1" in err


def test_slow_name_lookup_counts_against_the_timeout(
        tiny: dict[str, DatasetInfo], monkeypatch: pytest.MonkeyPatch) -> None:
    def slow_lookup(*args: object, **kwargs: object) -> list[object]:
        time.sleep(1.0)
        raise OSError("too late")

    monkeypatch.setattr(socket, "getaddrinfo", slow_lookup)
    started = time.monotonic()
    with pytest.raises(DatasetFetchError, match=r"cannot reach mirror\.invalid:8080 .*name "
                                                r"lookup took longer than 0\.2 s"):
        fetch_dataset("tinynpz", base_url="http://mirror.invalid:8080", timeout=0.2)
    assert time.monotonic() - started < 0.9
