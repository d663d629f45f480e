"""Break featstore on purpose and check that it survives; regenerates RELIABILITY.md.

Scenarios (each a function, reused by ``tests/test_reliability.py`` at a small size):

- ``kill_campaign``: SIGKILL one extraction at random moments, resume after every kill; after each
  kill no chunk marked done may be damaged and no finished chunk may be recomputed; the final store
  must equal an uninterrupted run.
- ``failpoint_campaign``: SIGKILL at every named point of the write path (store creation, store
  replacement, init append, chunk write, marker write, lock), then resume.
- ``corruption_campaign``: flip, truncate, empty or delete chunk files of layers, coordinates and
  progress markers; ``featstore verify`` must name each one, ``extract --repair`` must fix them.
- ``hostile_inputs``: bad images and manifests through ``featstore extract``.
- ``disk_full``: extraction onto a tiny tmpfs (needs root), then more space and a resume.
- ``concurrency``: a second extract (and a probe) while one runs; stale lock takeover.
- ``probe_campaign``: SIGKILL ``featstore probe`` at random moments and rerun.
- ``distributed_campaign``: extraction on a dask scheduler with two workers; SIGKILL a worker
  midway (dask reruns its task), SIGKILL the client midway (a local or a scheduled rerun
  completes the store).

Commands run in processes forked from a server that has imported featstore once
(:class:`ForkRunner`, multiprocessing's forkserver), so a run costs its work, not torch's import.

Usage::

    python tools/fault_injection.py --quick   # minutes: few kills, writes RELIABILITY-quick.md
    python tools/fault_injection.py           # the full campaign (20 kills): RELIABILITY.md

Every campaign extracts with efficientnet_lite0 at 32 px (:data:`MODEL_OPTIONS`) unless given
other model options (``model=``; ``--model``, ``--image-size``, ``--layers`` on the command
line). The tests use a two-block test model, with enough layers that every failpoint count
(``kill@N``) lands where it does with efficientnet_lite0.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import multiprocessing as mp
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "RELIABILITY.md"
REPORT_QUICK = ROOT / "RELIABILITY-quick.md"

#: the model of the campaigns unless one is given (``--model``, ``--image-size``, ``--layers``
#: options of ``featstore extract``): efficientnet_lite0 at 32 px, its 18 ``auto`` layers.
#: The tests pass a smaller model (tests/test_reliability.py: tiny_cnn, 8 layers at 16 px).
MODEL_OPTIONS: tuple[str, ...] = ("--model", "efficientnet_lite0", "--image-size", "32")
#: options of every extraction here: small chunks, one CPU thread
EXTRACT_OPTIONS = ("--batch-size", "2", "--chunk-images", "2", "--device", "cpu", "-q")
TWO_INITS = ("--init", "random:0", "--init", "random:1")


# ------------------------------------------------------------------------------------------------
# running commands


@dataclass
class RunResult:
    """How one command run ended."""

    argv: list[str]
    exitcode: int
    killed: bool
    seconds: float
    output: str

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.output.splitlines() if line.strip()]


def _child(argv: list[str], env: dict[str, str | None], log: str) -> None:
    """Body of a forked run: environment, output to a file, then the featstore command line."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    sys.argv = ["featstore", *argv]  # what the store lock records as the holder's command
    import torch

    torch.set_num_threads(1)
    from featstore.cli.app import main

    main(argv)


#: modules the fork server imports once. The command line imports the library inside each
#: command (so that ``featstore --help`` is quick): without these, every forked run would
#: import torch, torchvision, xarray and dask again (seconds per run on a busy machine).
PRELOAD: tuple[str, ...] = (
    "featstore.cli.app", "featstore.extraction", "featstore.verify", "featstore.sweep",
    "featstore.models.torchvision_family", "xarray", "dask.array", "fault_injection")


class ForkRunner:
    """Runs ``featstore`` command lines in fresh processes forked from a pre-imported server.

    Parameters
    ----------
    workdir : Path
        Where the runs' output logs go.
    """

    def __init__(self, workdir: Path) -> None:
        tools = str(Path(__file__).resolve().parent)
        if tools not in sys.path:
            sys.path.insert(0, tools)
        self.ctx = mp.get_context("forkserver")
        self.ctx.set_forkserver_preload(list(PRELOAD))
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._n = 0
        # the server (and so every run) gets one BLAS/OpenMP thread; this process keeps its own
        saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        os.environ.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
        try:
            from multiprocessing import forkserver

            forkserver.ensure_running()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def start(self, argv: Sequence[str], env: dict[str, str | None] | None = None
              ) -> tuple[Any, Path, float]:
        """Start a run; returns (process, log path, start time)."""
        self._n += 1
        log = self.workdir / f"run{self._n:04d}.log"
        process = self.ctx.Process(target=_child, args=(list(argv), dict(env or {}), str(log)))
        started = time.monotonic()
        process.start()
        return process, log, started

    def finish(self, argv: Sequence[str], process: Any, log: Path, started: float,
               kill_after: float | None = None, timeout: float = 300.0) -> RunResult:
        """Wait for a started run (SIGKILL it after ``kill_after`` seconds when given)."""
        killed = False
        if kill_after is not None:
            process.join(max(0.0, started + kill_after - time.monotonic()))
            if process.exitcode is None:
                os.kill(process.pid, signal.SIGKILL)
                killed = True
        process.join(timeout)
        if process.exitcode is None:
            os.kill(process.pid, signal.SIGKILL)
            process.join()
            raise RuntimeError(f"run timed out after {timeout} s: {' '.join(argv)}")
        seconds = time.monotonic() - started
        output = log.read_text(errors="replace") if log.exists() else ""
        code = int(process.exitcode)
        return RunResult(list(argv), code, killed or code == -signal.SIGKILL, seconds, output)

    def run(self, argv: Sequence[str], env: dict[str, str | None] | None = None,
            kill_after: float | None = None, timeout: float = 300.0) -> RunResult:
        """Run a command line to its end, or SIGKILL it after ``kill_after`` seconds."""
        process, log, started = self.start(argv, env)
        return self.finish(argv, process, log, started, kill_after, timeout)


# ------------------------------------------------------------------------------------------------
# data, stores and checks


