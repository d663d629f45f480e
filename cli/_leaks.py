"""``featstore leaks``: near-duplicate images under the 8 rotations and flips."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from featstore.leaks import DEFAULT_THRESHOLD, DIHEDRAL, HASH_BITS, LeakResult

from ._progress import RichProgress

#: pairs shown in the terminal (all of them go to --out)
_SHOWN = 10


def _table(result: LeakResult) -> Table:
    shown = min(_SHOWN, len(result.distances))
    table = Table(title=f"first {shown} of {len(result.distances)} pairs, closest first "
                        "(image a looks like the transform of image b)", title_justify="left")
    for column, justify in (("image a", "left"), ("image b", "left"), ("bits", "right"),
                            ("transform", "left")):
        table.add_column(column, justify=justify, overflow="fold")  # type: ignore[arg-type]
    if result.groups is not None:
        table.add_column("groups")
    for k in range(shown):
        i, j = (int(v) for v in result.pairs[k])
        row = [result.paths[i], result.paths[j], str(int(result.distances[k])),
               DIHEDRAL[int(result.transforms[k])]]
        if result.groups is not None:
            same = result.groups[i] == result.groups[j]
            row.append(f"{result.groups[i]}" + ("" if same else f" / {result.groups[j]}"))
        table.add_row(*row)
    return table


def leaks_command(
    data: Annotated[str, typer.Argument(
        help="ImageFolder directory, CSV manifest, MedMNIST .npz or PatchCamelyon .h5 files.")],
    group_regex: Annotated[str | None, typer.Option(
        "--group-regex",
        help=r"Regex searched in each image path; its first group is the image's group "
             r"(patient, slide), e.g. '^[^/]+/(\d+)_'. Copies within a group are not counted.",
    )] = None,
    threshold: Annotated[int, typer.Option(
        help=f"Largest Hamming distance (of {HASH_BITS} hash bits) counted as a near-copy.")
    ] = DEFAULT_THRESHOLD,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Write every pair to this CSV file.")] = None,
    workers: Annotated[int | None, typer.Option(
        help="Decoding threads; default min(8, CPU count).")] = None,
    skip_unreadable: Annotated[bool, typer.Option(
        help="Leave out images that cannot be decoded instead of stopping.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Find near-duplicate images, counting the 8 rotations/flips of an image as the same image."""
    from featstore.leaks import find_leaks, write_pairs

    with RichProgress("images", enabled=not quiet) as progress:
        result = find_leaks(data, threshold=threshold, group_regex=group_regex, workers=workers,
                            skip_unreadable=skip_unreadable, progress=progress)
    summary = result.summary()
    console = Console(highlight=False)
    scanned = summary["images"] - summary["unreadable"]
    console.print(f"[bold]images scanned[/bold]  {scanned}"
                  + (f" ({summary['unreadable']} unreadable, left out)"
                     if summary["unreadable"] else ""))
    console.print(f"[bold]exact pairs[/bold]     {summary['exact_pairs']}  (same hash under a "
                  "rotation/flip)")
    console.print(f"[bold]near pairs[/bold]      {summary['near_pairs']}  (1..{result.threshold} "
                  f"of {HASH_BITS} bits apart)")
    where = (f"in another group ({summary['groups']} groups)" if result.groups is not None
             else "elsewhere in the data")
    console.print(f"[bold]images with a copy {where}[/bold]  {summary['images_with_copy']} of "
                  f"{scanned}")
    if len(result.distances):
        console.print(_table(result))
    if out is not None:
        path = write_pairs(result, out)
        Console(stderr=True, highlight=False).print(f"wrote {path}", markup=False)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("leaks")(leaks_command)
