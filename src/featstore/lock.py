"""The write lock of a feature store: one writer at a time, stale locks taken over safely.

A writer (``featstore extract``) holds ``STORE/_featstore/lock`` while it changes the store. The
file holds a JSON description of the holder (pid, host, start time, command) so that a second
writer, or a reader such as ``featstore probe``, can name it.

Local directories (and ``file://`` URLs)
    The lock is an exclusive ``flock`` on the lock file, taken with ``LOCK_NB``. The kernel drops
    it when the holder dies for any reason (``SIGKILL`` and power loss included), so a lock left
    behind by a dead process is *stale by construction*: the next writer's ``flock`` succeeds and
    it takes the lock over in one atomic step, reporting the dead predecessor. This is safer than
    ``O_CREAT | O_EXCL`` plus a pid check, where two processes that both find a stale file can
    race to delete and recreate it. After ``flock`` succeeds the holder checks that the path still
    names the inode it locked (a releasing holder unlinks the file), so two writers never both
    hold it. Filesystems without ``flock`` (some network mounts) fall back to the best-effort
    protocol below.
Other fsspec URLs (``memory://``, ``s3://``...)
    Best effort: object stores have no atomic create-if-absent in fsspec. A writer reads the lock
    object; a live holder (any holder on another host, or a running pid on this host) refuses the
    lock; otherwise the writer writes its own description and reads it back to confirm. Two
    writers starting within the same fraction of a second on different hosts can both succeed;
    a lock left by a process on another host that died must be deleted by hand (the error says
    where).
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import json
import os
import socket
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from . import schema as S
from .errors import StoreError, StoreLockedError
from .location import is_local, local_path, url_to_fs

__all__ = ["LOCK_KEY", "LockInfo", "StoreLock", "lock_holder"]

#: key of the lock file inside a store
LOCK_KEY = f"{S.INTERNAL_GROUP}/lock"

#: how long a writer waits when the lock is held although its recorded holder has exited
#: (forked DataLoader workers of a killed writer keep the file lock until they notice)
_DEAD_HOLDER_GRACE_S = 10.0


@dataclass(frozen=True)
class LockInfo:
    """Who holds a store's lock.

    Attributes
    ----------
    pid : int
        Process id of the holder.
    host : str
        Host name of the holder.
    started : str
        When the lock was taken (ISO 8601, UTC).
    command : str
        The holder's command line.
    token : str
        Random id of this lock acquisition.
    start_ticks : int or None
        The holder's start time in clock ticks since boot (Linux), which tells a live holder from
        a new process that reuses its pid.
    """

    pid: int
    host: str
    started: str
    command: str
    token: str
    start_ticks: int | None = None

    def to_json(self) -> bytes:
        """Serialized form written into the lock file."""
        return json.dumps(asdict(self), ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> LockInfo | None:
        """Parse a lock file's content; None when it is empty or not a lock description."""
        try:
            data = json.loads(raw.decode())
            return cls(pid=int(data["pid"]), host=str(data["host"]), started=str(data["started"]),
                       command=str(data.get("command", "")), token=str(data.get("token", "")),
                       start_ticks=(None if data.get("start_ticks") is None
                                    else int(data["start_ticks"])))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return None

    def describe(self) -> str:
        """One-phrase description, e.g. ``pid 412 on host gpu3 since 2026-01-02T03:04:05Z``."""
        command = f" running `{self.command}`" if self.command else ""
        return f"pid {self.pid} on host {self.host} since {self.started}{command}"

    def is_alive(self) -> bool | None:
        """Whether the holder still runs: True/False on this host, None for another host."""
        if self.host != socket.gethostname():
            return None
        return _pid_alive(self.pid, self.start_ticks)


