"""Grounding check without an LLM: a generated answer must rest on a quote that is really in its source passage.

Each record carries `question`, `answer` and `quote` (generated) and `contexts` / `source_ids` / `source_starts`
(from `chunk_questions`). The checks run in order; the first that fails names the reject reason:

- `not_a_question`: the question does not end with "?" or itself says "the passage does not say" (small models
  echo the instructions or the refusal into the question field);
- `empty_quote`, `quote_too_short` (fewer than `min_quote_words` words: two words occur anywhere);
- `quote_not_in_source`: the best fuzzy alignment of the quote in any of the passages (rapidfuzz
  `partial_ratio_alignment` on case- and whitespace-folded text, 0-100) scores under `min_quote_score`. 90 lets a
  changed character or a dropped comma through, not a paraphrase. A kept record gets `quote_span`: the passage's
  id and the matched character span in the passage and, where the passage's start is known, in the document;
- `answer_refuses`: an answerable question answered "the passage does not say";
- `answer_unsupported` / `answer_copies_quote`: the cosine (sentence embeddings, default MiniLM) between answer
  and quote outside [`min_support`, `max_support`]. Below the band the answer talks about something else than
  its evidence; above it (off by default) it only repeats the quote.

A kind in `unanswerable_kinds` (negatives: the passage does not answer the question) passes only with an empty
quote (`unanswerable_with_quote`) and an answer saying the passage does not give it (`unanswerable_not_refused`).
The scores go to meta.scores.grounding_quote and meta.scores.grounding_support.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from pydantic import Field, model_validator
from rapidfuzz import fuzz

from synthgen.embedding.encoder import DEFAULT_MODEL, Encoder
from synthgen.fields import stage_fields
from synthgen.record import Record
from synthgen.stages.base import Stage, StageParams

# How answers say that the passage does not hold the answer (the refusal a RAG model should give).
NOT_IN_CONTEXT = re.compile(
    r"\b(?:(?:does|do|did|is|are|was) ?n[o']t (?:\w+ )?(?:mention|say|state|specify|provide|give|contain|include|"
    r"discuss|cover|address|describe|explain|indicate|answer|mentioned|stated|specified|provided|given|"
    r"included|discussed|covered|addressed|described|explained)|"
    r"no (?:information|mention|details?|indication|data)\b|not (?:enough|sufficient) information|"
    r"cannot be (?:answered|determined)|can'?t be (?:answered|determined)|(?:is|are) unknown|"
    r"not possible to (?:tell|say|determine)|(?:does|do) not (?:have|hold) (?:the |this |that |any )?(?:information|answer))",
    re.IGNORECASE,
)


def says_not_in_context(answer: str) -> bool:
    """Whether `answer` says the passage does not give the answer."""
    return NOT_IN_CONTEXT.search(answer) is not None


def _fold(text: str) -> str:
    """Lower case, every whitespace a space: offsets stay those of `text` (unless lower-casing changes a length)."""
    folded = re.sub(r"\s", " ", text.lower())
    return folded if len(folded) == len(text) else text


def locate_quote(quote: str, passages: list[str]) -> tuple[float, int, int, int]:
    """(score 0-100, passage index, start, end): the quote's best fuzzy alignment among `passages` (index -1: none)."""
    best = (0.0, -1, 0, 0)
    needle = _fold(quote.strip())
    for index, passage in enumerate(passages):
        if len(needle) > len(passage):  # more than the passage holds: not a quote of it
            continue
        found = fuzz.partial_ratio_alignment(needle, _fold(passage))
        if found is not None and found.score > best[0]:
            start, end = found.dest_start, found.dest_end
            start += len(passage[start:end]) - len(passage[start:end].lstrip())  # the span without outer spaces
            best = (found.score, index, start, start + len(passage[start:end].strip()))
    return best


class GroundingParams(StageParams):
    """The record's field names, the quote's match threshold and the answer-quote cosine band."""

    question_field: str = "question"
    answer_field: str = "answer"
    quote_field: str = "quote"
    kind_field: str = "kind"
    unanswerable_kinds: list[str] = Field(default_factory=lambda: ["unanswerable"])
    min_quote_words: int = Field(default=3, ge=1)
    min_quote_score: float = Field(default=90, ge=0, le=100)
    min_support: float = Field(default=0.35, ge=-1, le=1)
    max_support: float = Field(default=1.0, ge=-1, le=1)
    model: str = DEFAULT_MODEL
    batch_size: int = Field(default=256, ge=1)

    @model_validator(mode="after")
    def _band(self) -> GroundingParams:
        if self.max_support < self.min_support:
            raise ValueError(f"max_support {self.max_support} < min_support {self.min_support}: the band is empty")
        return self


