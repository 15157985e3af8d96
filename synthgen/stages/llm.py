"""The LLM stage kind: one completion path for every stage that asks a model.

A stage describes each request as an `Ask` (template, rendered messages, sampling, the parts its seed derives
from, and a `Reading`: how a completion becomes an answer). `LLMStage.answers` sends asks through
`Runtime.stream` (a sliding window: requests finish in any order, results come back in input order) and turns
each into an `Answer` or a `Failure` with a named reason: `backend_<cause>` for a request that still failed
after the backend's retries, `truncated` (finish_reason length), `empty_output`, or the schema's reason
(`invalid_json`, `schema_mismatch`). A bad output is asked again with the next attempt number (so a new seed
and cache key) up to `max_retries` times, each counted in `stats.reasks`. `provenance` makes an ask's
`meta.steps` entry, `reject` writes a failure to rejects with the raw text that caused it.

The default `run` is one ask per item of `asks(records)`, each answer a record (`build`), each failure a
reject (`rejected`) unless `kept_on_failure` passes a record on in its place (generate's `on_failure:
keep_input`); stages with rounds or several steps per record override `run` and call `answers`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any, TypeVar

from synthgen.backends.base import ChatRequest, Completion
from synthgen.errors import ConfigError, RetryableBackendError
from synthgen.prompts import PromptLibrary
from synthgen.record import Record, make_record_id
from synthgen.runtime import Runtime
from synthgen.sampling import SamplingParams
from synthgen.stages.base import Stage, StageContext, StageParams
from synthgen.taxonomy import Taxonomy
from synthgen.validation import InvalidOutput, OutputSchema

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Reading:
    """How a completion becomes an answer: parsed by `schema` (else its text goes to the `output` field); a
    truncated or empty one fails unless allowed (an empty one still fails a schema); asked again up to
    `max_retries` times."""

    schema: OutputSchema | None = None
    output: str = "text"
    max_retries: int = 0
    allow_truncated: bool = False
    allow_empty: bool = False

    def parse(self, completion: Completion) -> dict[str, Any]:
        """The answer's fields; InvalidOutput names why there are none."""
        if completion.finish_reason == "length" and not self.allow_truncated:
            raise InvalidOutput("truncated", "finish_reason=length")
        if not self.allow_empty and not completion.text.strip():  # a server that answers nothing: never an empty record
            raise InvalidOutput("empty_output", f"finish_reason={completion.finish_reason}")
        return self.schema.parse(completion.text) if self.schema else {self.output: completion.text}


@dataclass(frozen=True, slots=True)
class Ask:
    """One request to make: its request's seed derives from `seed_parts`, `sample` and the attempt number."""

    template: str
    messages: list[dict[str, str]]
    sampling: dict[str, Any]
    seed_parts: tuple[Any, ...]
    reading: Reading = Reading()
    sample: int = 0


@dataclass(frozen=True, slots=True)
class Answer:
    """A usable completion of an ask: the request that got it and the fields read from it."""

    ask: Ask
    request: ChatRequest
    completion: Completion
    fields: dict[str, Any]

    @property
    def text(self) -> str:
        """The completion's raw text."""
        return self.completion.text


@dataclass(frozen=True, slots=True)
class Failure:
    """An ask with no usable completion: a named reason, its detail, the last request and (unless the backend
    failed) the completion that was refused."""

    ask: Ask
    reason: str
    detail: str
    request: ChatRequest
    completion: Completion | None = None

    @property
    def message(self) -> str:
        """The reject detail: `detail`, then the raw text refused."""
        return self.detail if self.completion is None else f"{self.detail}; raw: {self.completion.text}"


def usage(completions: Iterable[Completion]) -> dict[str, int]:
    """Token usage summed over `completions`, as recorded in provenance."""
    done = list(completions)
    return {"prompt_tokens": sum(c.prompt_tokens for c in done), "completion_tokens": sum(c.completion_tokens for c in done)}


