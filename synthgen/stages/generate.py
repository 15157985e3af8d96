"""The generate stage: sample taxonomy leaves, render prompts, keep the completions with provenance.

An LLM stage (`synthgen.stages.llm`): its asks stream through the runtime's sliding window, finish in any order
and come out in input order, so a resumed run writes the same dataset. With `target:` the pipeline steers it
(synthgen.steering) before it runs: `follow` then says which leaf each draw takes and which records to withhold.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, cast

from pydantic import Field, model_validator

from synthgen.config import StrictModel
from synthgen.embedding.encoder import DEFAULT_MODEL
from synthgen.errors import InputError, TemplateError
from synthgen.record import Record, make_record_id
from synthgen.sampling import SamplingParams
from synthgen.stages.base import Prompt, StageContext, StageParams
from synthgen.stages.llm import Answer, Ask, Failure, LLMStage, Reading
from synthgen.taxonomy import Leaf, Taxonomy
from synthgen.validation import OutputSchema


class NoveltyParams(StrictModel):
    """How much a candidate's distance to the kept records counts (see synthgen.steering)."""

    weight: float = Field(default=1.0, ge=0, description="exponent on a leaf's mean novelty in its score; 0: no embeddings")
    reject_within: float | None = Field(
        default=None, gt=0, le=1, description="reject (`too_close`) a candidate whose cosine to a kept one is at least this")
    model: str = Field(default=DEFAULT_MODEL, description="sentence-transformers model of the embeddings")


class LeafQuota(StrictModel):
    """`per_leaf: {at_least: k}`: every leaf needs k records as well."""

    at_least: int = Field(ge=1)


class TargetParams(StrictModel):
    """`target:` generate until `records` survive the later stages up to `after` (see synthgen.steering);
    the stage's `count` is then the most draws it may make (its request budget)."""

    records: int = Field(ge=1)
    after: str | None = Field(default=None, description="stage key or label the records must survive; default the last")
    per_leaf: Literal["proportional"] | LeafQuota | None = None
    round: int = Field(default=64, ge=1, description="draws per round (or a sixteenth of the draws so far, if more): "
                                                     "the weights change between rounds")
    stall: int = Field(default=256, ge=1, description="stop after this many draws without a new surviving record")
    adaptive: bool = True
    floor: float = Field(default=0.02, ge=0, lt=1, description="the least share of a round any leaf gets")
    novelty: NoveltyParams = Field(default_factory=NoveltyParams)


class GenerateParams(StageParams):
    """`template` or `taxonomy` says what to ask; `schema`/`schema_model` asks for structured output."""

    template: str | None = None
    taxonomy: str | None = None
    taxonomy_branch: str | None = Field(default=None, description="sample only the leaves under this path")
    leaf_templates: bool = Field(default=True, description="false: use the stage's template and schema for every leaf")
    count: int | None = Field(default=None, ge=1, description="prompts to draw when the stage has no input")
    n: int = Field(default=1, ge=1, le=256)
    sampling: SamplingParams = Field(default_factory=lambda: SamplingParams(temperature=0.8, max_tokens=512))
    output: str = "text"
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    schema_model: str | None = None
    keep_input: bool = True
    leaf_field: str | None = Field(
        default=None, description="input field naming the taxonomy leaf to use; when absent the sampled leaf is written there"
    )
    max_retries: int = Field(default=2, ge=0, le=20)
    allow_truncated: bool = False
    on_failure: Literal["reject", "keep_input"] = Field(
        default="reject", description="keep_input: a failed request passes its input on with `output` null, "
                                      "the reason in meta.failure")
    target: TargetParams | None = None

    @model_validator(mode="after")
    def _one_of_each(self) -> GenerateParams:
        if not (self.template or self.taxonomy):
            raise ValueError("set `template` or `taxonomy` (or both: the template is the leaves' default)")
        if self.json_schema is not None and self.schema_model:
            raise ValueError("set `schema` or `schema_model`, not both")
        if self.target is not None and self.count is None:
            raise ValueError("`target` needs `count`: the most draws the stage may make to reach it")
        return self


def template_variables(placeholders: dict[str, Any], leaf: str, record: dict[str, Any]) -> dict[str, Any]:
    """What a generate template is rendered with: the sampled placeholders, the leaf path and the input record's
    fields (`synthgen view` renders a recorded step again from the same three)."""
    return {**placeholders, "leaf": leaf, "record": record}


@dataclass(frozen=True, slots=True)
class Job:
    """One request to make: which input, which leaf, which rendered messages, which sample."""

    parent: Record | None
    origin: str
    leaf: Leaf
    template: str
    placeholders: dict[str, Any]
    messages: list[dict[str, str]]
    sampling: dict[str, Any]
    sample: int


