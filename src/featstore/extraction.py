"""The extraction job: images -> network (once per image and init) -> pooled features in a store.

This module wires the pure pieces together: :mod:`featstore.data` decodes and preprocesses,
:mod:`featstore.activations` pools every chosen layer inside one forward pass, and
:mod:`featstore.store` writes one image chunk of every layer at a time, then marks it done.
A rerun resumes from the markers; a new init for the same configuration is appended.
"""

from __future__ import annotations

import datetime as _dt
import errno
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch.utils.data import DataLoader, Dataset

from . import schema as S
from .activations import POOLS, PooledExtractor
from .baselines import (
    DEFAULT_BN_IMAGES,
    norm_layers,
    recalibrate_norm_stats,
    recalibration_sample,
    sample_digest,
)
from .compiled import CompiledPooledExtractor, truncated_pooled
from .config import (
    DTYPES,
    ExtractConfig,
    parse_choice,
    parse_device,
    parse_positive_int,
    parse_store_url,
)
from .data import ImageSource, open_source, preprocess
from .errors import (
    FeatstoreInputError,
    FeatstoreRuntimeError,
    NotAStoreError,
    StoreMismatchError,
    UnreadableImageError,
)
from .health import HealthAccumulator
from .inits import parse_inits
from .lock import StoreLock, lock_holder, locked_error
from .models import (
    InitSpec,
    TransformSpec,
    build_model,
    default_transform,
    describe_layers,
    model_entry,
    parse_init,
    parse_layers,
    select_for_pool,
)
from .progress import Progress
from .scheduler import parse_extract_scheduler
from .store import (
    FeatureStore,
    StoreLayout,
    creating_identity,
    diff_identity,
    failpoint,
    open_store,
    store_exists,
)
from .verify import VerifyReport, mark_for_repair, verify
from .versions import EXTRACT_LIBRARIES, library_versions

__all__ = ["extract", "run_extract", "plan_layout", "ExtractPlan", "Extractor", "ImageDataset",
           "make_extractor", "extract_chunks", "load_norm_state"]


#: what turns a batch into pooled features: eager hooks or the compiled truncated network
Extractor = PooledExtractor | CompiledPooledExtractor


@dataclass(frozen=True)
class ExtractPlan:
    """A validated extraction job (:func:`plan_layout`): the configuration, the image source,
    the store layout it implies, the chosen layers and inits, the model's transform and the
    device. Picklable: the dask path ships it to every worker once."""

    config: ExtractConfig
    source: ImageSource
    layout: StoreLayout
    layers: list[str]
    inits: list[InitSpec]
    transform: TransformSpec
    device: str


def _parse_config(config: ExtractConfig) -> tuple[list[InitSpec], str]:
    parse_choice("--pool", config.pool, POOLS)
    parse_choice("--dtype", config.dtype, DTYPES)
    parse_positive_int("--batch-size", config.batch_size)
    parse_positive_int("--chunk-images", config.chunk_images)
    parse_positive_int("--workers", config.workers, minimum=0)
    if config.image_size is not None:
        parse_positive_int("--image-size", config.image_size, minimum=8)
    parse_positive_int("--bn-images", config.bn_images)
    parse_extract_scheduler(config.scheduler)
    if not config.inits:
        raise FeatstoreInputError("no --init given; pass e.g. --init pretrained --init random:0")
    specs = parse_inits(config.inits)
    model_entry(config.model)  # raises UnknownModelError with close matches
    device = parse_device(config.device, torch.cuda.is_available())
    return specs, device


