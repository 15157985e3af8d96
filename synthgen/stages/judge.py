"""The judge stage: a model grades each record, by a rubric or by comparing two answers (an LLM stage).

Rubric mode (`mode: rubric`) shows the record's `field` (with its `context_fields`) and asks, as JSON-schema
output built from `criteria`, for a short `justification` then an integer per criterion on `scale`. It writes
    meta.scores[<name>] = {<criterion>: int, ..., "mean": float}
    meta.judge[<name>]  = {"model": str, "backend": str, "justification": str}
(`name` defaults to the stage key, so two judges never overwrite each other) and keeps a record whose mean
reaches `threshold` and whose every criterion reaches its `min_scores` entry; any other goes to rejects as
`judge_below_threshold` with its scores as detail. `stats.metrics[<label>].scores` holds each criterion's
min / mean / max and histogram over every judged record (the card shows them).

Pairwise mode (`mode: pairwise`) shows `chosen_field` and `rejected_field` as answers A and B, then again with
the order swapped: position bias is the judges' best-known failure, so only a verdict both orders agree on
counts. Disagreeing verdicts reject the record as `judge_inconsistent`, a consistent preference for the rejected
answer as `judge_prefers_rejected`; a kept record gets meta.scores[<name>] = {"preference": 1.0, "mean": 1.0}
and meta.judge[<name>] with both justifications. `stats.metrics[<label>]` holds `pairs` and `inconsistency_rate`.

A record lacking a field the judge reads is rejected as `missing_field`; a judge with no usable answer (invalid
JSON after `max_retries`, a failed request) rejects it with the LLM stage's reason. `backend` names one of the
recipe's `backends:` (e.g. a bigger model than the generator's); by default the main backend judges.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from statistics import fmean
from typing import Any, Literal, cast

import orjson
from pydantic import Field, model_validator

from synthgen.record import Record
from synthgen.runtime import Runtime
from synthgen.sampling import SamplingParams
from synthgen.stages.base import StageContext, StageParams
from synthgen.stages.llm import Answer, Ask, Failure, LLMStage, Reading
from synthgen.validation import OutputSchema

DEFAULT_CRITERIA = {  # after the usual rubric of instruction-tuning judges (UltraFeedback, Prometheus)
    "helpfulness": "the answer does what the request asks, completely and directly",
    "accuracy": "what it states is correct and it invents nothing",
    "clarity": "it is well written, without placeholders, filler, refusals or repetition",
}


class JudgeParams(StageParams):
    """`criteria` and `scale` make the rubric; `threshold`/`min_scores` decide what is kept."""

    mode: Literal["rubric", "pairwise"] = "rubric"
    name: str | None = Field(default=None, description="key of meta.scores and meta.judge; default: the stage key")
    backend: str | None = Field(default=None, description="one of the recipe's `backends:`; default: the main backend")
    template: str | None = Field(default=None, description="default: judge/rubric.j2 or judge/pairwise.j2")
    criteria: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_CRITERIA), min_length=1)
    scale: tuple[int, int] = Field(default=(1, 5), description="lowest and highest score")
    field: str = Field(default="response", description="the answer a rubric grades")
    context_fields: list[str] = Field(default_factory=list, description="fields shown as the request answered")
    chosen_field: str | None = None
    rejected_field: str | None = None
    threshold: float | None = Field(default=None, description="lowest mean score kept (None: keep every judged record)")
    min_scores: dict[str, float] = Field(default_factory=dict, description="lowest score kept, per criterion")
    sampling: SamplingParams = Field(default_factory=lambda: SamplingParams(temperature=0.0, max_tokens=256))
    max_retries: int = Field(default=2, ge=0, le=20)

    @model_validator(mode="after")
    def _consistent(self) -> JudgeParams:
        low, high = self.scale
        if low >= high:
            raise ValueError(f"scale {list(self.scale)} must be [lowest, highest] with lowest < highest, e.g. [1, 5]")
        bad = [n for n in self.criteria if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n) or n in ("justification", "mean")]
        if bad:
            raise ValueError(f"criteria {bad}: use plain names (letters, digits, '_'), not 'justification' or 'mean'")
        if unknown := sorted(set(self.min_scores) - set(self.criteria)):
            raise ValueError(f"min_scores names {unknown}, which are not criteria; criteria: {sorted(self.criteria)}")
        limits = [self.threshold] if self.threshold is not None else []
        if any(not low <= value <= high for value in [*limits, *self.min_scores.values()]):
            raise ValueError(f"threshold and min_scores must lie on the scale {list(self.scale)}")
        if self.mode == "pairwise" and not (self.chosen_field and self.rejected_field):
            raise ValueError("pairwise mode needs `chosen_field` and `rejected_field` (answers A and B)")
        return self


class Judge(LLMStage):
    """Grades each record by rubric, or checks a chosen/rejected pair both ways round; see the module docstring."""

    name = "judge"
    row_wise = True
    Params = JudgeParams
    params: JudgeParams

    def __init__(self, params: JudgeParams, ctx: StageContext) -> None:  # type: ignore[override]
        super().__init__(params, ctx)
        self.template = params.template or f"judge/{params.mode}.j2"
        self.check_templates(self.template)
        self.key = params.name or ctx.key
        self.reading = Reading(OutputSchema.from_inline(self.schema(), str(ctx.recipe_path), self.field_path("criteria")),
                               max_retries=params.max_retries)
        self.scores: dict[str, Counter[int]] = {name: Counter() for name in params.criteria}
        self.pairs = self.inconsistent = 0

    @property
    def runtime(self) -> Runtime:
        return super().runtime.for_backend(self.params.backend)

    def schema(self) -> dict[str, Any]:
        """The JSON schema of a verdict: a justification first (reasons before scores), then the scores or winner."""
        low, high = self.params.scale
        verdict: dict[str, Any] = {"winner": {"type": "string", "enum": ["A", "B"]}} if self.params.mode == "pairwise" \
            else {name: {"type": "integer", "minimum": low, "maximum": high} for name in self.params.criteria}
        properties = {"justification": {"type": "string", "maxLength": 300}, **verdict}
        return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}

    def planned_requests(self, inputs: int) -> int:
        return inputs * (2 if self.params.mode == "pairwise" else 1)

    def max_output_tokens(self) -> int | None:
        return self.params.sampling.max_tokens

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        if self.params.mode == "pairwise":
            yield from self._pairwise(records)
        else:
            yield from self._rubric(records)

    def _ask(self, record: Record, order: int, **shown: Any) -> Ask:
        context = {name: record.fields[name] for name in self.params.context_fields}
        low, high = self.params.scale
        variables = {**shown, "context": context, "criteria": self.params.criteria, "scale_min": low, "scale_max": high}
        messages = self.prompts.render(self.template, variables)
        seed_parts = (self.ctx.seed, self.ctx.key, record.id, order)
        return Ask(self.template, messages, self.params.sampling.to_body(), seed_parts, self.reading)

    def _complete_records(self, records: Iterable[Record], *needed: str) -> Iterator[Record]:
        """The records with every field the judge reads; the others go to rejects."""
        for record in records:
            missing = [name for name in (*needed, *self.params.context_fields) if name not in record.fields]
            if missing:
                self.ctx.reject(record, "missing_field", f"the judge reads {missing}, which the record lacks")
            else:
                yield record

    def _judged(self, record: Record, outcomes: list[Answer], scores: dict[str, float], judge: dict[str, Any]) -> Record:
        """`record` with the verdict in meta.scores / meta.judge and the judge's requests in meta.steps."""
        meta = dict(record.meta)
        meta["scores"] = {**meta.get("scores", {}), self.key: scores}
        runtime = self.runtime
        meta["judge"] = {**meta.get("judge", {}), self.key: {"model": runtime.model, "backend": runtime.backend_kind, **judge}}
        meta["steps"] = [*meta.get("steps", []), *(self.provenance(answer, numbered=False) for answer in outcomes)]
        return Record(record.id, record.fields, meta)

    def _failed(self, record: Record, failure: Failure) -> None:
        meta = {**record.meta, "steps": [*record.meta.get("steps", []), self.provenance(failure, numbered=False)]}
        self.reject(Record(record.id, record.fields, meta), failure)

    def _rubric(self, records: Iterable[Record]) -> Iterator[Record]:
        p = self.params
        asks = ((r, self._ask(r, 0, response=r.fields[p.field])) for r in self._complete_records(records, p.field))
        for record, outcome in self.answers(asks):
            if isinstance(outcome, Failure):
                self._failed(record, outcome)
                continue
            scores: dict[str, float] = {name: outcome.fields[name] for name in p.criteria}
            for name, value in scores.items():
                self.scores[name][int(value)] += 1
            scores["mean"] = round(fmean(scores.values()), 3)
            judged = self._judged(record, [outcome], scores, {"justification": outcome.fields["justification"]})
            low = [name for name, floor in p.min_scores.items() if scores[name] < floor]
            if (p.threshold is not None and scores["mean"] < p.threshold) or low:
                self.ctx.reject(judged, "judge_below_threshold", orjson.dumps(scores).decode())
            else:
                yield judged
        self._record_metrics()

    def _pairwise(self, records: Iterable[Record]) -> Iterator[Record]:
        p = self.params
        chosen, rejected = str(p.chosen_field), str(p.rejected_field)

        def asks() -> Iterator[tuple[Record, Ask]]:
            for r in self._complete_records(records, chosen, rejected):
                yield r, self._ask(r, 0, response_a=r.fields[chosen], response_b=r.fields[rejected])
                yield r, self._ask(r, 1, response_a=r.fields[rejected], response_b=r.fields[chosen])

        outcomes = self.answers(asks())
        for record, first in outcomes:
            _, second = next(outcomes)  # the same record's swapped ask: outcomes come in input order
            if isinstance(first, Failure) or isinstance(second, Failure):
                self._failed(record, first if isinstance(first, Failure) else cast(Failure, second))
                continue
            self.pairs += 1
            prefers_chosen = (first.fields["winner"] == "A", second.fields["winner"] == "B")
            justifications = [first.fields["justification"], second.fields["justification"]]
            judged = self._judged(record, [first, second], {"preference": 1.0, "mean": 1.0},
                                  {"justification": justifications, "winners": [first.fields["winner"], second.fields["winner"]]})
            if prefers_chosen[0] != prefers_chosen[1]:
                self.inconsistent += 1
                self.ctx.reject(judged, "judge_inconsistent", f"A/B order: {first.fields['winner']}, B/A order: "
                                f"{second.fields['winner']} (the verdict follows the position)")
            elif not prefers_chosen[0]:
                self.ctx.reject(judged, "judge_prefers_rejected", f"both orders prefer {rejected} over {chosen}")
            else:
                yield judged
        self._record_metrics()

    def _record_metrics(self) -> None:
        """The judged records' score distributions (rubric) or inconsistency rate (pairwise), in stats.metrics."""
        if self.params.mode == "pairwise":
            rate = round(self.inconsistent / self.pairs, 4) if self.pairs else None
            self.ctx.stats.metrics[self.ctx.label] = {"pairs": self.pairs, "inconsistent": self.inconsistent,
                                                      "inconsistency_rate": rate}
            return
        distributions = {}
        for name, counts in self.scores.items():
            values = list(counts.elements())
            if values:
                distributions[name] = {"min": min(values), "mean": round(fmean(values), 3), "max": max(values),
                                       "histogram": {str(score): counts[score] for score in sorted(counts)}}
        judged = sum(next(iter(self.scores.values())).values())
        self.ctx.stats.metrics[self.ctx.label] = {"judged": judged, "scores": distributions}