class GroundingCheck(Stage):
    """Keeps a Q&A record only when its quote is in its passage and supports its answer (module docstring)."""

    name = "grounding_check"
    Params = GroundingParams
    params: GroundingParams

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        encoder = self.ctx.encoder(self.params.model)
        batch: list[Record] = []
        for record in stage_fields(records, self, "question_field", "answer_field", "quote_field", "kind_field"):
            batch.append(record)
            if len(batch) == self.params.batch_size:
                yield from self._check(batch, encoder)
                batch = []
        yield from self._check(batch, encoder)

    def _check(self, batch: list[Record], encoder: Encoder) -> Iterator[Record]:
        """Text checks per record, one embedding pass over the located quotes, then the records in input order."""
        p = self.params
        outcomes = [self._text_failure(r, *(str(r.fields.get(f) or "") for f in (p.answer_field, p.quote_field)))
                    for r in batch]
        located = [i for i, outcome in enumerate(outcomes) if isinstance(outcome, dict)]
        cosines: dict[int, float] = {}
        if located:
            answers = encoder.encode([str(batch[i].fields[p.answer_field]) for i in located])
            quotes = encoder.encode([str(batch[i].fields[p.quote_field]) for i in located])
            cosines = dict(zip(located, map(float, np.sum(answers * quotes, axis=1)), strict=True))
        for i, (record, outcome) in enumerate(zip(batch, outcomes, strict=True)):
            if outcome is None:
                yield record
            elif isinstance(outcome, tuple):
                self.ctx.reject(record, *outcome)
            else:
                yield from self._supported(record, outcome, cosines[i])

    def _supported(self, record: Record, span: dict[str, Any], cosine: float) -> Iterator[Record]:
        """`record` with its quote span and scores, if the answer-quote cosine is inside the band."""
        p = self.params
        scores = {**record.meta.get("scores", {}), "grounding_quote": round(span.pop("score"), 2),
                  "grounding_support": round(cosine, 4)}
        checked = Record(record.id, {**record.fields, "quote_span": span}, {**record.meta, "scores": scores})
        if cosine < p.min_support:
            self.ctx.reject(checked, "answer_unsupported", f"answer-quote cosine {cosine:.3f} < {p.min_support}")
        elif cosine > p.max_support:
            self.ctx.reject(checked, "answer_copies_quote", f"answer-quote cosine {cosine:.3f} > {p.max_support}")
        else:
            yield checked

    def _text_failure(self, record: Record, answer: str, quote: str) -> tuple[str, str] | dict[str, Any] | None:
        """(reason, detail) of the first failed text check; else the quote's span (with its `score`) for the
        embedding check, or None for a passing unanswerable question."""
        p = self.params
        question = str(record.fields.get(p.question_field) or "").strip()
        if not question.endswith("?") or says_not_in_context(question):
            return "not_a_question", f"question {question[:80]!r} is no question"
        if record.fields.get(p.kind_field) in p.unanswerable_kinds:
            if quote.strip():
                return "unanswerable_with_quote", f"quote {quote[:80]!r} for an unanswerable question"
            if not says_not_in_context(answer):
                return "unanswerable_not_refused", f"answer {answer[:80]!r} does not say the passage lacks it"
            return None
        if not quote.strip():
            return "empty_quote", "no supporting quote for an answerable question"
        if len(quote.split()) < p.min_quote_words:
            return "quote_too_short", f"quote {quote!r} has fewer than {p.min_quote_words} words"
        passages = [str(text) for text in record.fields.get("contexts") or []]
        score, index, start, end = locate_quote(quote, passages)
        if score < p.min_quote_score:
            return "quote_not_in_source", f"best match {score:.1f} < {p.min_quote_score} for {quote[:80]!r}"
        if says_not_in_context(answer):
            return "answer_refuses", f"answer {answer[:80]!r} says the passage lacks it"
        ids, starts = record.fields.get("source_ids") or [], record.fields.get("source_starts") or []
        offset = starts[index] if index < len(starts) else None
        span: dict[str, Any] = {"source_id": ids[index] if index < len(ids) else None, "start": start, "end": end,
                                "score": score}
        if isinstance(offset, int):
            span.update(doc_start=offset + start, doc_end=offset + end)
        return span
