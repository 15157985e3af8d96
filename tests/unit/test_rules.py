"""Rule-based stages: PII masking, numeric/date perturbation, token masking, and the grammar source."""

from __future__ import annotations

import itertools
import random
import re
from pathlib import Path

import pytest

from synthgen.build import build_stages
from synthgen.errors import ConfigError
from synthgen.pipeline import run_recipe
from synthgen.recipe import load_recipe
from synthgen.record import Record
from synthgen.stages.base import StageContext
from synthgen.stages.grammar import GrammarParams, GrammarSource
from synthgen.stages.masking import (
    MaskParams,
    MaskPii,
    MaskTokens,
    PerturbNumbers,
    PerturbParams,
    TokenMaskParams,
    mask_pii,
    perturb_numbers,
)
from synthgen.stats import RunStats
from tests.conftest import read_jsonl, write


def context(tmp_path: Path) -> StageContext:
    return StageContext(label="01-rules", index=1, seed=5, recipe_path=tmp_path / "r.yaml", prompts_dir=tmp_path,
                        resolve=lambda name: tmp_path / name)


@pytest.mark.parametrize(("text", "masked", "kinds"), [
    ("Mail jane.doe+x@example.co.uk today", "Mail [EMAIL] today", {"email": 1}),
    ("See https://example.org/a?b=1, or www.test.io.", "See [URL], or [URL].", {"url": 2}),
    ("Server 192.168.1.20 answered", "Server [IP] answered", {"ip": 1}),
    ("Pay with 4111 1111 1111 1111 or 5500-0000-0000-0004", "Pay with [CARD] or [CARD]", {"card": 2}),
    ("Call +1 415-555-0132 or (020) 7946 0958", "Call [PHONE] or [PHONE]", {"phone": 2}),
])
def test_pii_patterns_positive(text: str, masked: str, kinds: dict[str, int]) -> None:
    out, counts = mask_pii(text)
    assert out == masked and dict(counts) == kinds


@pytest.mark.parametrize("text", [
    "Version 1.2.3 shipped in 2021 with 3 fixes", "Order 12345 on 2024-03-05", "Not a card: 4111 1111 1111 1112",
    "score 255.255 and ratio 3.14", "email at example dot com",
])
def test_pii_patterns_negative(text: str) -> None:
    assert mask_pii(text) == (text, {})


def test_only_the_chosen_kinds_are_masked() -> None:
    out, counts = mask_pii("a@b.io and 10.0.0.1", kinds=["ip"])
    assert out == "a@b.io and [IP]" and dict(counts) == {"ip": 1}


def test_perturbation_stays_in_bounds_and_is_seeded(tmp_path: Path) -> None:
    text = "Paid 200 dollars and 19.99 on 2024-03-05 for 3 items"
    for seed in range(50):
        out = perturb_numbers(text, random.Random(seed), 0.1, 30, 1.0)
        numbers = re.findall(r"(?<![\d.-])\d+(?:\.\d+)?(?![\d-])", out.replace("2024-", "").replace("-", " "))
        paid, cents = float(out.split()[1]), out.split()[4]
        assert 180 <= paid <= 220 and len(cents.split(".")[1]) == 2 and 17.99 <= float(cents) <= 21.99
        day = re.search(r"\d{4}-\d{2}-\d{2}", out).group(0)  # type: ignore[union-attr]
        assert "2024-02-03" <= day <= "2024-04-04"
        assert numbers
    stage = PerturbNumbers(PerturbParams(), context(tmp_path))
    rows = [Record("a", {"text": text, "label": "keep 12"})]
    first, again = list(stage.run(rows)), list(stage.run(rows))
    assert first[0].fields == again[0].fields and first[0].fields["label"] == "keep 12"
    untouched = list(PerturbNumbers(PerturbParams(rate=0.0), context(tmp_path)).run(rows))
    assert untouched[0].fields["text"] == text


def test_token_masking_respects_the_rate(tmp_path: Path) -> None:
    text = " ".join(f"w{i}" for i in range(40))
    (out,) = MaskTokens(TokenMaskParams(rate=0.25), context(tmp_path)).run([Record("a", {"text": text, "label": 1})])
    masked = out.fields["masked_text"].split()
    assert masked.count("[MASK]") == 10 and len(masked) == 40 and out.fields["text"] == text and out.fields["label"] == 1
    assert [i for i, w in enumerate(masked) if w == "[MASK]"] == out.meta["masked_positions"]
    (corrupt,) = MaskTokens(TokenMaskParams(rate=0.25, mode="corrupt"), context(tmp_path)).run([Record("a", {"text": text})])
    assert "[MASK]" not in corrupt.fields["masked_text"] and set(corrupt.fields["masked_text"].split()) <= set(text.split())


