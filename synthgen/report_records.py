"""The report's sections about record content: lengths per field (seed, real and synthetic side by side) and
example records. Figures follow `report.py`'s rules (Agg `Figure`s, every record text escaped)."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from synthgen.report_data import Sample

MAX_FIELDS = 4  # length panels: the fields with the longest texts (short ones are labels: `kind`, `style`)
LABEL_CHARS = 16  # a field whose median length is below this is a label, not text, unless no field is longer
EXAMPLES = 5
EXAMPLE_CHARS = 600
GROUP_COLOURS = {"seed": "#9a9a9a", "real": "#6aa84f", "synthetic": "#2f6fad"}


def escape_html(value: Any) -> str:
    """`value` as text safe inside HTML (every record text goes through this)."""
    return html.escape(str(value), quote=True)


def plain_label(label: str) -> str:
    """`label` as matplotlib prints it literally (it would read $...$ as mathtext)."""
    return label.replace("$", r"\$")


def not_available(why: str) -> str:
    """The note a section shows instead of its figure or table."""
    return f'<p class="na">Not available for this run: {escape_html(why)}.</p>'


def _text_fields(groups: dict[str, Sample]) -> list[str]:
    """The fields shown: up to MAX_FIELDS, longest median first, labels left out while a text field exists."""
    medians: dict[str, float] = {}
    for sample in groups.values():
        for name, values in sample.lengths.items():
            medians[name] = max(medians.get(name, 0.0), float(np.median(values)))
    ranked = sorted(medians, key=lambda name: -medians[name])
    texts = [name for name in ranked if medians[name] >= LABEL_CHARS] or ranked
    return texts[:MAX_FIELDS]


def length_figure(groups: dict[str, Sample], figure: Callable[[float, float], Figure]) -> tuple[Figure, str] | None:
    """One histogram panel per text field, each group (seed, real, synthetic) that has the field in its colour;
    (figure, alt text), or None when no group has a record."""
    groups = {name: sample for name, sample in groups.items() if sample.count}
    fields = _text_fields(groups)
    if not fields:
        return None
    fig = figure(2.6 * len(fields) + 0.4, 6)
    alts = []
    for k, name in enumerate(fields):
        ax = fig.add_subplot(len(fields), 1, k + 1)
        present = {group: np.array(s.lengths[name]) for group, s in groups.items() if s.lengths.get(name)}
        joined = np.concatenate(list(present.values()))
        wide = joined.max() > 30 * max(joined.min(), 1)  # long tails: log-spaced bins on a log axis
        edges = (np.geomspace(max(joined.min(), 1), joined.max() + 1, 41) if wide
                 else np.histogram_bin_edges(joined, bins=40))
        if wide:
            ax.set_xscale("log")
        for group, values in present.items():
            ax.hist(values, bins=edges.tolist(), weights=np.full(len(values), 1 / len(values)), alpha=0.55,
                    color=GROUP_COLOURS[group], label=f"{group} (n={len(values):,}, median {np.median(values):,.0f})")
        ax.set_title(plain_label(f"field `{name}`"), fontsize=9)
        ax.set_xlabel("characters", fontsize=8)
        ax.set_ylabel("share of records", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
        alts.append(f"{name}: " + ", ".join(f"{g} median {np.median(v):,.0f}" for g, v in present.items()))
    return fig, "Histograms of characters per field: " + "; ".join(alts)


def examples(synthetic: Sample, real: Sample) -> str:
    """A few records of the dataset's seeded sample, every string field shown (shortened), with their leaf."""
    shown = [(fields, leaf, "synthetic") for fields, leaf in synthetic.picked[:EXAMPLES]]
    shown += [(fields, "", "real") for fields, _ in real.picked[:2]]
    if not shown:
        return not_available("dataset.jsonl is empty")
    parts = []
    for number, (fields, leaf, kind) in enumerate(shown, start=1):
        title = f"Example {number} ({kind}" + (f", leaf {leaf}" if leaf and leaf != "(no leaf)" else "") + ")"
        rows = "".join(f"<tr><th>{escape_html(name)}</th><td>{escape_html(_shorten(text))}</td></tr>"
                       for name, text in fields.items())
        parts.append(f"<h3>{escape_html(title)}</h3><table>{rows}</table>")
    return "".join(parts) + '<p class="note">Drawn from the same seeded sample as the embedding map.</p>'


def _shorten(text: str) -> str:
    return text if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS - 1] + "…"
