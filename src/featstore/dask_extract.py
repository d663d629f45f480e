"""Extraction as dask tasks: every (init, chunk) of a job on a dask.distributed worker.

:func:`featstore.extraction.run_extract` plans the job, holds the store's lock, adds the inits
(and re-estimates ``+bn`` statistics, which it keeps in the store), then hands the pending
(init, chunk) pairs to :func:`extract_on_scheduler`. Each task (:func:`extract_chunk_task`) runs
on a worker: it builds the extractor once per worker process and init (cached), runs the
network on the worker's own device (a worker started with ``CUDA_VISIBLE_DEVICES=k`` uses that
GPU), and writes its chunk and the chunk's done marker to the one store, exactly as a local run
does. A task whose worker dies is rerun by dask (writing a chunk is idempotent).
"""

from __future__ import annotations

import os
from dataclasses import replace

import dask
import torch

from . import schema as S
from .config import parse_device
from .errors import FeatstoreRuntimeError
from .extraction import (
    Extractor,
    ExtractPlan,
    ImageDataset,
    extract_chunks,
    load_norm_state,
    make_extractor,
)
from .models import build_model, parse_init
from .progress import Progress
from .scheduler import Runner, parse_scheduler
from .store import FeatureStore

__all__ = ["extract_on_scheduler", "extract_chunk_task"]


def extract_on_scheduler(plan: ExtractPlan, store: FeatureStore, jobs: list[tuple[int, str, int]],
                         progress: Progress | None) -> None:
    """Run (init, chunk) jobs as dask tasks; each writes its chunk and marker to the store.

    This process keeps the store's lock for the whole job; the workers only write chunks. A
    task whose worker dies is run again by dask (writing a chunk is idempotent); a chunk
    whose task never finished stays pending, and the next run computes exactly those.
    """
    kind, argument = parse_scheduler(plan.config.scheduler)
    workers = int(argument or 1) if kind == "local" else 1
    threads = max(1, (os.cpu_count() or 1) // workers)
    plan_ref = dask.delayed(plan, pure=True)  # shipped to each worker once
    tasks = [dask.delayed(extract_chunk_task, pure=False)(plan_ref, name, index, chunk)
             for index, name, chunk in jobs]
    bounds = [S.chunk_bounds(chunk, store.n_images, store.chunk_images) for _, _, chunk in jobs]
    total = sum(stop - start for start, stop in bounds)
    if progress is not None:
        progress.start("extract (dask)", total)
    with Runner(kind, argument, worker_threads=threads) as runner:
        for _, rows in runner.compute_each(tasks):
            if progress is not None:
                progress.advance(int(rows))
    if progress is not None:
        progress.finish("extract (dask)")


#: extractors built in a dask worker process, by (store, init): the model is built (and
#: compiled) once per process, reused by every chunk task of that init
_WORKER_EXTRACTORS: dict[tuple[str, str], Extractor] = {}


def _worker_extractor(plan: ExtractPlan, init_name: str, init_index: int) -> Extractor:
    key = (plan.config.store, init_name)
    if key not in _WORKER_EXTRACTORS:
        spec = parse_init(init_name)
        model, _ = build_model(plan.config.model, spec)
        if spec.recalibrate:
            state = FeatureStore.open(plan.config.store).read_norm_state(init_index)
            if state is None:
                raise FeatstoreRuntimeError(
                    f"the store '{plan.config.store}' lost the normalization statistics of init "
                    f"{init_name!r}; rerun the same command to estimate them again"
                )
            load_norm_state(model, state)
        _WORKER_EXTRACTORS[key] = make_extractor(plan, model, plan.config.compile)
    return _WORKER_EXTRACTORS[key]


def extract_chunk_task(plan: ExtractPlan, init_name: str, init_index: int, chunk: int) -> int:
    """One (init, chunk) job on a dask worker: the worker's own device and cached model, the
    chunk's images read and pooled, the chunk and its done marker written to the store.

    Returns
    -------
    int
        Images in the chunk.
    """
    local = replace(plan, device=parse_device(plan.config.device, torch.cuda.is_available()))
    store = FeatureStore.open(plan.config.store, mode="r+")
    dataset = ImageDataset(local.source, local.transform)
    extractor = _worker_extractor(local, init_name, init_index)
    extract_chunks(local, store, dataset, extractor, init_index, init_name, [chunk], None)
    start, stop = S.chunk_bounds(chunk, store.n_images, store.chunk_images)
    return stop - start
