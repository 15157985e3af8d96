"""The in-process vLLM backend: request mapping (no vLLM needed), the engine window against a stand-in engine,
and the real engine where vllm imports and a model is named."""

from __future__ import annotations

import asyncio
import os
import sys
import types
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from synthgen.backends.base import ChatRequest
from synthgen.backends.factory import BackendConfig, BackendContext, create_backend
from synthgen.backends.vllm_engine import (
    VLLMOptions,
    completion_from_output,
    engine_kwargs,
    prompt_text,
    sampling_kwargs,
)
from synthgen.errors import ConfigError, FatalBackendError
from synthgen.stats import RunStats

SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


def request(**params: Any) -> ChatRequest:
    return ChatRequest("m", [{"role": "user", "content": "hi"}], params)


def test_sampling_params_map_openai_names() -> None:
    kwargs = sampling_kwargs(request(temperature=0.7, top_p=0.9, max_completion_tokens=64, seed=5, stop="\n\n",
                                     presence_penalty=0.1, top_k=20))
    assert kwargs == {"n": 1, "max_tokens": 64, "temperature": 0.7, "top_p": 0.9, "seed": 5, "stop": ["\n\n"],
                      "presence_penalty": 0.1, "top_k": 20}


def test_max_tokens_absent_means_up_to_the_context_not_vllms_16() -> None:
    assert sampling_kwargs(request())["max_tokens"] is None
    assert sampling_kwargs(request(max_tokens=12, stop=["a", "b"]))["stop"] == ["a", "b"]


def test_schema_becomes_structured_outputs_json() -> None:
    req = request(temperature=0.0)
    req.schema = SCHEMA
    assert sampling_kwargs(req)["structured_outputs"] == {"json": SCHEMA}
    assert "structured_outputs" not in sampling_kwargs(request())


def test_one_completion_per_request() -> None:
    assert sampling_kwargs(request(n=1))["n"] == 1
    with pytest.raises(FatalBackendError, match="n=3"):
        sampling_kwargs(request(n=3))


def test_unknown_sampling_parameter_is_named() -> None:
    with pytest.raises(FatalBackendError, match="'logit_bias'"):
        sampling_kwargs(request(logit_bias={"1": 2}))


def test_engine_options_pass_through() -> None:
    opts = VLLMOptions(tensor_parallel_size=2, max_model_len=4096, engine_args={"quantization": "fp8", "seed": 3})
    assert engine_kwargs("org/model", opts) == {
        "model": "org/model", "tensor_parallel_size": 2, "gpu_memory_utilization": 0.9, "max_model_len": 4096,
        "enable_prefix_caching": True, "dtype": "auto", "quantization": "fp8", "seed": 3,
    }


def test_prompt_uses_the_chat_template_with_a_generation_prompt() -> None:
    calls: list[dict[str, Any]] = []

    class Tokenizer:
        def apply_chat_template(self, messages: list[dict[str, str]], **kwargs: Any) -> str:
            calls.append(kwargs)
            return "|".join(m["content"] for m in messages) + "<assistant>"

    assert prompt_text(Tokenizer(), [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]) == "s|u<assistant>"
    assert calls == [{"tokenize": False, "add_generation_prompt": True}]


def test_completion_from_final_output() -> None:
    seq = types.SimpleNamespace(text="hello", finish_reason="length", token_ids=[1, 2, 3])
    out = types.SimpleNamespace(outputs=[seq], prompt_token_ids=[9] * 7)
    completion = completion_from_output(out)
    assert (completion.text, completion.finish_reason, completion.prompt_tokens, completion.completion_tokens) == ("hello", "length", 7, 3)


def test_missing_vllm_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(ConfigError, match=r"synthgen\[vllm\]"):
        create_backend(BackendConfig(kind="vllm", model="m"), BackendContext(RunStats(), ExitStack(), tmp_path))


