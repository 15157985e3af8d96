"""Self-Instruct (Wang et al. 2022): grow a pool of tasks from seed tasks, in rounds, with the paper's filters.

A round sends `requests_per_round` prompts, each showing 8 example instructions (6 seed tasks + 2 generated
ones; more seed tasks while fewer are generated) in a deterministic shuffle, and asks for new instructions.
Each candidate passes the filters of the paper's release, in its order: word count, blacklisted words
(tasks a text model cannot do), "Write a program", a leading punctuation mark or non-ASCII character, then
ROUGE-L F1 > threshold against every instruction kept so far (seeds, earlier rounds, earlier candidates of
this round). Survivors are labelled classification or not, then get up to `max_instances` instances:
label first for classification tasks (so the labels are covered, not whichever the inputs suggest), input
first otherwise. Instances with an empty output, an output equal to the input, or an input or output
ending in ":" are dropped, then repeats; a task whose same non-empty input got different outputs, or with
no instance left, is rejected. The loop ends at `target` accepted tasks or after `max_rounds`.

As in the paper, an instruction that passed the ROUGE-L filter stays in the similarity pool even when its
instances fail later; the generated examples shown in prompts are accepted tasks only. `requests_per_round`
defaults to the original's request batch (5): a round must stop short of the target for the bootstrap to
bootstrap, i.e. for generated tasks to reach later prompts.

The labelling and instance prompts follow the original's (yizhongw/self-instruct) in form: fixed
demonstrations of their own kind, drawn once per run from the seed tasks (`pick_demos`), except the
output-first ones, which must show one input per class label and live in their template. Answers are JSON
(an output schema) where the original parsed free text.

The stage needs the whole seed set before its first request, so it reads its entire input first.
"""

from __future__ import annotations

import random
import re
import string
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import Field, model_validator

from synthgen.errors import InputError
from synthgen.recipes.rouge import RougePool, rouge_tokens
from synthgen.record import Record, make_record_id
from synthgen.rundir import write_atomic
from synthgen.sampling import SamplingParams
from synthgen.stages.base import StageContext, StageParams
from synthgen.stages.llm import Answer, Ask, LLMStage, Reading
from synthgen.validation import OutputSchema

BLACKLIST = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps", "draw",
             "plot", "go to")
_BLACKLISTED = re.compile(r"\b(" + "|".join(BLACKLIST) + r")\b", re.IGNORECASE)
_CLASSIFY_EXAMPLES = (12, 19)  # classification / other seed tasks shown to the labeller, as the original's 31
_INPUT_DEMOS, _NO_INPUT_DEMOS = 8, 4  # input-first demonstrations with / without an input, as the original's 12
_DEMO_CHARS = 500  # a demonstration's instance at most this long (input + output), to keep the prompt short
_STEPS = ("instructions", "classify", "instances_input_first", "instances_output_first")
_CLASSIFY_SCHEMA = {"type": "object", "properties": {"is_classification": {"type": "boolean"}},
                    "required": ["is_classification"], "additionalProperties": False}


class SelfInstructParams(StageParams):
    """The loop's knobs; defaults are the paper's (its sampling too, with max_tokens sized for JSON)."""

    target: int = Field(default=100, ge=1, description="accepted generated tasks at which the loop stops")
    max_rounds: int = Field(default=20, ge=1)
    requests_per_round: int = Field(default=5, ge=1, description="the original's request_batch_size: small, so "
                                    "generated tasks join the prompts of the next rounds")
    instructions_per_request: int = Field(default=8, ge=1, le=64)
    seed_examples: int = Field(default=6, ge=0)
    generated_examples: int = Field(default=2, ge=0)
    min_words: int = Field(default=4, ge=1)
    max_words: int = Field(default=150, ge=1)
    rouge_threshold: float = Field(default=0.7, ge=0, lt=1)
    max_instances: int = Field(default=5, ge=1, le=32)
    templates: str = Field(default="self_instruct", description="template folder under prompts_dir")
    # the paper's presence_penalty 2 is left out: under a JSON schema it penalises the syntax the array repeats
    instruction_sampling: SamplingParams = Field(
        default_factory=lambda: SamplingParams(temperature=0.7, top_p=0.5, max_tokens=1024))
    classify_sampling: SamplingParams = Field(default_factory=lambda: SamplingParams(temperature=0.0, max_tokens=16))
    instance_sampling: SamplingParams = Field(default_factory=lambda: SamplingParams(temperature=0.0, max_tokens=1024))

    @model_validator(mode="after")
    def _consistent(self) -> SelfInstructParams:
        if self.min_words > self.max_words:
            raise ValueError(f"min_words ({self.min_words}) is above max_words ({self.max_words})")
        if self.seed_examples + self.generated_examples == 0:
            raise ValueError("seed_examples + generated_examples must be at least 1: prompts need examples")
        return self


