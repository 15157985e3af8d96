"""Content of the simulated server's answers: deterministic text and JSON Schema instances.

An answer is a pure function of its inputs (a key hashed from model + messages + schema, and the request
seed), so reruns, caches and tests agree. A share of prompts, fixed per prompt, answers the same text to
every seed (exact duplicates) or nearly the same (two words changed), so dedup stages have real work.
`repeated_answer` makes the prompts holding a configured substring (a taxonomy leaf) answer from a small fixed
set with a given probability: a leaf that repeats itself, byte for byte, or (`leaf_repeat: paraphrase`) reworded
by `paraphrase`, as real models repeat themselves: exact dedup and MinHash miss those, embeddings catch them.

A request whose schema asks for a judge's verdict (a `justification` string plus integer scores, or plus a
`winner` "A"/"B") about text the prompt wraps in <response>...</response> (<response_a>, <response_b> for two)
gets `judgement`: scores from the text's `text_quality` (length, placeholders, preambles, repeated sentences),
so junk scores low; a pairwise verdict picks answer A with probability `position_bias` whatever it says.

A request whose schema has a string property described as a "verbatim" quote, about text the prompt wraps in
<context>...</context>, gets `quoting`: the usual instance, with that property a span of whole words copied from
the last context (empty where the property's `maxLength` is 0), so grounding checks have real quotes to find;
a string property described as "supported by the quote" then gets most of the quote's words and a few others,
one described as ending with a "question mark" gets one.

A plain request showing two texts in <example_a>...</example_a> and <example_b>...</example_b> (gap filling)
gets `between`: the first part of A's words followed by the last part of B's, a text that embeds between them.
"""

from __future__ import annotations

import math
import random
import re
from typing import Any

import orjson

from synthgen.hashing import stable_int
from synthgen.text_stats import find_placeholder

_MAX_DEPTH = 6  # deeper than this, schema instances take their smallest valid shape (recursive schemas end)
_WORDS = tuple(
    """river signal harvest lantern orbit granite whisper ledger canyon protocol meadow circuit falcon
    archive tensor glacier mosaic quarry beacon saddle prism vintage harbor compass tundra cipher orchard
    voltage ember fabric summit lattice nomad pigment reactor willow atlas thunder cobalt garden vector
    estuary marble parcel kernel horizon basalt spindle ferry lagoon quartz ballad dynamo thistle bridge
    nebula anchor cedar median pulse rampart sorbet timber umbra valley wander yeast zenith acorn bramble
    candle delta engine fjord gossip hazel inlet jasper kettle lumen mantle nectar oxide pepper quiver
    rhythm sierra trellis uplink velvet walnut yonder zephyr amber bishop cliff dune fathom gravel hollow
    island jungle kiosk lichen mirror nutmeg opal pillar radish sketch tango urchin vessel wicker baseline
    sample measure predict explain compare improve reduce observe design balance verify gather""".split()
)
_WORD_RING = _WORDS * 2  # a window of 40 words starting anywhere, without wrapping arithmetic
_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z", "date": "2024-01-01", "time": "12:00:00Z",
    "email": "user@example.com", "uri": "https://example.com/", "uuid": "00000000-0000-4000-8000-000000000000",
}


