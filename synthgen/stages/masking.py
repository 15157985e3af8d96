"""Rule-based variation without a model: PII masking with typed placeholders, numeric and date perturbation,
and token masking for infilling data. Each stage is seeded by the run seed and the record id.

Names of people and places are not masked: that needs an NER model, and none is packaged; only the
patterns below are (emails, URLs, IPv4 addresses, Luhn-valid card numbers, phone numbers).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import date, timedelta
from typing import Literal

from pydantic import Field

from synthgen.record import Record
from synthgen.stages.base import MapStage, StageParams

PiiKind = Literal["email", "url", "ip", "card", "phone"]
PATTERNS: dict[str, re.Pattern[str]] = {  # applied in this order: a URL's digits are never read as a phone number
    "email": re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"),
    "url": re.compile(r"\b(?:https?://|www\.)[^\s<>\"']*[^\s<>\"'.,;:!?)]"),  # trailing punctuation stays text
    "ip": re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b"),
    "card": re.compile(r"\b\d(?:[ -]?\d){12,18}\b"),
    "phone": re.compile(r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]?\d{2,4}){1,3}(?!\w)"),
}
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_NUMBER_OR_DATE = re.compile(r"(?P<date>\b\d{4}-\d{2}-\d{2}\b)|(?<![\w.])(?P<number>-?\d+(?:\.\d+)?)(?![\w.]|\.\d)")


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum every payment card number satisfies."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def _phone_like(text: str, digits: str) -> bool:
    """7 to 15 digits (E.164's limit) and not an ISO date."""
    return 7 <= len(digits) <= 15 and not _ISO_DATE.fullmatch(text)


def mask_pii(text: str, kinds: Iterable[str] = tuple(PATTERNS)) -> tuple[str, Counter[str]]:
    """`text` with each match replaced by its typed placeholder ([EMAIL], [PHONE], ...), and counts per kind."""
    counts: Counter[str] = Counter()
    for kind in PATTERNS:
        if kind not in kinds:
            continue

        def replace(match: re.Match[str], kind: str = kind) -> str:
            digits = re.sub(r"\D", "", match.group(0))
            if kind == "card" and not luhn_valid(digits) or kind == "phone" and not _phone_like(match.group(0), digits):
                return match.group(0)
            counts[kind] += 1
            return f"[{kind.upper()}]"

        text = PATTERNS[kind].sub(replace, text)
    return text, counts


class MaskParams(StageParams):
    """Which fields to mask and which kinds of PII."""

    fields: list[str] = Field(default_factory=lambda: ["text"], min_length=1)
    kinds: list[PiiKind] = Field(default_factory=lambda: list(PATTERNS))  # type: ignore[arg-type]


class MaskPii(MapStage):
    """Replaces PII by typed placeholders in place; `meta.masked` counts what was replaced."""

    name = "mask_pii"
    Params = MaskParams
    params: MaskParams

    def map(self, record: Record) -> Iterator[Record]:
        fields, total = dict(record.fields), Counter[str]()
        for name in self.params.fields:
            if isinstance(fields.get(name), str):
                fields[name], counts = mask_pii(fields[name], self.params.kinds)
                total.update(counts)
        yield Record(record.id, fields, {**record.meta, "masked": dict(total)})


def perturb_numbers(text: str, rng: random.Random, relative: float, days: int, rate: float) -> str:
    """Numbers moved by up to +-`relative` of their value (same decimals), ISO dates by up to +-`days`;
    each with probability `rate`."""

    def replace(match: re.Match[str]) -> str:
        if rng.random() >= rate:
            return match.group(0)
        if match.group("date"):
            try:
                day = date.fromisoformat(match.group("date"))
            except ValueError:
                return match.group(0)
            return (day + timedelta(days=rng.randint(-days, days))).isoformat()
        raw = match.group("number")
        decimals = len(raw.split(".")[1]) if "." in raw else 0
        value = float(raw) * (1 + rng.uniform(-relative, relative))
        return f"{value:.{decimals}f}"

    return _NUMBER_OR_DATE.sub(replace, text)


class PerturbParams(StageParams):
    """Bounds of the perturbation and the share of numbers touched."""

    fields: list[str] = Field(default_factory=lambda: ["text"], min_length=1)
    relative: float = Field(default=0.1, ge=0, le=10)
    days: int = Field(default=30, ge=0)
    rate: float = Field(default=1.0, ge=0, le=1)


class PerturbNumbers(MapStage):
    """Numeric and date perturbation within configured bounds, seeded per record."""

    name = "perturb_numbers"
    Params = PerturbParams
    params: PerturbParams

    def map(self, record: Record) -> Iterator[Record]:
        p, rng = self.params, self.rng(record)
        fields = {k: perturb_numbers(v, rng, p.relative, p.days, p.rate) if k in p.fields and isinstance(v, str) else v
                  for k, v in record.fields.items()}
        yield Record(record.id, fields, record.meta)


class TokenMaskParams(StageParams):
    """`rate` of the words of `field` are masked (or replaced by another word of the text) into `into`."""

    field: str = "text"
    into: str = "masked_text"
    rate: float = Field(default=0.15, gt=0, le=1)
    mode: Literal["mask", "corrupt"] = "mask"
    mask: str = "[MASK]"


class MaskTokens(MapStage):
    """Infilling data: the original stays in `field`, the masked or corrupted copy goes to `into`."""

    name = "mask_tokens"
    Params = TokenMaskParams
    params: TokenMaskParams

    def map(self, record: Record) -> Iterator[Record]:
        p = self.params
        words = str(record.fields.get(p.field) or "").split()
        rng = self.rng(record)
        chosen = set(rng.sample(range(len(words)), round(p.rate * len(words)))) if words else set()
        out = [(p.mask if p.mode == "mask" else rng.choice(words)) if i in chosen else w for i, w in enumerate(words)]
        yield Record(record.id, {**record.fields, p.into: " ".join(out)}, {**record.meta, "masked_positions": sorted(chosen)})