RULES = {"start": ["I have an issue with my {product} regarding its {feature}.", {"text": "My {product} broke.", "weight": 0.5}],
         "product": ["phone", "laptop", "smart {device}"], "device": ["watch", "speaker"], "feature": ["battery", "screen"]}


def language() -> set[str]:
    products = ["phone", "laptop", "smart watch", "smart speaker"]
    return ({f"I have an issue with my {p} regarding its {f}." for p, f in itertools.product(products, ["battery", "screen"])}
            | {f"My {p} broke." for p in products})


def test_grammar_produces_only_strings_of_its_language(tmp_path: Path) -> None:
    records = list(GrammarSource(GrammarParams.model_validate({"rules": RULES, "count": 300}), context(tmp_path)).run([]))
    texts = [r.fields["text"] for r in records]
    assert set(texts) <= language() and len(set(texts)) >= 10
    assert len({r.id for r in records}) == 300
    again = [r.fields["text"] for r in GrammarSource(GrammarParams.model_validate({"rules": RULES, "count": 300}),
                                                       context(tmp_path)).run([])]
    assert again == texts
    assert 0.15 < sum(t.startswith("My ") for t in texts) / 300 < 0.5  # weight 0.5 against 1


def test_grammar_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"undefined rule\(s\) \['colour'\]"):
        GrammarParams.model_validate({"rules": {"start": ["a {colour}"]}})
    with pytest.raises(ValueError, match="no rule named 'start'"):
        GrammarParams.model_validate({"rules": {"other": ["x"]}})
    loop = GrammarParams.model_validate({"rules": {"start": ["again {start}"]}, "count": 1})
    with pytest.raises(ConfigError, match=r"stages\[1\].grammar.rules: expansion deeper than 20"):
        list(GrammarSource(loop, context(tmp_path)).run([]))


def test_grammar_as_first_stage_then_masking_in_a_run(tmp_path: Path) -> None:
    path = write(tmp_path / "r.yaml", """
name: rules
seed: 3
backend: {kind: sim}
stages:
  - grammar:
      count: 40
      rules:
        start: ["Contact {name}@example.com about order {n}"]
        name: [ann, bob]
        n: ["1001", "2002"]
  - mask_pii: {}
""")
    result = run_recipe(load_recipe(path), tmp_path / "run", limit=10)
    rows = read_jsonl(result.run_dir.dataset_path)
    assert len(rows) == 10 and all(r["fields"]["text"].startswith("Contact [EMAIL] about order") for r in rows)
    assert result.stats.http_requests == 0
    wrong = write(tmp_path / "w.yaml", path.read_text().replace("stages:\n", "source: {path: x.jsonl}\nstages:\n"))
    with pytest.raises(ConfigError, match="must be the first stage of a recipe without `source`"):
        build_stages(load_recipe(wrong), RunStats())


@pytest.mark.parametrize("stage_class, params", [
    (MaskPii, MaskParams(fields=["text"])),
    (PerturbNumbers, PerturbParams(fields=["text"], rate=0.5)),
    (MaskTokens, TokenMaskParams(rate=0.3, mode="corrupt")),
])
def test_row_wise_stages_give_the_same_records_on_any_split(tmp_path: Path, stage_class: type, params: object) -> None:
    """What `row_wise` promises the Ray engine: running block by block changes nothing."""
    assert stage_class.row_wise
    records = [Record(f"r{i}", {"text": f"call 555-010{i % 10} or mail a{i}@x.org on 2024-0{1 + i % 9}-1{i % 10} for {i * 7} items"})
               for i in range(40)]
    whole = list(stage_class(params, context(tmp_path)).run(records))
    split = [r for part in (records[:13], records[13:29], records[29:])
             for r in stage_class(params, context(tmp_path)).run(part)]
    assert [(r.id, r.fields, r.meta) for r in split] == [(r.id, r.fields, r.meta) for r in whole]
    assert any(r.fields != original.fields for r, original in zip(whole, records))
