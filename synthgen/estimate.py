"""What a run will cost before it starts: requests per stage, input and output tokens, and price.

The first generate stage's prompts are rendered exactly (from the real input or draws) and counted with
the offline tokenizer in `synthgen.tokens`. Later stages depend on model outputs, so their counts assume
every request succeeds and no filter drops anything (an upper bound), and their prompts are estimated as
the previous prompt size plus the previous stage's output. Output tokens are bounded by `max_tokens`.
Stages whose request count depends on outputs (loops, fan-outs) are reported as unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice

from synthgen.build import build_stages, limited, open_source
from synthgen.recipe import Recipe
from synthgen.record import Record
from synthgen.stats import RunStats
from synthgen.tokens import count_message_tokens

DEFAULT_OUTPUT_TOKENS = 512  # assumed when a stage sets no max_tokens


@dataclass
class StageEstimate:
    """One stage's expected requests and tokens; None where it cannot be known before running."""

    label: str
    requests: int | None
    input_tokens: int | None
    output_tokens: int | None
    note: str = ""


@dataclass(frozen=True)
class Prices:
    """US dollars per million input and output tokens."""

    input: float = 0.0
    output: float = 0.0

    def of(self, input_tokens: int, output_tokens: int) -> float:
        """The price of that many input and output tokens."""
        return (input_tokens * self.input + output_tokens * self.output) / 1e6

    def cost(self, estimates: list[StageEstimate]) -> float:
        """The known part of the cost (unknown stages count as zero)."""
        return sum(self.of(e.input_tokens or 0, e.output_tokens or 0) for e in estimates)


class _Filler(dict):  # type: ignore[type-arg]
    """Stands in for a record a model has not written yet: every field reads as `tokens` filler words."""

    def __init__(self, tokens: int) -> None:
        super().__init__()
        self.text = "word " * tokens

    def __missing__(self, key: str) -> str:
        return self.text


def estimate_recipe(recipe: Recipe, limit: int | None = None) -> list[StageEstimate]:
    """Estimates for every stage of `recipe`, without calling a backend. Stages that make no requests run on
    the real input while it is known (chunking, dedup, ...), so the first prompts are counted exactly."""
    stages = build_stages(recipe, RunStats(), limit=limit)
    first = list(limited(open_source(recipe), limit))
    inputs: list[Record] | None = first
    count: int | None = len(first)
    previous_output = DEFAULT_OUTPUT_TOKENS
    estimates: list[StageEstimate] = []
    for stage in stages:
        label = stage.ctx.label
        rendered = stage.rendered_prompts(inputs if inputs is not None else [Record("estimate", _Filler(previous_output))])
        if rendered is not None:
            max_tokens = stage.max_output_tokens() or DEFAULT_OUTPUT_TOKENS
            if inputs is not None:
                prompts = list(rendered)
                requests: int | None = len(prompts)
                input_tokens: int | None = sum(count_message_tokens(messages) for _, messages in prompts)
                note = "prompts rendered and counted"
            elif count is not None:
                prompts = list(rendered)
                requests = count * len(prompts)
                input_tokens = count * sum(count_message_tokens(messages) for _, messages in prompts)
                note = "at most: every earlier request succeeds and nothing is dropped"
            else:
                requests = input_tokens = None
                note = "depends on an earlier stage's outputs"
            output_tokens = None if requests is None else requests * max_tokens
            estimates.append(StageEstimate(label, requests, input_tokens, output_tokens, note))
            inputs, count, previous_output = None, requests, max_tokens
        elif stage.makes_requests and stage.predictable:  # e.g. a judge: its prompts wrap earlier outputs
            requests = None if count is None else stage.planned_requests(count)
            max_tokens = stage.max_output_tokens() or DEFAULT_OUTPUT_TOKENS
            output_tokens = None if requests is None else requests * max_tokens
            estimates.append(StageEstimate(label, requests, None, output_tokens, "prompts built from earlier outputs"))
            inputs, count = None, None if count is None else stage.outputs(count)
        elif not stage.predictable:
            estimates.append(StageEstimate(label, None, None, None, "depends on model outputs"))
            inputs = count = None
        else:
            if inputs is not None:
                outputs = list(stage.run(inputs))
                inputs, count = outputs, len(outputs)
            estimates.append(StageEstimate(label, 0, 0, 0, "no requests"))
    return estimates


def first_prompts(recipe: Recipe, n: int) -> tuple[str, list[tuple[str, list[dict[str, str]]]], str]:
    """Up to `n` rendered prompts of the recipe's first generate stage, without calling a backend: (its label,
    [(leaf path, messages)], ""), the earlier stages that make no requests (chunking, dedup, ...) run on the real
    input first. When a stage whose prompts depend on model outputs comes first, or no stage renders prompts,
    no prompts and a note saying why."""
    inputs: list[Record] = list(limited(open_source(recipe), n))
    for stage in build_stages(recipe, RunStats(), limit=n):
        rendered = stage.rendered_prompts(inputs)
        if rendered is not None:
            return stage.ctx.label, list(islice(rendered, n)), ""
        if not stage.predictable:
            note = "builds its prompts while it runs (from model or embedding outputs); nothing to render before a run"
            return stage.ctx.label, [], f"{stage.ctx.label} {note}"
        inputs = list(stage.run(inputs))
    return "", [], "no stage of this recipe renders prompts (none is a generate stage)"