def _text(rng: random.Random, prompt_words: tuple[str, ...], n_words: int) -> str:
    """Sentences of `n_words` words drawn from the prompt's words and a random window of the word list."""
    start = rng.randrange(len(_WORDS))
    pool = _WORD_RING[start : start + 40] + prompt_words
    size = len(pool)
    words = [pool[b % size] for b in rng.randbytes(n_words)]  # one RNG call, not one per word
    sentences, i = [], 0
    for b in rng.randbytes(n_words // 6 + 1):
        chunk = words[i : i + 6 + b % 10]
        i += len(chunk)
        if chunk:
            sentences.append(" ".join(chunk).capitalize() + ".")
    return " ".join(sentences)


def _number(schema: dict[str, Any], rng: random.Random, integer: bool) -> int | float:
    """A number inside the schema's (exclusive) minimum and maximum."""
    lo = schema.get("minimum", schema.get("exclusiveMinimum"))
    hi = schema.get("maximum", schema.get("exclusiveMaximum"))
    lo = (0 if hi is None else hi - 100) if lo is None else lo
    hi = lo + 100 if hi is None else hi
    if integer:
        first, last = math.ceil(lo), math.floor(hi)
        first += first == schema.get("exclusiveMinimum")
        last -= last == schema.get("exclusiveMaximum")
        return rng.randint(first, last)
    value = lo + (hi - lo) * rng.uniform(0.05, 0.95)
    return rounded if lo < (rounded := round(value, 2)) < hi else value


def _instance(schema: dict[str, Any], rng: random.Random, defs: dict[str, Any], words: tuple[str, ...],
              depth: int = 0) -> Any:
    """A random instance of `schema`; not covered: pattern, multipleOf, uniqueItems, prefixItems."""
    if "$ref" in schema:
        return _instance(defs[schema["$ref"].rsplit("/", 1)[-1]], rng, defs, words, depth)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return rng.choice(schema["enum"])
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        nulls = [o for o in options if o.get("type") == "null"]
        option = nulls[0] if nulls and depth >= _MAX_DEPTH else rng.choice(options)
        return _instance(option, rng, defs, words, depth)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        others = [k for k in kind if k != "null"]
        nullable = "null" in kind and (depth >= _MAX_DEPTH or rng.random() < 0.2)
        kind = "null" if nullable or not others else rng.choice(others)
    if kind == "object":
        required = set(schema.get("required", ()))
        return {
            key: _instance(sub, rng, defs, words, depth + 1)
            for key, sub in schema.get("properties", {}).items()
            if key in required or (depth < _MAX_DEPTH and rng.random() < 0.7)
        }
    if kind == "array":
        lo = schema.get("minItems", 0)
        hi = schema.get("maxItems", lo + 3)
        n = lo if depth >= _MAX_DEPTH else rng.randint(min(max(lo, 1), hi), hi)
        return [_instance(schema.get("items", {}), rng, defs, words, depth + 1) for _ in range(n)]
    if kind in ("integer", "number"):
        return _number(schema, rng, kind == "integer")
    if kind in ("boolean", "null"):
        return rng.random() < 0.5 if kind == "boolean" else None
    if schema.get("format") in _FORMATS:
        return _FORMATS[schema["format"]]
    text = _text(rng, words, rng.randint(2, 10))[:-1]
    while len(text) < schema.get("minLength", 0):
        text += " " + rng.choice(_WORDS)
    return text[: schema.get("maxLength")]


def generate(key: int, seed: int, words: tuple[str, ...], schema: dict[str, Any] | None = None,
             max_tokens: int = 0, duplicate_rate: float = 0.0, prompt_tokens: int = 0) -> str:
    """The answer to a request whose content hashes to `key`: equal inputs always give equal text.

    Plain answers run 20-120 words, or 50-110% of a long prompt's length (a rewrite is about as long as
    what it rewrites), capped by `max_tokens`."""
    roll = key % 1_000_000 / 1_000_000  # per prompt: exact duplicate, near duplicate, or free
    duplicate, near = roll < duplicate_rate, roll < 2 * duplicate_rate
    rng = random.Random(key if near else stable_int(key, seed))
    if schema is not None:
        return orjson.dumps(_instance(schema, rng, schema.get("$defs", {}), words)).decode()
    n_words = rng.randint(prompt_tokens // 2, prompt_tokens * 11 // 10) if prompt_tokens > 200 else rng.randint(20, 120)
    text = _text(rng, words, min(n_words, max_tokens) if max_tokens else n_words)
    if near and not duplicate:
        tweak, parts = random.Random(stable_int(key, seed)), text.split(" ")
        for _ in range(2):
            parts[tweak.randrange(len(parts))] = tweak.choice(_WORDS)
        text = " ".join(parts)
    return text


REPEATED_ANSWERS = 4  # answers in a repeating leaf's fixed set: after a few requests, each repeat is a duplicate


def repeated_answer(prompt: str, rates: dict[str, float], key: int, seed: int) -> tuple[int, tuple[str, ...]] | None:
    """(content key, words) of a fixed answer when the prompt holds a substring of `rates` (the first that
    matches) and this request (`key`, `seed`) rolls under its rate: one of REPEATED_ANSWERS texts per substring,
    the same whatever the rest of the prompt says; None otherwise, leaving the answer as it is."""
    for pattern, rate in rates.items():
        if pattern in prompt:
            if stable_int(key, seed, "repeat") % 1_000_000 / 1_000_000 >= rate:
                return None
            return stable_int("repeat", pattern, stable_int(key, seed) % REPEATED_ANSWERS), tuple(pattern.split("/"))
    return None


def paraphrase(text: str, rng: random.Random) -> str:
    """`text` reworded a little, as a model repeating an idea in other words: a fifth of its words (at least one)
    moved, each edit swapping a word with the next or, one time in five, putting another of its words no longer
    than it in its place, and one word dropped from a text of 12 words or more. Word or character 5-gram MinHash
    sees another text; a sentence embedding nearly the same one. Never longer than `text`."""
    words = text.split(" ")
    for _ in range(max(1, round(len(words) / 5)) if len(words) > 1 else 0):
        i = rng.randrange(len(words) - 1)
        if rng.random() < 0.8:
            words[i], words[i + 1] = words[i + 1], words[i]
        else:
            words[i] = rng.choice([word for word in words if len(word) <= len(words[i])])
    if len(words) >= 12:
        del words[rng.randrange(len(words))]
    return " ".join(words)


def reworded(text: str, structured: bool, rng: random.Random) -> str:
    """`paraphrase` of a plain answer, or of every string in a JSON answer (`structured`)."""
    if not structured:
        return paraphrase(text, rng)

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return paraphrase(value, rng)
        if isinstance(value, list):
            return [walk(item) for item in value]
        return {key: walk(item) for key, item in value.items()} if isinstance(value, dict) else value

    return orjson.dumps(walk(orjson.loads(text))).decode()


_PREAMBLES = ("i'm sorry", "as an ai", "sure! here is", "sure, here is", "i'm ready to assist", "i cannot")
_SENTENCE = re.compile(r"[^.!?\n]+")


def text_quality(text: str) -> float:
    """0 (junk) to 1: short answers, placeholders, refusals or preambles and repeated sentences lower it."""
    words = text.split()
    if not words:
        return 0.0
    quality = min(1.0, len(words) / 30)
    if find_placeholder(text):
        quality *= 0.3
    if any(phrase in text.lower() for phrase in _PREAMBLES):
        quality *= 0.5
    sentences = [s.strip().lower() for s in _SENTENCE.findall(text) if s.strip()]
    if sentences:
        quality *= len(set(sentences)) / len(sentences)
    return quality


def _wrapped(prompt: str, tag: str) -> str | None:
    """The text in the prompt's last <tag>...</tag> (an earlier one may be the instructions naming the tag)."""
    found = re.findall(rf"<{tag}>\s*(.*?)\s*</{tag}>", prompt, re.DOTALL)
    return found[-1] if found else None


def judgement(schema: dict[str, Any], prompt: str, rng: random.Random, position_bias: float) -> str | None:
    """A judge's verdict on the text(s) `prompt` wraps, if `schema` asks for one (see the module docstring)."""
    properties = schema.get("properties", {})
    if properties.get("justification", {}).get("type") != "string":
        return None
    others = {name: sub for name, sub in properties.items() if name != "justification"}
    if set(others) == {"winner"}:
        first, second = _wrapped(prompt, "response_a"), _wrapped(prompt, "response_b")
        if first is None or second is None:
            return None
        qualities = (text_quality(first), text_quality(second))
        if rng.random() < position_bias:
            winner = "A"
        elif qualities[0] != qualities[1]:
            winner = "A" if qualities[0] > qualities[1] else "B"
        else:  # a tie goes to the same text in either order
            winner = "A" if stable_int(first) <= stable_int(second) else "B"
        verdict: dict[str, Any] = {"winner": winner}
        why = f"A scores {qualities[0]:.2f}, B {qualities[1]:.2f} on length, placeholders and repetition."
    else:
        text = _wrapped(prompt, "response")
        if text is None or not others or any(sub.get("type") != "integer" for sub in others.values()):
            return None
        quality = text_quality(text)
        verdict = {}
        for name, sub in others.items():
            low, high = sub.get("minimum", 1), sub.get("maximum", 10)
            nudge = stable_int(name, text) % 3 - 1  # criteria of one answer differ by a point at most
            verdict[name] = min(high, max(low, low + round(quality * (high - low)) + nudge))
        why = f"Quality {quality:.2f} from its length ({len(text.split())} words), placeholders and repetition."
    return orjson.dumps({"justification": why, **verdict}).decode()


def quoting(schema: dict[str, Any], prompt: str, rng: random.Random, words: tuple[str, ...]) -> str | None:
    """An answer whose verbatim-quote properties copy the prompt's context, if `schema` has any (module docstring)."""
    quotes = [name for name, sub in schema.get("properties", {}).items()
              if sub.get("type") == "string" and "verbatim" in str(sub.get("description", "")).lower()]
    context = _wrapped(prompt, "context") if quotes else None
    if not context:
        return None
    answer = _instance(schema, rng, schema.get("$defs", {}), words)
    spans = [m.span() for m in re.finditer(r"\S+", context)]
    for name in quotes:
        first = rng.randrange(len(spans))
        last = min(len(spans), first + rng.randint(6, 20)) - 1
        limit = schema["properties"][name].get("maxLength")
        answer[name] = context[spans[first][0]:spans[last][1]][:limit]
    quote = answer[quotes[0]].split()
    for name, sub in schema["properties"].items():
        if quote and "supported by the quote" in str(sub.get("description", "")).lower():
            kept = [word for word in quote if rng.random() < 0.7] + [rng.choice(_WORDS) for _ in range(2)]
            answer[name] = " ".join(kept)[: sub.get("maxLength")]
        elif "question mark" in str(sub.get("description", "")).lower() and isinstance(answer.get(name), str):
            answer[name] = answer[name][: (sub.get("maxLength") or 10**9) - 1] + "?"
    return orjson.dumps(answer).decode()


def between(prompt: str, rng: random.Random) -> str | None:
    """A text between the two examples `prompt` wraps (module docstring): the first 40-60% of A's words, then
    the matching tail of B's; None for any other prompt."""
    first, second = _wrapped(prompt, "example_a"), _wrapped(prompt, "example_b")
    if first is None or second is None:
        return None
    a, b, cut = first.split(), second.split(), rng.uniform(0.4, 0.6)
    return " ".join(a[: max(1, round(cut * len(a)))] + b[round(cut * len(b)) :])
