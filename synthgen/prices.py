"""Token prices the user gives (`--price-in/--price-out`, or `--prices FILE` per model): never a built-in guess.

A prices file is YAML (or JSON) mapping a model name to US dollars per million input and output tokens:

    gpt-4o-mini: {input: 0.15, output: 0.60}
    Qwen/Qwen2.5-7B-Instruct: {input: 0.0, output: 0.0}

Like LiteLLM's cost map it is keyed by the model name a request names; unlike it, nothing ships with synthgen, so
a model missing from the table has no cost shown (it is named instead) rather than a stale or invented one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from synthgen.config import load_yaml
from synthgen.errors import ConfigError
from synthgen.estimate import Prices

ANY_MODEL = "*"  # the key `--price-in/--price-out` fill: one price for every model


@dataclass
class PriceTable:
    """US$ per million tokens by model name; ANY_MODEL applies to models not named."""

    by_model: dict[str, Prices] = field(default_factory=dict)

    def cost(self, tokens_by_model: dict[str, list[int]]) -> tuple[float | None, list[str]]:
        """(cost of the [prompt, completion] tokens per model, models without a price); the cost is None when
        any model that was used has no price."""
        total, unpriced = 0.0, []
        for model, (prompt, completion) in sorted(tokens_by_model.items()):
            price = self.by_model.get(model) or self.by_model.get(ANY_MODEL)
            if price is None:
                unpriced.append(model)
                continue
            total += price.of(prompt, completion)
        return (None if unpriced else total), unpriced


def load_prices(path: Path | None, price_in: float | None, price_out: float | None) -> PriceTable | None:
    """The table from `path` and/or one price for every model; None when the user gave no price at all."""
    table: dict[str, Prices] = {}
    if path is not None:
        data = load_yaml(path)
        if not isinstance(data, dict):
            raise ConfigError(str(path), None, "expected a mapping of model name -> {input: $/M, output: $/M}")
        for model, entry in data.items():
            if not isinstance(entry, dict) or set(entry) - {"input", "output"} or not all(
                    isinstance(value, int | float) and value >= 0 for value in entry.values()):
                raise ConfigError(str(path), str(model), "expected {input: $/M tokens, output: $/M tokens}, "
                                                         "both numbers >= 0")
            table[str(model)] = Prices(float(entry.get("input", 0.0)), float(entry.get("output", 0.0)))
    if price_in is not None or price_out is not None:
        table[ANY_MODEL] = Prices(price_in or 0.0, price_out or 0.0)
    return PriceTable(table) if table else None
