"""The store write lock: one holder, named in errors, released on exit, stale locks taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import fsspec
import pytest

from featstore.errors import StoreError, StoreLockedError
from featstore.lock import LOCK_KEY, LockInfo, StoreLock, lock_holder


def dead_pid() -> int:
    """A pid that no process has: a child that has already been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def lock_json(pid: int, host: str | None = None, command: str = "featstore extract x") -> bytes:
    return json.dumps({"pid": pid, "host": host or socket.gethostname(),
                       "started": "2026-01-01T00:00:00Z", "command": command,
                       "token": "t0"}).encode()


@pytest.fixture(params=["local", "file", "memory"])
def url(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "s.zarr")
    if request.param == "file":
        return f"file://{tmp_path / 's.zarr'}"
    return f"memory://featstore-lock-{uuid.uuid4().hex}/s.zarr"


def write_lock(url: str, raw: bytes) -> None:
    if url.startswith("memory://"):
        fsspec.filesystem("memory").pipe_file(f"{url[len('memory://'):]}/{LOCK_KEY}", raw)
        return
    path = Path(url.removeprefix("file://")) / LOCK_KEY
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)


def lock_exists(url: str) -> bool:
    if url.startswith("memory://"):
        return fsspec.filesystem("memory").exists(f"{url[len('memory://'):]}/{LOCK_KEY}")
    return (Path(url.removeprefix("file://")) / LOCK_KEY).exists()


def test_second_holder_is_refused_naming_the_first(url):
    with StoreLock(url, command="featstore extract data --store s.zarr") as first:
        assert lock_holder(url) == first.info
        with pytest.raises(StoreLockedError, match=(
                rf"store '.*s.zarr' is locked by pid {os.getpid()} on host "
                rf"{socket.gethostname()} since .* running `featstore extract data --store "
                r"s.zarr`; wait for it to finish \(nothing was changed\), or if that process is "
                r"gone for good delete '.*_featstore/lock'")):
            StoreLock(url).acquire()
    assert lock_holder(url) is None
    assert not lock_exists(url)
    with StoreLock(url):  # free again
        pass


def test_released_on_exceptions_and_keyboard_interrupt(url):
    for exc in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(exc)), StoreLock(url):
            raise exc
        assert lock_holder(url) is None


def test_stale_lock_of_dead_process_is_taken_over(url):
    pid = dead_pid()
    write_lock(url, lock_json(pid))
    assert lock_holder(url) is None
    with StoreLock(url) as lock:
        assert lock.taken_over is not None and lock.taken_over.pid == pid
        assert lock_holder(url) == lock.info


def test_lock_of_another_host_is_respected_on_fsspec_stores():
    url = f"memory://featstore-lock-{uuid.uuid4().hex}/s.zarr"
    write_lock(url, lock_json(12345, host="elsewhere"))
    holder = lock_holder(url)
    assert holder is not None and holder.host == "elsewhere"
    with pytest.raises(StoreLockedError, match="pid 12345 on host elsewhere"):
        StoreLock(url).acquire()


def test_recycled_pid_counts_as_dead():
    info = LockInfo(pid=os.getpid(), host=socket.gethostname(), started="x", command="",
                    token="t", start_ticks=1)  # this pid, but a different start time
    assert info.is_alive() is False
    assert LockInfo(pid=os.getpid(), host="other", started="x", command="",
                    token="t").is_alive() is None


def test_lock_file_content_and_created_folders_removed(tmp_path):
    url = str(tmp_path / "new" / "s.zarr")
    with StoreLock(url, command="cmd") as lock:
        data = json.loads((Path(url) / LOCK_KEY).read_text())
        assert data["pid"] == os.getpid() and data["command"] == "cmd"
        assert data["token"] == lock.info.token
    assert not Path(url).exists()  # the lock made the folder, and removed it again
    existing = tmp_path / "existing.zarr"
    existing.mkdir()
    with StoreLock(str(existing)):
        pass
    assert existing.is_dir()


def test_held_by_another_process_then_stale_after_sigkill(tmp_path):
    """A foreign process holds the flock; once it is SIGKILLed the lock is taken over."""
    url = str(tmp_path / "s.zarr")
    path = Path(url) / LOCK_KEY
    path.parent.mkdir(parents=True)
    holder_code = (
        "import fcntl, json, os, socket, sys, time\n"
        f"fd = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, json.dumps({'pid': os.getpid(), 'host': socket.gethostname(),"
        " 'started': 'now', 'command': 'featstore extract other', 'token': 'x'}).encode())\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", holder_code], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        holder = lock_holder(url)
        assert holder is not None and holder.pid == proc.pid
        with pytest.raises(StoreLockedError, match=f"pid {proc.pid} .*featstore extract other"):
            StoreLock(url).acquire()
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert lock_holder(url) is None  # the kernel dropped the dead holder's flock
    with StoreLock(url) as lock:
        assert lock.taken_over is not None and lock.taken_over.pid == proc.pid


def test_unreadable_lock_content_while_locked_is_still_a_holder(tmp_path):
    url = str(tmp_path / "s.zarr")
    with StoreLock(url):
        (Path(url) / LOCK_KEY).write_bytes(b"")  # as if the holder had not written it yet
        holder = lock_holder(url)
        assert holder is not None and holder.pid == 0
        with pytest.raises(StoreLockedError, match="another process"):
            StoreLock(url).acquire()


def test_store_path_that_is_a_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(StoreError, match=r"cannot lock store '.*afile': Not a directory"):
        StoreLock(str(tmp_path / "afile")).acquire()
