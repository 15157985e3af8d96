"""The Evol-Instruct stage (Xu et al. 2023, WizardLM): instructions rewritten over rounds into harder or rarer ones.

The pool starts as the input instructions. Each round evolves every instruction in the pool with one
operation drawn from the taxonomy (five in-depth rewrites, one in-breadth creation; uniform by default),
answers each evolved instruction, then eliminates the paper's four failure cases:

1. `no_information_gain`: the LLM judges the evolved instruction equal to its parent;
2. `refusal`: the response contains "sorry" and is shorter than 80 words;
3. `stop_words_only`: the response is nothing but punctuation and stop words ("yes", "no" and "ok" are
   answers here, not stop words: "Yes." answers a yes/no question);
4. `copies_evolution_prompt`: the evolved instruction copies words of the evolution prompt
   ("#Rewritten Prompt#", "given prompt", ...); checked before the answer is asked for, to save two requests.

A success replaces its parent in the pool and is yielded; a failure (these, an unparseable output or a
backend failure) is rejected with its reason and the parent stays in the pool to be evolved again next round.
An answer cut off at `answer_sampling.max_tokens` (2,048, the reference code's budget) does not eliminate its
evolution: the hardest instructions get the longest answers, and dropping them would bias the pool towards easy
ones. The evolution is kept and marked (`meta.evol.truncated`), so a later filter can drop or re-answer it.

Alpaca-style input: as in the reference code (nlpxucan/WizardLM, which evolves `instruction + "\r\n" + input`),
a non-empty `input_field` is appended to the instruction (after a newline) wherever the instruction is shown to
the model; the evolved instruction then holds its input, so evolved records carry no `input` field.
`include_originals` yields the input records as well, each answered with the same answer prompt and budget (as
WizardLM trains on the originals with their answers), so no row lacks a response.
Every random choice and request seed derives from (seed, stage label, round, parent id), so a rerun replays
everything from the request cache.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

from pydantic import Field

from synthgen.backends.base import ChatRequest, Completion
from synthgen.errors import InputError
from synthgen.record import Record, make_record_id
from synthgen.sampling import SamplingParams
from synthgen.stages.base import StageContext, StageParams
from synthgen.stages.llm import Answer, Ask, Failure, LLMStage, Reading, usage
from synthgen.stopwords import STOP_WORDS
from synthgen.taxonomy import Leaf
from synthgen.validation import OutputSchema

REFUSAL_MAX_WORDS = 80  # the paper's "relatively short" bound for a response containing "sorry"
_WORD = re.compile(r"\w+(?:'\w+)*")
_PROMPT_WORDS = re.compile(r"\b(?:given|rewritten|created)[\s_-]*prompts?\b", re.IGNORECASE)
# stop words that are complete answers ("Yes.", "No.", "OK.") do not make a response empty
_ELIMINATION_STOP_WORDS = STOP_WORDS - {"yes", "no", "ok", "okay"}
_JUDGE_SCHEMA = {"type": "object", "properties": {"equal": {"type": "boolean"}}, "required": ["equal"],
                 "additionalProperties": False}


def copied_prompt_words(instruction: str) -> str | None:
    """Failure case 4: the evolution prompt's words ("#Given Prompt#", "rewritten prompt", ...) found in `instruction`."""
    match = _PROMPT_WORDS.search(instruction)
    return match.group(0) if match else None


def is_refusal(response: str) -> bool:
    """Failure case 2: the response says "sorry" (any case) and is shorter than 80 words."""
    return "sorry" in response.lower() and len(response.split()) < REFUSAL_MAX_WORDS


def is_stop_words_only(response: str) -> bool:
    """Failure case 3: the response holds no word outside the stop-word list (punctuation is not a word)."""
    return all(word in _ELIMINATION_STOP_WORDS for word in _WORD.findall(response.lower()))


def eliminate(equal: bool, response: str) -> tuple[str, str] | None:
    """The first of failure cases 1-3 that applies, as (reason, detail), or None for a successful evolution."""
    if equal:
        return "no_information_gain", "the judge found the evolved instruction equal to its parent"
    if is_refusal(response):
        return "refusal", f"the response says sorry in {len(response.split())} words"
    if is_stop_words_only(response):
        return "stop_words_only", "the response is only punctuation and stop words"
    return None


class EvolInstructParams(StageParams):
    """`rounds` is the paper's M; `sampling` applies to the evolution requests (a leaf's `sampling` overrides it)."""

    field: str = "instruction"
    input_field: str | None = Field(default="input", description="appended to the instruction when non-empty, as the "
                                                                   "reference code does; null to ignore it")
    rounds: int = Field(default=4, ge=1, le=64)
    taxonomy: str = "taxonomies/evol.yaml"
    answer_template: str = "evol_instruct/answer.j2"
    judge_template: str = "evol_instruct/judge.j2"
    min_chars: int = Field(default=20, ge=1, description="an evolved instruction shorter than this is invalid output")
    # High temperature for varied rewrites; a moderate one for answers (with the reference code's 2,048-token
    # budget); the judge gives a verdict, not a sample.
    sampling: SamplingParams = Field(default_factory=lambda: SamplingParams(temperature=1.0, max_tokens=1024))
    answer_sampling: SamplingParams = Field(default_factory=lambda: SamplingParams(temperature=0.7, max_tokens=2048))
    judge_sampling: SamplingParams = Field(default_factory=lambda: SamplingParams(temperature=0.0, max_tokens=32))
    keep_input: bool = False
    include_originals: bool = False


