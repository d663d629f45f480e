"""Where dask work runs: one ``--scheduler`` grammar and one runner for every dask job.

The probe sweep, the similarity and transferability estimators and distributed extraction all
compute dask collections through :class:`Runner`, so that ``--scheduler`` means the same thing
everywhere:

* ``None`` / ``"threads"``: local threads (one per core); ``"threads:N"``: N threads;
* ``"sync"``: no parallelism (debugging);
* ``"local:N"``: a :class:`distributed.LocalCluster` of N single-threaded worker processes;
* ``"tcp://HOST:PORT"`` (or any dask.distributed address): an existing scheduler, whose
  workers must be able to read (and, for extraction, write) the store's path or URL.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import dask

from .config import parse_positive_int
from .errors import SchedulerError

__all__ = ["SCHEDULER_FORMS", "parse_scheduler", "parse_extract_scheduler", "Runner",
           "blas_limits"]

#: the accepted ``--scheduler`` forms, for messages
SCHEDULER_FORMS = "threads, threads:N, sync, local:N, tcp://HOST:PORT"


def parse_scheduler(value: str | None) -> tuple[str, int | str | None]:
    """Normalize a ``--scheduler`` value.

    Parameters
    ----------
    value : str or None
        None or ``"threads"`` (local threads, one per core), ``"threads:N"``, ``"sync"``,
        ``"local:N"`` (a LocalCluster of N worker processes) or ``"tcp://HOST:PORT"`` (an existing
        dask.distributed scheduler; ``tls://`` and other distributed protocols work too).

    Returns
    -------
    (kind, argument)
        ``("threads", N or None)``, ``("sync", None)``, ``("local", N)`` or
        ``("distributed", address)``.

    Raises
    ------
    SchedulerError
        For any other value, naming the allowed forms.
    """
    if value is None or value.strip() in ("", "threads"):
        return "threads", None
    text = value.strip()
    if text in ("sync", "synchronous"):
        return "sync", None
    match = re.fullmatch(r"(threads|local):(\d+)", text)
    if match:
        return match.group(1), parse_positive_int(f"--scheduler {match.group(1)}:N",
                                                  int(match.group(2)))
    if re.fullmatch(r"[a-z][a-z0-9+]*://\S+", text):
        return "distributed", text
    raise SchedulerError(f"invalid --scheduler {value!r}; allowed: {SCHEDULER_FORMS}")


def parse_extract_scheduler(value: str | None) -> tuple[str, int | str | None] | None:
    """``--scheduler`` of an extraction: None (this process), ``local:N`` or a dask address.

    Raises
    ------
    SchedulerError
        For threads or sync, which cannot run the network in parallel.
    """
    if value is None:
        return None
    kind, argument = parse_scheduler(value)
    if kind not in ("local", "distributed"):
        raise SchedulerError(
            f"invalid extract --scheduler {value!r}; extraction runs in this process without "
            "--scheduler, or as dask tasks with local:N (N worker processes) or "
            "tcp://HOST:PORT (a running dask.distributed scheduler)"
        )
    return kind, argument


class Runner:
    """Computes dask collections on the chosen scheduler (a context manager).

    Parameters
    ----------
    kind, argument
        As returned by :func:`parse_scheduler`.
    worker_threads : int, optional
        For ``local:N``: the OpenMP/BLAS threads each worker process may use (its one task's
        torch and NumPy work); default 1.

    Attributes
    ----------
    client : distributed.Client or None
        The client of a ``local`` or ``distributed`` scheduler while the runner is open.
    """

    def __init__(self, kind: str, argument: int | str | None,
                 worker_threads: int | None = None) -> None:
        self.kind = kind
        self.argument = argument
        self.worker_threads = worker_threads
        self.client: Any = None
        self._cluster: Any = None

    def __enter__(self) -> Runner:
        if self.kind in ("local", "distributed"):
            from distributed import Client, LocalCluster

            if self.kind == "local":
                threads = str(self.worker_threads or 1)
                self._cluster = LocalCluster(
                    n_workers=int(self.argument or 1), threads_per_worker=1, processes=True,
                    dashboard_address=":0", silence_logs=logging.ERROR,
                    env={"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
                         "OPENBLAS_NUM_THREADS": threads})
                self.client = Client(self._cluster, set_as_default=False)
            else:
                try:
                    self.client = Client(str(self.argument), set_as_default=False, timeout="10s")
                except OSError as exc:
                    raise SchedulerError(
                        f"cannot reach dask scheduler --scheduler {self.argument!r}: {exc}; "
                        "start one with `dask scheduler` and workers with `dask worker ADDRESS`"
                    ) from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.client is not None:
            self.client.close()
        if self._cluster is not None:
            self._cluster.close()

    @property
    def blas_threads(self) -> int | None:
        """BLAS threads a task should use: 1 in a LocalCluster's single-threaded workers."""
        return 1 if self.kind == "local" else None

    def compute(self, collection: Any) -> Any:
        """Compute one dask collection (or delayed object) and return its value."""
        if self.client is not None:
            return self.client.compute(collection).result()
        if self.kind == "sync":
            return dask.compute(collection, scheduler="sync")[0]
        return dask.compute(collection, scheduler="threads", num_workers=self.argument)[0]

    def compute_each(self, items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        """Compute ``items`` (delayed objects); yield ``(position, result)`` as each finishes.

        On a dask.distributed scheduler a task whose worker dies is run again elsewhere (dask
        retries it up to its ``allowed-failures`` setting), so tasks must be idempotent.
        """
        if self.client is not None:
            from distributed import as_completed

            futures = self.client.compute(list(items))
            position = {future.key: i for i, future in enumerate(futures)}
            for future in as_completed(futures, loop=self.client.loop):
                yield position[future.key], future.result()
            return
        yield from enumerate(self.compute_all(items, lambda: None))

    def compute_all(self, items: Sequence[Any], done: Callable[[], None]) -> list[Any]:
        """Compute ``items`` (delayed objects), calling ``done()`` as each one finishes."""
        if self.client is not None:
            from distributed import as_completed

            futures = self.client.compute(list(items))
            for _ in as_completed(futures, loop=self.client.loop):
                done()
            return [f.result() for f in futures]
        from dask.callbacks import Callback

        final = {item.key for item in items}

        def posttask(key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
            if key in final:
                done()

        scheduler = "sync" if self.kind == "sync" else "threads"
        with Callback(posttask=posttask):
            return list(dask.compute(*items, scheduler=scheduler, num_workers=self.argument))


@contextmanager
def blas_limits(kind: str, argument: int | str | None) -> Iterator[None]:
    """One BLAS thread per task while several local threads run tasks side by side.

    Parameters
    ----------
    kind, argument
        As returned by :func:`parse_scheduler`; only ``threads`` with more than one thread
        limits anything (a LocalCluster's single-threaded workers set their own limit).
    """
    threads = argument if isinstance(argument, int) else (os.cpu_count() or 1)
    if kind == "threads" and threads > 1:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            yield
    else:
        yield
