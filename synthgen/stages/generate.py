"""The generate stage: sample taxonomy leaves, render prompts, call the backend, keep completions with provenance.

Requests stream through `Runtime.stream`'s sliding window: they finish in any order and a slow one never holds
back those behind it, while records come out in input order, so a resumed run writes the same dataset.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any, cast

from pydantic import Field, model_validator

from synthgen.errors import ConfigError, InputError, RetryableBackendError, TemplateError
from synthgen.hashing import stable_int
from synthgen.prompts import PromptLibrary
from synthgen.record import Record, make_record_id
from synthgen.runtime import Runtime
from synthgen.stages.base import Stage, StageContext, StageParams, register
from synthgen.taxonomy import Leaf, Taxonomy
from synthgen.validation import InvalidOutput, OutputSchema


class SamplingParams(StageParams):
    """Sampling parameters sent with each request; `extra` passes server-specific ones through as-is."""

    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    stop: list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

    def to_body(self) -> dict[str, Any]:
        """The non-empty parameters as request-body keys."""
        body = self.model_dump(exclude_none=True, exclude={"extra"})
        return {**body, **self.extra}


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

    @model_validator(mode="after")
    def _one_of_each(self) -> GenerateParams:
        if not (self.template or self.taxonomy):
            raise ValueError("set `template` or `taxonomy` (or both: the template is the leaves' default)")
        if self.json_schema is not None and self.schema_model:
            raise ValueError("set `schema` or `schema_model`, not both")
        return self


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


@dataclass(frozen=True, slots=True)
class Rejection:
    """A job that produced no usable completion."""

    job: Job
    reason: str
    detail: str
    raw: str | None


@register
class Generate(Stage):
    """Turns each input record (or each of `count` draws) into `n` completions."""

    name = "generate"
    row_wise = True
    Params = GenerateParams
    params: GenerateParams

    def __init__(self, params: GenerateParams, ctx: StageContext) -> None:  # type: ignore[override]
        super().__init__(params, ctx)
        self.draws = range(params.count or 0)  # with `count`: the draws to make (an engine may give a worker a slice)
        source = str(ctx.recipe_path)
        field = f"stages[{ctx.index}].generate"
        self.prompts = PromptLibrary(ctx.prompts_dir)
        if params.taxonomy:
            self.taxonomy = Taxonomy.load(ctx.resolve(params.taxonomy))
            if params.taxonomy_branch:
                try:
                    self.taxonomy = self.taxonomy.branch(params.taxonomy_branch)
                except KeyError:
                    raise ConfigError(source, f"{field}.taxonomy_branch",
                                      f"no leaves under {params.taxonomy_branch!r} in {params.taxonomy}") from None
        else:
            self.taxonomy = Taxonomy.single(cast(str, params.template))  # the params' validator asks for one of the two
        self.leaf_sampling, self.templates = {}, {}
        for leaf in self.taxonomy.leaves:
            template = (leaf.template if params.leaf_templates else None) or params.template
            if template is None:
                raise ConfigError(self.taxonomy.source, leaf.path, "leaf has no template and the stage sets none")
            self.templates[leaf.path] = template
            self.prompts.variables(template)  # fails early on a missing template or a syntax error
            try:
                merged = SamplingParams.model_validate({**params.sampling.model_dump(exclude_none=True), **leaf.sampling})
            except ValueError as exc:
                raise ConfigError(self.taxonomy.source, f"{leaf.path}.sampling", str(exc)) from None
            self.leaf_sampling[leaf.path] = merged.to_body()
        stage_schema: OutputSchema | None = None
        if params.json_schema is not None:
            stage_schema = OutputSchema.from_inline(params.json_schema, source, f"{field}.schema")
        elif params.schema_model:
            stage_schema = OutputSchema.from_model(params.schema_model, source, f"{field}.schema_model")
        self.schemas = {  # a leaf's own schema (taxonomy `schema:`) wins over the stage's
            leaf.path: OutputSchema.from_inline(leaf.schema, self.taxonomy.source, f"{leaf.path}.schema")
            if leaf.schema is not None and params.leaf_templates else stage_schema
            for leaf in self.taxonomy.leaves
        }

    def jobs(self, records: Iterable[Record]) -> Iterator[Job]:
        """Every request this stage will make for `records`, rendered; needs no backend."""
        if self.params.count is not None:
            inputs: Iterable[tuple[Record | None, str]] = (
                (None, make_record_id("draw", self.ctx.key, i)) for i in self.draws
            )
        else:
            inputs = ((record, record.id) for record in records)
        for parent, origin in inputs:
            rng = random.Random(stable_int(self.ctx.seed, self.ctx.key, origin))
            leaf, placeholders = self._sample(rng, parent)
            template = self.templates[leaf.path]
            variables = {**placeholders, "leaf": leaf.path, "record": parent.fields if parent else {}}
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
        runtime: Runtime = self.ctx.runtime
        work = (self._produce(job, runtime) for job in self.jobs(records))
        with closing(runtime.stream(work, self.ctx.stats)) as outcomes:  # closed: unfinished requests are cancelled
            for outcome in outcomes:
                yield from self._emit(outcome)

    def _emit(self, outcome: Record | Rejection) -> Iterator[Record]:
        if isinstance(outcome, Record):
            yield outcome
            return
        job = outcome.job
        fields = dict(job.parent.fields) if job.parent else {}
        rejected = Record(self._record_id(job), fields, {"parents": self._parents(job), "leaf": job.leaf.path})
        detail = outcome.detail if outcome.raw is None else f"{outcome.detail}; raw: {outcome.raw}"
        self.ctx.reject(rejected, outcome.reason, detail)

    async def _produce(self, job: Job, runtime: Runtime) -> Record | Rejection:
        output_schema = self.schemas[job.leaf.path]
        schema = output_schema.schema if output_schema else None
        failure: Rejection | None = None
        for attempt in range(self.params.max_retries + 1):
            self.ctx.stats.reasks += attempt > 0
            request = runtime.request(job.messages, job.sampling, (self.ctx.seed, self.ctx.key, job.origin), schema,
                                      job.sample, attempt)
            try:
                completion = await runtime.backend.complete(request)
            except RetryableBackendError as exc:
                return Rejection(job, f"backend_{exc.cause}", str(exc), None)
            if completion.finish_reason == "length" and not self.params.allow_truncated:
                failure = Rejection(job, "truncated", "finish_reason=length", completion.text)
                continue
            if not completion.text.strip():  # a server that answers nothing: never an empty record
                failure = Rejection(job, "empty_output", f"finish_reason={completion.finish_reason}", completion.text)
                continue
            try:
                fields = output_schema.parse(completion.text) if output_schema else {self.params.output: completion.text}
            except InvalidOutput as exc:
                failure = Rejection(job, exc.reason, exc.detail, completion.text)
                continue
            step = {
                "stage": self.ctx.label, "template": job.template, "leaf": job.leaf.path,
                "placeholders": job.placeholders, "backend": runtime.backend_kind, "model": runtime.model,
                "sampling": request.params, "sample": job.sample, "attempt": attempt, "request": request.key(),
                "finish_reason": completion.finish_reason,
                "usage": {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens},
            }
            base = dict(job.parent.fields) if job.parent and self.params.keep_input else {}
            if self.params.leaf_field:
                base[self.params.leaf_field] = job.leaf.path
            meta = dict(job.parent.meta) if job.parent else {}
            meta["parents"] = self._parents(job)
            meta["steps"] = [*meta.get("steps", []), step]
            return Record(self._record_id(job), {**base, **fields}, meta)
        return cast(Rejection, failure)  # every attempt (at least one) either returned or set `failure`

    def _record_id(self, job: Job) -> str:
        return make_record_id(job.origin, self.ctx.key, job.sample)

    @staticmethod
    def _parents(job: Job) -> list[str]:
        return [job.parent.id] if job.parent else []
