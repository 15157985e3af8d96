"""Heuristic quality filters: cheap rules (no model call) that drop what a small model's output is known to get
wrong, each drop with a named reason in rejects.jsonl. One small stage per rule family, as datatrove and NeMo
Curator do, so a recipe lists the rules it applies and the funnel counts each one apart. Every default threshold
says where it comes from; `bench/quality_filters.py` measures each rule's precision and recall on 300+ records of
the packaged SmolLM2 model.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import ClassVar

from pydantic import Field

from synthgen.fields import stage_fields
from synthgen.record import Record
from synthgen.stages.base import Filter, StageParams
from synthgen.text_stats import (
    containment,
    find_placeholder,
    language,
    non_alpha_share,
    repetition,
    without_code,
    words,
)


class FieldsParams(StageParams):
    """The string fields the rule looks at (a name no record has is an error at the end of the input)."""

    fields: list[str] = Field(min_length=1)


class TextFilter(Filter):
    """A filter over the text of its parameters' field names; missing or non-string values are skipped."""

    field_params: ClassVar[tuple[str, ...]] = ("fields",)

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        return super().run(stage_fields(records, self, *self.field_params))

    def texts(self, record: Record, names: list[str]) -> Iterator[str]:
        for name in names:
            value = record.fields.get(name)
            if isinstance(value, str) and value.strip():
                yield value


class PlaceholderFilter(TextFilter):
    """Drops (`placeholder`) records holding a template slot that was never filled: `{{ x }}`, `{field}`, or one
    the model invented (`<the task>`, `[instruction_type]`, `[Your Name]`)."""

    name = "placeholder_filter"
    Params = FieldsParams
    params: FieldsParams

    def keep(self, record: Record) -> str | None:
        return "placeholder" if any(find_placeholder(text) for text in self.texts(record, self.params.fields)) else None


# Openings of refusals and of chat preambles that answer the assistant's role instead of the task (the phrases
# that the issue lists and that the SmolLM2 bench records show); matched at the start of the text, case-insensitive.
REFUSALS = (r"i'?m sorry,? but", r"i am sorry,? but", r"i apologi[sz]e", r"i (?:can ?not|can'?t|am unable to|'?m unable to)",
            r"as an ai\b", r"as a (?:large )?language model", r"i'?m (?:just )?an ai\b", r"i do not have (?:access|the ability)")
PREAMBLES = (r"(?:sure|certainly|of course|absolutely|great)[!,.]? (?:here|i(?:'d| would) be)",
             r"i'?m (?:ready|here|happy|glad) to (?:assist|help)", r"i am (?:ready|here|happy|glad) to (?:assist|help)",
             r"(?:hello|hi)[!,.]? (?:i'?m|how can i)", r"how can i (?:assist|help) you")


class RefusalParams(FieldsParams):
    preambles: bool = Field(default=True, description="also drop chat preambles ('Sure! Here is', 'I'm ready to assist')")


class RefusalFilter(TextFilter):
    """Drops refusals (`refusal`: "I'm sorry, but", "As an AI") and assistant preambles (`preamble`)."""

    name = "refusal_filter"
    Params = RefusalParams
    params: RefusalParams
    _refusal = re.compile(r"\s*(?:" + "|".join(REFUSALS) + ")", re.IGNORECASE)
    _preamble = re.compile(r"\s*(?:" + "|".join(PREAMBLES) + ")", re.IGNORECASE)

    def keep(self, record: Record) -> str | None:
        for text in self.texts(record, self.params.fields):
            if self._refusal.match(text):
                return "refusal"
            if self.params.preambles and self._preamble.match(text):
                return "preamble"
        return None


class RestatementParams(StageParams):
    field: str = "response"
    sources: list[str] = Field(default=["instruction", "input"], min_length=1)
    max_containment: float = Field(default=0.7, gt=0, le=1, description=(
        "drop when this share of the answer's distinct word bigrams occurs in the sources (0.7: chosen on the"
        " bench records, where a real answer to a task stays under 0.5)"))
    min_words: int = Field(default=3, ge=1, description="answers shorter than this are left to the length rules")


class RestatementFilter(TextFilter):
    """Drops (`restates_input`) answers that copy or merely restate the instruction or input."""

    name = "restatement_filter"
    Params = RestatementParams
    params: RestatementParams
    field_params = ("field", "sources")

    def keep(self, record: Record) -> str | None:
        answer = record.fields.get(self.params.field)
        if not isinstance(answer, str) or len(words(answer)) < self.params.min_words:
            return None
        source = "\n".join(self.texts(record, self.params.sources))
        return "restates_input" if containment(answer, source) >= self.params.max_containment else None