@dataclass(slots=True)
class Evolution:
    """One pool member's evolution in one round, filled in as its requests come back."""

    parent: Record
    round: int
    leaf: Leaf
    template: str
    placeholders: dict[str, Any]
    requests: dict[str, ChatRequest]
    completions: list[Completion]
    instruction: str | None = None
    response: str | None = None
    truncated: bool = False
    failure: tuple[str, str] | None = None


class EvolInstruct(LLMStage):
    """Evolves every input instruction for `rounds` rounds; needs its whole input before the first round
    and holds the pool (one instruction and its fields per input record) in memory."""

    name = "evol_instruct"
    predictable = False
    Params = EvolInstructParams
    params: EvolInstructParams

    def __init__(self, params: EvolInstructParams, ctx: StageContext) -> None:  # type: ignore[override]
        super().__init__(params, ctx)
        self.taxonomy = self.load_taxonomy(params.taxonomy)
        self.op_templates, self.op_sampling = self.leaf_setup(self.taxonomy, params.sampling,
                                                              missing="an evolution operation needs a template")
        self.check_templates(params.answer_template, params.judge_template)
        evolve_schema = OutputSchema({
            "type": "object", "properties": {"instruction": {"type": "string", "minLength": params.min_chars}},
            "required": ["instruction"], "additionalProperties": False,
        })
        # outputs need only parse: a truncated answer is kept and marked, an empty one is `stop_words_only`
        schemas = {"evolve": evolve_schema, "answer": None, "judge": OutputSchema(_JUDGE_SCHEMA)}
        self.readings = {step: Reading(schema, allow_truncated=True, allow_empty=True) for step, schema in schemas.items()}

    def choose(self, round_: int, record_id: str) -> tuple[Leaf, dict[str, Any]]:
        """The operation (leaf and placeholder values) for evolving `record_id` in round `round_`."""
        return self.taxonomy.sample(self.seeded(round_, record_id))

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        pool = [self._root(record) for record in records]
        if self.params.include_originals:
            yield from self._answer_originals(pool)
        for round_ in range(1, self.params.rounds + 1):
            planned = [self._plan(member, round_) for member in pool]
            evolutions = [evolution for evolution, _ in planned]
            self._evolve(planned)
            self._answer_and_judge([e for e in evolutions if e.failure is None])
            for index, evolution in enumerate(evolutions):
                if evolution.failure is None:
                    pool[index] = self._record(evolution)
                    yield pool[index]
                else:
                    self.ctx.reject(self._record(evolution), *evolution.failure)

    def _root(self, record: Record) -> Record:
        """An input record as a pool member at round 0; an input without the instruction field stops the run."""
        if not isinstance(record.fields.get(self.params.field), str) or not record.fields[self.params.field].strip():
            message = f"field {self.params.field!r} is missing, empty or not a string"
            raise InputError(str(record.meta.get("source", "input")), record.meta.get("line"), message)
        lineage = {"root": record.id, "parent": None, "operation": None, "round": 0, "depth": 0}
        return Record(record.id, record.fields, {**record.meta, "evol": lineage})

    def prompt_text(self, fields: dict[str, Any]) -> str:
        """The instruction as the model sees it: with its non-empty input appended after a newline."""
        extra = fields.get(self.params.input_field) if self.params.input_field else None
        instruction = fields[self.params.field].strip()
        return f"{instruction}\n{extra.strip()}" if isinstance(extra, str) and extra.strip() else instruction

    def _answer_originals(self, pool: list[Record]) -> Iterator[Record]:
        """The input records answered (for `include_originals`); one whose answer fails is rejected."""
        p = self.params
        def ask(record: Record) -> Ask:
            messages = self.prompts.render(p.answer_template, {"instruction": self.prompt_text(record.fields)})
            seed_parts = (self.ctx.seed, self.ctx.key, "answer", 0, record.id)
            return Ask(p.answer_template, messages, p.answer_sampling.to_body(), seed_parts, self.readings["answer"])

        asks = ((record, ask(record)) for record in pool)
        for record, outcome in self.answers(asks):
            step = self.provenance(outcome, numbered=False, round=0)
            meta = {**record.meta, "steps": [*record.meta.get("steps", []), step]}
            if isinstance(outcome, Failure):
                reason = outcome.reason if outcome.completion is None else f"answer_{outcome.reason}"
                self.ctx.reject(Record(record.id, record.fields, meta), reason, outcome.message)
                continue
            truncated = outcome.completion.finish_reason == "length"
            meta["evol"] = {**record.meta["evol"], "truncated": truncated}
            yield Record(record.id, {**record.fields, "response": outcome.text}, meta)

    def _plan(self, parent: Record, round_: int) -> tuple[Evolution, Ask]:
        leaf, placeholders = self.choose(round_, parent.id)
        evolution = Evolution(parent, round_, leaf, self.op_templates[leaf.path], placeholders, {}, [])
        variables = {**placeholders, "leaf": leaf.path, "record": parent.fields, "instruction": self.prompt_text(parent.fields)}
        return evolution, self._ask(evolution, "evolve", evolution.template, variables, self.op_sampling[leaf.path])

    def _ask(self, evolution: Evolution, step: str, template: str, variables: dict[str, Any],
             sampling: dict[str, Any]) -> Ask:
        seed_parts = (self.ctx.seed, self.ctx.key, step, evolution.round, evolution.parent.id)
        return Ask(template, self.prompts.render(template, variables), sampling, seed_parts, self.readings[step])

    def _evolve(self, planned: list[tuple[Evolution, Ask]]) -> None:
        """Send every evolution request of the round at once; parse each, then check failure case 4."""
        for evolution, outcome in self.answers(planned):
            evolution.requests["evolve"] = outcome.request
            evolved = self._read(evolution, outcome, "evolve")
            if evolved is None:
                continue
            evolution.instruction = evolved.fields["instruction"].strip()
            if copied := copied_prompt_words(evolution.instruction):
                evolution.failure = ("copies_evolution_prompt", f"the evolved instruction contains {copied!r}")

    def _answer_and_judge(self, evolutions: list[Evolution]) -> None:
        """Send the answer and the equality judgement of each evolved instruction together; eliminate cases 1-3."""
        p, asks = self.params, []
        for evolution in evolutions:
            instruction = cast(str, evolution.instruction)  # an evolution that did not fail has its instruction
            compare = {"first": self.prompt_text(evolution.parent.fields), "second": instruction}
            asks += [(evolution, self._ask(evolution, "answer", p.answer_template, {"instruction": instruction},
                                           p.answer_sampling.to_body())),
                     (evolution, self._ask(evolution, "judge", p.judge_template, compare, p.judge_sampling.to_body()))]
        outcomes = [outcome for _, outcome in self.answers(asks)]
        for evolution, answer, judge in zip(evolutions, outcomes[0::2], outcomes[1::2], strict=True):
            evolution.requests.update(answer=answer.request, judge=judge.request)
            said = self._read(evolution, answer, "answer")
            if said is None:
                continue
            evolution.response = said.text
            verdict = self._read(evolution, judge, "judge")
            if verdict is None:
                continue
            evolution.truncated = said.completion.finish_reason == "length"  # kept, marked: see the module docstring
            evolution.failure = eliminate(verdict.fields["equal"], said.text)

    def _read(self, evolution: Evolution, outcome: Answer | Failure, step: str) -> Answer | None:
        """The answer, or None with the evolution's failure set (an output failure is named after `step`)."""
        if outcome.completion is not None:
            evolution.completions.append(outcome.completion)
        if isinstance(outcome, Answer):
            return outcome
        reason = outcome.reason if outcome.completion is None else f"{step}_{outcome.reason}"  # backend_*: as is
        evolution.failure = (reason, outcome.message)
        return None

    def _record(self, evolution: Evolution) -> Record:
        """The evolved record (or, for a failure, the record rejected) with its lineage and provenance."""
        parent, field = evolution.parent, self.params.field
        lineage = {"root": parent.meta["evol"]["root"], "parent": parent.id, "operation": evolution.leaf.path,
                   "round": evolution.round, "depth": parent.meta["evol"]["depth"] + 1, "truncated": evolution.truncated}
        record_id = make_record_id(parent.id, self.ctx.key, evolution.round)
        if evolution.failure is not None:
            fields = {f"parent_{field}": self.prompt_text(parent.fields), field: evolution.instruction,
                      "response": evolution.response}
            meta = {"parents": [parent.id], "evol": lineage, "steps": [self._step(evolution)]}
            return Record(record_id, {k: v for k, v in fields.items() if v is not None}, meta)
        # the parent's input is part of the evolved instruction now
        base = {k: v for k, v in parent.fields.items() if k != self.params.input_field} if self.params.keep_input else {}
        meta = {**parent.meta, "parents": [parent.id], "evol": lineage,
                "steps": [*parent.meta.get("steps", []), self._step(evolution)]}
        return Record(record_id, {**base, field: evolution.instruction, "response": evolution.response}, meta)

    def _step(self, evolution: Evolution) -> dict[str, Any]:
        """Provenance of one evolution: operation, template, model, request keys and seeds, token usage."""
        return {
            "stage": self.ctx.label, "round": evolution.round, "leaf": evolution.leaf.path, "template": evolution.template,
            "placeholders": evolution.placeholders, "backend": self.runtime.backend_kind, "model": self.runtime.model,
            "requests": {step: request.key() for step, request in evolution.requests.items()},
            "sampling": {step: request.params for step, request in evolution.requests.items()},
            "usage": usage(evolution.completions),
        }
