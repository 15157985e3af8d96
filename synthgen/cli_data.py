"""`synthgen estimate`, `export` and `show`: commands that look at a recipe or a run directory (registered on
the app of `synthgen.cli_app`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from synthgen.cli_app import app, console, guarded
from synthgen.errors import RunDirError


def print_estimate(recipe_path: Path, limit: int | None, price_in: float, price_out: float) -> None:
    """The estimate table of `synthgen estimate` and `synthgen run --dry-run`."""
    from synthgen.estimate import Prices, estimate_recipe
    from synthgen.recipe import load_recipe

    estimates = guarded(lambda: estimate_recipe(load_recipe(recipe_path), limit))
    table = Table(title=f"estimate for {recipe_path}")
    for column in ("stage", "requests", "input tokens", "output tokens (at most)", "note"):
        table.add_column(column, justify="left" if column in ("stage", "note") else "right")
    for e in estimates:
        table.add_row(e.label, *("?" if v is None else f"{v:,}" for v in (e.requests, e.input_tokens, e.output_tokens)), e.note)
    console.print(table)
    known = [e for e in estimates if e.requests is not None]
    cost = Prices(price_in, price_out).cost(estimates)
    typer.echo(f"requests: {sum(e.requests or 0 for e in known):,}" + ("" if len(known) == len(estimates) else " (+ unknown)"))
    typer.echo(f"tokens: {sum(e.input_tokens or 0 for e in known):,} in, at most {sum(e.output_tokens or 0 for e in known):,} out"
               " (WordPiece count of the packaged MiniLM tokenizer)")
    typer.echo(f"cost: at most ${cost:,.2f} at ${price_in}/M input and ${price_out}/M output tokens")


@app.command()
def estimate(
    recipe_path: Annotated[Path, typer.Argument(metavar="RECIPE", help="recipe YAML file")],
    limit: Annotated[int | None, typer.Option(min=1, help="as for `run --limit`")] = None,
    price_in: Annotated[float, typer.Option(help="US$ per million input tokens")] = 0.0,
    price_out: Annotated[float, typer.Option(help="US$ per million output tokens")] = 0.0,
) -> None:
    """Requests, tokens and cost per stage before spending anything (no backend is called)."""
    print_estimate(recipe_path, limit, price_in, price_out)


@app.command("export")
def export_command(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="a finished run directory")],
    layout: Annotated[str, typer.Option(
        help="records, messages, alpaca, sharegpt, triplets, pairs, text or preference")] = "records",
    format: Annotated[str, typer.Option(help="jsonl, parquet or hf (datasets save_to_disk)")] = "jsonl",
    out: Annotated[Path | None, typer.Option(help="export folder (default RUN_DIR/export)")] = None,
    test_size: Annotated[float | None, typer.Option(help="share of rows in a test split, e.g. 0.1")] = None,
    split_seed: Annotated[int, typer.Option(help="seed of the split")] = 0,
    field: Annotated[list[str] | None, typer.Option(help="ROLE=FIELD, e.g. output=answer; repeatable")] = None,
    push_to_hub: Annotated[str | None, typer.Option(help="Hub repo id; the token comes from $HF_TOKEN")] = None,
    conversational: Annotated[bool, typer.Option(help="preference layout: prompt/chosen/rejected as chat messages")] = False,
    approved_only: Annotated[bool, typer.Option(help="only records approved in review.jsonl (`synthgen view`)")] = False,
) -> None:
    """Write a run's dataset in a training layout, with a dataset card (README.md); records excluded in
    review.jsonl are left out."""
    from pydantic import ValidationError

    from synthgen.export import ExportConfig
    from synthgen.stages.export import export_run

    roles = dict(item.partition("=")[::2] for item in field or [])
    try:
        config = ExportConfig(layout=layout, format=format, test_size=test_size, split_seed=split_seed,  # type: ignore[arg-type]
                              fields=roles, push_to_hub=push_to_hub, conversational=conversational)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        raise typer.BadParameter(f"{'.'.join(map(str, error['loc']))}: {error['msg']}") from None
    result = guarded(lambda: export_run(run_dir, config, out, approved_only))
    typer.echo(f"export: {result.path}  ({', '.join(f'{k}: {v} rows' for k, v in result.rows.items())})")
    if result.skipped:
        typer.echo(f"skipped: {result.skipped} records lacked a field the {layout} layout needs")


@app.command()
def show(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="a run directory")],
    n: Annotated[int, typer.Option("-n", min=1, help="how many records")] = 5,
    rejects: Annotated[bool, typer.Option("--rejects", help="show dropped records and why")] = False,
) -> None:
    """Print sample records with their provenance (stage, leaf, placeholders, template, model); exit 1 when the
    file holds no record, like grep with no match."""
    path = run_dir / ("rejects.jsonl" if rejects else "dataset.jsonl")
    guarded(lambda: _require(path))
    out = Console()
    shown = 0
    with path.open("rb") as handle:
        for number, line in zip(range(n), (line for line in handle if line.strip()), strict=False):
            shown += 1
            row = orjson.loads(line)
            lines = [f"[bold]{escape(str(k))}[/]: {escape(_short(v))}" for k, v in row["fields"].items()]
            if rejects:
                lines.append(f"[red]{escape(row['reason'])}[/]: {escape(str(row.get('detail')))}")
            for step in row.get("meta", {}).get("steps", []):
                trail = (f"{step.get('stage')}: leaf {step.get('leaf')}, template {step.get('template')}, "
                         f"model {step.get('model')}, sample {step.get('sample')}, attempt {step.get('attempt')}")
                lines.append(f"[dim]{escape(trail)}[/]")
                if step.get("placeholders"):
                    values = ", ".join(f"{k}={_short(v, 80)}" for k, v in step["placeholders"].items())
                    lines.append(f"[dim]  placeholders: {escape(values)}[/]")
            out.print(Panel("\n".join(lines), title=f"{number + 1}. {row['id']}", title_align="left"))
    if not shown:
        hint = "" if rejects else f"; every record was dropped or none was made: see `synthgen show {run_dir} --rejects`"
        console.print(f"{path}: no records{hint}", highlight=False, markup=False)
        raise typer.Exit(1)


def _require(path: Path) -> None:
    if not path.exists():
        raise RunDirError(f"{path.parent}: no {path.name}; run the recipe first")


def _short(value: object, limit: int = 400) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text if len(text) <= limit else text[:limit] + " ..."