class GopherParams(FieldsParams):
    """Gopher's thresholds (Rae et al. 2021, Table A1), the defaults of datatrove's GopherRepetitionFilter."""

    dup_lines: float = 0.30
    dup_paragraphs: float = 0.30
    dup_line_chars: float = 0.20
    dup_paragraph_chars: float = 0.20
    top_ngrams: dict[int, float] = Field(default={2: 0.20, 3: 0.18, 4: 0.16})
    dup_ngrams: dict[int, float] = Field(default={5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10})
    skip_code: bool = Field(default=True, description=(
        "measure the text outside fenced code blocks: Gopher's rules were set on web prose, and code repeats its"
        " names by design (on the bench records, code answers were most of the rules' wrong drops)"))


class GopherRepetitionFilter(TextFilter):
    """Drops repetitive text by the Gopher rules; the reason names the first rule broken (`gopher_dup_lines`,
    `gopher_top_2gram`, `gopher_dup_5gram`, ...)."""

    name = "gopher_repetition_filter"
    Params = GopherParams
    params: GopherParams

    def keep(self, record: Record) -> str | None:
        p = self.params
        bounds = {"dup_lines": p.dup_lines, "dup_paragraphs": p.dup_paragraphs, "dup_line_chars": p.dup_line_chars,
                  "dup_paragraph_chars": p.dup_paragraph_chars,
                  **{f"top_{n}gram": v for n, v in p.top_ngrams.items()},
                  **{f"dup_{n}gram": v for n, v in p.dup_ngrams.items()}}
        for text in self.texts(record, p.fields):
            measures = repetition(without_code(text) if p.skip_code else text, list(p.dup_ngrams), list(p.top_ngrams))
            broken = next((name for name, bound in bounds.items() if measures[name] > bound), None)
            if broken:
                return f"gopher_{broken}"
        return None


class LengthRatioParams(StageParams):
    field: str = "response"
    reference: list[str] = Field(default=["instruction", "input"], min_length=1)
    min_words: int = Field(default=1, ge=0)
    max_words: int | None = Field(default=None, ge=1)
    min_ratio: float | None = Field(default=None, ge=0, description="answer words / reference words, at least")
    max_ratio: float | None = Field(default=None, gt=0, description="answer words / reference words, at most")


class LengthRatioFilter(TextFilter):
    """Bounds on the answer's word count (`too_few_words`, `too_many_words`) and on its length relative to the
    instruction and input (`length_ratio_low`, `length_ratio_high`)."""

    name = "length_ratio_filter"
    Params = LengthRatioParams
    params: LengthRatioParams
    field_params = ("field", "reference")

    def keep(self, record: Record) -> str | None:
        p = self.params
        value = record.fields.get(p.field)
        count = len(words(value)) if isinstance(value, str) else 0
        if count < p.min_words:
            return "too_few_words"
        if p.max_words is not None and count > p.max_words:
            return "too_many_words"
        reference = sum(len(words(text)) for text in self.texts(record, p.reference)) or 1
        if p.min_ratio is not None and count / reference < p.min_ratio:
            return "length_ratio_low"
        if p.max_ratio is not None and count / reference > p.max_ratio:
            return "length_ratio_high"
        return None


class NonAlphaParams(FieldsParams):
    max_share: float = Field(default=0.25, gt=0, le=1, description=(
        "largest share of punctuation and symbols (neither letter nor digit) among a text's non-space characters:"
        " 0.25, NeMo Curator's NonAlphaNumericFilter bound (which also counts spaces, so it is stricter on prose)"))


class NonAlphaFilter(TextFilter):
    """Drops (`non_alpha`) text made largely of punctuation and symbols (tables, markup debris, emoji runs)."""

    name = "non_alpha_filter"
    Params = NonAlphaParams
    params: NonAlphaParams

    def keep(self, record: Record) -> str | None:
        shares = (non_alpha_share(text) for text in self.texts(record, self.params.fields))
        return "non_alpha" if any(share > self.params.max_share for share in shares) else None


class LanguageParams(FieldsParams):
    languages: list[str] = Field(default=["en"], min_length=1, description="ISO 639-1 codes to keep")
    min_confidence: float = Field(default=0.65, ge=0, le=1, description=(
        "least probability of a kept language (0.65: FineWeb's and datatrove's LanguageFilter threshold)"))


class LanguageFilter(TextFilter):
    """Drops (`language`) records whose fields, joined, are not confidently in one of `languages`; the model is
    py3langid's, shipped in its wheel (no download, ~20,000 texts/s)."""

    name = "language_filter"
    Params = LanguageParams
    params: LanguageParams

    def keep(self, record: Record) -> str | None:
        text = "\n".join(self.texts(record, self.params.fields))
        if not text:
            return None
        code, probability = language(text)
        return None if code in self.params.languages and probability >= self.params.min_confidence else "language"