class FakeEngine:
    """Stands in for AsyncLLM: answers after a delay that depends on the prompt; counts what is inside."""

    created: list[FakeEngine] = []

    def __init__(self, args: Any) -> None:
        self.args, self.inside, self.most_inside, self.finished = args, 0, 0, []
        self.shut = False
        FakeEngine.created.append(self)

    @classmethod
    def from_engine_args(cls, args: Any) -> FakeEngine:
        return cls(args)

    async def get_tokenizer(self) -> Any:
        return types.SimpleNamespace(apply_chat_template=lambda messages, **_: messages[-1]["content"])

    async def generate(self, prompt: str, params: Any, request_id: str) -> Any:
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        try:
            await asyncio.sleep(0.001 * int(prompt))
            self.finished.append(prompt)
            seq = types.SimpleNamespace(text=f"answer {prompt}", finish_reason="stop", token_ids=[0, 0])
            yield types.SimpleNamespace(outputs=[seq], prompt_token_ids=[0])
        finally:
            self.inside -= 1

    def shutdown(self) -> None:
        self.shut = True


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> type[FakeEngine]:
    """vllm's module layout with FakeEngine as AsyncLLM, recording the SamplingParams built."""

    def module(name: str, **attrs: Any) -> None:
        monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(**attrs))

    module("vllm", SamplingParams=lambda **kw: kw)
    module("vllm.sampling_params", StructuredOutputsParams=lambda **kw: ("structured", kw),
           RequestOutputKind=types.SimpleNamespace(FINAL_ONLY="final"))
    module("vllm.engine.arg_utils", AsyncEngineArgs=lambda **kw: kw)
    module("vllm.v1.engine.async_llm", AsyncLLM=FakeEngine)
    FakeEngine.created.clear()
    return FakeEngine


def test_engine_window_bounds_pending_and_results_stream(fake_vllm: type[FakeEngine], tmp_path: Path) -> None:
    config = BackendConfig(kind="vllm", model="org/m", max_concurrency=8, options={"max_num_seqs": 4})
    backend = create_backend(config, BackendContext(RunStats(), ExitStack(), tmp_path))
    delays = [50 if i % 10 == 0 else 1 for i in range(40)]  # a few long outputs among short ones

    async def go() -> list[Any]:
        reqs = [ChatRequest("org/m", [{"role": "user", "content": str(d)}], {"seed": i}) for i, d in enumerate(delays)]
        results = await asyncio.gather(*(backend.complete(r) for r in reqs))
        await backend.aclose()
        return results

    results = asyncio.run(go())
    (engine,) = fake_vllm.created
    assert engine.args["model"] == "org/m" and engine.args["max_num_seqs"] == 4
    assert engine.most_inside == 8  # the window is full, never more
    assert [r.text for r in results] == [f"answer {d}" for d in delays]
    assert engine.finished.index("50") > engine.finished.index("1")  # short outputs do not wait for long ones
    assert engine.finished[:5] == ["1"] * 5
    assert engine.shut


def test_structured_output_reaches_the_engine(fake_vllm: type[FakeEngine], tmp_path: Path) -> None:
    backend = create_backend(BackendConfig(kind="vllm", model="m"), BackendContext(RunStats(), ExitStack(), tmp_path))
    req = ChatRequest("m", [{"role": "user", "content": "1"}], {"temperature": 0.0}, SCHEMA)
    params = backend._sampling_params(req)  # type: ignore[attr-defined]
    assert params["structured_outputs"] == ("structured", {"json": SCHEMA})
    assert params["output_kind"] == "final" and params["temperature"] == 0.0


def test_bad_engine_option_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"backend: options\.tensor_parallel_size"):
        create_backend(BackendConfig(kind="vllm", options={"tensor_parallel_size": 0}),
                       BackendContext(RunStats(), ExitStack(), tmp_path))


def _vllm_installed() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not (_vllm_installed() and os.environ.get("SYNTHGEN_VLLM_MODEL")),
                    reason="needs vllm importable and SYNTHGEN_VLLM_MODEL naming a local model (GPU machines)")
def test_real_engine_structured_output(tmp_path: Path) -> None:
    config = BackendConfig(kind="vllm", model=os.environ["SYNTHGEN_VLLM_MODEL"], max_concurrency=64,
                           options={"gpu_memory_utilization": 0.5, "max_model_len": 2048})
    backend = create_backend(config, BackendContext(RunStats(), ExitStack(), tmp_path))

    async def go() -> list[Any]:
        reqs = [ChatRequest(config.model, [{"role": "user", "content": f"Name a colour ({i})."}],
                            {"temperature": 0.8, "seed": i, "max_tokens": 64}, SCHEMA) for i in range(16)]
        try:
            return await asyncio.gather(*(backend.complete(r) for r in reqs))
        finally:
            await backend.aclose()

    import json

    for completion in asyncio.run(go()):
        assert isinstance(json.loads(completion.text)["answer"], str)
