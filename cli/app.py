"""Entry point of the ``featstore`` command.

Every command parses its options into a config and calls one library function. Errors the user
can fix print one line on stderr and exit with status 2; failures at run time exit with 1.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer

from featstore.errors import FeatstoreInputError, FeatstoreRuntimeError

from . import _datasets, _extract, _leaks, _probe, _reliability, _report, _similarity, _study

app = typer.Typer(
    name="featstore",
    help="How much ImageNet knowledge transfers to pathology images, layer by layer.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_extract.register(app)
_reliability.register(app)
_datasets.register(app)
_report.register(app)
_probe.register(app)
_leaks.register(app)
_similarity.register(app)
_study.register(app)


def _fail(message: str, status: int) -> None:
    first = message.strip().splitlines()[0] if message.strip() else "unknown error"
    print(f"featstore: error: {first}", file=sys.stderr)
    sys.exit(status)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command line; exit 0 on success, 2 for bad input or usage, 1 at run time."""
    command = typer.main.get_command(app)
    try:
        result = command.main(
            args=list(argv) if argv is not None else None,
            prog_name="featstore",
            standalone_mode=False,
        )
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print(
            "featstore: interrupted; finished work is kept, rerun the same command to resume",
            file=sys.stderr,
        )
        sys.exit(130)
    except FeatstoreInputError as exc:
        _fail(str(exc), 2)
    except FeatstoreRuntimeError as exc:
        _fail(str(exc), 1)
    except typer.TyperException as exc:  # usage errors: bad option, missing argument
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        message = message.replace("Value error, ", "")
        _fail(message, int(getattr(exc, "exit_code", 2)))
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()
