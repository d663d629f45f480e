"""Well-known public pathology image sets: a registry, a verified download cache, DATA paths.

:func:`fetch_dataset` downloads the files of a set into a cache folder, resuming an interrupted
download (HTTP ``Range``), checks each file's published size and checksum, unpacks what needs
unpacking and returns the path to pass as DATA to ``featstore extract`` (an ImageFolder
directory, an ``.npz`` file or a folder of PatchCamelyon ``.h5`` files). :func:`dataset_path`
answers the same without touching the network. Nothing here prints: progress goes to an optional
:class:`~featstore.progress.Progress`.

The cache folder of a set is ``<base>/<name>`` where ``<base>`` is the ``cache_dir`` argument,
else ``$FEATSTORE_DATA``, else ``$XDG_CACHE_HOME/featstore/datasets`` (``~/.cache/...``).
``$FEATSTORE_DATASETS_MIRROR`` (or ``base_url``) names a mirror that serves every file as
``<mirror>/<file name>``, for machines without access to the original hosts and for tests.

Layout of a cache folder while and after fetching::

    <name>/.lock                      held while a fetch runs (one fetch per set at a time)
    <name>/<file>.part                partial download, resumed by the next fetch
    <name>/<file>                     verified download (archives are removed once unpacked)
    <name>/.<file>.done.json          the file is verified and unpacked
    <name>/.featstore-ready.json      every file is done; names the DATA path
"""

from __future__ import annotations

import contextlib
import difflib
import gzip
import hashlib
import http.client
import json
import os
import shutil
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .errors import ChecksumMismatchError, DatasetFetchError, FeatstoreInputError
from .progress import Progress

__all__ = [
    "DEFAULT_TIMEOUT",
    "ENV_CACHE",
    "ENV_MIRROR",
    "RemoteFile",
    "DatasetInfo",
    "list_datasets",
    "get_dataset",
    "dataset_dir",
    "dataset_path",
    "fetch_dataset",
]

#: seconds to wait for a connection (and for each read) before giving up
DEFAULT_TIMEOUT: float = 10.0
#: environment variable naming the base cache folder
ENV_CACHE = "FEATSTORE_DATA"
#: environment variable naming a mirror serving ``<mirror>/<file name>``
ENV_MIRROR = "FEATSTORE_DATASETS_MIRROR"

