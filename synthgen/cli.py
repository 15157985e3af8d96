"""The `synthgen` command: a thin layer that parses options, runs the library, and turns errors into messages."""

from __future__ import annotations

import shlex
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from synthgen.errors import StageFailure, SynthgenError
from synthgen.stats import RunStats

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
taxonomy_app = typer.Typer(no_args_is_help=True, help="Inspect task taxonomies.")
app.add_typer(taxonomy_app, name="taxonomy")
console = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")
_options = {"debug": False}  # the app's own options, set by `main` on every invocation


class Engine(str, Enum):
    """Where a run's stages execute."""

    local = "local"
    ray = "ray"


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="show the traceback of an internal error")] = False) -> None:
    """Options for every command (the app's help is the module docstring)."""
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


def _base_url_option(url: str | None) -> str | None:
    from synthgen.backends.factory import check_base_url

    try:
        return None if url is None else check_base_url(url)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


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


@app.command()
def run(
    recipe_path: Annotated[Path, typer.Argument(metavar="RECIPE", help="recipe YAML file")],
    backend: Annotated[str | None, typer.Option(
        help="backend kind: llamacpp (embedded), openai, sim, vllm, transformers, or a plugin's")] = None,
    model: Annotated[str | None, typer.Option(help="model name sent to the backend")] = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible server, e.g. http://localhost:8000/v1 "
                                                      "(implies --backend openai unless --backend is given)",
                                                 callback=_base_url_option)] = None,
    max_concurrency: Annotated[int | None, typer.Option(min=1, help="requests in flight")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="use only the first N input records (or N draws)")] = None,
    out: Annotated[Path | None, typer.Option(help="run directory (default outputs/<recipe name>)")] = None,
    fresh: Annotated[bool, typer.Option(help="discard the run directory's earlier results and cache")] = False,
    dry_run: Annotated[bool, typer.Option(help="print the estimate (requests, tokens) and stop")] = False,
    retry_rejects: Annotated[bool, typer.Option(
        "--retry-rejects/--keep-rejects",
        help="re-send requests an earlier run lost to a transient backend failure (timeout, 5xx, dropped connection)",
    )] = True,
    engine: Annotated[Engine, typer.Option(help="local, or ray (local Ray or cluster at --address)")] = Engine.local,
    address: Annotated[str | None, typer.Option(help="Ray cluster address, e.g. auto or ray://head:10001")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Ray actors per row-wise stage")] = 2,
    block_size: Annotated[int, typer.Option(min=1, help="records per Ray task")] = 512,
    gpus_per_worker: Annotated[float, typer.Option(help="GPUs per Ray actor (1 for an in-process model per GPU)")] = 0.0,
) -> None:
    """Run a recipe; re-running the same command resumes where an earlier run stopped."""
    from contextlib import nullcontext

    from synthgen.pipeline import run_recipe
    from synthgen.recipe import load_recipe
    from synthgen.stages.base import run_locally

    if base_url is not None and backend is None:
        backend = "openai"  # a server named on the command line is the one to talk to, whatever the recipe's kind
    recipe = guarded(lambda: load_recipe(recipe_path)).with_backend(
        kind=backend, model=model, base_url=base_url, max_concurrency=max_concurrency
    )
    if dry_run:
        cli_data.print_estimate(recipe_path, limit, 0.0, 0.0)
        return
    run_dir = out or Path("outputs") / recipe.name
    stats = RunStats()
    command = " ".join(["synthgen", *map(shlex.quote, sys.argv[1:])])
    engine_context: Any = nullcontext(run_locally)
    if engine is Engine.ray:
        from synthgen.engine.ray_engine import RayExecutor, RayOptions

        options = RayOptions(address, max(1, workers), max(1, block_size), gpus_per_worker=gpus_per_worker)
        engine_context = guarded(lambda: RayExecutor(recipe, run_dir, limit, options))
    with sigterm_as_interrupt(), LiveProgress(stats), engine_context as executor:
        result = guarded(lambda: run_recipe(recipe, run_dir, fresh=fresh, limit=limit, stats=stats, command=command,
                                            executor=executor, retry_rejects=retry_rejects))
    _print_summary(stats)
    typer.echo(f"dataset: {result.run_dir.dataset_path}  ({result.records} records)")
    typer.echo(f"rejects: {result.run_dir.rejects_path}  ({sum(stats.rejects.values())} records)")
    typer.echo(f"stats:   {result.run_dir.stats_path}")
    _fail_if_backend_rejected_all(stats, result.records)


def _fail_if_backend_rejected_all(stats: RunStats, records: int) -> None:
    """Exit 1 when this run kept nothing and every record it dropped was lost to the backend (a broken server)."""
    from synthgen.stages.base import is_transient_reject

    if records or not stats.rejects or not all(map(is_transient_reject, stats.rejects)):
        return
    causes = ", ".join(f"{reason} {count}" for reason, count in sorted(stats.rejects.items()))
    console.print(f"[bold red]error:[/] every request failed at the backend: {escape(causes)}; nothing was kept. "
                  "Fix the server, then re-run the same command: it retries these requests.", highlight=False)
    raise typer.Exit(1)