class LLMStage(Stage):
    """A stage that asks a model; see the module docstring. Subclasses make asks; the base sends and reads them."""

    makes_requests = True

    def __init__(self, params: StageParams, ctx: StageContext) -> None:
        super().__init__(params, ctx)
        self.prompts = PromptLibrary(ctx.prompts_dir)

    @property
    def runtime(self) -> Runtime:
        """The backend services of this run."""
        if self.ctx.runtime is None:
            raise RuntimeError(f"{self.ctx.label} asks a model, but this run has no backend runtime (a dry run)")
        return self.ctx.runtime

    def field_path(self, key: str) -> str:
        """The recipe field path of this stage's parameter `key` (`stages[2].generate.schema`)."""
        return f"stages[{self.ctx.index}].{self.name}.{key}"

    def check_templates(self, *templates: str) -> None:
        """Fail early (TemplateError) on a missing template or a syntax error."""
        for template in templates:
            self.prompts.variables(template)

    def load_taxonomy(self, path: str, branch: str | None = None) -> Taxonomy:
        """The taxonomy at `path` (relative to the recipe), cut to the leaves under `branch` when given."""
        taxonomy = Taxonomy.load(self.ctx.resolve(path))
        if not branch:
            return taxonomy
        try:
            return taxonomy.branch(branch)
        except KeyError:
            raise ConfigError(str(self.ctx.recipe_path), self.field_path("taxonomy_branch"),
                              f"no leaves under {branch!r} in {path}") from None

    def leaf_setup(self, taxonomy: Taxonomy, sampling: SamplingParams, default: str | None = None,
                   leaf_templates: bool = True, missing: str = "leaf has no template and the stage sets none",
                   ) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
        """Each leaf's template (its own unless not `leaf_templates`, else `default`; checked now) and sampling
        body (`sampling` overridden by the leaf's), by leaf path; a leaf without a template is `missing`."""
        templates, bodies = {}, {}
        for leaf in taxonomy.leaves:
            template = (leaf.template if leaf_templates else None) or default
            if template is None:
                raise ConfigError(taxonomy.source, leaf.path, missing)
            self.check_templates(template)
            templates[leaf.path] = template
            bodies[leaf.path] = sampling.merged(leaf.sampling, taxonomy.source, f"{leaf.path}.sampling")
        return templates, bodies

    def output_schema(self, inline: dict[str, Any] | None, model: str | None) -> OutputSchema | None:
        """The structured output asked for by the `schema` (inline JSON Schema) or `schema_model` parameter."""
        source = str(self.ctx.recipe_path)
        if inline is not None:
            return OutputSchema.from_inline(inline, source, self.field_path("schema"))
        if model:
            return OutputSchema.from_model(model, source, self.field_path("schema_model"))
        return None

    async def complete(self, ask: Ask) -> Answer | Failure:
        """Make `ask`'s request, asking again (next attempt) on a bad output up to `max_retries` times."""
        runtime, reading = self.runtime, ask.reading
        schema = reading.schema.schema if reading.schema else None
        attempt = 0
        while True:
            self.ctx.stats.reasks += attempt > 0
            request = runtime.request(ask.messages, ask.sampling, ask.seed_parts, schema, ask.sample, attempt)
            try:
                completion = await runtime.backend.complete(request)
            except RetryableBackendError as exc:
                return Failure(ask, f"backend_{exc.cause}", str(exc), request)
            try:
                return Answer(ask, request, completion, reading.parse(completion))
            except InvalidOutput as exc:
                if attempt >= reading.max_retries:
                    return Failure(ask, exc.reason, exc.detail, request, completion)
            attempt += 1

    def answers(self, asks: Iterable[tuple[T, Ask]]) -> Iterator[tuple[T, Answer | Failure]]:
        """Each item of `asks` with its ask's outcome, in input order, the requests running in the runtime's window
        (closing this iterator cancels the unfinished ones)."""

        async def one(item: T, ask: Ask) -> tuple[T, Answer | Failure]:
            return item, await self.complete(ask)

        with closing(self.runtime.stream((one(item, ask) for item, ask in asks), self.ctx.stats)) as outcomes:
            yield from outcomes

    def provenance(self, outcome: Answer | Failure, numbered: bool = True, **context: Any) -> dict[str, Any]:
        """The `meta.steps` entry of an ask: stage, template, `context`, backend, model, sampling, its sample and
        attempt numbers (when `numbered`), request key, then finish_reason and token usage if a completion came."""
        runtime, request = self.runtime, outcome.request
        step = {"stage": self.ctx.label, "template": outcome.ask.template, **context, "backend": runtime.backend_kind,
                "model": runtime.model, "sampling": request.params}
        if numbered:
            step.update(sample=request.sample, attempt=request.attempt)
        step["request"] = request.key()
        if outcome.completion is not None:
            step.update(finish_reason=outcome.completion.finish_reason, usage=usage([outcome.completion]))
        return step

    def reject(self, record: Record, failure: Failure) -> None:
        """Send `record` to rejects with the failure's reason and detail."""
        self.ctx.reject(record, failure.reason, failure.message)

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        for item, outcome in self.answers(self.asks(records)):
            if isinstance(outcome, Answer):
                yield self.build(item, outcome)
            elif (kept := self.kept_on_failure(item, outcome)) is not None:
                yield kept
            else:
                self.reject(self.rejected(item, outcome), outcome)

    def asks(self, records: Iterable[Record]) -> Iterator[tuple[Any, Ask]]:
        """What the default `run` asks: (item, ask) pairs, by default an input record each; a stage that overrides
        `run` need not implement it."""
        raise NotImplementedError(f"{type(self).__name__} implements neither `run` nor `asks`")

    def build(self, item: Any, answer: Answer) -> Record:
        """The record made of an answer: by default the input record's fields plus the answer's, and its provenance."""
        record: Record = item
        meta = {**record.meta, "parents": [record.id], "steps": [*record.meta.get("steps", []), self.provenance(answer)]}
        return Record(make_record_id(record.id, self.ctx.key, answer.ask.sample), {**record.fields, **answer.fields}, meta)

    def kept_on_failure(self, item: Any, failure: Failure) -> Record | None:
        """The record passed on in place of a failed ask's (the default `run` rejects the failure when None)."""
        return None

    def rejected(self, item: Any, failure: Failure) -> Record:
        """The record rejects.jsonl gets for a failure: by default the input's fields and the failed step."""
        record: Record = item
        meta = {"parents": [record.id], "steps": [self.provenance(failure)]}
        return Record(make_record_id(record.id, self.ctx.key, failure.ask.sample), dict(record.fields), meta)