class Generate(LLMStage):
    """Turns each input record (or each of `count` draws) into `n` completions."""

    name = "generate"
    row_wise = True
    Params = GenerateParams
    params: GenerateParams

    def __init__(self, params: GenerateParams, ctx: StageContext) -> None:  # type: ignore[override]
        super().__init__(params, ctx)
        self.draws = range(params.count or 0)  # with `count`: the draws to make (an engine may give a worker a slice)
        self.planned_leaves: dict[int, str] = {}  # draw -> leaf, when steering chose it (see `follow`)
        self.withheld: dict[str, str] = {}  # record id -> reject reason, when steering withheld it
        if params.target is not None:
            self.row_wise = False  # type: ignore[misc]  # steering decides every draw, in one process
        if params.taxonomy:
            self.taxonomy = self.load_taxonomy(params.taxonomy, params.taxonomy_branch)
        else:
            self.taxonomy = Taxonomy.single(cast(str, params.template))  # the params' validator asks for one of the two
        self.templates, self.leaf_sampling = self.leaf_setup(self.taxonomy, params.sampling, params.template,
                                                             params.leaf_templates)
        stage_schema = self.output_schema(params.json_schema, params.schema_model)
        self.schemas = {  # a leaf's own schema (taxonomy `schema:`) wins over the stage's
            leaf.path: OutputSchema.from_inline(leaf.schema, self.taxonomy.source, f"{leaf.path}.schema")
            if leaf.schema is not None and params.leaf_templates else stage_schema
            for leaf in self.taxonomy.leaves
        }
        self.readings = {path: Reading(schema, params.output, params.max_retries, params.allow_truncated)
                         for path, schema in self.schemas.items()}

    @classmethod
    def draw_count(cls, params: StageParams) -> int | None:
        return cast(GenerateParams, params).count

    def take_draws(self, draws: range) -> None:
        self.draws = draws

    def steering(self) -> TargetParams | None:
        return self.params.target

    def follow(self, draws: int, leaves: dict[int, str], withheld: dict[str, str]) -> None:
        """Make draws 0..`draws`, draw i from leaf `leaves[i]`, and reject the records in `withheld` (id -> reason)."""
        self.draws, self.planned_leaves, self.withheld = range(draws), leaves, withheld

    def planned_requests(self, inputs: int) -> int:
        return (self.params.count or inputs or 0) * self.params.n

    def outputs(self, inputs: int) -> int:
        return self.planned_requests(inputs)

    def rendered_prompts(self, records: Iterable[Record]) -> Iterator[Prompt]:
        return ((job.leaf.path, job.messages) for job in self.jobs(records))

    def max_output_tokens(self) -> int | None:
        return self.params.sampling.max_tokens

    def jobs(self, records: Iterable[Record]) -> Iterator[Job]:
        """Every request this stage will make for `records`, rendered; needs no backend."""
        if self.params.count is not None:
            inputs: Iterable[tuple[Record | None, str, str | None]] = (
                (None, make_record_id("draw", self.ctx.key, i), self.planned_leaves.get(i)) for i in self.draws
            )
        else:
            inputs = ((record, record.id, None) for record in records)
        for parent, origin, planned in inputs:
            rng = self.seeded(origin)
            leaf, placeholders = self.taxonomy.sample(rng, planned) if planned else self._sample(rng, parent)
            template = self.templates[leaf.path]
            variables = template_variables(placeholders, leaf.path, parent.fields if parent else {})
            try:
                messages = self.prompts.render(template, variables)
            except TemplateError as exc:
                where = f" (input {parent.meta.get('source')}:{parent.meta.get('line')})" if parent else ""
                raise TemplateError(template, exc.message + where) from None
            for sample in range(self.params.n):
                yield Job(parent, origin, leaf, template, placeholders, messages, self.leaf_sampling[leaf.path], sample)

    def _sample(self, rng: random.Random, parent: Record | None) -> tuple[Leaf, dict[str, Any]]:
        wanted = parent.fields.get(self.params.leaf_field) if parent and self.params.leaf_field else None
        try:
            return self.taxonomy.sample(rng, wanted)
        except KeyError:  # only a `leaf_field` value of an input record can name no leaf
            parent = cast(Record, parent)
            where = f"{parent.meta.get('source')}:{parent.meta.get('line')}" if "source" in parent.meta else f"record {parent.id}"
            raise InputError(where, None, f"field {self.params.leaf_field}={wanted!r} names no leaf of {self.taxonomy.source}; "
                                          f"leaves: {[leaf.path for leaf in self.taxonomy.leaves]}") from None

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        for record in super().run(records):
            reason = self.withheld.get(record.id)
            if reason is None:
                yield record
            else:
                self.ctx.reject(record, reason, "withheld by the target's steering")

    def asks(self, records: Iterable[Record]) -> Iterator[tuple[Job, Ask]]:
        for job in self.jobs(records):
            seed_parts = (self.ctx.seed, self.ctx.key, job.origin)
            yield job, Ask(job.template, job.messages, job.sampling, seed_parts, self.readings[job.leaf.path], job.sample)

    def build(self, job: Job, answer: Answer) -> Record:
        step = self.provenance(answer, leaf=job.leaf.path, placeholders=job.placeholders)
        base = dict(job.parent.fields) if job.parent and self.params.keep_input else {}
        if self.params.leaf_field:
            base[self.params.leaf_field] = job.leaf.path
        meta = dict(job.parent.meta) if job.parent else {}
        meta["parents"] = self._parents(job)
        meta["steps"] = [*meta.get("steps", []), step]
        return Record(self._record_id(job), {**base, **answer.fields}, meta)

    def kept_on_failure(self, job: Job, failure: Failure) -> Record | None:
        if self.params.on_failure != "keep_input" or job.parent is None:
            return None
        failed = {"stage": self.ctx.label, "reason": failure.reason, "detail": failure.detail}
        meta = {**job.parent.meta, "parents": self._parents(job), "failure": failed,
                "steps": [*job.parent.meta.get("steps", []), self.provenance(failure, leaf=job.leaf.path)]}
        return Record(self._record_id(job), {**job.parent.fields, self.params.output: None}, meta)

    def rejected(self, job: Job, failure: Failure) -> Record:
        fields = dict(job.parent.fields) if job.parent else {}
        return Record(self._record_id(job), fields,
                      {"parents": self._parents(job), "leaf": job.leaf.path, "attempt": failure.request.attempt})

    def _record_id(self, job: Job) -> str:
        return make_record_id(job.origin, self.ctx.key, job.sample)

    @staticmethod
    def _parents(job: Job) -> list[str]:
        return [job.parent.id] if job.parent else []
