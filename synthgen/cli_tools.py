"""`synthgen render`, `dedup`, `report`, `taxonomy show` and `sim-server`: the commands beside `run`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from synthgen.cli_app import Engine, app, console, guarded, sigterm_as_interrupt, taxonomy_app
from synthgen.dedup.contamination import DEFAULT_THRESHOLD

if TYPE_CHECKING:
    from synthgen.taxonomy import Taxonomy


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
    threshold: Annotated[float, typer.Option(help="near duplicates: Jaccard similarity from which a row is dropped")] = 0.8,
    preset: Annotated[str, typer.Option(help="short (character 5-grams) or document (word 5-grams)")] = "short",
    num_perm: Annotated[int, typer.Option(help="MinHash permutations")] = 128,
    keep: Annotated[str, typer.Option(help="which of a duplicate cluster survives: first or longest")] = "first",
    exact: Annotated[bool, typer.Option(help="drop exact duplicates (normalised text) first")] = True,
    decontaminate: Annotated[list[Path] | None, typer.Option(help="evaluation file: drop rows containing its items")] = None,
    decontaminate_threshold: Annotated[float, typer.Option(
        help="containment score (word n-grams / word edits) from which a row contains an evaluation item")] = DEFAULT_THRESHOLD,
    decontaminate_ngram: Annotated[int, typer.Option(help="word n-gram size for evaluation items of 3n+ words")] = 8,
    engine: Annotated[Engine, typer.Option(help="local, or ray (local Ray or cluster at --address)")] = Engine.local,
    address: Annotated[str | None, typer.Option(help="Ray cluster address, e.g. auto")] = None,
    block_size: Annotated[int, typer.Option(min=1, help="rows per Ray block")] = 10_000,
) -> None:
    """Remove exact and near duplicates from a file, with a summary of what was dropped."""
    from contextlib import AbstractContextManager, nullcontext

    from pydantic import ValidationError

    from synthgen.file_dedup import dedup_file
    from synthgen.stages.base import StageExecutor, run_locally
    from synthgen.stages.dedup import MinHashDedupParams
    from synthgen.stages.source import Source, SourceConfig

    try:
        params = MinHashDedupParams.model_validate({
            "fields": field, "threshold": threshold, "preset": preset, "num_perm": num_perm, "keep": keep,
            "decontaminate": [{"path": str(path), "fields": field} for path in decontaminate or []],
            "decontaminate_threshold": decontaminate_threshold, "decontaminate_ngram": decontaminate_ngram,
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
def taxonomy_show(file: Annotated[Path, typer.Argument(help="taxonomy YAML file, or a recipe (shows its taxonomies)")]) -> None:
    """Print the task tree with each leaf's probability; given a recipe, the tree of each stage that names one."""
    from synthgen.config import load_yaml
    from synthgen.taxonomy import Taxonomy

    data = guarded(lambda: load_yaml(file))
    if not (isinstance(data, dict) and "stages" in data):
        Console().print(guarded(lambda: Taxonomy.load(file)).render_tree())
        return
    trees = guarded(lambda: _recipe_taxonomies(file))
    if not trees:
        console.print(f"{file}: no stage of this recipe names a taxonomy", highlight=False, markup=False)
        raise typer.Exit(1)
    for title, taxonomy in trees:
        Console().print(f"[bold]{escape(title)}[/]")
        Console().print(taxonomy.render_tree())


def _recipe_taxonomies(path: Path) -> list[tuple[str, Taxonomy]]:
    """(`<stage label>: <taxonomy file>[ branch]`, its taxonomy) for each stage with a `taxonomy` parameter."""
    from synthgen.build import stage_label
    from synthgen.recipe import load_recipe
    from synthgen.taxonomy import Taxonomy

    recipe = load_recipe(path)
    trees = []
    for index, spec in enumerate(recipe.stage_specs):
        name, branch = getattr(spec.params, "taxonomy", None), getattr(spec.params, "taxonomy_branch", None)
        if isinstance(name, str):
            taxonomy = Taxonomy.load(recipe.resolve(name))
            trees.append((f"{stage_label(recipe, index)}: {name}" + (f" (branch {branch})" if branch else ""),
                          taxonomy.branch(branch) if branch else taxonomy))
    return trees


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

    from synthgen.sim import SimConfig, serve

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
