"""Text from a grammar, before any LLM call: slot templates ("I have an issue with my {product}") are the
simplest case of the context-free grammar this stage expands.

    - grammar:
        count: 500
        rules:
          start: ["I have an issue with my {product} regarding its {feature}.", {text: "My {product} broke.", weight: 0.5}]
          product: [phone, laptop, "smart {device}"]
          device: [watch, speaker]
          feature: [battery, screen]

`{name}` refers to the rule `name`; anything else is literal text. Alternatives are drawn by weight (default 1),
with a seeded generator, so the same recipe and seed give the same strings.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Iterator
from typing import ClassVar, cast

from pydantic import Field, field_validator, model_validator

from synthgen.config import StrictModel
from synthgen.errors import ConfigError
from synthgen.record import Record, make_record_id
from synthgen.stages.base import Stage, StageParams

_SLOT = re.compile(r"\{(\w+)\}")


class Alternative(StrictModel):
    """One expansion of a rule and its relative weight."""

    text: str
    weight: float = Field(default=1.0, gt=0)


class GrammarParams(StageParams):
    """The rules (name -> alternatives), the start rule, how many strings, and the output field."""

    rules: dict[str, list[Alternative]]
    start: str = "start"
    count: int = Field(default=100, ge=1)
    field: str = "text"
    max_depth: int = Field(default=20, ge=1, le=200)

    @field_validator("rules", mode="before")
    @classmethod
    def _plain_strings(cls, rules: object) -> object:
        if isinstance(rules, dict):
            return {name: [{"text": a} if isinstance(a, str) else a for a in alternatives] if isinstance(alternatives, list)
                    else alternatives for name, alternatives in rules.items()}
        return rules

    @model_validator(mode="after")
    def _closed(self) -> GrammarParams:
        if self.start not in self.rules:
            raise ValueError(f"no rule named {self.start!r} (the start rule)")
        for name, alternatives in self.rules.items():
            if not alternatives:
                raise ValueError(f"rule {name!r} has no alternatives")
            for alternative in alternatives:
                missing = [slot for slot in _SLOT.findall(alternative.text) if slot not in self.rules]
                if missing:
                    raise ValueError(f"rule {name!r} refers to undefined rule(s) {missing}")
        return self


def expand(rules: dict[str, list[Alternative]], symbol: str, rng: random.Random, max_depth: int, depth: int = 0) -> str:
    """One random string derived from `symbol`."""
    if depth > max_depth:
        raise ValueError(f"expansion deeper than {max_depth} levels at rule {symbol!r}: "
                         "is the grammar recursive without an exit?")
    alternatives = rules[symbol]
    chosen = rng.choices(alternatives, weights=[a.weight for a in alternatives])[0]
    return _SLOT.sub(lambda match: expand(rules, match.group(1), rng, max_depth, depth + 1), chosen.text)


class GrammarSource(Stage):
    """`count` records whose `field` is a string of the grammar (a first stage: it needs no input)."""

    name = "grammar"
    Params = GrammarParams
    params: GrammarParams
    is_source: ClassVar[bool] = True

    @classmethod
    def draw_count(cls, params: StageParams) -> int | None:
        return cast(GrammarParams, params).count

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        p = self.params
        for index in range(p.count):
            rng = self.seeded(index)
            try:
                text = expand(p.rules, p.start, rng, p.max_depth)
            except ValueError as exc:
                raise ConfigError(str(self.ctx.recipe_path), f"stages[{self.ctx.index}].grammar.rules", str(exc)) from None
            yield Record(make_record_id(self.ctx.key, index), {p.field: text}, {"grammar": self.ctx.label, "draw": index})