def _start_ticks(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (Linux), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    fields = stat[stat.rfind(")") + 2:].split()
    try:
        return int(fields[19])  # field 22 of proc(5)
    except (IndexError, ValueError):
        return None


def _pid_alive(pid: int, start_ticks: int | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if start_ticks is not None:
        current = _start_ticks(pid)
        if current is not None and current != start_ticks:
            return False  # the pid now belongs to another process
    return True


def _new_info(command: str | None) -> LockInfo:
    pid = os.getpid()
    return LockInfo(
        pid=pid,
        host=socket.gethostname(),
        started=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        command=command if command is not None else " ".join(
            [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]),
        token=uuid.uuid4().hex,
        start_ticks=_start_ticks(pid),
    )


def locked_error(url: str, holder: LockInfo | None) -> StoreLockedError:
    """The one-line error for a store that ``holder`` is writing."""
    who = holder.describe() if holder is not None else "another process (it is still starting)"
    where = str(local_path(url) / LOCK_KEY) if is_local(url) else f"{url}/{LOCK_KEY}"
    return StoreLockedError(
        f"store '{url}' is locked by {who}; wait for it to finish (nothing was changed), "
        f"or if that process is gone for good delete '{where}'"
    )


class StoreLock:
    """Exclusive write lock of one store; a context manager.

    Parameters
    ----------
    url : str
        Store path or fsspec URL. The store itself need not exist yet.
    command : str, optional
        Command line recorded for other processes to see; default ``sys.argv``.

    Attributes
    ----------
    info : LockInfo
        This holder's description.
    taken_over : LockInfo or None
        The description left by a dead holder whose stale lock was taken over, if any.

    Examples
    --------
    >>> with StoreLock("features.zarr"):  # doctest: +SKIP
    ...     ...  # write the store
    """

    def __init__(self, url: str, command: str | None = None) -> None:
        self.url = url
        self.info = _new_info(command)
        self.taken_over: LockInfo | None = None
        self._fd: int | None = None
        self._held = False
        self._made_dirs: list[Path] = []

    # ------------------------------------------------------------------ public
    def acquire(self) -> StoreLock:
        """Take the lock or raise :class:`StoreLockedError` naming the holder."""
        if self._held:
            return self
        if is_local(self.url):
            self._acquire_local()
        else:
            self._acquire_fsspec()
        self._held = True
        return self

    def release(self) -> None:
        """Give the lock back (idempotent); the lock file is removed."""
        if not self._held:
            return
        self._held = False
        if is_local(self.url):
            self._release_local()
        else:
            self._release_fsspec()

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    # ------------------------------------------------------------------ local: flock
    def _acquire_local(self) -> None:
        path = local_path(self.url) / LOCK_KEY
        self._made_dirs = [p for p in (path.parent.parent, path.parent) if not p.exists()]
        deadline = time.monotonic() + _DEAD_HOLDER_GRACE_S
        soon = time.monotonic() + 1.0
        while True:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise
                raise StoreError(
                    f"cannot lock store '{self.url}': {exc.strerror} ('{exc.filename}'); "
                    "--store must be a writable directory path (or fsspec URL)"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = LockInfo.from_json(_read_fd(fd))
                os.close(fd)
                # a dead recorded holder: its forked workers may still hold the file lock for a
                # moment; no recorded holder: a writer is just starting, or a reader is probing
                waiting = holder is None or holder.is_alive() is False
                if waiting and time.monotonic() < (deadline if holder else soon):
                    time.sleep(0.1)
                    continue
                raise locked_error(self.url, holder) from None
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    self._acquire_best_effort_local(path)
                    return
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder unlinked it between our open and flock
                os.close(fd)
                continue
            try:
                self.taken_over = LockInfo.from_json(_read_fd(fd))
                os.ftruncate(fd, 0)
                os.pwrite(fd, self.info.to_json(), 0)
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            return

    def _release_local(self) -> None:
        path = local_path(self.url) / LOCK_KEY
        if self._fd is None:  # best-effort mode
            if _read_info_local(path) == self.info:
                path.unlink(missing_ok=True)
        else:
            path.unlink(missing_ok=True)  # unlink while still locked, then drop the lock
            os.close(self._fd)
            self._fd = None
        for folder in reversed(self._made_dirs):
            try:
                folder.rmdir()  # only folders this lock created, and only when left empty
            except OSError:
                break

    def _acquire_best_effort_local(self, path: Path) -> None:
        while True:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            except FileExistsError:
                holder = _read_info_local(path)
                if holder is None or holder.is_alive() is not False:
                    raise locked_error(self.url, holder) from None
                self.taken_over = holder
                tmp = path.with_name(f"lock.{self.info.token}.tmp")
                tmp.write_bytes(self.info.to_json())
                os.replace(tmp, path)
                if _read_info_local(path) != self.info:
                    raise locked_error(self.url, _read_info_local(path)) from None
                return
            try:
                os.write(fd, self.info.to_json())
                os.fsync(fd)
            finally:
                os.close(fd)
            return

    # ------------------------------------------------------------------ fsspec: best effort
    def _acquire_fsspec(self) -> None:
        fs, path = _fs_path(self.url)
        holder = _read_info_fs(fs, path)
        if holder is not None:
            if holder.is_alive() is not False:
                raise locked_error(self.url, holder)
            self.taken_over = holder
        fs.pipe_file(path, self.info.to_json())
        confirmed = _read_info_fs(fs, path)
        if confirmed != self.info:
            raise locked_error(self.url, confirmed)

    def _release_fsspec(self) -> None:
        fs, path = _fs_path(self.url)
        if _read_info_fs(fs, path) == self.info:
            fs.rm_file(path)


def _read_fd(fd: int) -> bytes:
    return os.pread(fd, 1 << 16, 0)


def _read_info_local(path: Path) -> LockInfo | None:
    try:
        return LockInfo.from_json(path.read_bytes())
    except OSError:
        return None


def _fs_path(url: str) -> tuple[Any, str]:
    fs, root = url_to_fs(url)
    return fs, f"{root}/{LOCK_KEY}"


def _read_info_fs(fs: Any, path: str) -> LockInfo | None:
    try:
        return LockInfo.from_json(fs.cat_file(path))
    except (FileNotFoundError, OSError):
        return None


def lock_holder(url: str) -> LockInfo | None:
    """The live holder of a store's write lock, or None when nobody is writing it.

    A lock left behind by a dead process counts as free (None).

    Parameters
    ----------
    url : str
        Store path or fsspec URL.

    Returns
    -------
    LockInfo or None
        The holder's pid, host, start time and command.
    """
    if not is_local(url):
        fs, path = _fs_path(url)
        holder = _read_info_fs(fs, path)
        return holder if holder is not None and holder.is_alive() is not False else None
    try:
        fd = os.open(local_path(url) / LOCK_KEY, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        holder = LockInfo.from_json(_read_fd(fd))
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            if holder is None:  # being written by a writer that has just taken it
                return LockInfo(pid=0, host="?", started="now", command="", token="")
            return holder
        except OSError:  # no flock here: judge by the recorded pid
            return holder if holder is not None and holder.is_alive() is not False else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None  # nobody holds the file lock: absent or stale
    finally:
        os.close(fd)
