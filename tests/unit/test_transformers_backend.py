"""The local transformers backend on a tiny randomly initialised chat model built in a temporary folder (nothing is
downloaded): batching, greedy determinism, stop strings and length limits, JSON repair, and a cached recipe run."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import tokenizers
import torch
import transformers

from synthgen.backends.base import ChatRequest, Completion
from synthgen.backends.factory import BackendConfig, BackendContext, create_backend
from synthgen.backends.transformers_local import Decoding, TransformersBackend, cut_at_stop, valid_json
from synthgen.errors import ConfigError
from synthgen.pipeline import run_recipe
from synthgen.recipe import load_recipe
from synthgen.stats import RunStats
from synthgen.validation import InvalidOutput, OutputSchema
from tests.conftest import read_jsonl, write

SCHEMA = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
CHAT_TEMPLATE = ("{% for m in messages %}<s>{{ m.role }}: {{ m.content }}</s>{% endfor %}"
                 "{% if add_generation_prompt %}<s>assistant:{% endif %}")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A character-level tokenizer and a 2-layer Llama with random weights, saved as a local model folder."""
    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    vocab = {token: i for i, token in enumerate([*specials, "\n", *map(chr, range(32, 127))])}
    backend = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.decoder = tokenizers.decoders.Fuse()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        chat_template=CHAT_TEMPLATE,
    )
    config = transformers.LlamaConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=2048, pad_token_id=0, bos_token_id=2, eos_token_id=3,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-chat-model")
    transformers.LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_backend(model: Path | str, tmp_path: Path, **options: Any) -> TransformersBackend:
    backend = create_backend(BackendConfig(kind="transformers", model=str(model), options=options),
                             BackendContext(RunStats(), ExitStack(), tmp_path))
    assert isinstance(backend, TransformersBackend)
    return backend


def count_generate(backend: TransformersBackend) -> list[int]:
    """Spy on the model's `generate`: the returned list gets each call's batch size."""
    calls: list[int] = []
    original = backend.model.generate

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(len(kwargs["input_ids"]))
        return original(*args, **kwargs)

    backend.model.generate = spy
    return calls


def request(i: int = 0, schema: dict[str, Any] | None = None, **params: Any) -> ChatRequest:
    return ChatRequest("tiny", [{"role": "user", "content": f"Say something about topic {i}."}],
                       {"max_tokens": 8, "seed": i, **params}, schema)


def complete_rounds(backend: TransformersBackend, *rounds: list[ChatRequest]) -> list[list[Completion]]:
    """Each round's requests made concurrently, round after round, on one event loop; then the backend is closed."""

    async def scenario() -> list[list[Completion]]:
        try:
            return [list(await asyncio.gather(*(backend.complete(r) for r in requests))) for requests in rounds]
        finally:
            await backend.aclose()

    return asyncio.run(scenario())


def test_concurrent_requests_are_batched_into_few_generate_calls(tiny_model: Path, tmp_path: Path) -> None:
    backend = make_backend(tiny_model, tmp_path, batch_size=4)
    calls = count_generate(backend)
    (completions,) = complete_rounds(backend, [request(i) for i in range(6)])
    assert len(completions) == 6
    assert all(isinstance(c.text, str) and 0 < c.completion_tokens <= 8 and c.prompt_tokens > 0 for c in completions)
    assert calls == [4, 2]
    assert backend.model is None  # closed


def test_greedy_decoding_is_deterministic_and_unaffected_by_left_padding(tiny_model: Path, tmp_path: Path) -> None:
    backend = make_backend(tiny_model, tmp_path, batch_size=4)
    # prompts of different lengths, so the shorter ones are left-padded in the batch
    batch = [ChatRequest("tiny", [{"role": "user", "content": "x" * (5 + 7 * i)}], {"temperature": 0, "max_tokens": 12})
             for i in range(4)]
    first, second, alone = complete_rounds(backend, batch, batch, [batch[0]])
    assert [c.text for c in first] == [c.text for c in second]
    assert alone[0].text == first[0].text


def test_stop_strings_cut_the_text_and_max_tokens_bounds_it(tiny_model: Path, tmp_path: Path) -> None:
    backend = make_backend(tiny_model, tmp_path)
    full, short = complete_rounds(backend, [request(1, temperature=0, max_tokens=24)], [request(1, temperature=0, max_tokens=5)])
    text = full[0].text
    assert len(text) > 4
    stop = text[3]
    backend = make_backend(tiny_model, tmp_path)
    (stopped,) = complete_rounds(backend, [request(1, temperature=0, max_tokens=24, stop=["@@", stop])])
    assert stopped[0].text == text[: text.index(stop)] and stopped[0].finish_reason == "stop"
    assert short[0].completion_tokens == 5 and short[0].finish_reason == "length"
    assert text.startswith(short[0].text)


