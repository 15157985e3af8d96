"""`synthgen view`: browse and curate a run directory in a local web page (registered on `synthgen.cli_app`)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Annotated

import typer

from synthgen.cli_app import app, console, guarded, sigterm_as_interrupt
from synthgen.errors import RunDirError


@app.command()
def view(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="a finished run directory")],
    port: Annotated[int, typer.Option(min=0, max=65535, help="port on 127.0.0.1 (0: any free port)")] = 0,
    reviewer: Annotated[str | None, typer.Option(help="name signing your review decisions (default: your login)")] = None,
) -> None:
    """Browse records, rejects and provenance in a local web page, and mark records excluded or approved
    (written to RUN_DIR/review.jsonl, which `synthgen export` honours)."""
    from synthgen.review import default_reviewer
    from synthgen.view.server import ViewServer

    def start() -> ViewServer:  # a folder that is no run: RunData (under RunStore) raises RunDirError
        try:
            return ViewServer(run_dir, reviewer or default_reviewer(), port).__enter__()
        except OSError as exc:
            raise RunDirError(f"cannot listen on 127.0.0.1:{port} ({exc.strerror or exc})") from None

    server = guarded(start)
    typer.echo(f"synthgen view: {server.url}  (Ctrl-C stops it)")
    try:
        with sigterm_as_interrupt():
            threading.Event().wait()
    except KeyboardInterrupt:
        console.print("stopped")
    finally:
        server.__exit__(None, None, None)