@dataclass(frozen=True, slots=True)
class Task:
    """A seed or accepted task: its record id, instruction, label and instances."""

    id: str
    instruction: str
    is_classification: bool = False
    instances: tuple[dict[str, str], ...] = ()


@dataclass(slots=True)
class Candidate:
    """One generated instruction on its way through the filters, with what made it."""

    id: str
    instruction: str
    round: int
    request: int
    item: int
    examples: list[Task]
    steps: list[dict[str, Any]] = field(default_factory=list)
    is_classification: bool = False


def seed_task(record: Record) -> Task:
    """A seed task from an input record; a malformed one is an InputError naming its file and line."""
    fields = record.fields
    instruction, instances, label = fields.get("instruction"), fields.get("instances", []), fields.get("is_classification", False)
    if not isinstance(instruction, str) or not instruction.strip():
        problem = "needs a non-empty string `instruction`"
    elif not (isinstance(instances, list) and all(
            isinstance(i, dict) and isinstance(i.get("input", ""), str) and isinstance(i.get("output"), str) for i in instances)):
        problem = "`instances` must be a list of {input, output} objects with string values"
    elif not isinstance(label, bool):
        problem = "`is_classification` must be true or false"
    else:
        pairs = tuple({"input": i.get("input", ""), "output": i["output"]} for i in instances)
        return Task(record.id, " ".join(instruction.split()), label, pairs)
    raise InputError(str(record.meta.get("source", "input")), record.meta.get("line"), f"seed task {problem}")


def instruction_verdict(text: str, min_words: int, max_words: int) -> tuple[str, str] | None:
    """Why the paper's cheap filters drop an instruction (reason, detail), or None when it passes them."""
    words = len(text.split())
    if words < min_words:
        return "too_few_words", f"{words} words, fewer than {min_words}"
    if words > max_words:
        return "too_many_words", f"{words} words, more than {max_words}"
    if blacklisted := _BLACKLISTED.search(text):
        return "blacklisted_word", f"contains {blacklisted.group(0)!r}"
    if text.lower().startswith("write a program"):
        return "write_a_program", "starts with 'Write a program'"
    if text[0] in string.punctuation:
        return "starts_with_punctuation", f"starts with {text[0]!r}"
    if not text[0].isascii():
        return "starts_with_non_ascii", f"starts with {text[0]!r}"
    return None


def filter_instances(instances: Iterable[dict[str, str]]) -> tuple[list[dict[str, str]], Counter[str], str | None]:
    """Kept instances, drops by reason, and the first non-empty input that got different outputs (if any)."""
    kept: list[dict[str, str]] = []
    dropped: Counter[str] = Counter()
    outputs: dict[str, str] = {}
    for instance in instances:
        given, output = instance["input"].strip(), instance["output"].strip()
        reason = ("empty_output" if not output else "input_equals_output" if given == output
                  else "ends_with_colon" if given.endswith(":") or output.endswith(":") else None)
        if reason is None and {"input": given, "output": output} in kept:
            reason = "repeated_instance"
        if reason is not None:
            dropped[reason] += 1
            continue
        if given and outputs.setdefault(given, output) != output:
            return kept, dropped, given
        kept.append({"input": given, "output": output})
    return kept, dropped, None


def pick_examples(rng: random.Random, seeds: Sequence[Task], generated: Sequence[Task], seed_count: int,
                  generated_count: int) -> list[Task]:
    """Up to `generated_count` generated tasks, seed tasks for the rest of the examples, shuffled."""
    picked = rng.sample(list(generated), min(generated_count, len(generated)))
    picked += rng.sample(list(seeds), min(seed_count + generated_count - len(picked), len(seeds)))
    rng.shuffle(picked)
    return picked