def test_invalid_json_is_asked_again_then_returned_raw(tiny_model: Path, tmp_path: Path) -> None:
    backend = make_backend(tiny_model, tmp_path, batch_size=4, repair_attempts=2)
    calls = count_generate(backend)
    (completions,) = complete_rounds(backend, [request(i, SCHEMA, max_tokens=10) for i in range(3)])
    assert calls == [3, 3, 3]  # the first answers, then two rounds of re-asks, each batched together
    for completion in completions:
        with pytest.raises(InvalidOutput):
            OutputSchema(SCHEMA).parse(completion.text)
        assert completion.completion_tokens > 10  # counted over all three rounds


def test_a_json_object_inside_chatter_is_extracted() -> None:
    schema = OutputSchema(SCHEMA)
    assert valid_json('Sure! {"a": {"b": "}"}} then {"q": "why?"} done', schema) == '{"q":"why?"}'
    assert valid_json('```json\n{"q": "ok"}\n```', schema) == '{"q":"ok"}'
    with pytest.raises(InvalidOutput, match="invalid_json"):
        valid_json("no json {here", schema)


def test_decoding_follows_openai_defaults() -> None:
    assert Decoding.of({}) == Decoding(True, 1.0, 1.0, 0, 256)
    assert Decoding.of({"temperature": 0, "top_p": 0.5, "max_completion_tokens": 9}) == Decoding(False, 1.0, 1.0, 0, 9)
    assert Decoding.of({"temperature": 0.7, "top_p": 0.9, "max_tokens": 3}).kwargs() == {
        "do_sample": True, "max_new_tokens": 3, "temperature": 0.7, "top_p": 0.9, "top_k": 0}
    assert Decoding.of({"top_k": 20}).kwargs()["top_k"] == 20
    assert cut_at_stop("abc. def", [". ", "d"]) == ("abc", True) and cut_at_stop("abc", "x") == ("abc", False)


def test_recipe_run_rejects_gibberish_and_replays_from_the_cache(tiny_model: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    calls = spy_on_class_generate(monkeypatch)
    write(tmp_path / "prompts" / "ask.j2", "Write one question as JSON.")
    path = write(tmp_path / "recipes" / "r.yaml", f"""
name: local
seed: 1
backend: {{kind: transformers, model: {tiny_model}, options: {{batch_size: 4}}}}
stages:
  - generate:
      template: ask.j2
      count: 6
      schema: {{type: object, properties: {{q: {{type: string}}}}, required: [q]}}
      sampling: {{temperature: 0.7, max_tokens: 12}}
      max_retries: 0
      allow_truncated: true
""")
    first = run_recipe(load_recipe(path), tmp_path / "run")
    rejects = read_jsonl(first.run_dir.rejects_path)
    assert len(rejects) == 6 and {r["reason"] for r in rejects} <= {"invalid_json", "schema_mismatch"}
    assert all("raw: " in r["detail"] for r in rejects)
    assert sum(calls) == 12 and max(calls) > 1  # 6 prompts answered in batches, each asked once more (repair_attempts 1)

    for done in (tmp_path / "run" / "checkpoints").glob("*.done"):
        done.unlink()  # forget the finished stage: it runs again and only the request cache can answer
    second = run_recipe(load_recipe(path), tmp_path / "run")
    assert sum(calls) == 12 and second.stats.cache_hits == 6 and second.stats.completion_tokens == 0
    assert read_jsonl(second.run_dir.rejects_path) == rejects


def spy_on_class_generate(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original: Callable[..., Any] = transformers.LlamaForCausalLM.generate

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(len(kwargs["input_ids"]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(transformers.LlamaForCausalLM, "generate", spy)
    return calls


def test_unknown_option_and_missing_model_are_config_errors(tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as unknown:
        make_backend(tiny_model, tmp_path, batch_sise=4)
    assert (unknown.value.source, unknown.value.field) == ("backend", "options.batch_sise")
    missing = tmp_path / "no-such-model"
    with pytest.raises(ConfigError, match=str(missing)) as error:
        make_backend(missing, tmp_path)
    assert (error.value.source, error.value.field) == ("backend", "model")