def plan_layout(config: ExtractConfig) -> ExtractPlan:
    """Validate a configuration and compute the store layout, without touching the store.

    Raises
    ------
    FeatstoreInputError
        For any bad option, missing data, unknown model or layer.
    """
    specs, device = _parse_config(config)
    source = open_source(config.data)
    transform = default_transform(config.model, config.image_size)
    skeleton, _ = build_model(config.model, InitSpec(kind="random", seed=0))
    layer_spec: str | Sequence[str] = "auto" if list(config.layers) == ["auto"] else config.layers
    layers = parse_layers(config.model, skeleton, layer_spec)
    infos = describe_layers(config.model, skeleton, layers, transform.size)
    named = [p.strip() for t in config.layers for p in str(t).split(",") if p.strip() != "auto"]
    infos = select_for_pool(config.model, infos, config.pool, named)  # cls: class tokens only
    layers = [info.name for info in infos]
    recalibrated = [spec.name for spec in specs if spec.recalibrate]
    if recalibrated and not norm_layers(skeleton):
        raise FeatstoreInputError(
            f"--init {recalibrated[0]}: {config.model} has no normalization layers with running "
            "statistics (BatchNorm), so there is nothing for '+bn' to re-estimate; drop '+bn'"
        )
    if config.compile:  # refuse an untraceable model before the store is touched
        truncated_pooled(PooledExtractor(skeleton, layers, config.pool))
    del skeleton
    records = source.records
    layout = StoreLayout(
        model=config.model,
        layers=tuple(infos),
        transform=transform.to_dict(),
        pool=config.pool,
        dtype=config.dtype,
        chunk_images=config.chunk_images,
        classes=tuple(source.classes),
        paths=tuple(r.path for r in records),
        labels=tuple(r.label for r in records),
        splits=tuple(str(r.split) for r in records) if source.has_splits else None,
        data=source.describe(),
        coords=tuple(source.columns.items()),
    )
    return ExtractPlan(config, source, layout, layers, specs, transform, device)


def _describe_diffs(stored: dict[str, Any], wanted: dict[str, Any], keys: list[str]) -> str:
    parts = []
    for key in keys[:3]:
        if key in ("data_fingerprint", "n_images", "classes"):
            parts.append("the images, labels or classes differ")
        elif key in ("layers", "units"):
            parts.append("the layers differ")
        else:
            parts.append(f"{key}: {stored.get(key)!r} in the store, {wanted.get(key)!r} requested")
    return "; ".join(dict.fromkeys(parts))


def _prepare_store(plan: ExtractPlan, meta: dict[str, Any]) -> FeatureStore:
    url = plan.config.store
    wanted = plan.layout.description()
    if not store_exists(url):
        return FeatureStore.create(url, plan.layout, meta, [])
    try:
        store = FeatureStore.open(url, mode="r+")
    except NotAStoreError:
        creating = creating_identity(url)
        if creating is not None and (plan.config.overwrite or not diff_identity(creating, wanted)):
            return FeatureStore.create(url, plan.layout, meta, [])  # creation was interrupted
        raise NotAStoreError(
            f"'{url}' exists and is not a featstore store; nothing was changed; "
            "choose another --store"
        ) from None
    stored = store.meta
    diffs = diff_identity(stored, wanted)
    if diffs:
        if plan.config.overwrite:
            return FeatureStore.create(url, plan.layout, meta, [])
        raise StoreMismatchError(
            f"store '{url}' was made with a different configuration "
            f"({_describe_diffs(stored, wanted, diffs)}); nothing was changed; "
            "use another --store, or --overwrite to replace it"
        )
    store.sync_image_coords(plan.layout)  # extra manifest columns describe images, not features
    return store


class ImageDataset(Dataset[tuple[torch.Tensor, int, str]]):
    """Decoded, preprocessed images; an unreadable image yields zeros and its error text."""

    def __init__(self, source: ImageSource, transform: TransformSpec) -> None:
        self.source = source
        self.transform = transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        t = self.transform
        try:
            image = self.source.load(index)
        except UnreadableImageError as exc:
            return torch.zeros(3, t.size, t.size), index, exc.reason
        return preprocess(image, t.size, t.mean, t.std, t.interpolation, t.crop_pct), index, ""


def _chunk_batches(chunks: Sequence[int], n_images: int, chunk_images: int,
                   batch_size: int) -> list[list[int]]:
    """Batches of image indices that never straddle a chunk boundary."""
    batches = []
    for chunk in chunks:
        start, stop = S.chunk_bounds(chunk, n_images, chunk_images)
        for first in range(start, stop, batch_size):
            batches.append(list(range(first, min(first + batch_size, stop))))
    return batches


class _ChunkWriter:
    """Writes finished chunks on a background thread so storage overlaps compute.

    At most ``depth`` chunks wait in memory; :meth:`close` waits for all of them, so every chunk
    handed over before an error or interrupt is written and marked done.
    """

    def __init__(self, store: FeatureStore, depth: int = 2) -> None:
        self.store = store
        self.depth = depth
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="featstore-writer")
        self._pending: deque[Future[None]] = deque()

    def submit(self, init_index: int, chunk: int, features: dict[str, np.ndarray],
               invalid: np.ndarray) -> None:
        while len(self._pending) >= self.depth:
            self._pending.popleft().result()
        self._pending.append(
            self._pool.submit(self.store.write_chunk, init_index, chunk, features, invalid)
        )

    def close(self) -> None:
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._pool.shutdown(wait=True)