_CHUNK = 1 << 20
_READY = ".featstore-ready.json"
_IGNORED_ENTRIES = ("__MACOSX",)


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset as its publisher serves it.

    Attributes
    ----------
    name : str
        File name as served and saved (the mirror serves ``<mirror>/<name>``).
    url : str
        Where the publisher serves it.
    size : int or None
        Size in bytes, None when not known.
    md5 : str or None
        Published MD5 hex digest, None when not known (then only ``size`` is checked).
    unpack : {"zip", "gz"} or None
        How to unpack it after verification: a zip archive into a folder named after it, a
        gzip file into the file without ``.gz``. Unpacked archives are removed.
    """

    name: str
    url: str
    size: int | None
    md5: str | None
    unpack: Literal["zip", "gz"] | None = None

    @property
    def output(self) -> str:
        """Name of what the file becomes in the cache folder once unpacked."""
        if self.unpack == "gz" and self.name.endswith(".gz"):
            return self.name[: -len(".gz")]
        if self.unpack == "zip":
            return self.name.rsplit(".", 1)[0]
        return self.name


@dataclass(frozen=True)
class DatasetInfo:
    """A public image set featstore can fetch.

    Attributes
    ----------
    name : str
        Registry name (``featstore datasets fetch NAME``).
    title : str
        One-line description.
    files : tuple of RemoteFile
        What to download.
    data : str
        DATA path relative to the cache folder once fetched: ``"."`` for the folder itself, or
        a file or folder name. For zip archives it is searched for below the unpacked folder
        (the first folder that holds more than a single subfolder).
    n_images : int
        Number of images.
    classes : tuple of str
        Class names in label order, to pass as ``classes=`` to :func:`featstore.data.open_source`
        where the files only hold label numbers.
    homepage, license, citation : str
        Where the set is described, its licence and the paper to cite.
    approx_size : int
        Download size in bytes (exact where every file's size is known).
    """

    name: str
    title: str
    files: tuple[RemoteFile, ...]
    data: str
    n_images: int
    classes: tuple[str, ...]
    homepage: str
    license: str
    citation: str
    approx_size: int

    @property
    def checksums_known(self) -> bool:
        """Whether every file has a published checksum (else only sizes are verified)."""
        return all(f.md5 is not None for f in self.files)


class _Silent:
    def start(self, name: str, total: int | None, completed: int = 0) -> None:
        pass

    def advance(self, count: int) -> None:
        pass

    def finish(self, name: str) -> None:
        pass


# Checksums: Kather 2016 - the MD5 Zenodo lists for record 53169; PathMNIST - the MD5 of
# medmnist's INFO dict (its size is not published, so it is not checked); PatchCamelyon - the
# MD5s torchvision's PCAM class lists for the .h5.gz files. Sizes of Kather 2016 and
# PatchCamelyon as recorded by tensorflow-datasets' checksum lists for the same URLs.
_ZENODO_PCAM = "https://zenodo.org/records/2546921/files/{}?download=1"
_PCAM_FILES = (
    ("camelyonpatch_level_2_split_train_x.h5.gz", 6421353462, "1571f514728f59376b705fc836ff4b63"),
    ("camelyonpatch_level_2_split_train_y.h5.gz", 21378, "35c2d7259d906cfc8143347bb8e05be7"),
    ("camelyonpatch_level_2_split_valid_x.h5.gz", 805965320, "d5b63470df7cfa627aeec8b9dc0c066e"),
    ("camelyonpatch_level_2_split_valid_y.h5.gz", 3038, "2b85f58b927af9964a4c15b8f7e8f179"),
    ("camelyonpatch_level_2_split_test_x.h5.gz", 800875929, "d8c2d60d490dbd479f8199bdfa0cf6ec"),
    ("camelyonpatch_level_2_split_test_y.h5.gz", 3040, "60a7035772fbdb7f34eb86d4420cf66a"),
)

_REGISTRY: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            name="kather2016",
            title="Kather 2016 colorectal cancer textures: 5,000 H&E tiles of 150x150 px, "
                  "8 tissue classes",
            files=(
                RemoteFile(
                    name="Kather_texture_2016_image_tiles_5000.zip",
                    url="https://zenodo.org/records/53169/files/"
                        "Kather_texture_2016_image_tiles_5000.zip?download=1",
                    size=258098431,
                    md5="0ddbebfc56344752028fda72602aaade",
                    unpack="zip",
                ),
            ),
            data="Kather_texture_2016_image_tiles_5000",
            n_images=5000,
            classes=("01_TUMOR", "02_STROMA", "03_COMPLEX", "04_LYMPHO", "05_DEBRIS",
                     "06_MUCOSA", "07_ADIPOSE", "08_EMPTY"),
            homepage="https://doi.org/10.5281/zenodo.53169",
            license="CC BY 4.0",
            citation="Kather JN et al. Multi-class texture analysis in colorectal cancer "
                     "histology. Sci Rep 6, 27988 (2016). doi:10.1038/srep27988",
            approx_size=258098431,
        ),
        DatasetInfo(
            name="pathmnist",
            title="PathMNIST (MedMNIST v2): 107,180 colorectal tissue patches of 28x28 px, "
                  "9 classes, train/val/test",
            files=(
                RemoteFile(
                    name="pathmnist.npz",
                    url="https://zenodo.org/records/6496656/files/pathmnist.npz?download=1",
                    size=None,
                    md5="a8b06965200029087d5bd730944a56c1",
                ),
            ),
            data="pathmnist.npz",
            n_images=107180,
            classes=("adipose", "background", "debris", "lymphocytes", "mucus",
                     "smooth muscle", "normal colon mucosa", "cancer-associated stroma",
                     "colorectal adenocarcinoma epithelium"),
            homepage="https://medmnist.com",
            license="CC BY 4.0",
            citation="Yang J et al. MedMNIST v2: a large-scale lightweight benchmark for 2D and "
                     "3D biomedical image classification. Sci Data 10, 41 (2023)",
            approx_size=206_000_000,
        ),
        DatasetInfo(
            name="pcam",
            title="PatchCamelyon: 327,680 lymph node patches of 96x96 px, metastasis yes/no, "
                  "train/val/test (HDF5)",
            files=tuple(
                RemoteFile(name=name, url=_ZENODO_PCAM.format(name), size=size, md5=md5,
                           unpack="gz")
                for name, size, md5 in _PCAM_FILES
            ),
            data=".",
            n_images=327680,
            classes=("no_tumor", "tumor"),
            homepage="https://github.com/basveeling/pcam",
            license="CC0 1.0",
            citation="Veeling BS et al. Rotation equivariant CNNs for digital pathology. "
                     "MICCAI 2018. doi:10.1007/978-3-030-00934-2_24",
            approx_size=sum(size for _, size, _ in _PCAM_FILES),
        ),
    )
}


def list_datasets() -> list[DatasetInfo]:
    """The datasets featstore can fetch, sorted by name."""
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def get_dataset(name: str) -> DatasetInfo:
    """The registry entry called ``name``.

    Raises
    ------
    FeatstoreInputError
        For an unknown name; the message lists the known names.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        known = sorted(_REGISTRY)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise FeatstoreInputError(
            f"unknown dataset '{name}'; {hint}known datasets: {', '.join(known)} "
            "(`featstore datasets list` describes them)"
        ) from None


def dataset_dir(name: str | DatasetInfo, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder of a dataset, ``<base>/<name>`` (see the module docstring for base)."""
    info = _resolve(name)
    if cache_dir is not None:
        base = Path(cache_dir).expanduser()
    elif os.environ.get(ENV_CACHE):
        base = Path(os.environ[ENV_CACHE]).expanduser()
    else:
        cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        base = Path(cache_home).expanduser() / "featstore" / "datasets"
    return base / info.name


def dataset_path(
    name: str | DatasetInfo, cache_dir: str | os.PathLike[str] | None = None
) -> Path | None:
    """The DATA path of a fetched and verified dataset, or None when it is not (fully) fetched.

    Reads the cache folder's ready marker, written only after every file passed its checksum
    and was unpacked; files are not hashed again. Never touches the network.
    """
    info = _resolve(name)
    folder = dataset_dir(info, cache_dir)
    marker = _read_json(folder / _READY)
    if marker is None or marker.get("files") != _file_digests(info):
        return None
    data = folder / str(marker.get("data", info.data))
    return data if data.exists() else None


def fetch_dataset(
    name: str | DatasetInfo,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    progress: Progress | None = None,
    base_url: str | None = None,
) -> Path:
    """Download, verify and unpack a dataset unless it is cached; return its DATA path.

    Parameters
    ----------
    name : str or DatasetInfo
        Registry name (see :func:`list_datasets`) or an entry of one's own.
    cache_dir : str or PathLike, optional
        Base cache folder; the set goes to ``<cache_dir>/<name>``.
    timeout : float
        Seconds to wait for a connection and for each read before failing.
    progress : Progress, optional
        Receives download, verification and unpacking progress in bytes.
    base_url : str, optional
        Mirror serving every file as ``<base_url>/<file name>``; default
        ``$FEATSTORE_DATASETS_MIRROR``, else the publisher's URLs.

    Returns
    -------
    pathlib.Path
        What to pass as DATA: the ImageFolder directory (kather2016), the ``.npz`` file
        (pathmnist) or the folder of ``.h5`` files (pcam).

    Raises
    ------
    FeatstoreInputError
        Unknown name, bad timeout, or a cache folder that cannot be created.
    ChecksumMismatchError
        A download does not match its published size or MD5; the bad file is deleted.
    DatasetFetchError
        The server cannot be reached, answers with an error, or the connection breaks (the
        partial download is kept and the next fetch resumes it); or another fetch of the same
        set is running.
    """
    info = _resolve(name)
    if not timeout > 0:
        raise FeatstoreInputError(f"--timeout must be a positive number of seconds, got {timeout}")
    ready = dataset_path(info, cache_dir)
    if ready is not None:
        return ready
    folder = dataset_dir(info, cache_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FeatstoreInputError(
            f"cannot create the dataset cache folder '{folder}': {exc.strerror}; "
            f"pass --cache-dir or set ${ENV_CACHE} to a writable folder"
        ) from None
    mirror = base_url if base_url is not None else os.environ.get(ENV_MIRROR) or None
    report = progress if progress is not None else _Silent()
    try:
        with _locked(folder, info.name):
            ready = dataset_path(info, cache_dir)
            if ready is not None:
                return ready
            for remote in info.files:
                _fetch_file(remote, folder, mirror, timeout, report)
            data = _locate_data(info, folder)
            _write_json(folder / _READY, {
                "name": info.name,
                "data": data.relative_to(folder).as_posix(),
                "files": _file_digests(info),
            })
    except OSError as exc:  # network errors are converted where they happen: this is local
        raise DatasetFetchError(
            f"cannot write the dataset cache '{folder}': {exc.strerror or exc}"
        ) from None
    return data


# ---------------------------------------------------------------------------------------------
# helpers


def _resolve(name: str | DatasetInfo) -> DatasetInfo:
    return name if isinstance(name, DatasetInfo) else get_dataset(name)


def _file_digests(info: DatasetInfo) -> list[list[Any]]:
    return [[f.name, f.size, f.md5] for f in info.files]


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _write_json(path: Path, value: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=1), encoding="utf-8")
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(folder: Path, name: str) -> Iterator[None]:
    """Hold ``folder/.lock`` so two fetches of one set never write the same files."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no locking
        yield
        return
    with open(folder / ".lock", "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise DatasetFetchError(
                f"another fetch of '{name}' is running in '{folder}'; wait for it to finish"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _fetch_file(remote: RemoteFile, folder: Path, mirror: str | None, timeout: float,
                progress: Progress) -> None:
    done = folder / f".{remote.name}.done.json"
    record = {"name": remote.name, "size": remote.size, "md5": remote.md5}
    if _read_json(done) == record and (folder / remote.output).exists():
        return
    target = folder / remote.name
    if not target.exists():  # a complete file is only ever there once verified
        part = folder / f"{remote.name}.part"
        url = f"{mirror.rstrip('/')}/{urllib.parse.quote(remote.name)}" if mirror else remote.url
        _download(url, part, remote, timeout, progress)
        _verify(part, remote, progress)
        os.replace(part, target)
    if remote.unpack == "zip":
        _unzip(target, folder / remote.output, progress)
    elif remote.unpack == "gz":
        _gunzip(target, folder / remote.output, progress)
    _write_json(done, record)
    if remote.unpack is not None:
        target.unlink()


def _download(url: str, part: Path, remote: RemoteFile, timeout: float,
              progress: Progress) -> None:
    """Download ``url`` into ``part``, resuming what is there; restart if the server won't."""
    host = urllib.parse.urlsplit(url).netloc or url
    _resolve_host(url, remote, timeout)
    for _attempt in range(2):
        offset = part.stat().st_size if part.exists() else 0
        if remote.size is not None and offset == remote.size:
            return
        if remote.size is not None and offset > remote.size:
            part.unlink()
            offset = 0
        request = urllib.request.Request(url, headers={
            "User-Agent": "featstore (https://pypi.org/project/featstore)",
            "Accept-Encoding": "identity",
            **({"Range": f"bytes={offset}-"} if offset else {}),
        })
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 416 and offset:  # the partial file does not fit: start over
                part.unlink()
                continue
            raise DatasetFetchError(
                f"cannot download {remote.name} from {host}: HTTP {exc.code} {exc.reason}"
            ) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise DatasetFetchError(
                f"cannot reach {host} to download {remote.name} ({reason}; timeout "
                f"{timeout:g} s); check the network, or set ${ENV_MIRROR} to a mirror"
            ) from None
        with response:
            resumed = offset > 0 and response.status == 206
            if resumed and _range_start(response.headers.get("Content-Range")) != offset:
                part.unlink()
                continue
            if not resumed:
                offset = 0  # a 200 answer is the whole file: the server ignored Range
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length and length.isdigit() else remote.size
            _stream(response, part, "ab" if resumed else "wb", offset, total, remote, host,
                    progress)
        return
    raise DatasetFetchError(  # pragma: no cover - needs a server that breaks Range twice
        f"cannot download {remote.name} from {host}: the server's answers to a resumed "
        "download do not fit; delete the .part file and retry"
    )


def _resolve_host(url: str, remote: RemoteFile, timeout: float) -> None:
    """Look the host up within ``timeout`` (urllib's timeout does not cover DNS lookups).

    Skipped when a proxy serves the URL: then the proxy resolves the name.
    """
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname or parts.scheme in urllib.request.getproxies():
        return
    answer: list[BaseException | None] = []

    def lookup() -> None:
        try:
            socket.getaddrinfo(parts.hostname, parts.port or 443, type=socket.SOCK_STREAM)
            answer.append(None)
        except (OSError, UnicodeError) as exc:
            answer.append(exc)

    thread = threading.Thread(target=lookup, name="featstore-dns", daemon=True)
    thread.start()
    thread.join(timeout)
    problem = answer[0] if answer else f"name lookup took longer than {timeout:g} s"
    if problem is not None:
        raise DatasetFetchError(
            f"cannot reach {parts.netloc} to download {remote.name} ({problem}); check the "
            f"network, or set ${ENV_MIRROR} to a mirror"
        )


def _range_start(content_range: str | None) -> int | None:
    """Start offset of a ``Content-Range: bytes START-END/TOTAL`` header."""
    if not content_range or not content_range.startswith("bytes "):
        return None
    first = content_range[len("bytes "):].split("-", 1)[0].strip()
    return int(first) if first.isdigit() else None


def _stream(response: Any, part: Path, mode: str, offset: int, total: int | None,
            remote: RemoteFile, host: str, progress: Progress) -> None:
    task = f"download {remote.name}"
    progress.start(task, total, offset)
    written = offset
    with open(part, mode) as out:
        while True:
            try:
                chunk = response.read(_CHUNK)
            except (OSError, http.client.HTTPException) as exc:
                raise DatasetFetchError(
                    f"download of {remote.name} from {host} broke off after {written} bytes "
                    f"({exc or type(exc).__name__}); rerun to resume"
                ) from None
            if not chunk:
                break
            try:
                out.write(chunk)
            except OSError as exc:
                raise DatasetFetchError(
                    f"cannot write '{part}': {exc.strerror}; free some space and rerun to resume"
                ) from None
            written += len(chunk)
            progress.advance(len(chunk))
    if total is not None and written < total:
        raise DatasetFetchError(
            f"download of {remote.name} from {host} ended after {written} of {total} bytes; "
            "rerun to resume"
        )
    progress.finish(task)


def _verify(path: Path, remote: RemoteFile, progress: Progress) -> None:
    """Check size and MD5; delete the file and raise on a mismatch."""
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        path.unlink()
        raise ChecksumMismatchError(
            f"{remote.name}: expected {remote.size} bytes, got {size}; the download was deleted, "
            "rerun to fetch it again"
        )
    if remote.md5 is None:
        return
    task = f"verify {remote.name}"
    progress.start(task, size)
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            progress.advance(len(chunk))
    progress.finish(task)
    if digest.hexdigest() != remote.md5.lower():
        path.unlink()
        raise ChecksumMismatchError(
            f"{remote.name}: checksum mismatch, expected md5 {remote.md5}, got "
            f"{digest.hexdigest()}; the download was deleted, rerun to fetch it again"
        )


def _unzip(archive: Path, out: Path, progress: Progress) -> None:
    """Unpack a zip archive into ``out`` (through a temporary folder, renamed at the end)."""
    tmp = out.with_name(f".{out.name}.unpacking")
    shutil.rmtree(tmp, ignore_errors=True)
    task = f"unpack {archive.name}"
    try:
        with zipfile.ZipFile(archive) as handle:
            members = handle.infolist()
            for member in members:
                parts = Path(member.filename).parts
                if member.filename.startswith(("/", "\\")) or ".." in parts:
                    raise DatasetFetchError(
                        f"archive {archive.name} holds the unsafe path '{member.filename}'; "
                        "refusing to unpack it"
                    )
            progress.start(task, sum(m.file_size for m in members))
            for member in members:
                handle.extract(member, tmp)
                progress.advance(member.file_size)
    except (zipfile.BadZipFile, OSError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DatasetFetchError(f"cannot unpack {archive.name}: {exc}") from None
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    progress.finish(task)


def _gunzip(archive: Path, out: Path, progress: Progress) -> None:
    """Decompress a gzip file into ``out`` (through ``out.part``, renamed at the end)."""
    tmp = out.with_name(out.name + ".part")
    task = f"unpack {archive.name}"
    progress.start(task, archive.stat().st_size)
    try:
        with open(archive, "rb") as raw, gzip.GzipFile(fileobj=raw) as source, \
                open(tmp, "wb") as target:
            position = 0
            while chunk := source.read(_CHUNK):
                target.write(chunk)
                progress.advance(raw.tell() - position)
                position = raw.tell()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        tmp.unlink(missing_ok=True)
        raise DatasetFetchError(f"cannot unpack {archive.name}: {exc}") from None
    os.replace(tmp, out)
    progress.finish(task)


def _locate_data(info: DatasetInfo, folder: Path) -> Path:
    """The DATA path inside a fetched set: ``info.data``, descending single-folder wrappers."""
    data = folder / info.data if info.data != "." else folder
    if not data.is_dir() or not any(f.unpack == "zip" for f in info.files):
        if not data.exists():
            raise DatasetFetchError(
                f"fetched '{info.name}' but '{info.data}' is missing in '{folder}'"
            )
        return data
    while True:
        entries = [p for p in data.iterdir()
                   if not p.name.startswith(".") and p.name not in _IGNORED_ENTRIES]
        if len(entries) == 1 and entries[0].is_dir():
            data = entries[0]
        else:
            return data
