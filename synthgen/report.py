"""The run report: one self-contained HTML page about a finished run, its figures embedded as PNG data URIs.

Figures are drawn on `matplotlib.figure.Figure` objects, which render with Agg and are never registered
with pyplot: no global backend switch, nothing to close, safe in a process that also uses pyplot.
Every text that comes from records is escaped; the page loads nothing from outside itself.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import random
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from synthgen.embedding.encoder import Encoder
from synthgen.errors import ConfigError, RunDirError
from synthgen.report_data import RunData, Sample
from synthgen.report_records import GROUP_COLOURS, escape_html, examples, length_figure, not_available, plain_label
from synthgen.rundir import write_atomic
from synthgen.stats import reject_example, steered_stages

_COLOURS = {"in": "#9db4d0", "out": "#2f6fad", "rejected": "#d1603d", **GROUP_COLOURS, "target": "#c4c4c4",
            "observed": "#2f6fad"}
_STYLE = """body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:980px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}h1{margin-bottom:.2em}section{border-top:1px solid #ddd;padding:.5em 0 1em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;
vertical-align:top}th{background:#f3f3f3}td.num{text-align:right}img{max-width:100%;display:block;margin:.5em 0}
.na{color:#777;font-style:italic}.note{color:#555;font-size:.92em}code{font-size:.9em}nav a{margin-right:.8em}"""


def _figure(height: float = 3.5, width: float = 6) -> Figure:
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _img(fig: Figure, alt: str) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return f'<img src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode("ascii")}" alt="{escape_html(alt)}">'


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else value if isinstance(value, str) else orjson.dumps(value).decode()


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{escape_html(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{v:,}</td>' if type(v) is int else f"<td>{escape_html(v)}</td>" for v in row) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _hbars(series: Mapping[str, Sequence[float]], labels: list[str], xlabel: str, percent: bool = False) -> Figure:
    """Grouped horizontal bars: one group per label (top to bottom), one bar per series."""
    fig = _figure(max(2.0, 0.25 * len(labels) * len(series) + 1.3))
    ax = fig.add_subplot()
    width = 0.8 / len(series)
    for k, (name, values) in enumerate(series.items()):
        bars = ax.barh(np.arange(len(labels)) + (k - (len(series) - 1) / 2) * width, values, width,
                       label=name, color=_COLOURS.get(name))
        text = [(f"{v:.1%}" if percent else f"{v:,.0f}") if v else "" for v in values]
        ax.bar_label(bars, labels=text, padding=2, fontsize=7)
    ax.set_yticks(np.arange(len(labels)), [plain_label(label) for label in labels], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.margins(x=0.12)
    if percent:
        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    if len(series) > 1:
        fig.legend(loc="outside upper center", ncols=len(series), fontsize=8, frameon=False)
    return fig


def _funnel(run: RunData) -> str:
    stages: dict[str, dict[str, int]] = run.stats.get("stages") or {}
    if not stages:
        return not_available("stats.json has no stage counts")
    names = list(stages)
    series = {key: [stages[n].get(f"records_{key}" if key != "rejected" else key, 0) for n in names]
              for key in ("in", "out", "rejected")}
    alt = "Records into, out of and rejected by each stage: " + ", ".join(
        f"{n} {i} in / {o} out / {r} rejected" for n, i, o, r in zip(names, *series.values(), strict=True))
    return _img(_hbars({key: values for key, values in series.items() if any(values)} or series, names, "records"), alt)


def _rejects(run: RunData) -> str:
    reasons: dict[str, int] = run.stats.get("rejects_by_reason") or {}
    if not reasons:
        return not_available("no record was rejected")
    ordered = sorted(reasons, key=lambda r: -reasons[r])
    examples: dict[str, dict[str, Any]] = {}
    for row in run.rows("rejects.jsonl"):
        examples.setdefault(str(row.get("reason")), row)
    fig = _hbars({"rejected": [reasons[r] for r in ordered]}, ordered, "records rejected")
    rows = [[r, reasons[r], examples.get(r, {}).get("stage", ""), reject_example(examples.get(r, {}).get("fields") or {}),
             str(examples.get(r, {}).get("detail") or "")[:240]] for r in ordered]
    alt = "Rejected records by reason: " + ", ".join(f"{r} {reasons[r]}" for r in ordered)
    return _img(fig, alt) + _table(["reason", "records", "stage", "first rejected record (shortened)", "its detail"], rows)


def _judge_scores(run: RunData) -> str:
    """Per judge stage, records per score and criterion (`metrics.<stage>.scores` histograms)."""
    judged = {label: values["scores"] for label, values in (run.stats.get("metrics") or {}).items()
              if isinstance(values, dict) and values.get("scores")}
    if not judged:
        return not_available("no judge stage graded records")
    parts = []
    for label, criteria in judged.items():
        scores = sorted({int(score) for d in criteria.values() for score in d["histogram"]})
        series = {name: [d["histogram"].get(str(score), 0) for score in scores] for name, d in criteria.items()}
        alt = f"{label}, records per score: " + "; ".join(
            f"{name} " + ", ".join(f"{score}: {n}" for score, n in zip(scores, counts, strict=True))
            for name, counts in series.items())
        parts.append(f"<h3>{escape_html(label)}</h3>" + _img(_hbars(series, [str(score) for score in scores], "records"), alt))
    return "".join(parts)


def _lengths(synthetic: Sample, real: Sample, seeds: Sample | None) -> str:
    drawn = length_figure({"seed": seeds or Sample(0, random.Random()), "real": real, "synthetic": synthetic}, _figure)
    if drawn is None:
        return not_available("dataset.jsonl is empty")
    note = "" if seeds is not None else '<p class="note">No seed data: the recipe has no source, or it no longer resolves.</p>'
    return _img(*drawn) + note


def _coverage(run: RunData, synthetic: Sample) -> str:
    if not synthetic.leaves:
        return not_available("no dataset record carries a taxonomy leaf")
    total = sum(synthetic.leaves.values())
    observed = {leaf: count / total for leaf, count in synthetic.leaves.items()}
    targets = run.targets()
    series = {"observed": observed} if targets is None else {"target": targets, "observed": observed}
    leaves = sorted(set().union(*series.values()), key=lambda leaf: (-max(s.get(leaf, 0.0) for s in series.values()), leaf))
    shown = leaves[:30]
    fig = _hbars({name: [s.get(leaf, 0.0) for leaf in shown] for name, s in series.items()}, shown,
                 "share of records", percent=True)
    if targets is None:
        note = "The taxonomy file named in the recipe does not resolve from here: observed shares only."
    else:
        distance = 0.5 * sum(abs(observed.get(leaf, 0.0) - targets.get(leaf, 0.0)) for leaf in leaves)
        unseen = sum(1 for leaf in targets if leaf not in observed)
        note = f"Total variation distance to the target weights: {distance:.3f}; leaves never drawn: {unseen} of {len(targets)}."
    if len(leaves) > len(shown):
        note += f" The {len(shown)} largest of {len(leaves)} leaves are shown."
    alt = "Share of dataset records per taxonomy leaf" + (" against target weights" if targets else "")
    return _img(fig, alt) + f'<p class="note">{escape_html(note)} {total:,} records carry a leaf.</p>'


def _project(vectors: np.ndarray, seed: int) -> tuple[np.ndarray, list[str]]:
    """2-D coordinates: UMAP where it is installed, PCA (numpy SVD) otherwise."""
    if importlib.util.find_spec("umap") is not None and len(vectors) > 15:
        import umap

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # umap/numba warn about threads and seeds on every fit
            points = umap.UMAP(n_components=2, random_state=seed).fit_transform(vectors)
        return np.asarray(points), ["UMAP 1", "UMAP 2"]
    centred = vectors - vectors.mean(axis=0)
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)
    share = singular**2 / max(float((singular**2).sum()), 1e-12)
    return centred @ axes[:2].T, [f"PC{k + 1} ({_percent(share[k])} of variance)" for k in range(2)]


def _percent(share: float) -> str:
    """Two significant digits: sentence vectors of varied text spread over hundreds of axes (PC1 ~ 1-10%)."""
    return f"{100 * share:.2g}%"


def _embedding_map(synthetic: Sample, real: Sample, seeds: Sample | None, encoder: Encoder | None, seed: int,
                   cache: Path) -> str:
    seed_texts, real_texts = seeds.texts() if seeds else [], real.texts()
    texts = seed_texts + real_texts + synthetic.texts()
    if len(texts) < 3:
        return not_available("fewer than three records to embed")
    try:
        vectors = (encoder or Encoder(cache_dir=cache)).encode(texts).astype(np.float64)
    except ConfigError as exc:
        return not_available(f"the embedding model cannot be loaded ({exc})")
    points, labels = _project(vectors, seed)
    fig = _figure(4.2, 8)
    ax = fig.add_subplot()
    if seed_texts:
        seed_points = points[: len(seed_texts)]
        ax.scatter(seed_points[:, 0], seed_points[:, 1], s=9, c=_COLOURS["seed"], alpha=0.5, label=f"seed ({len(seed_texts):,})")
    if real_texts:
        real_points = points[len(seed_texts): len(seed_texts) + len(real_texts)]
        ax.scatter(real_points[:, 0], real_points[:, 1], s=9, c=GROUP_COLOURS["real"], alpha=0.6, marker="s",
                   label=f"real documents ({len(real_texts):,})")
    leaves = [leaf for _, leaf in synthetic.picked]
    top = [leaf for leaf, _ in Counter(leaves).most_common(9)]
    cmap = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#555555"]
    synth = points[len(seed_texts) + len(real_texts):]
    for k, name in enumerate([*top, "other"]):
        mask = np.array([(leaf == name) if name != "other" else leaf not in top for leaf in leaves])
        if mask.any():
            label = f"{plain_label(name[:40])} ({int(mask.sum()):,})"
            ax.scatter(synth[mask, 0], synth[mask, 1], s=9, c=cmap[k], alpha=0.75, label=label)
    ax.set_xlabel(labels[0], fontsize=8)
    ax.set_ylabel(labels[1], fontsize=8)
    ax.tick_params(labelsize=7)
    fig.legend(loc="outside right upper", fontsize=7, markerscale=1.6, frameon=False)
    alt = (f"2-D map of sentence embeddings: {len(seed_texts)} seed records in grey, "
           + (f"{len(real_texts)} real documents in green, " if real_texts else "")
           + f"{len(leaves)} synthetic records by leaf")
    return _img(fig, alt) + '<p class="note">Embeddings: MiniLM sentence vectors of a seeded sample of each set.</p>'


def _duplicates(run: RunData) -> str:
    kept: Counter[str] = Counter(
        str(row["meta"]["duplicate_of"]) for row in run.rows("rejects.jsonl")
        if (row.get("meta") or {}).get("duplicate_of") and row.get("reason") != "contaminated"
    )
    if not kept:
        return '<p class="na">No duplicates removed.</p>'
    sizes = Counter(count + 1 for count in kept.values())
    fig = _figure()
    ax = fig.add_subplot()
    bars = ax.bar(sorted(sizes), [sizes[s] for s in sorted(sizes)], width=0.7, color=_COLOURS["rejected"])
    ax.bar_label(bars, padding=2, fontsize=8)
    ax.set_xlim(1.3, max(sizes) + 0.7)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlabel("cluster size (kept record + its duplicates)")
    ax.set_ylabel("clusters")
    ax.margins(y=0.15)
    summary = f"{len(kept):,} clusters, {sum(kept.values()):,} duplicates removed, largest cluster {max(sizes)}"
    return _img(fig, f"Histogram of duplicate cluster sizes: {summary}") + f'<p class="note">{escape_html(summary)}.</p>'


def _timeline(run: RunData) -> str:
    points = np.array(run.stats.get("timeline") or [], dtype=np.float64).reshape(-1, 3)
    if len(points) < 2:
        return not_available("fewer than two timeline samples in stats.json")
    ends: dict[str, float] = run.stats.get("stage_finished_s") or {}  # each stage's end: a marker on both panels
    fig = _figure(3.2, 8)
    for k, (title, colour) in enumerate([("requests finished", "out"), ("tokens (prompt + completion)", "rejected")]):
        ax = fig.add_subplot(1, 2, k + 1)
        ax.plot(points[:, 0], points[:, k + 1], marker=".", color=_COLOURS[colour])
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("seconds since start", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_ylim(bottom=0)
        for label, seconds in ends.items():
            ax.axvline(seconds, color="#777777", linewidth=0.8, linestyle=":")
            ax.annotate(plain_label(label), (seconds, 1.0), xycoords=("data", "axes fraction"), rotation=90, fontsize=6,
                        va="top", ha="right", color="#555555")
    alt = f"Requests finished and tokens over {points[-1, 0]:.1f} s: {points[-1, 1]:,.0f} requests, {points[-1, 2]:,.0f} tokens"
    if ends:
        alt += "; stages finished at " + ", ".join(f"{label} {seconds:.1f} s" for label, seconds in ends.items())
    return _img(fig, alt)


def _steering(run: RunData) -> str:
    """Each round's leaf weights of a steered stage (`target:`, stats.json `metrics.<stage>.steering`)."""
    found = steered_stages(run.stats.get("metrics") or {})
    if not found:
        return not_available("no stage generates to a `target:`")
    label, steering = found[0]
    rounds = steering.get("rounds") or []
    leaves = sorted({leaf for r in rounds for leaf in r["weights"]})
    fig = _figure(3.4, 8)
    ax = fig.add_subplot(1, 1, 1)
    for leaf in leaves:
        ax.plot([r["round"] for r in rounds], [r["weights"].get(leaf, 0.0) for r in rounds], marker=".", label=plain_label(leaf))
    ax.set_xlabel("round", fontsize=8)
    ax.set_ylabel("share of the round's draws", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=6, ncol=2)
    summary = (f"{label}: target {steering['target']}, stopped by {steering['stop']} with {steering['records']} "
               f"records from {steering['draws']} draws in {len(rounds)} rounds")
    return _img(fig, f"Leaf weights per round; {summary}") + f'<p class="note">{escape_html(summary)}.</p>'


def run_figures(run: RunData) -> dict[str, str]:
    """The run-level sections as HTML, by title: what `synthgen view` shows on its first page."""
    return {"Records per stage": _funnel(run), "Rejects by reason": _rejects(run), "Judge scores": _judge_scores(run),
            "Timeline": _timeline(run)}


def _header(run: RunData, records: int) -> str:
    stats, requests, tokens = run.stats, run.stats.get("requests") or {}, run.stats.get("tokens") or {}
    totals = [["records", records], ["rejects", sum((stats.get("rejects_by_reason") or {}).values())],
              ["requests finished", requests.get("finished", 0)], ["cache hits", requests.get("cache_hits", 0)],
              ["tokens (prompt + completion)", tokens.get("prompt", 0) + tokens.get("completion", 0)],
              ["wall time", f"{stats.get('wall_time_s', 0):,.1f} s"]]
    metrics = [[label, name, _value(value)] for label, values in (stats.get("metrics") or {}).items()
               if isinstance(values, dict) for name, value in values.items()
               if name not in ("scores", "steering")]  # see _judge_scores, _steering
    nav = "".join(f'<a href="#{key}">{escape_html(title)}</a>' for key, title in _TITLES.items())
    return (f"<h1>Run report: {escape_html(run.name)}</h1><p>Run directory <code>{escape_html(run.path)}</code><br>"
            f"Recipe sha256 <code>{escape_html(run.recipe_hash)}</code></p>{_table(['total', ''], totals)}"
            + (f"<h3>Metrics</h3>{_table(['stage', 'metric', 'value'], metrics)}" if metrics else "")
            + f"<nav>{nav}</nav>")


_TITLES = {"funnel": "Records per stage", "rejects": "Rejects by reason", "lengths": "Length distributions",
           "coverage": "Taxonomy coverage", "embedding-map": "Embedding map", "duplicates": "Duplicate clusters",
           "judge": "Judge scores", "timeline": "Timeline", "steering": "Steering", "examples": "Example records"}


def build_report(run_dir: Path, out: Path | None = None, encoder: Encoder | None = None, max_points: int = 1000) -> Path:
    """Write the HTML report of a finished run (default RUN_DIR/report.html) and return its path."""
    run = RunData(Path(run_dir))
    seed = int(run.recipe.get("seed") or 0)
    synthetic, real = Sample(max_points, random.Random(seed)), Sample(max_points, random.Random(seed + 2))
    for row in run.rows("dataset.jsonl"):
        if run.is_real(row):  # a real document passed through (WRAP's mix): never "synthetic", never "(no leaf)"
            real.add(row.get("fields") or {}, None)
        else:
            synthetic.add(row.get("fields") or {}, run.leaf(row))
    seeds = run.seeds(Sample(max_points, random.Random(seed + 1)))
    bodies = {"funnel": _funnel(run), "rejects": _rejects(run), "lengths": _lengths(synthetic, real, seeds),
              "coverage": _coverage(run, synthetic),
              "embedding-map": _embedding_map(synthetic, real, seeds, encoder, seed, run.path),
              "duplicates": _duplicates(run), "judge": _judge_scores(run), "timeline": _timeline(run),
              "steering": _steering(run),
              "examples": examples(synthetic, real)}
    sections = "".join(f'<section id="{key}"><h2>{escape_html(_TITLES[key])}</h2>{body}</section>'
                       for key, body in bodies.items())
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>synthgen report: {escape_html(run.name)}</title>'
            f"<style>{_STYLE}</style></head><body>{_header(run, synthetic.count + real.count)}{sections}</body></html>\n")
    target = Path(out) if out is not None else run.path / "report.html"
    _refuse_foreign(target)
    write_atomic(target, page.encode("utf-8"))
    return target


def _refuse_foreign(target: Path) -> None:
    """An existing file is replaced only if it is a synthgen report (its title says so)."""
    if target.is_dir():
        raise RunDirError(f"{target}: is a folder; give the report a file name, e.g. {target / 'report.html'}")
    if target.exists():
        with target.open("rb") as handle:
            head = handle.read(256)
        if b"<title>synthgen report: " not in head:
            raise RunDirError(f"{target}: exists and is not a synthgen report; refusing to overwrite it: choose another --out")