def _iterate_chunks(
    extractor: Extractor,
    loader: DataLoader[Any],
    chunks: Sequence[int],
    n_images: int,
    chunk_images: int,
    device: str,
    autocast: bool,
) -> Iterator[tuple[int, dict[str, np.ndarray], list[tuple[int, str]], int]]:
    """Yield (chunk, features, unreadable (index, message) pairs, rows) as chunks complete."""
    chunk_iter = iter(chunks)
    current = next(chunk_iter, None)
    buffers: dict[str, list[np.ndarray]] = {name: [] for name in extractor.layers}
    failures: list[tuple[int, str]] = []
    filled = 0
    use_cuda = device.startswith("cuda")
    amp = (torch.autocast(device_type="cuda", dtype=torch.bfloat16)
           if (autocast and use_cuda) else nullcontext())
    for batch, indices, errors in loader:
        batch = batch.to(device, non_blocking=True)
        if _channels_last(device):
            batch = batch.contiguous(memory_format=torch.channels_last)
        with amp:
            features = extractor(batch)
        for name, values in features.items():
            buffers[name].append(values)
        for index, message in zip(indices.tolist(), errors, strict=True):
            if message:
                failures.append((int(index), message))
        filled += len(indices)
        assert current is not None
        start, stop = S.chunk_bounds(current, n_images, chunk_images)
        if filled == stop - start:
            stacked = {name: np.concatenate(parts) for name, parts in buffers.items()}
            yield current, stacked, failures, filled
            buffers = {name: [] for name in extractor.layers}
            failures = []
            filled = 0
            current = next(chunk_iter, None)


#: errno values that mean the store's filesystem (or quota) is full
_FULL = (errno.ENOSPC, errno.EDQUOT)


