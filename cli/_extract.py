"""``featstore extract`` and ``featstore layers``."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from featstore import schema as S
from featstore.config import ExtractConfig

from ._progress import RichProgress
from ._reliability import print_repair


class Pool(StrEnum):
    avg = "avg"
    max = "max"
    cls = "cls"


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Dtype(StrEnum):
    float32 = "float32"
    float16 = "float16"


def _split_layers(values: list[str]) -> tuple[str, ...]:
    names = [part.strip() for value in values for part in value.split(",") if part.strip()]
    return tuple(names) or ("auto",)


def extract_command(
    data: Annotated[str, typer.Argument(
        help="ImageFolder directory or CSV manifest (path,label[,split]).")],
    store: Annotated[str, typer.Option("--store", help="Store directory or fsspec URL.")],
    model: Annotated[str, typer.Option(
        help="efficientnet_lite0, a torchvision model name, or timm:NAME for any timm model "
             "(`featstore layers --list --family timm`).")] = "efficientnet_lite0",
    init: Annotated[list[str] | None, typer.Option(
        "--init",
        help="pretrained, pretrained:WEIGHTS, pretrained:PATH.pth, random:SEED, random:0-4 or "
             "shuffled:SEED, each optionally with +bn (normalization statistics re-estimated on "
             "the data); repeatable.",
    )] = None,
    layers: Annotated[list[str] | None, typer.Option(
        "--layers",
        help="'auto' (block outputs) or module paths, comma-separated or repeated.")] = None,
    pool: Annotated[Pool, typer.Option(
        help="Global pooling of each activation map; for transformer tokens avg/max pool the "
             "patch tokens and cls takes the class token.")] = Pool.avg,
    image_size: Annotated[int | None, typer.Option(
        help="Resize side; default the model's standard size.")] = None,
    device: Annotated[Device, typer.Option(help="auto takes CUDA when present.")] = Device.auto,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 32,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = 0,
    dtype: Annotated[Dtype, typer.Option(help="Storage dtype.")] = Dtype.float32,
    chunk_images: Annotated[int, typer.Option(
        help="Images per store chunk.")] = S.DEFAULT_CHUNK_IMAGES,
    overwrite: Annotated[bool, typer.Option(
        help="Replace a store made with another configuration.")] = False,
    skip_unreadable: Annotated[bool, typer.Option(
        help="Record unreadable images as invalid instead of stopping.")] = False,
    autocast: Annotated[bool, typer.Option(help="bfloat16 autocast on CUDA.")] = False,
    scheduler: Annotated[str | None, typer.Option(
        help="Run (init, chunk) tasks on dask workers: local:N (N worker processes) or "
             "tcp://HOST:PORT (a running dask scheduler whose workers reach DATA and the "
             "store). Default: this process.")] = None,
    compile_: Annotated[bool, typer.Option(
        "--compile", help="torch.compile the network truncated after the deepest layer: the "
                          "same features, tens of seconds of compilation first; for large "
                          "jobs.")] = False,
    bn_images: Annotated[int, typer.Option(
        help="Images (a seeded sample; the train split when the data has one) that re-estimate "
             "the normalization statistics of +bn inits.")] = 1024,
    repair: Annotated[bool, typer.Option(
        help="Recompute exactly the chunks `featstore verify` finds corrupt or missing.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Run the network once per image and init; store pooled activations of every layer."""
    config = ExtractConfig(
        data=data, store=store, model=model, inits=tuple(init or ("pretrained", "random:0")),
        layers=_split_layers(layers or []), pool=pool.value, image_size=image_size,
        device=device.value, batch_size=batch_size, workers=workers, dtype=dtype.value,
        chunk_images=chunk_images, overwrite=overwrite, skip_unreadable=skip_unreadable,
        autocast=autocast, bn_images=bn_images, scheduler=scheduler, compile=compile_,
    )
    from featstore.extraction import run_extract

    with RichProgress("images", enabled=not quiet) as progress:
        ds = run_extract(config, progress, repair=repair, on_repair=print_repair)
    meta = ds.attrs["featstore"]
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    err.print(
        f"stored {len(meta['layers'])} layers x {ds.sizes['init']} inits x "
        f"{ds.sizes['image']} images in {store}"
    )
    from featstore.health import degenerate, degenerate_warning

    warning = degenerate_warning(degenerate(meta.get("health") or {}))
    if warning:
        err.print(f"warning: {warning}", markup=False)


def layers_command(
    model: Annotated[str | None, typer.Argument(help="Model name.")] = None,
    list_models: Annotated[bool, typer.Option(
        "--list", help="List the model names (timm's with --family timm).")] = False,
    family: Annotated[str | None, typer.Option(
        help="With --list: the models of this family only, e.g. timm.")] = None,
    all_modules: Annotated[bool, typer.Option(
        "--all", help="List every module a store can hold (runs once per pass, returns a "
                      "tensor), not just 'auto'.")] = False,
    image_size: Annotated[int | None, typer.Option(
        help="Input side for activation shapes.")] = None,
) -> None:
    """List a model's layer names (module paths) with unit counts, shallow to deep."""
    from featstore.models import (
        available_models,
        build_model,
        default_transform,
        describe_layers,
        extractable_layers,
        parse_init,
        parse_layers,
    )

    console = Console()
    if list_models or model is None:
        for name in available_models(family):
            console.print(name, highlight=False)
        return
    net, _ = build_model(model, parse_init("random:0"))
    names = parse_layers(model, net, "auto")
    auto = set(names)
    size = default_transform(model, image_size).size
    if all_modules:  # every module a store can hold: run once, return one tensor
        names = extractable_layers(net, size)
    table = Table(title=f"{model} layers (input {size}x{size})")
    table.add_column("#", justify="right")
    table.add_column("layer")
    table.add_column("units", justify="right")
    table.add_column("activation map")
    table.add_column("auto")
    infos = describe_layers(model, net, names, size)
    tokens = any(info.prefix_tokens for info in infos)  # a transformer with class/register tokens
    if tokens:
        table.add_column("prefix tokens")
    for i, info in enumerate(infos):
        row = [str(i), info.name, str(info.units), "x".join(map(str, info.shape)),
               "yes" if info.name in auto else ""]
        if tokens:
            row.append(f"{info.prefix_tokens}{' (cls)' if info.class_token else ''}"
                       if info.prefix_tokens else "")
        table.add_row(*row)
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("extract")(extract_command)
    app.command("layers")(layers_command)