@app.command()
def render(
    recipe_path: Annotated[Path, typer.Argument(metavar="RECIPE", help="recipe YAML file")],
    n: Annotated[int, typer.Option("-n", min=1, help="how many prompts to show")] = 3,
) -> None:
    """Print the first generate stage's rendered prompts without calling a backend."""
    from synthgen.estimate import first_prompts
    from synthgen.recipe import load_recipe

    label, prompts, note = guarded(lambda: first_prompts(load_recipe(recipe_path), n))
    if note:
        typer.echo(f"{recipe_path}: {note}")
    for index, (leaf, messages) in enumerate(prompts, start=1):
        typer.echo(f"--- prompt {index} ({label}, leaf: {leaf}) ---")
        for message in messages:
            typer.echo(f"[{message['role']}]\n{message['content']}\n")


@app.command()
def dedup(
    input_path: Annotated[Path, typer.Argument(metavar="INPUT", help="JSONL, Parquet or CSV file, or a saved HF dataset")],
    field: Annotated[list[str], typer.Option(help="field(s) whose joined text is compared; repeatable")],
    out: Annotated[Path, typer.Option(help="kept rows: .jsonl or .parquet; rejects go to OUT.rejects.jsonl")],
    threshold: Annotated[float, typer.Option(help="Jaccard similarity at or above which a row is dropped")] = 0.8,
    preset: Annotated[str, typer.Option(help="short (character 5-grams) or document (word 5-grams)")] = "short",
    num_perm: Annotated[int, typer.Option(help="MinHash permutations")] = 128,
    keep: Annotated[str, typer.Option(help="which of a duplicate cluster survives: first or longest")] = "first",
    exact: Annotated[bool, typer.Option(help="drop exact duplicates (normalised text) first")] = True,
    decontaminate: Annotated[list[Path] | None, typer.Option(help="evaluation file to drop near matches of; repeatable")] = None,
    engine: Annotated[Engine, typer.Option(help="local, or ray (local Ray or cluster at --address)")] = Engine.local,
    address: Annotated[str | None, typer.Option(help="Ray cluster address, e.g. auto")] = None,
    block_size: Annotated[int, typer.Option(min=1, help="rows per Ray block")] = 10_000,
) -> None:
    """Remove exact and near duplicates from a file, with a summary of what was dropped."""
    from contextlib import AbstractContextManager, nullcontext

    from pydantic import ValidationError

    from synthgen.dedup.file import dedup_file
    from synthgen.stages.base import StageExecutor, run_locally
    from synthgen.stages.dedup import MinHashDedupParams
    from synthgen.stages.source import Source, SourceConfig

    try:
        params = MinHashDedupParams.model_validate({
            "fields": field, "threshold": threshold, "preset": preset, "num_perm": num_perm, "keep": keep,
            "decontaminate": [{"path": str(path), "fields": field} for path in decontaminate or []],
        })
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        raise typer.BadParameter(f"{'.'.join(map(str, error['loc']))}: {error['msg']}") from None
    source = SourceConfig(path=str(input_path))
    total = guarded(lambda: Source(source, input_path).estimate())
    run: StageExecutor = run_locally
    session: AbstractContextManager[None] = nullcontext()
    if engine is Engine.ray:
        from synthgen.engine.ray_engine import dedup_on_ray, ray_session, require_ray

        guarded(require_ray)
        run, session = (lambda stage, records, _: dedup_on_ray(stage, records, max(1, block_size))), ray_session(address)
    with sigterm_as_interrupt(), session, \
            Progress(BarColumn(bar_width=30), MofNCompleteColumn(), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("dedup", total=total)
        summary = guarded(lambda: dedup_file(source, out, params, exact, lambda: progress.advance(task), run))
    table = Table(title="dedup summary")
    table.add_column("")
    table.add_column("records", justify="right")
    table.add_row("input", str(summary.records))
    table.add_row("kept", str(summary.kept))
    for reason, count in sorted(summary.dropped.items()):
        table.add_row(f"dropped: {reason}", str(count))
    console.print(table)
    sizes = summary.cluster_sizes()
    if sizes:
        console.print("duplicate clusters (size: count): " + ", ".join(f"{size}: {count}" for size, count in sizes.items()))
    typer.echo(f"kept:    {out}  ({summary.kept} rows)")
    typer.echo(f"rejects: {out.with_name(out.name + '.rejects.jsonl')}  ({sum(summary.dropped.values())} rows)")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="a finished run directory")],
    out: Annotated[Path | None, typer.Option(help="HTML file to write (default RUN_DIR/report.html)")] = None,
    max_points: Annotated[int, typer.Option(min=1, help="seed and synthetic records each drawn on the embedding map")] = 1000,
) -> None:
    """Write a self-contained HTML report of a finished run (stage funnel, rejects, lengths, coverage, embeddings)."""
    from synthgen.report import build_report

    typer.echo(str(guarded(lambda: build_report(run_dir, out, max_points=max_points))))