def _full_disk(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _FULL:
            return True
        current = current.__cause__ or current.__context__
    return False


def run_extract(config: ExtractConfig, progress: Progress | None = None, *,
                repair: bool = False,
                on_repair: Callable[[VerifyReport], None] | None = None) -> xr.Dataset:
    """Run an extraction job described by ``config``; see :func:`extract`.

    Parameters
    ----------
    config : ExtractConfig
        The job.
    progress : Progress, optional
        Progress receiver.
    repair : bool
        Verify the existing store first and recompute exactly its corrupt or missing chunks
        (of every init in the store), then finish any unfinished work as usual.
    on_repair : callable, optional
        Receives the :class:`~featstore.verify.VerifyReport` that the repair acts on.

    Raises
    ------
    featstore.errors.StoreLockedError
        Another process is writing the store (exit status 2 on the command line).
    FeatstoreRuntimeError
        The store's filesystem is full; finished chunks are kept and a rerun resumes.
    """
    config = ExtractConfig(**{**config.__dict__, "store": parse_store_url(config.store)})
    url = config.store
    holder = lock_holder(url)  # fail fast, before any model is built
    if holder is not None:
        raise locked_error(url, holder)
    if repair and not store_exists(url):
        raise NotAStoreError(f"--repair: nothing to repair, '{url}' does not exist; "
                             "drop --repair to create the store")
    plan = plan_layout(config)
    meta = {
        "config": config.to_dict(),
        "versions": library_versions(EXTRACT_LIBRARIES),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    try:
        with StoreLock(url):
            failpoint("extract.locked")
            _run_locked(plan, meta, progress, repair, on_repair)
    except Exception as exc:
        # ENOSPC raised directly (local disks) or wrapped by zarr/fsspec/the writer thread
        if not isinstance(exc, FeatstoreInputError) and _full_disk(exc):
            raise FeatstoreRuntimeError(
                f"no space left on device while writing '{url}'; finished chunks are kept; "
                "free space and rerun the same command to resume"
            ) from None
        raise
    return open_store(url)


def _run_locked(plan: ExtractPlan, meta: dict[str, Any], progress: Progress | None,
                repair: bool, on_repair: Callable[[VerifyReport], None] | None) -> None:
    """The body of :func:`run_extract`, run while holding the store's lock."""
    config = plan.config
    store = _prepare_store(plan, meta)
    dataset = ImageDataset(plan.source, plan.transform)
    specs = list(plan.inits)
    if repair:
        report = verify(store)
        if on_repair is not None:
            on_repair(report)
        damaged_inits = mark_for_repair(store, report, plan.layout)
        requested = {spec.name for spec in specs}
        for index in sorted(damaged_inits):  # damaged inits not named on this command line
            name = store.init_names[index]
            if name not in requested:
                specs.append(parse_init(name))
    jobs: list[tuple[int, str, int]] = []  # (init index, init name, chunk) for a scheduler
    for spec in specs:
        if spec.name in store.init_names:
            init_index = store.init_names.index(spec.name)
            pending = store.pending_chunks(init_index)
            if not pending:
                continue
        model, descriptor = build_model(config.model, spec)
        norm_state = None
        if spec.recalibrate:
            descriptor["recalibration"] = _recalibration_record(plan)
            if spec.name in store.init_names:
                norm_state = store.read_norm_state(store.init_names.index(spec.name))
            if norm_state is None:
                norm_state = _recalibrate(plan, dataset, model)
            else:
                load_norm_state(model, norm_state)
        if spec.name in store.init_names:
            stored = next(d for d in store.meta["inits"] if d["name"] == spec.name)
            _check_same_init(stored, descriptor, config.store)
        else:
            if config.dtype == "float16":
                _float16_preflight(plan, dataset, model, spec.name)
            store.add_inits([descriptor])
            init_index = store.init_names.index(spec.name)
            pending = store.pending_chunks(init_index)
        if norm_state is not None and store.read_norm_state(init_index) is None:
            store.write_norm_state(init_index, norm_state)
        if config.scheduler is not None:
            jobs.extend((init_index, spec.name, chunk) for chunk in pending)
        else:
            extractor = make_extractor(plan, model, config.compile)
            extract_chunks(plan, store, dataset, extractor, init_index, spec.name, pending,
                          progress)
        del model
    if jobs:
        from .dask_extract import extract_on_scheduler

        extract_on_scheduler(plan, store, jobs, progress)
    _record_health(store)
    store.consolidate()


def _check_same_init(stored: dict[str, Any], wanted: dict[str, Any], url: str) -> None:
    """An init resumed or repaired must come from the same weights and recalibration."""
    if stored.get("sha256") != wanted.get("sha256"):
        raise StoreMismatchError(
            f"init '{wanted['name']}' in store '{url}' was made from weights with "
            f"sha256 {stored.get('sha256')}, now {wanted.get('sha256')}; "
            "nothing was changed; use another --store or --overwrite"
        )
    if stored.get("recalibration") != wanted.get("recalibration"):
        before = (stored.get("recalibration") or {}).get("max_images")
        now = (wanted.get("recalibration") or {}).get("max_images")
        raise StoreMismatchError(
            f"init '{wanted['name']}' in store '{url}' re-estimated its normalization "
            f"statistics on another sample (--bn-images {before} then, {now} now); nothing was "
            f"changed; rerun with --bn-images {before}, or use another --store"
        )


#: images per batch of the normalization pass of +bn inits: fixed, because batch statistics
#: (and so the re-estimated running statistics) depend on it, and --batch-size may change
#: between the runs of one store
RECALIBRATION_BATCH = 32
#: seed of the recalibration sample
RECALIBRATION_SEED = 0


def _recalibration_sample(plan: ExtractPlan) -> tuple[np.ndarray, str]:
    train = None
    source = "all images"
    if plan.layout.splits is not None:
        splits = np.asarray(plan.layout.splits, dtype=object)
        if (splits == "train").any():
            train, source = splits == "train", "the train split"
    indices = recalibration_sample(plan.layout.n_images, plan.config.bn_images,
                                   RECALIBRATION_SEED, train)
    return indices, source


def _recalibration_record(plan: ExtractPlan) -> dict[str, Any]:
    """What the store records about a +bn init's normalization pass (and compares on resume)."""
    indices, source = _recalibration_sample(plan)
    return {
        "images": int(indices.size),
        "max_images": int(plan.config.bn_images),
        "sample": source,
        "seed": RECALIBRATION_SEED,
        "sample_sha256": sample_digest(indices),
        "batch_size": RECALIBRATION_BATCH,
        "method": "BatchNorm running statistics reset, then a cumulative average over one "
                  "no-grad pass with only the normalization layers in training mode",
    }


def _recalibrate(plan: ExtractPlan, dataset: ImageDataset, model: torch.nn.Module
                 ) -> dict[str, np.ndarray]:
    """Re-estimate the normalization statistics of ``model`` on the recalibration sample;
    returns the new buffers (the model keeps them)."""
    indices, _ = _recalibration_sample(plan)
    batches = [indices[i:i + RECALIBRATION_BATCH].tolist()
               for i in range(0, indices.size, RECALIBRATION_BATCH)]
    loader: DataLoader[Any] = DataLoader(dataset, batch_sampler=batches,
                                         num_workers=plan.config.workers)
    model = model.to(plan.device)

    def images() -> Iterator[torch.Tensor]:
        for batch, rows, errors in loader:
            keep = [i for i, message in enumerate(errors) if not message]
            if len(keep) < len(errors) and not plan.config.skip_unreadable:
                bad = next(i for i, message in enumerate(errors) if message)
                raise UnreadableImageError(plan.source.records[int(rows[bad])].path, errors[bad])
            if keep:
                yield batch[keep].to(plan.device)

    recalibrate_norm_stats(model, images())
    return {name: buffer.detach().cpu().numpy().copy()
            for name, buffer in model.named_buffers() if name.endswith(("running_mean",
                                                                          "running_var"))}


def load_norm_state(model: torch.nn.Module, state: dict[str, np.ndarray]) -> None:
    """Copy stored normalization statistics (buffer name -> values, as kept in the store for a
    ``+bn`` init) into ``model``'s buffers, in place."""
    buffers = dict(model.named_buffers())
    with torch.no_grad():
        for name, values in state.items():
            buffers[name].copy_(torch.from_numpy(values))


#: float16 loses a value to zero or infinity outside this magnitude range (smallest normal,
#: largest finite); below the smallest normal it keeps fewer than 10 significant bits
_FLOAT16_RANGE = (float(np.finfo(np.float16).tiny), float(np.finfo(np.float16).max))
#: share of non-zero values allowed below float16's smallest normal number (values near zero
#: exist in every layer; a layer whose bulk lies there has lost its digits)
_FLOAT16_SUBNORMAL_SHARE = 0.1


def _float16_problem(values: np.ndarray) -> str | None:
    """Why storing ``values`` as float16 would destroy information, or None."""
    finite = values[np.isfinite(values)]
    magnitude = np.abs(finite[finite != 0])
    if magnitude.size == 0:
        return None
    low, high = _FLOAT16_RANGE
    if magnitude.max() > high:
        return f"values up to {magnitude.max():.3g} overflow float16 (largest {high:.0f})"
    tiny = float((magnitude < low).mean())
    if tiny > _FLOAT16_SUBNORMAL_SHARE:
        return (f"{tiny:.0%} of its values are below {low:.2g}, where float16 keeps fewer "
                f"digits or none (pooled RMS {np.sqrt(np.mean(finite**2)):.2g})")
    return None


def _check_float16(features: dict[str, np.ndarray], init_name: str) -> None:
    for layer, values in features.items():
        problem = _float16_problem(values)
        if problem is not None:
            raise FeatstoreInputError(
                f"--dtype float16 would destroy init {init_name!r} at layer {layer!r}: "
                f"{problem}; use --dtype float32 (or a '+bn' baseline, whose activations keep "
                "a healthy scale)"
            )


def _token_layout(plan: ExtractPlan) -> dict[str, Any]:
    """PooledExtractor's ``prefix_tokens`` and ``class_tokens`` from the layout's layers."""
    return {
        "prefix_tokens": {spec.name: spec.prefix_tokens for spec in plan.layout.layers},
        "class_tokens": [spec.name for spec in plan.layout.layers if spec.class_token],
    }


def _float16_preflight(plan: ExtractPlan, dataset: ImageDataset, model: torch.nn.Module,
                       init_name: str) -> None:
    """Refuse a float16 init before anything of it is written: one batch, every layer."""
    first = list(range(min(plan.config.batch_size, len(dataset))))
    batch = torch.stack([dataset[i][0] for i in first]).to(plan.device)
    if _channels_last(plan.device):
        batch = batch.contiguous(memory_format=torch.channels_last)
    _check_float16(make_extractor(plan, model, compile_=False)(batch), init_name)


def _record_health(store: FeatureStore) -> None:
    """Activation health of every complete init that has none recorded (read from the store)."""
    meta = store.meta
    health = dict(meta.get("health") or {})
    done = store.progress()
    valid = store.valid_mask()
    missing = [(i, name) for i, name in enumerate(store.init_names)
               if name not in health and done.shape[0] > i and bool(done[i].all())]
    if not missing:
        return
    modules: dict[str, str] = meta["layer_modules"]
    for index, name in missing:
        per_layer = {}
        for var in store.layer_vars:
            accumulator = HealthAccumulator(int(meta["units"][var]))
            for chunk in range(store.n_chunks):
                start, stop = S.chunk_bounds(chunk, store.n_images, store.chunk_images)
                rows = store.read_layer(var, index, slice(start, stop))
                keep = valid[start:stop] & np.isfinite(rows).all(axis=1)
                accumulator.add(rows[keep])
            per_layer[modules.get(var, var)] = accumulator.result()
        health[name] = per_layer
    store.update_meta(health=health)


#: channels-last memory format on the CPU too: 0.58-0.69x the time per image of contiguous
#: tensors for efficientnet_lite0 (measured: benchmarks/RESULTS.md, "Compiled and
#: channels-last extraction")
_CPU_CHANNELS_LAST = True


def _channels_last(device: str) -> bool:
    """Whether batches and weights use the channels-last memory format on ``device``."""
    return device.startswith("cuda") or _CPU_CHANNELS_LAST


def make_extractor(plan: ExtractPlan, model: torch.nn.Module, compile_: bool) -> Extractor:
    """The pooled-activation extractor of ``model`` on the plan's device (compiled on request)."""
    model = model.to(plan.device)
    if _channels_last(plan.device):
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    channel_axes = {spec.name: spec.channel_axis for spec in plan.layout.layers}
    eager = PooledExtractor(model, plan.layers, plan.config.pool, channel_axes,
                            **_token_layout(plan))
    return CompiledPooledExtractor(eager) if compile_ else eager


def extract_chunks(
    plan: ExtractPlan,
    store: FeatureStore,
    dataset: ImageDataset,
    extractor: Extractor,
    init_index: int,
    init_name: str,
    pending: list[int],
    progress: Progress | None,
) -> None:
    """Run the network over the ``pending`` chunks of one init and write each chunk and its
    done marker to the store (a background writer overlaps the writes with the next batches).

    Parameters
    ----------
    plan : ExtractPlan
        The job (batch size, loader workers, device).
    store : FeatureStore
        Open for writing; this process or its client holds the store's lock.
    dataset : ImageDataset
        The decoded, preprocessed images.
    extractor : Extractor
        The init's pooled-activation extractor (:func:`make_extractor`).
    init_index, init_name : int, str
        Position and name of the init in the store.
    pending : list of int
        Chunk numbers to compute.
    progress : Progress, optional
        Told about every batch.
    """
    config = plan.config
    n_images, chunk_images = store.n_images, store.chunk_images
    batches = _chunk_batches(pending, n_images, chunk_images, config.batch_size)
    loader: DataLoader[Any] = DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=config.workers,
        pin_memory=plan.device.startswith("cuda"),
        persistent_workers=False,
    )
    if progress is not None:
        progress.start(init_name, sum(len(b) for b in batches))
    writer = _ChunkWriter(store)
    try:
        for chunk, features, failures, rows in _iterate_chunks(
            extractor, loader, pending, n_images, chunk_images, plan.device, config.autocast
        ):
            start, _ = S.chunk_bounds(chunk, n_images, chunk_images)
            invalid = np.zeros(rows, dtype=bool)
            if failures:
                if not config.skip_unreadable:
                    index, message = failures[0]
                    raise UnreadableImageError(plan.source.records[index].path, message)
                for index, _message in failures:
                    invalid[index - start] = True
                for name in features:
                    features[name][invalid] = np.nan
            if config.dtype == "float16":
                _check_float16(features, init_name)
            writer.submit(init_index, chunk, features, invalid)
            if progress is not None:
                progress.advance(rows)
    finally:
        writer.close()
    if progress is not None:
        progress.finish(init_name)


def extract(
    data: str,
    store: str,
    *,
    model: str = "efficientnet_lite0",
    inits: Sequence[str] = ("pretrained", "random:0"),
    layers: str | Sequence[str] = "auto",
    pool: str = "avg",
    image_size: int | None = None,
    device: str = "auto",
    batch_size: int = 32,
    workers: int = 0,
    dtype: str = "float32",
    chunk_images: int = S.DEFAULT_CHUNK_IMAGES,
    overwrite: bool = False,
    skip_unreadable: bool = False,
    autocast: bool = False,
    bn_images: int = DEFAULT_BN_IMAGES,
    scheduler: str | None = None,
    compile: bool = False,
    repair: bool = False,
    progress: Progress | None = None,
) -> xr.Dataset:
    """Extract pooled activations of every chosen layer into a Zarr store.

    The network runs once per image and init; every layer is pooled inside that forward pass.
    Rerunning the same call resumes an interrupted job; adding an init appends it.

    Parameters
    ----------
    data : str
        ImageFolder directory (one subfolder per class) or CSV manifest ``path,label[,split]``.
    store : str
        Store path or fsspec URL (``memory://...``).
    model : str
        ``"efficientnet_lite0"``, any torchvision classification model, or ``"timm:NAME"``.
    inits : sequence of str
        ``"pretrained"``, ``"pretrained:WEIGHTS"``, ``"pretrained:PATH.pth"``, ``"random:SEED"``
        (``"random:0-4"``: seeds 0 to 4), ``"shuffled:SEED"``, each optionally with ``+bn``
        (:mod:`featstore.inits`).
    layers : "auto" or sequence of str
        Block outputs (``"auto"``) or module paths.
    pool : {"avg", "max", "cls"}
        Global pooling of each activation map (of a transformer's patch tokens; ``"cls"``: the
        class token, of the layers that have one).
    image_size : int, optional
        Side length after resizing; default the model's standard size.
    device : {"auto", "cpu", "cuda"}
        Where the network runs; ``auto`` takes CUDA when present.
    batch_size, workers : int
        DataLoader batch size and worker processes.
    dtype : {"float32", "float16"}
        Storage dtype.
    chunk_images : int
        Images per store chunk.
    overwrite : bool
        Replace a store made with a different configuration.
    skip_unreadable : bool
        Record unreadable images in the ``valid`` mask (rows NaN) instead of stopping.
    autocast : bool
        bfloat16 autocast on CUDA.
    bn_images : int
        At most this many images (a seeded sample, from the train split when the data has one)
        re-estimate the normalization statistics of ``+bn`` inits.
    scheduler : str, optional
        None runs the network in this process; ``"local:N"`` starts N worker processes and
        ``"tcp://HOST:PORT"`` uses a running dask.distributed scheduler: every (init, chunk) is
        a task on a worker (its own device: start one worker per GPU with
        ``CUDA_VISIBLE_DEVICES``), written straight to the store, which the workers must reach.
        The result is the same store.
    compile : bool
        Run a ``torch.compile``'d copy of the network truncated after the deepest layer
        (:mod:`featstore.compiled`): features equal to float rounding, tens of seconds of
        compilation first; worth it for large jobs only.
    repair : bool
        Verify the store first and recompute exactly its corrupt or missing chunks
        (``featstore verify`` lists them).
    progress : Progress, optional
        Progress receiver.

    Returns
    -------
    xarray.Dataset
        The store opened lazily (see :func:`featstore.open_store`).

    Raises
    ------
    FeatstoreInputError
        Bad options or data, a store made with another configuration, or a store that another
        process is writing (:class:`~featstore.errors.StoreLockedError`).
    FeatstoreRuntimeError
        The store's filesystem is full (finished chunks are kept; rerun to resume).

    Notes
    -----
    The store is locked for the whole run (``STORE/_featstore/lock``, see :mod:`featstore.lock`);
    a chunk's done marker is written only after all of its layers are written (and fsync'ed on
    local disks), so a run killed at any moment resumes without recomputing finished chunks.
    """
    layer_tuple = (layers,) if isinstance(layers, str) else tuple(layers)
    config = ExtractConfig(
        data=str(data), store=str(store), model=model, inits=tuple(inits), layers=layer_tuple,
        pool=pool, image_size=image_size, device=device, batch_size=batch_size, workers=workers,
        dtype=dtype, chunk_images=chunk_images, overwrite=overwrite,
        skip_unreadable=skip_unreadable, autocast=autocast, bn_images=bn_images,
        scheduler=scheduler, compile=compile,
    )
    return run_extract(config, progress, repair=repair)