def make_images(root: Path, per_class: int = 4, seed: int = 0) -> Path:
    """A two-class ImageFolder of random RGB PNGs of varied sizes."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for label, name in enumerate(("benign", "tumour")):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            side = int(rng.integers(12, 40))
            pixels = rng.integers(0, 160, size=(side, side, 3)) + 80 * label
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
                folder / f"img{i:03d}.png")
    return root


def extract_argv(data: Path | str, store: Path | str, inits: Sequence[str] = TWO_INITS,
                 extra: Sequence[str] = (), model: Sequence[str] = MODEL_OPTIONS) -> list[str]:
    """``featstore extract`` arguments: the model options, then this module's small options."""
    return ["extract", str(data), "--store", str(store), *inits, *model, *EXTRACT_OPTIONS,
            *extra]


def store_difference(a: Path | str, b: Path | str, rtol: float | None = None) -> str | None:
    """None when two stores hold identical data and coordinates (equal within ``rtol`` when
    given: runs in other processes may round differently), else the first difference."""
    import xarray as xr

    import featstore

    left = featstore.open_store(str(a)).load().drop_attrs(deep=False)
    right = featstore.open_store(str(b)).load().drop_attrs(deep=False)
    try:
        if rtol is None:
            xr.testing.assert_identical(left, right)
        else:
            xr.testing.assert_allclose(left, right, rtol=rtol, atol=1e-7)
    except AssertionError as exc:
        return " ".join(str(exc).split())[:300]
    return None


def done_snapshot(url: Path | str) -> dict[str, tuple[int, int, int]]:
    """(inode, mtime_ns, size) of every layer chunk file marked done; {} before the store exists.

    A chunk rewritten by a later run gets a new inode (writes go through a rename), so equal
    snapshots prove that finished chunks were not computed again.
    """
    from featstore.errors import NotAStoreError
    from featstore.store import FeatureStore

    try:
        store = FeatureStore.open(str(url))
    except NotAStoreError:
        return {}
    done = store.progress()
    out = {}
    for i, c in zip(*np.nonzero(done), strict=True):
        for var in store.layer_vars:
            key = store.chunk_key(var, (int(i), int(c), 0))
            st = os.stat(Path(url) / key)
            out[key] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return out


def _done_count(url: Path | str) -> int:
    from featstore.errors import NotAStoreError
    from featstore.store import FeatureStore

    try:
        return int(FeatureStore.open(str(url)).progress().sum())
    except NotAStoreError:
        return 0


def store_phase(url: Path | str) -> str:
    """Where an interrupted run left a store: before/while creating, appending an init, or N/M."""
    from featstore.errors import NotAStoreError
    from featstore.store import FeatureStore, creating_identity, store_exists

    if not store_exists(str(url)):
        return "before the store existed"
    try:
        store = FeatureStore.open(str(url))
    except NotAStoreError:
        return ("while creating the store" if creating_identity(str(url)) is not None
                else "while clearing the store")
    n_inits = len(store.init_names)
    sizes = {store.group[var].shape[0] for var in store.layer_vars}  # type: ignore[union-attr]
    if sizes != {n_inits}:
        return "while appending an init"
    done = store.progress()
    return f"chunk writes, {int(done.sum())}/{done.size} chunks done ({n_inits} init(s))"


def damage(url: Path | str) -> list[str]:
    """Corrupt or missing chunks ``verify`` finds (an interrupted store may only be pending)."""
    from featstore.errors import NotAStoreError
    from featstore.verify import verify_store

    try:
        report = verify_store(str(url))
    except NotAStoreError:
        return []
    return [f"{p.kind} {p.variable} {p.init} chunk {p.chunk}" for p in report.damaged]


def flip_byte(path: Path, position: float = 0.5) -> None:
    """Invert one byte of a file (at a relative position)."""
    raw = bytearray(path.read_bytes())
    raw[min(len(raw) - 1, int(len(raw) * position))] ^= 0xFF
    path.write_bytes(bytes(raw))


# ------------------------------------------------------------------------------------------------
# outcomes


@dataclass
class Outcome:
    """Result of one scenario: what was tried, what held, and detail rows for the report."""

    name: str
    tried: int = 0
    passed: int = 0
    lost: int = 0
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    skipped: str = ""

    @property
    def ok(self) -> bool:
        return not self.failures and not self.lost and self.passed == self.tried

    def check(self, condition: bool, failure: str) -> bool:
        if not condition:
            self.failures.append(failure)
        return condition


# ------------------------------------------------------------------------------------------------
# scenarios


def kill_campaign(runner: ForkRunner, work: Path, kills: int = 20, per_class: int = 32,
                  seed: int = 0, model: Sequence[str] = MODEL_OPTIONS) -> Outcome:
    """SIGKILL one extraction ``kills`` times at random moments, resuming after every kill."""
    out = Outcome("SIGKILL at random moments of one extraction",
                  header=["kill", "after s", "store after the kill",
                          "chunks this run finished", "damaged chunks",
                          "finished chunks recomputed"])
    data = make_images(work / "kill-data", per_class=per_class, seed=seed)
    reference = work / "kill-reference.zarr"
    full = runner.run(extract_argv(data, reference, model=model))
    if not out.check(full.exitcode == 0, f"reference run failed: {full.output[-500:]}"):
        return out
    # nothing left to compute: the run's start-up alone
    startup = runner.run(extract_argv(data, reference, model=model)).seconds
    work_s = max(full.seconds - startup, 0.5)
    rng = random.Random(seed)
    store = work / "kill.zarr"
    previous: dict[str, tuple[int, int, int]] = {}
    extractions = 1
    while out.tried < kills:
        # a third of the kills land in start-up (plan, lock, create, append), the rest in writes
        if rng.random() < 1 / 3:
            delay = rng.uniform(0.0, startup)
        else:
            delay = startup + rng.uniform(0.0, work_s / kills)
        before = _done_count(store)
        result = runner.run(extract_argv(data, store, model=model), kill_after=delay)
        if not result.killed:
            out.check(result.exitcode == 0, f"run ended with {result.exitcode}: "
                                            f"{result.output[-300:]}")
            out.notes.append(f"extraction {extractions} finished before kill "
                             f"{out.tried + 1} landed; a new extraction continued the campaign")
            difference = store_difference(store, reference)
            out.check(difference is None, f"extraction {extractions} differs: {difference}")
            shutil.rmtree(store)
            previous = {}
            extractions += 1
            continue
        out.tried += 1
        phase = store_phase(store)
        damaged = damage(store)
        snapshot = done_snapshot(store)
        rewritten = [k for k, v in previous.items() if snapshot.get(k) != v]
        out.lost += len(damaged)
        out.check(not damaged, f"kill {out.tried}: damaged {damaged[:3]}")
        out.check(not rewritten, f"kill {out.tried}: finished chunks changed {rewritten[:3]}")
        if not damaged and not rewritten:
            out.passed += 1
        finished = _done_count(store) - before
        out.rows.append([str(out.tried), f"{delay:.2f}", phase,
                         str(finished) if finished else "0 (killed in start-up)",
                         str(len(damaged)), str(len(rewritten))])
        previous = snapshot
    final = runner.run(extract_argv(data, store, model=model))
    out.check(final.exitcode == 0, f"final resume failed: {final.output[-500:]}")
    last = done_snapshot(store)
    rewritten = [k for k, v in previous.items() if last.get(k) != v]
    out.check(not rewritten, f"final resume recomputed finished chunks {rewritten[:3]}")
    difference = store_difference(store, reference)
    out.check(difference is None, f"final store differs from the uninterrupted run: {difference}")
    out.check(not damage(store), "final store has damaged chunks")
    out.notes.append(
        f"{kills} kills over {extractions} extraction(s) of {2 * per_class} images x 2 inits "
        f"({2 * per_class} chunks per init); uninterrupted run {full.seconds:.1f} s, start-up "
        f"{startup:.1f} s; final store identical to the uninterrupted run: "
        f"{'yes' if difference is None else 'NO'}")
    return out