@taxonomy_app.command("show")
def taxonomy_show(file: Annotated[Path, typer.Argument(help="taxonomy YAML file")]) -> None:
    """Print the task tree with each leaf's probability."""
    from synthgen.taxonomy import Taxonomy

    tree = guarded(lambda: Taxonomy.load(file)).render_tree()
    Console().print(tree)


@app.command("sim-server")
def sim_server(
    port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 8000,
    host: Annotated[str, typer.Option(help="loopback address to bind")] = "127.0.0.1",
    latency: Annotated[float, typer.Option(help="seconds per request")] = 0.05,
    jitter: Annotated[float, typer.Option(help="+- seconds of uniform jitter")] = 0.0,
    capacity: Annotated[int | None, typer.Option(help="requests processed at once; more queue")] = None,
    fault: Annotated[list[str] | None, typer.Option(help="KIND=RATE, repeatable, e.g. rate_limit=0.05")] = None,
    duplicate_rate: Annotated[float, typer.Option(help="share of prompts whose samples collide")] = 0.1,
    hang_seconds: Annotated[float, typer.Option(help="how long a `hang` fault stalls")] = 30.0,
    track_bodies: Annotated[bool, typer.Option(help="keep a hash of every request body (GET /sim/bodies)")] = False,
    batch_delay: Annotated[float, typer.Option(help="seconds from creating a batch (POST /v1/batches) to its results")] = 0.2,
) -> None:
    """Serve the simulated OpenAI-compatible API (for tests, benchmarks and trying recipes offline)."""
    from pydantic import ValidationError

    from synthgen.backends.sim import SimConfig, serve

    faults: dict[str, float] = {}
    for item in fault or []:
        kind, _, rate = item.partition("=")
        try:
            faults[kind] = float(rate)
        except ValueError:
            raise typer.BadParameter(f"--fault {item!r}: write KIND=RATE, e.g. server_error=0.05") from None
    try:
        config = SimConfig(latency=latency, jitter=jitter, capacity=capacity, faults=faults, duplicate_rate=duplicate_rate,
                           hang_seconds=hang_seconds, track_bodies=track_bodies, batch_delay=batch_delay)
    except ValidationError as exc:
        raise typer.BadParameter(str(exc.errors(include_url=False)[0]["msg"])) from None
    console.print(f"sim server on http://{host}:{port}/v1 (Ctrl-C stops it)", highlight=False)
    try:
        serve(config, host=host, port=port)
    except (ValueError, OSError) as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None


class LiveProgress:
    """A progress bar fed from RunStats by a background thread while the run works in the foreground."""

    def __init__(self, stats: RunStats) -> None:
        self.stats = stats
        self.progress = Progress(
            BarColumn(bar_width=20), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[rates]}"), console=console, transient=False,
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> LiveProgress:
        self.task = self.progress.add_task("requests", total=None, rates="")
        self.progress.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._update()
        self.progress.stop()

    def _loop(self) -> None:
        while not self._stop.wait(0.25):
            self._update()

    def _update(self) -> None:
        s, elapsed = self.stats, max(self.stats.elapsed, 1e-9)
        rates = (f"{s.finished_requests / elapsed:,.0f} req/s {(s.prompt_tokens + s.completion_tokens) / elapsed:,.0f} tok/s "
                 f"retries {sum(s.retries.values())} cached {s.cache_hits} rejects {sum(s.rejects.values())}")
        if s.batches:  # provider batches: how many are still running, and their items done so far
            running = [batch for batch in list(s.batches.values()) if batch["running"]]
            done, total = sum(b["completed"] + b["failed"] for b in running), sum(b["total"] for b in running)
            rates += f" | batches: {len(running)} running ({done:,}/{total:,} items), {len(s.batches) - len(running)} ended"
        total = max(s.expected_requests or 0, s.planned_requests) or None
        self.progress.update(self.task, completed=s.finished_requests, total=total, rates=rates)


def _print_summary(stats: RunStats) -> None:
    table = Table(title="run summary")
    for column in ("stage", "in", "out", "rejected"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for name, counts in stats.stages.items():
        table.add_row(name, str(counts.records_in), str(counts.records_out), str(counts.rejected))
    console.print(table)
    data = stats.to_dict()
    requests, tokens = data["requests"], data["tokens"]
    console.print(
        f"requests {requests['finished']} (http {requests['http_sent']}, cache hits {requests['cache_hits']}, "
        f"re-asks {requests['reasks']}, retries {sum(requests['retries_by_cause'].values())})  "
        f"tokens in {tokens['prompt']} out {tokens['completion']}  "
        f"wall {data['wall_time_s']:.1f}s  {data['requests_per_s']:.0f} req/s",
        highlight=False,
    )
    if data["rejects_by_reason"]:
        reasons = ", ".join(f"{reason} {count}" for reason, count in data["rejects_by_reason"].items())
        console.print(f"rejects by reason: {reasons}", highlight=False)


from synthgen import cli_data  # noqa: E402,F401  (registers estimate, export and show on `app`)