def pick_demos(rng: random.Random, seeds: Sequence[Task]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The fixed demonstrations (a prompt prefix shared by all requests) of the labelling prompt (12 classification
    and 19 other seed tasks, shuffled) and of the input-first instance prompt (8 short seed tasks that are not
    classification with an input, 4 without one, as the original's)."""
    groups = [[s for s in seeds if s.is_classification], [s for s in seeds if not s.is_classification]]
    shown = [task for group, most in zip(groups, _CLASSIFY_EXAMPLES, strict=True)
             for task in rng.sample(group, min(most, len(group)))]
    rng.shuffle(shown)
    labelling = [{"instruction": t.instruction, "is_classification": t.is_classification} for t in shown]
    short = [t for t in groups[1] if t.instances and all(len(i["input"] + i["output"]) <= _DEMO_CHARS for i in t.instances)]
    with_input = [t for t in short if all(i["input"] for i in t.instances)]
    without = [t for t in short if not any(i["input"] for i in t.instances)]
    demos = [*rng.sample(with_input, min(_INPUT_DEMOS, len(with_input))),
             *rng.sample(without, min(_NO_INPUT_DEMOS, len(without)))]
    rng.shuffle(demos)
    return labelling, [{"instruction": t.instruction, "instances": list(t.instances)} for t in demos]


def _schema(item: str, items: dict[str, Any], most: int) -> dict[str, Any]:
    array = {"type": "array", "items": items, "minItems": 1, "maxItems": most}
    return {"type": "object", "properties": {item: array}, "required": [item], "additionalProperties": False}


def _instances_schema(output_first: bool, most: int) -> dict[str, Any]:
    """Instance objects; property order is generation order, so the label comes first for classification."""
    keys = ["output", "input"] if output_first else ["input", "output"]
    return _schema("instances", {"type": "object", "properties": {key: {"type": "string"} for key in keys},
                                 "required": keys, "additionalProperties": False}, most)


class SelfInstruct(LLMStage):
    """Turns seed tasks into up to `target` new tasks with instances; see the module docstring."""

    name = "self_instruct"
    predictable = False
    Params = SelfInstructParams
    params: SelfInstructParams

    def __init__(self, params: SelfInstructParams, ctx: StageContext) -> None:  # type: ignore[override]
        super().__init__(params, ctx)
        self.templates = {name: f"{params.templates}/{name}.j2" for name in _STEPS}
        self.check_templates(*self.templates.values())
        schemas = (_schema("instructions", {"type": "string", "minLength": 20}, params.instructions_per_request),
                   _CLASSIFY_SCHEMA, *(_instances_schema(first, params.max_instances) for first in (False, True)))
        self.readings = {name: Reading(OutputSchema(schema), allow_empty=True)  # an empty answer is invalid JSON
                         for name, schema in zip(_STEPS, schemas, strict=True)}
        sampling = (params.instruction_sampling, params.classify_sampling, params.instance_sampling, params.instance_sampling)
        self.sampling = {name: each.to_body() for name, each in zip(_STEPS, sampling, strict=True)}
        self.texts: list[str] = []  # the instructions in the ROUGE-L pool, by pool entry

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        seeds = [seed_task(record) for record in records]
        if not seeds:
            raise InputError(str(self.ctx.recipe_path), None, "self_instruct needs seed tasks from the recipe's source")
        self.classify_demos, self.input_demos = pick_demos(self.seeded("demos"), seeds)
        pool = RougePool(self.params.rouge_threshold)
        self.texts = [seed.instruction for seed in seeds]
        for seed in seeds:
            pool.add(rouge_tokens(seed.instruction))
        accepted: list[Task] = []
        rounds = 0
        while len(accepted) < self.params.target and rounds < self.params.max_rounds:
            for record in self._round(rounds, seeds, accepted, pool):
                accepted.append(Task(record.id, record.fields["instruction"]))
                yield record
            rounds += 1
        if self.ctx.workdir is not None:
            stop = "target" if len(accepted) >= self.params.target else "max_rounds"
            summary = {"rounds": rounds, "accepted": len(accepted), "target": self.params.target, "stopped_by": stop}
            write_atomic(self.ctx.workdir / f"{self.ctx.label}.summary.json", orjson.dumps(summary))

    def _round(self, number: int, seeds: list[Task], accepted: list[Task], pool: RougePool) -> Iterator[Record]:
        """One round: ask for instructions, filter them, label the survivors, give them instances."""
        p = self.params
        origins = []
        for i in range(p.requests_per_round):
            rng = self.seeded(number, i)
            shown = pick_examples(rng, seeds, accepted, p.seed_examples, p.generated_examples)
            origins.append(Candidate(make_record_id(self.ctx.key, number, i), "", number, i, -1, shown))
        variables = [{"examples": [t.instruction for t in c.examples], "max_instructions": p.instructions_per_request}
                     for c in origins]
        survivors: list[Candidate] = []
        for origin, answer in self._answered(["instructions"] * len(origins), origins, variables):
            for j, text in enumerate(answer["instructions"]):
                candidate = Candidate(make_record_id(self.ctx.key, number, origin.request, j), " ".join(text.split()),
                                      number, origin.request, j, origin.examples, list(origin.steps))
                verdict = instruction_verdict(candidate.instruction, p.min_words, p.max_words)
                if verdict is None and len(survivors) >= p.target - len(accepted):
                    verdict = ("target_reached", f"round {number} already has enough candidates for the target")
                tokens = rouge_tokens(candidate.instruction)
                if verdict is None and (similar := pool.most_similar(tokens)) is not None:
                    verdict = ("rouge_similar", f"ROUGE-L {similar.score:.3f} with {self.texts[similar.entry]!r}")
                if verdict is not None:
                    self._reject(candidate, *verdict)
                    continue
                pool.add(tokens)
                self.texts.append(candidate.instruction)
                survivors.append(candidate)
        labelled = []
        variables = [{"examples": self.classify_demos, "instruction": c.instruction} for c in survivors]
        for candidate, answer in self._answered(["classify"] * len(survivors), survivors, variables):
            candidate.is_classification = answer["is_classification"]
            labelled.append(candidate)
        names = [_STEPS[2 + c.is_classification] for c in labelled]
        variables = [{"demos": self.input_demos, "max_instances": p.max_instances, "instruction": c.instruction}
                     for c in labelled]  # the output-first template holds its own demonstrations
        for candidate, answer in self._answered(names, labelled, variables):
            kept, dropped, conflict = filter_instances(answer["instances"])
            if conflict is not None:
                self._reject(candidate, "conflicting_outputs", f"input {conflict!r} got different outputs")
            elif not kept:
                self._reject(candidate, "no_valid_instances", f"every instance dropped: {dict(sorted(dropped.items()))}")
            else:
                fields = {"instruction": candidate.instruction, "instances": kept,
                          "is_classification": candidate.is_classification}
                yield Record(candidate.id, fields, {**self._meta(candidate), "dropped_instances": dict(sorted(dropped.items()))})

    def _answered(self, names: list[str], candidates: list[Candidate],
                  variables: list[dict[str, Any]]) -> Iterator[tuple[Candidate, dict[str, Any]]]:
        """Send one request per candidate (concurrently); yield the parsed answers, reject the failures."""
        asks = ((c, Ask(self.templates[name], self.prompts.render(self.templates[name], values), self.sampling[name],
                        (self.ctx.seed, self.ctx.key, name, c.round, c.request, c.item), self.readings[name]))
                for name, c, values in zip(names, candidates, variables, strict=True))
        for candidate, outcome in self.answers(asks):
            candidate.steps.append(self.provenance(outcome, numbered=False))
            if isinstance(outcome, Answer):
                yield candidate, outcome.fields
            else:
                self._reject(candidate, outcome.reason, outcome.message)

    def _meta(self, c: Candidate) -> dict[str, Any]:
        return {"parents": [t.id for t in c.examples], "round": c.round, "request": c.request, "steps": c.steps}

    def _reject(self, candidate: Candidate, reason: str, detail: str) -> None:
        fields = {"instruction": candidate.instruction} if candidate.instruction else {}
        self.ctx.reject(Record(candidate.id, fields, self._meta(candidate)), reason, detail)