#: (name, FEATSTORE_FAILPOINTS value, setup) -- setup: "fresh", "one-init" (random:0 finished
#: first, so the run appends random:1) or "replace" (a store made with --pool max is replaced)
FAILPOINTS: tuple[tuple[str, str, str], ...] = (
    ("lock taken, nothing written", "extract.locked=kill", "fresh"),
    ("store root written (creating marker)", "create.root=kill", "fresh"),
    ("store creation, after 3 arrays", "create.array=kill@3", "fresh"),
    ("store creation, before the description", "create.before_description=kill", "fresh"),
    ("store replacement (--overwrite), after 5 arrays", "create.array=kill@5", "replace"),
    ("init append, after resizing 4 layers", "add_inits.resize=kill@4", "one-init"),
    ("init append, before the description", "add_inits.before_description=kill", "one-init"),
    ("init append, before consolidating", "add_inits.before_consolidate=kill", "one-init"),
    ("chunk write, after 7 layers of a chunk", "write_chunk.layer=kill@7", "fresh"),
    ("chunk write, data durable, marker not written", "write_chunk.before_marker=kill@2", "fresh"),
    ("chunk write, right after a marker", "write_chunk.after_marker=kill@3", "fresh"),
)


def failpoint_campaign(runner: ForkRunner, work: Path, per_class: int = 4,
                       only: Sequence[str] | None = None,
                       model: Sequence[str] = MODEL_OPTIONS) -> Outcome:
    """SIGKILL at each named point of the write path (or those in ``only``), then resume."""
    out = Outcome("SIGKILL at each write-path failpoint",
                  header=["failpoint", "FEATSTORE_FAILPOINTS", "killed", "phase",
                          "damaged", "resumed run equals uninterrupted"])
    data = make_images(work / "fp-data", per_class=per_class)
    reference = work / "fp-reference.zarr"
    if not out.check(runner.run(extract_argv(data, reference, model=model)).exitcode == 0,
                     "reference failed"):
        return out
    for n, (name, spec, setup) in enumerate(FAILPOINTS):
        if only is not None and spec not in only:
            continue
        out.tried += 1
        store = work / f"fp{n}.zarr"
        extra: tuple[str, ...] = ()
        if setup == "one-init":
            runner.run(extract_argv(data, store, inits=("--init", "random:0"), model=model))
        elif setup == "replace":
            runner.run(extract_argv(data, store, extra=("--pool", "max"), model=model))
            extra = ("--overwrite",)
        killed = runner.run(extract_argv(data, store, extra=extra, model=model),
                            env={"FEATSTORE_FAILPOINTS": spec})
        phase = store_phase(store)
        damaged = damage(store)
        out.lost += len(damaged)
        # the rerun: same command, no --overwrite
        resumed = runner.run(extract_argv(data, store, model=model))
        difference = (store_difference(store, reference) if resumed.exitcode == 0
                      else f"exit {resumed.exitcode}: {resumed.stderr_lines[-1:]}")
        fine = killed.killed and not damaged and difference is None
        out.check(killed.killed, f"{name}: the failpoint did not fire ({killed.exitcode})")
        out.check(not damaged, f"{name}: damaged {damaged[:3]}")
        out.check(difference is None, f"{name}: {difference}")
        out.passed += fine
        out.rows.append([name, f"`{spec}`", "yes" if killed.killed else "NO", phase,
                         str(len(damaged)), "yes" if difference is None else f"NO: {difference}"])
    return out


def _chunk_file(url: Path, var: str, coords: tuple[int, ...]) -> Path:
    from featstore.store import FeatureStore

    return url / FeatureStore.open(str(url)).chunk_key(var, coords)


