"""`synthgen run`: the recipe run through the Python API, with a live progress bar and a summary."""

from __future__ import annotations

import shlex
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from synthgen.cli_app import Engine, app, console, guarded, sigterm_as_interrupt
from synthgen.stats import RunStats, steered_stages

if TYPE_CHECKING:
    from synthgen.prices import PriceTable


def _base_url_option(url: str | None) -> str | None:
    from synthgen.backends.settings import check_base_url

    try:
        return None if url is None else check_base_url(url)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


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
    object_store_mb: Annotated[int | None, typer.Option(min=64, help="a local Ray's object store in MB (Ray's "
                                                        "default: 30% of RAM; the rest spills to disk)")] = None,
    price_in: Annotated[float | None, typer.Option(min=0, help="US$ per million input tokens, for the cost so far")] = None,
    price_out: Annotated[float | None, typer.Option(min=0, help="US$ per million output tokens")] = None,
    prices: Annotated[Path | None, typer.Option(
        help="YAML file of model -> {input: $/M, output: $/M} (per-model prices; no price, no cost shown)")] = None,
) -> None:
    """Run a recipe; re-running the same command resumes where an earlier run stopped."""
    from synthgen import api
    from synthgen.prices import load_prices

    table = guarded(lambda: load_prices(prices, price_in, price_out))
    recipe = guarded(lambda: api.configure(recipe_path, backend=backend, model=model, base_url=base_url,
                                           max_concurrency=max_concurrency))
    if dry_run:
        from synthgen.cli_data import print_estimate

        print_estimate(recipe_path, limit, price_in or 0.0, price_out or 0.0)
        return
    ray = None
    if engine is Engine.ray:
        from synthgen.engine.ray_engine import RayOptions

        ray = RayOptions(address, max(1, workers), max(1, block_size), gpus_per_worker=gpus_per_worker,
                         object_store_mb=object_store_mb)
    stats = RunStats()
    command = " ".join(["synthgen", *map(shlex.quote, sys.argv[1:])])
    with sigterm_as_interrupt(), LiveProgress(stats, table):
        output = guarded(lambda: api.run(recipe, out, limit=limit, fresh=fresh, retry_rejects=retry_rejects, ray=ray,
                                         stats=stats, command=command))
    _print_summary(stats)
    typer.echo(f"dataset: {output.dataset_path}  ({output.num_records} records)")
    typer.echo(f"rejects: {output.rejects_path}  ({sum(stats.rejects.values())} records)")
    typer.echo(f"stats:   {output.stats_path}")
    _fail_if_backend_rejected_all(stats, output.num_records)


def _fail_if_backend_rejected_all(stats: RunStats, records: int) -> None:
    """Exit 1 when this run kept nothing and every record it dropped was lost to the backend (a broken server)."""
    from synthgen.stages.base import is_transient_reject

    if records or not stats.rejects or not all(map(is_transient_reject, stats.rejects)):
        return
    causes = ", ".join(f"{reason} {count}" for reason, count in sorted(stats.rejects.items()))
    console.print(f"[bold red]error:[/] every request failed at the backend: {escape(causes)}; nothing was kept. "
                  "Fix the server, then re-run the same command: it retries these requests.", highlight=False)
    raise typer.Exit(1)


class LiveProgress:
    """The progress line, fed from RunStats by a background thread while the run works in the foreground: a live
    bar on a terminal; elsewhere (a log, CI) one plain line every `every` seconds and a last one at the end."""

    def __init__(self, stats: RunStats, prices: PriceTable | None = None, every: float = 10.0) -> None:
        self.stats, self.prices, self.every = stats, prices, every
        self.live = console.is_terminal
        self.progress = Progress(
            BarColumn(bar_width=20), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[rates]}"), console=console, transient=False, disable=not self.live,
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
        while not self._stop.wait(0.25 if self.live else self.every):
            self._update()

    def _update(self) -> None:
        from synthgen.progress import describe, snapshot

        s = self.stats
        snap = snapshot(s, self.prices)
        rates = describe(snap, s)
        if s.batches:  # provider batches: how many are still running, and their items done so far
            running = [batch for batch in list(s.batches.values()) if batch["running"]]
            done, total = sum(b["completed"] + b["failed"] for b in running), sum(b["total"] for b in running)
            rates += f" | batches: {len(running)} running ({done:,}/{total:,} items), {len(s.batches) - len(running)} ended"
        if self.live:
            self.progress.update(self.task, completed=snap.done, total=snap.total or None, rates=rates)
        elif s.plan:
            percent = f"{100 * snap.done / snap.total:.0f}%" if snap.total else "?%"
            console.print(f"progress {percent} {snap.done:,}/{snap.total:,} | {rates}", highlight=False, markup=False)


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
    _print_steering(stats)


def _print_steering(stats: RunStats) -> None:
    """One line per steered stage (`target:`): where it stopped and why."""
    for label, steering in steered_stages(stats.metrics):
        done = "reached" if steering["stop"] == "target_reached" else f"not reached: {steering['stop']}"
        console.print(f"{label}: target {steering['target']} {done} ({steering['records']} records from "
                      f"{steering['draws']} draws in {len(steering['rounds'])} rounds; the stage's replay of them "
                      "is among the cache hits above)", highlight=False)
