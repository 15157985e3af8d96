"""The `synthgen` app and what every command module shares: the console, error handling, common options.
Command modules register on `app`; `synthgen.cli` imports them all (the console-script entry point)."""

from __future__ import annotations

import signal
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from types import FrameType
from typing import Annotated, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from synthgen.errors import StageFailure, SynthgenError

HELP = (
    "synthgen makes synthetic datasets with language models. A recipe (YAML) names a source, generation steps with "
    "prompt templates and taxonomies, quality filters, dedup and embedding stages; every request is cached, so a "
    "stopped run resumes where it was.\n\n"
    "Start with: synthgen run recipes/quickstart.yaml --backend sim (a built-in simulated server: no model needed).\n\n"
    "Main commands: run RECIPE (make the dataset in outputs/NAME), estimate RECIPE (requests, tokens and cost first), "
    "show RUN_DIR (records and rejects), view RUN_DIR (browse, compare and curate the records in a browser), export "
    "RUN_DIR (training layouts and a dataset card), report RUN_DIR (an HTML report). `synthgen COMMAND --help` tells more."
)
app = typer.Typer(add_completion=False, no_args_is_help=True, help=HELP)
taxonomy_app = typer.Typer(no_args_is_help=True, help="Inspect task taxonomies.")
app.add_typer(taxonomy_app, name="taxonomy")
console = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")
_options = {"debug": False}  # the app's own options, set by `main` on every invocation


class Engine(str, Enum):
    """Where a run's stages execute."""

    local = "local"
    ray = "ray"


def _print_version(value: bool) -> None:
    if value:
        from synthgen.version import __version__

        typer.echo(f"synthgen {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="show the traceback of an internal error")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="print the version and exit")] = False,
) -> None:
    """Options for every command (the app's help is HELP)."""
    _options["debug"] = debug


def guarded(action: Callable[[], T]) -> T:
    """Run `action`; a SynthgenError becomes a one-line message and exit code 2; any other exception (a bug) a
    one-line message and exit code 1, with its traceback under --debug."""
    try:
        return action()
    except SynthgenError as exc:
        console.print("[bold red]error:[/] " + escape(str(exc)), highlight=False)
        if not isinstance(exc, StageFailure):
            raise typer.Exit(2) from None
        _internal_error(exc)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; re-run the same command to resume[/]")
        raise typer.Exit(130) from None
    except Exception as exc:
        console.print(f"[bold red]error:[/] internal error: {escape(type(exc).__name__)}: {escape(str(exc))}",
                      highlight=False)
        _internal_error(exc)


def _internal_error(exc: Exception) -> NoReturn:
    """After the one-line message of an unexpected error: its traceback (chain included) with --debug, exit 1."""
    if _options["debug"]:
        console.print("".join(traceback.format_exception(exc)), markup=False, highlight=False)
    else:
        console.print("re-run with --debug for the traceback", highlight=False)
    raise typer.Exit(1) from None


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (kill, docker stop, a scheduler's time limit) stops the block as Ctrl-C does: cleanly, resumable."""
    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