def corruption_campaign(runner: ForkRunner, work: Path, per_class: int = 4,
                        seed: int = 0, model: Sequence[str] = MODEL_OPTIONS) -> Outcome:
    """Damage chunk files in many ways; verify must report each, --repair must fix them all."""
    from featstore import schema as S
    from featstore.verify import ALL_LAYERS, MARKERS, verify_store

    out = Outcome("Corrupted, truncated and deleted chunks",
                  header=["damage", "file", "reported by verify as", "repaired"])
    data = make_images(work / "cr-data", per_class=per_class)
    reference = work / "cr-reference.zarr"
    if not out.check(runner.run(extract_argv(data, reference, model=model)).exitcode == 0,
                     "reference failed"):
        return out
    store = work / "cr.zarr"
    shutil.copytree(reference, store)
    layers = list(json.loads((store / "zarr.json").read_text())["attributes"]["featstore"]
                  ["layers"])
    n_chunks = -(-2 * per_class // 2)
    rng = random.Random(seed)

    # the damaged marker's chunk is left out of the layer damages: a chunk whose marker is
    # unreadable counts as not done, and verify reads only chunks marked done
    marker_init, marker_chunk = rng.randrange(2), rng.randrange(n_chunks)

    def pick() -> tuple[str, int, int]:
        while True:
            init, chunk = rng.randrange(2), rng.randrange(n_chunks)
            if (init, chunk) != (marker_init, marker_chunk):
                return rng.choice(layers), init, chunk

    damages: list[tuple[str, str, tuple[int, ...], Callable[[Path], None], tuple[str, ...]]] = []
    used: set[tuple[str, int, int]] = set()
    for how, action in (("one byte flipped", flip_byte),
                        ("one byte flipped in the checksum", lambda p: flip_byte(p, 0.999)),
                        ("truncated to half", lambda p: p.write_bytes(
                            p.read_bytes()[: len(p.read_bytes()) // 2])),
                        ("emptied (0 bytes)", lambda p: p.write_bytes(b"")),
                        ("deleted", lambda p: p.unlink())):
        var, init, chunk = pick()
        while (var, init, chunk) in used:
            var, init, chunk = pick()
        used.add((var, init, chunk))
        kind = "missing" if how == "deleted" else "corrupt"
        damages.append((how, var, (init, chunk, 0), action, (kind, var, f"random:{init}",
                                                             str(chunk))))
    damages.append(("one byte flipped", MARKERS, (marker_init, marker_chunk), flip_byte,
                    ("corrupt", MARKERS, f"random:{marker_init}", str(marker_chunk))))
    for coordinate in (S.LABEL, S.PATH, S.INIT):
        coords: tuple[int, ...] = (0,)
        damages.append(("one byte flipped", coordinate, coords, flip_byte,
                        ("corrupt", coordinate, "None" if coordinate != S.INIT else "None",
                         "None")))
    for _how, var, coords, action, _expected in damages:
        action(_chunk_file(store, var, coords))
    report = verify_store(str(store))
    found = {(p.kind, p.variable, str(p.init), str(p.chunk)) for p in report.problems}
    cli = runner.run(["verify", str(store)])
    out.check(cli.exitcode == 1, f"verify exited {cli.exitcode}, expected 1")
    errors = [line for line in cli.stderr_lines if line.startswith("featstore: error:")]
    out.check(len(errors) == 1, f"verify printed {len(errors)} error lines")
    repair = runner.run(extract_argv(data, store, inits=("--init", "random:0"),
                                     extra=("--repair",), model=model))
    out.check(repair.exitcode == 0, f"--repair failed: {repair.output[-500:]}")
    after = verify_store(str(store))
    difference = store_difference(store, reference) if repair.exitcode == 0 else "not repaired"
    for how, var, coords, _action, expected in damages:
        out.tried += 1
        detected = expected in found
        fixed = detected and after.ok and difference is None
        out.passed += fixed
        out.check(detected, f"{how} in {var} {coords} not reported (found {sorted(found)[:4]})")
        out.rows.append([how, f"{var} chunk {coords}",
                         f"{expected[0]} {expected[1]}" + (
                             f" init {expected[2]}" if expected[2] != "None" else "")
                         if detected else "NOT REPORTED", "yes" if fixed else "NO"])
    out.check(after.ok, f"verify after --repair: {after.summary()}")
    out.check(difference is None, f"repaired store differs: {difference}")
    # a damaged marker makes its chunk count as not done: pending is the expected consequence
    consequence = {("pending", ALL_LAYERS, f"random:{marker_init}", str(marker_chunk))}
    unexpected = found - {d[4] for d in damages} - consequence
    out.check(not unexpected, f"verify reported undamaged chunks: {sorted(unexpected)[:3]}")
    out.notes.append(f"`featstore verify` exit status {cli.exitcode} with one error line; "
                     f"after `extract --repair` (which also recomputed the damaged chunks of "
                     f"random:1, an init not named on its command line) verify is clean and the "
                     f"store equals the untouched copy: {'yes' if difference is None else 'NO'}")
    return out


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares a huge image (a decompression bomb's signature)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _encoded(fmt: str) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.linear_gradient("L").convert("RGB").save(buffer, format=fmt)
    return buffer.getvalue()


#: bad image files: (case, file name, content) -- each must stop extract with one line, exit 2
BAD_IMAGES: tuple[tuple[str, str, Callable[[], bytes]], ...] = (
    ("truncated JPEG", "truncated.jpg", lambda: _encoded("JPEG")[:600]),
    ("truncated PNG", "truncated.png", lambda: _encoded("PNG")[:300]),
    ("zero-byte file", "empty.png", lambda: b""),
    ("text file named .png", "text.png", lambda: b"this is not an image at all"),
    ("decompression bomb (PNG header claiming 100000x100000)", "bomb.png",
     lambda: _png_claiming(100_000, 100_000)),
)


def _good_folder(root: Path) -> Path:
    return make_images(root, per_class=2)


def hostile_inputs(runner: ForkRunner, work: Path,
                   model: Sequence[str] = MODEL_OPTIONS) -> Outcome:
    """Hostile images and manifests through ``featstore extract``: one line, exit 2 (or a skip)."""
    from PIL import Image

    import featstore

    out = Outcome("Hostile inputs through `featstore extract`",
                  header=["input", "without --skip-unreadable", "with --skip-unreadable"])
    one = ("--init", "random:0")

    def one_line(result: RunResult, *needles: str) -> bool:
        lines = result.stderr_lines
        return (result.exitcode == 2 and len(lines) == 1 and "Traceback" not in result.output
                and all(n in lines[0] for n in needles))

    for n, (case, name, content) in enumerate(BAD_IMAGES):
        out.tried += 1
        data = _good_folder(work / f"hi{n}")
        (data / "tumour" / name).write_bytes(content())
        store = work / f"hi{n}.zarr"
        first = runner.run(extract_argv(data, store, inits=one, model=model))
        stopped = one_line(first, f"tumour/{name}", "--skip-unreadable")
        skipped = runner.run(extract_argv(data, store, inits=one, extra=("--skip-unreadable",),
                                          model=model))
        recorded = False
        if skipped.exitcode == 0:
            ds = featstore.open_store(str(store))
            paths = [str(p) for p in ds["path"].values]
            valid = ds["valid"].values
            recorded = (not bool(valid[paths.index(f"tumour/{name}")])
                        and int((~valid).sum()) == 1)
        out.passed += stopped and recorded
        out.check(stopped, f"{case}: {first.exitcode} {first.stderr_lines[-2:]}")
        out.check(recorded, f"{case}: --skip-unreadable did not record it ({skipped.exitcode})")
        out.rows.append([case, (f"exit 2: `{first.stderr_lines[0][:110]}`" if stopped
                                else f"NO ({first.exitcode})"),
                         "exit 0, recorded valid=False" if recorded else "NO"])

    # inputs that must work: 16-bit, CMYK, unicode and spaces, symlink loops skipped
    data = work / "ok data ünï 名"
    (data / "klasse ä").mkdir(parents=True)
    (data / "b").mkdir()
    Image.fromarray(np.full((20, 20), 40000, dtype=np.uint16)).save(data / "klasse ä" / "g16.png")
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(data / "klasse ä" / "cmyk 1.jpg")
    Image.new("RGB", (16, 16), (9, 9, 9)).save(data / "b" / "bild 名.png")
    os.symlink(data / "b" / "loop2.png", data / "b" / "loop1.png")
    os.symlink(data / "b" / "loop1.png", data / "b" / "loop2.png")
    store = work / "ok ünï.zarr"
    good = runner.run(extract_argv(data, store, inits=one, model=model))
    fine = good.exitcode == 0
    if fine:
        ds = featstore.open_store(str(store))
        fine = (sorted(str(p) for p in ds["path"].values)
                == ["b/bild 名.png", "klasse ä/cmyk 1.jpg", "klasse ä/g16.png"]
                and all(bool(np.isfinite(ds[var].values).all())
                        for var in ds.attrs["featstore"]["layers"]))
    for case in ("16-bit grayscale PNG", "CMYK JPEG", "unicode and spaces in paths",
                 "symlink loop (skipped while listing)"):
        out.tried += 1
        out.passed += fine
        out.rows.append([case, "exit 0, features finite" if fine else f"NO ({good.exitcode})",
                         "-"])
    out.check(fine, f"good inputs failed: {good.output[-400:]}")

    # manifests: each stops before anything is written
    manifests = (
        ("manifest without a label column", "path,klass\nbenign/img000.png,a\n", "label"),
        ("manifest with an empty label", "path,label\nbenign/img000.png,\n", "empty"),
        ("manifest with a duplicate path",
         "path,label\nbenign/img000.png,a\n./benign/img000.png,b\n", "duplicate"),
        ("manifest path escaping the root", "path,label\n../outside.png,a\n", "outside"),
        ("manifest listing a missing file", "path,label\nbenign/img000.png,a\nnope.png,b\n",
         "nope.png"),
    )
    for n, (case, text, needle) in enumerate(manifests):
        out.tried += 1
        data = _good_folder(work / f"mf{n}")
        manifest = data / "list.csv"
        manifest.write_text(text, encoding="utf-8")
        store = work / f"mf{n}.zarr"
        result = runner.run(extract_argv(manifest, store, inits=one, model=model))
        ok = one_line(result, needle)
        out.passed += ok
        out.check(ok, f"{case}: {result.exitcode} {result.stderr_lines[-2:]}")
        out.rows.append([case, (f"exit 2: `{result.stderr_lines[0][:110]}`" if ok
                                else f"NO ({result.exitcode})"), "-"])
    return out


def _tmpfs_bytes(store: Path) -> int:
    return sum(-(-p.stat().st_size // 4096) * 4096 for p in store.rglob("*") if p.is_file())


@contextlib.contextmanager
def tmpfs(path: Path, size: int) -> Iterator[bool]:
    """Mount a tmpfs of ``size`` bytes at ``path``; yields False when mounting is not permitted."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def disk_full(runner: ForkRunner, work: Path, per_class: int = 4,
              model: Sequence[str] = MODEL_OPTIONS) -> Outcome:
    """Extract onto a nearly full filesystem, then give it space and resume."""
    out = Outcome("Disk full (tmpfs too small for the store)",
                  header=["step", "result"])
    data = make_images(work / "df-data", per_class=per_class)
    reference = work / "df-reference.zarr"
    if not out.check(runner.run(extract_argv(data, reference, model=model)).exitcode == 0,
                     "reference failed"):
        return out
    need = _tmpfs_bytes(reference)
    size = (need // 2) // 4096 * 4096
    with tmpfs(work / "small-disk", size) as mounted:
        if not mounted:
            out.skipped = "mount -t tmpfs not permitted here (needs root)"
            return out
        store = work / "small-disk" / "s.zarr"
        out.tried = 3
        full = runner.run(extract_argv(data, store, model=model))
        lines = full.stderr_lines
        clear = (full.exitcode == 1 and len(lines) == 1 and "no space left on device" in lines[0]
                 and "rerun the same command to resume" in lines[0])
        out.passed += clear
        out.check(clear, f"full disk: exit {full.exitcode}, {lines[-2:]}")
        out.rows.append([f"extract onto a {size // 1024} KiB tmpfs (store needs "
                         f"{need // 1024} KiB)", f"exit {full.exitcode}: `{lines[-1][:140]}`"
                         if lines else f"exit {full.exitcode}"])
        damaged = damage(store)
        out.lost += len(damaged)
        phase = store_phase(store)
        out.passed += not damaged
        out.check(not damaged, f"damaged after ENOSPC: {damaged[:3]}")
        out.rows.append(["store left behind", f"{phase}; damaged chunks: {len(damaged)}"])
        subprocess.run(["mount", "-o", f"remount,size={need * 3}", str(work / "small-disk")],
                       check=True, capture_output=True)
        resumed = runner.run(extract_argv(data, store, model=model))
        difference = (store_difference(store, reference) if resumed.exitcode == 0
                      else f"exit {resumed.exitcode}")
        out.passed += difference is None
        out.check(difference is None, f"resume after freeing space: {difference}")
        out.rows.append(["space freed (remount larger), same command rerun",
                         "exit 0, store equals an uninterrupted run" if difference is None
                         else f"NO: {difference}"])
    return out


def _probe_available() -> bool:
    from featstore.cli.app import app

    return any(getattr(c, "name", None) == "probe" for c in app.registered_commands)


def concurrency(runner: ForkRunner, work: Path, per_class: int = 4,
                model: Sequence[str] = MODEL_OPTIONS) -> Outcome:
    """A second extract (and a probe) while one runs; a stale lock is taken over."""
    from featstore.lock import LOCK_KEY, lock_holder

    out = Outcome("Concurrent writers and readers", header=["attempt", "result"])
    data = make_images(work / "cc-data", per_class=per_class)
    reference = work / "cc-reference.zarr"
    if not out.check(runner.run(extract_argv(data, reference, model=model)).exitcode == 0,
                     "reference failed"):
        return out
    store = work / "cc.zarr"
    argv = extract_argv(data, store, model=model)
    # the first writer holds the lock at its first chunk until the checks below release it, so
    # the second writer meets a live lock however slowly this machine starts processes
    release = work / "cc-release"
    held: dict[str, str | None] = {
        "FEATSTORE_FAILPOINTS": f"write_chunk.before_marker=wait:{release}"}
    process, log, started = runner.start(argv, held)
    deadline = time.monotonic() + 120
    holder = None
    while holder is None and time.monotonic() < deadline and process.exitcode is None:
        holder = lock_holder(str(store))
        time.sleep(0.05)
    out.tried += 1
    second = runner.run(argv)
    refused = (second.exitcode == 2 and len(second.stderr_lines) == 1
               and holder is not None and f"pid {holder.pid}" in second.stderr_lines[0])
    out.passed += refused
    out.check(refused, f"second extract: exit {second.exitcode} {second.stderr_lines[-2:]}")
    out.rows.append([f"second `featstore extract` on the same store ({second.seconds:.2f} s)",
                     f"exit {second.exitcode}: `{second.stderr_lines[0][:150]}`"
                     if second.stderr_lines else f"exit {second.exitcode}"])
    if _probe_available():
        out.tried += 1
        probe = runner.run(["probe", str(store), "--folds", "2", "-q"])
        # refused with one line, or (by the probe's choice) restricted to finished inits
        clear = ((probe.exitcode == 2 and len(probe.stderr_lines) == 1)
                 or probe.exitcode == 0) and "Traceback" not in probe.output
        out.passed += clear
        out.check(clear, f"probe during extraction: exit {probe.exitcode} "
                         f"{probe.stderr_lines[-2:]}")
        out.rows.append(["`featstore probe` while it is being extracted",
                         f"exit {probe.exitcode}: `{probe.stderr_lines[0][:150]}`"
                         if probe.stderr_lines else f"exit {probe.exitcode}"])
    release.touch()
    first = runner.finish(argv, process, log, started)
    out.tried += 1
    difference = (store_difference(store, reference) if first.exitcode == 0
                  else f"exit {first.exitcode}")
    out.passed += difference is None
    out.check(difference is None, f"first extract: {difference}")
    out.rows.append(["the first extract", "exit 0, store equals an uninterrupted run"
                     if difference is None else f"NO: {difference}"])
    out.check(not (store / LOCK_KEY).exists(), "lock file left after a clean exit")
    # stale lock: a writer killed while holding it
    out.tried += 1
    stale_store = work / "cc-stale.zarr"
    killed = runner.run(extract_argv(data, stale_store, model=model),
                        env={"FEATSTORE_FAILPOINTS": "write_chunk.after_marker=kill@2"})
    left = (stale_store / LOCK_KEY).exists()
    took = runner.run(extract_argv(data, stale_store, model=model))
    difference = (store_difference(stale_store, reference) if took.exitcode == 0
                  else f"exit {took.exitcode}")
    ok = killed.killed and left and difference is None
    out.passed += ok
    out.check(ok, f"stale lock: killed={killed.killed} left={left} {difference}")
    out.rows.append(["extract after a writer was SIGKILLed holding the lock (stale lock file left)",
                     "taken over, exit 0, store equals an uninterrupted run" if ok else "NO"])
    return out


class DaskCluster:
    """A ``dask scheduler`` and worker processes on 127.0.0.1 (each worker sleeping at every
    chunk marker, so that a kill lands mid-job)."""

    def __init__(self, work: Path, workers: int = 2, sleep: float = 0.2) -> None:
        dask = str(Path(sys.executable).with_name("dask"))
        info = work / "scheduler.json"
        info.unlink(missing_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": "1",
               "FEATSTORE_FAILPOINTS": f"write_chunk.before_marker=sleep:{sleep}"}
        quiet = subprocess.DEVNULL
        self.scheduler = subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(info)], env={**os.environ}, stdout=quiet, stderr=quiet)
        deadline = time.monotonic() + 60
        while not info.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.2)
        self.address = json.loads(info.read_text())["address"]
        self.workers = [subprocess.Popen(
            [dask, "worker", "--scheduler-file", str(info), "--nthreads", "1", "--no-nanny",
             "--no-dashboard", "--host", "127.0.0.1"], env=env, stdout=quiet, stderr=quiet)
            for _ in range(workers)]
        from distributed import Client

        with Client(self.address, timeout="30s") as client:
            client.wait_for_workers(workers, timeout=60)

    def close(self) -> None:
        for process in [*self.workers, self.scheduler]:
            if process.poll() is None:
                process.terminate()
        for process in [*self.workers, self.scheduler]:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:  # slow to shut down (a loaded machine): kill it
                process.kill()
                process.wait()


def _wait_for_chunks(url: Path, count: int, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _done_count(url) >= count:
            return True
        time.sleep(0.05)
    return False


def distributed_campaign(runner: ForkRunner, work: Path, per_class: int = 6,
                         model: Sequence[str] = MODEL_OPTIONS) -> Outcome:
    """Extraction on a dask scheduler: a worker SIGKILLed midway, the client SIGKILLed midway
    (then resumed locally, and on the scheduler)."""
    out = Outcome("Distributed extraction: worker and client killed",
                  header=["fault", "chunks done when it struck", "what followed",
                          "final store equals a local run", "verify"])
    from featstore.verify import verify_store

    data = make_images(work / "dask-data", per_class=per_class)
    reference = work / "dask-reference.zarr"
    local = runner.run(extract_argv(data, reference, model=model))
    if not out.check(local.exitcode == 0, f"local reference failed: {local.output[-500:]}"):
        return out
    cluster = DaskCluster(work)
    scheduled = ("--scheduler", cluster.address)
    try:
        # a worker killed midway: dask reruns its task on the other worker
        store = work / "dask-worker-kill.zarr"
        process, log, started = runner.start([*extract_argv(data, store, model=model),
                                              *scheduled])
        out.tried += 1
        reached = _wait_for_chunks(store, 3)
        done = _done_count(store)
        os.kill(cluster.workers[0].pid, signal.SIGKILL)
        result = runner.finish([], process, log, started)
        same = store_difference(store, reference, rtol=1e-5) is None
        intact = verify_store(str(store)).ok
        if out.check(reached and result.exitcode == 0 and same and intact,
                     f"worker kill: exit {result.exitcode}, equal {same}, verify {intact}: "
                     f"{result.output[-300:]}"):
            out.passed += 1
        out.rows.append(["SIGKILL of one of 2 workers", str(done),
                         "dask reran its task on the other worker; the client finished",
                         "yes" if same else "NO", "ok" if intact else "FAILED"])
        # the client killed midway, then a plain local rerun, and a rerun on the scheduler
        for rerun in ("local", "scheduler"):
            store = work / f"dask-client-kill-{rerun}.zarr"
            process, log, started = runner.start([*extract_argv(data, store, model=model),
                                                  *scheduled])
            out.tried += 1
            reached = _wait_for_chunks(store, 2)
            done = _done_count(store)
            os.kill(process.pid, signal.SIGKILL)
            runner.finish([], process, log, started)
            time.sleep(1.0)  # tasks already running on the workers finish their chunk
            partial = _done_count(store)
            again = runner.run([*extract_argv(data, store, model=model),
                                *(scheduled if rerun == "scheduler" else ())])
            same = store_difference(store, reference, rtol=1e-5) is None
            intact = verify_store(str(store)).ok
            if out.check(reached and again.exitcode == 0 and same and intact,
                         f"client kill, {rerun} rerun: exit {again.exitcode}, equal {same}, "
                         f"verify {intact}: {again.output[-300:]}"):
                out.passed += 1
            out.rows.append([f"SIGKILL of the client, then a {rerun} rerun", str(done),
                             f"{partial} chunks kept; the rerun computed the rest",
                             "yes" if same else "NO", "ok" if intact else "FAILED"])
    finally:
        cluster.close()
    out.notes.append(f"{2 * per_class} images x 2 inits in chunks of 2 images, a dask "
                     "scheduler and 2 single-threaded workers on 127.0.0.1, each chunk write "
                     "slowed by 0.2 s so that the kills land mid-job; stores compared with a "
                     "local extraction within 1e-5 (other processes may round differently).")
    return out


def probe_campaign(runner: ForkRunner, work: Path, kills: int = 5, per_class: int = 8,
                   seed: int = 0, model: Sequence[str] = MODEL_OPTIONS) -> Outcome:
    """SIGKILL ``featstore probe`` at random moments; reruns must give the uninterrupted results."""
    out = Outcome("SIGKILL at random moments of `featstore probe`",
                  header=["kill", "after s", "rerun"])
    if not _probe_available():
        out.skipped = "`featstore probe` is not available in this checkout"
        return out
    import xarray as xr

    from featstore.results import open_results

    data = make_images(work / "pr-data", per_class=per_class)
    base = work / "pr-base.zarr"
    if not out.check(runner.run(extract_argv(data, base, model=model)).exitcode == 0,
                     "extract failed"):
        return out
    reference = work / "pr-reference.zarr"
    shutil.copytree(base, reference)
    argv = ["probe", "STORE", "--folds", "2", "--n-boot", "50", "-q"]
    full = runner.run([a if a != "STORE" else str(reference) for a in argv])
    if not out.check(full.exitcode == 0, f"probe failed: {full.output[-400:]}"):
        return out
    rng = random.Random(seed)
    for k in range(kills):
        store = work / f"pr{k}.zarr"
        shutil.copytree(base, store)
        command = [a if a != "STORE" else str(store) for a in argv]
        delay = rng.uniform(0.0, full.seconds)
        killed = runner.run(command, kill_after=delay)
        rerun = runner.run(command)
        out.tried += 1
        same = False
        if rerun.exitcode == 0:
            try:
                xr.testing.assert_identical(open_results(str(store)).drop_attrs(deep=False),
                                            open_results(str(reference)).drop_attrs(deep=False))
                same = True
            except AssertionError:
                same = False
        ok = rerun.exitcode == 0 and same and not damage(store)
        out.passed += ok
        out.check(ok, f"probe kill {k + 1}: rerun exit {rerun.exitcode}, same={same}")
        out.rows.append([str(k + 1), f"{delay:.2f}" + ("" if killed.killed else " (finished)"),
                         "results equal the uninterrupted run" if ok else "NO"])
    out.notes.append("a killed probe run leaves no results marked complete; the rerun computes "
                     "the run again (probe results are written once, description last)")
    return out


# ------------------------------------------------------------------------------------------------
# report


def _table(header: list[str], rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


PROMISES = """\
- **Crash safety.** A chunk's done marker (`_featstore/done`) is written only after every layer's
  data for that chunk is written and fsync'ed (with its folder) on local disks. zarr's LocalStore
  writes every file through a temporary name and a rename, so a killed writer never leaves a torn
  file (paths and `file://` URLs both use it); a marker that cannot be read counts as not done.
  Structure changes finish by writing the description: creation writes the root with a
  `featstore_creating` marker first, replacing a store (`--overwrite`) first turns its description
  into that marker and deletes the old content root-last, and appending an init resizes the arrays
  before it lists the init. The next run of the same command recognizes and redoes an interrupted
  change, and recomputes only chunks without a marker.
- **Distributed extraction** (`--scheduler local:N | tcp://HOST:PORT`). The client holds the
  lock for the whole job; each (init, chunk) is a dask task that writes its chunk and then its
  marker, exactly as a local run does. A worker that dies has its task rerun by dask (rewriting a
  chunk is idempotent); a client that dies leaves chunks with and without markers, and any rerun,
  local or on the scheduler, computes exactly the ones without.
- **Integrity.** Every feature chunk, coordinate and marker is written with a CRC32C checksum.
  `featstore verify STORE` reads all of them and lists each problem by variable (layer), init and
  image range: *corrupt* (does not decode, checksum mismatch, values that contradict the
  description), *missing* (marked done, data absent), *stale* (consolidated metadata behind the
  arrays after an interrupted metadata update; any extract run rewrites it), *pending* (not
  extracted yet). `featstore extract ... --repair` clears the markers of exactly the corrupt or
  missing chunks (of every init in the store, named on the command line or not), rewrites damaged
  coordinates from the data, then resumes as usual.
- **One writer at a time.** `featstore extract` holds `STORE/_featstore/lock` (JSON: pid, host,
  start time, command) for its whole run and removes it on exit, also on errors and Ctrl-C.
  On local disks the lock is an exclusive `flock`, which the kernel drops when its holder dies,
  even by SIGKILL: a stale lock file is taken over atomically by the next writer. On other fsspec
  stores (`memory://`, `s3://`) it is best effort: a holder on this host is checked by pid, a
  holder on another host is trusted until its lock object is deleted by hand. Readers:
  `FeatureStore.lock_holder()` / `featstore.lock.lock_holder(url)` name the live writer, if any.
- **A full disk** (ENOSPC, EDQUOT) ends the run with one line and exit 1; finished chunks are kept
  and the same command resumes once there is space.

| situation | exit | output |
|---|---|---|
| `verify`: every chunk present, readable and done | 0 | a one-line verdict |
| `verify`: corrupt, missing, stale or pending chunks | 1 | a table, one error line: the fix |
| `verify`: not a featstore store | 2 | one line |
| `extract` while another process holds the lock | 2 | one line naming the holder |
| `extract` on a full disk | 1 | one line: free space, rerun to resume |
| `extract --repair` on a path that holds no store | 2 | one line |
| an unreadable image (without `--skip-unreadable`) | 2 | one line naming the file |
"""


def render(outcomes: list[Outcome], command: str, seconds: float) -> str:
    """The RELIABILITY.md text."""
    lost = sum(o.lost for o in outcomes)
    summary = [[o.name, str(o.tried) if not o.skipped else "-",
                f"{o.passed}/{o.tried}" if not o.skipped else f"skipped: {o.skipped}",
                str(o.lost), "yes" if o.ok or o.skipped else "NO"] for o in outcomes]
    parts = [
        "# Reliability\n",
        f"Generated by `{command}` on {_dt.date.today().isoformat()} "
        f"({platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{seconds / 60:.1f} min). Every number below comes from that run; rerun the command to "
        "regenerate this file.\n",
        "## What is promised\n",
        PROMISES,
        "## Summary\n",
        _table(["scenario", "tried", "held", "data lost", "ok"], summary),
        f"\n**Data lost: {'none' if lost == 0 else lost}.**\n",
    ]
    for o in outcomes:
        parts.append(f"## {o.name}\n")
        if o.skipped:
            parts.append(f"Skipped: {o.skipped}.\n")
            continue
        for note in o.notes:
            parts.append(f"{note}\n")
        if o.rows:
            parts.append(_table(o.header, o.rows) + "\n")
        for failure in o.failures:
            parts.append(f"- FAILURE: {failure}")
        if o.failures:
            parts.append("")
    parts.append("## Failpoints\n")
    parts.append("`FEATSTORE_FAILPOINTS=\"point=kill[@N]|sleep:S,...\"` makes a featstore process "
                 "SIGKILL itself (at the N-th pass) or sleep at a named point: `extract.locked`, "
                 "`create.root`, `create.array`, `create.before_description`, `add_inits.resize`, "
                 "`add_inits.resized`, `add_inits.before_description`, "
                 "`add_inits.before_consolidate`, `write_chunk.layer`, "
                 "`write_chunk.before_marker`, `write_chunk.after_marker`. The variable is unset "
                 "in normal use and the hook then costs one dictionary lookup.\n")
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few kills, small data (minutes)")
    parser.add_argument("--kills", type=int, default=None, help="SIGKILLs of one extraction")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="report path")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (kept)")
    parser.add_argument("--model", default=None,
                        help=f"model to extract (default {MODEL_OPTIONS[1]}; a plugin's model "
                             "needs FEATSTORE_PLUGINS)")
    parser.add_argument("--image-size", type=int, default=None,
                        help=f"input side (default {MODEL_OPTIONS[3]})")
    parser.add_argument("--layers", default=None, help="layers to extract (default auto)")
    args = parser.parse_args(argv)
    kills = args.kills or (4 if args.quick else 20)
    out_path = args.out or (REPORT_QUICK if args.quick else REPORT)
    asked = [("--model", args.model), ("--image-size", args.image_size),
             ("--layers", args.layers)]
    model = ("--model", args.model or MODEL_OPTIONS[1],
             "--image-size", str(args.image_size or MODEL_OPTIONS[3]),
             *(("--layers", args.layers) if args.layers else ()))
    command = "python tools/fault_injection.py" + (" --quick" if args.quick else "") + (
        f" --kills {args.kills}" if args.kills else "") + "".join(
        f" {flag} {value}" for flag, value in asked if value is not None)
    scratch = args.workdir or Path(tempfile.mkdtemp(prefix="featstore-faults-"))
    runner = ForkRunner(scratch / "logs")
    started = time.monotonic()
    scenarios: list[tuple[str, Callable[[], Outcome]]] = [
        ("kills", lambda: kill_campaign(runner, scratch, kills=kills,
                                        per_class=12 if args.quick else 32, seed=args.seed,
                                        model=model)),
        ("failpoints", lambda: failpoint_campaign(runner, scratch, model=model)),
        ("corruption", lambda: corruption_campaign(runner, scratch, seed=args.seed,
                                                   model=model)),
        ("hostile", lambda: hostile_inputs(runner, scratch, model=model)),
        ("disk", lambda: disk_full(runner, scratch, model=model)),
        ("concurrency", lambda: concurrency(runner, scratch, model=model)),
        ("probe", lambda: probe_campaign(runner, scratch, kills=2 if args.quick else 5,
                                         seed=args.seed, model=model)),
        ("distributed", lambda: distributed_campaign(runner, scratch, model=model)),
    ]
    outcomes = []
    for name, scenario in scenarios:
        t0 = time.monotonic()
        try:
            outcome = scenario()
        except Exception:  # noqa: BLE001 - a crashed scenario is a failed scenario
            outcome = Outcome(name, failures=[traceback.format_exc(limit=3)])
        outcomes.append(outcome)
        status = "ok" if outcome.ok else ("skipped" if outcome.skipped else "FAILED")
        print(f"{name}: {status} ({outcome.passed}/{outcome.tried}, "
              f"{time.monotonic() - t0:.0f} s)", flush=True)
        for failure in outcome.failures:
            print(f"  {failure}", flush=True)
    out_path.write_text(render(outcomes, command, time.monotonic() - started), encoding="utf-8")
    print(f"wrote {out_path}")
    if args.workdir is None:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0 if all(o.ok or o.skipped for o in outcomes) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fault_injection import main as _main  # functions pickle as fault_injection.*

    sys.exit(_main())
