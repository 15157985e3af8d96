"""synthgen driving the embedded llama.cpp engine against a bare client posting the same requests to the same server.

For each slot count the embedded server (packaged SmolLM2-135M-Instruct unless --model) is started once and warmed
up; a bare aiohttp client posts the quickstart's first-stage requests (same bodies, same seeds, `slots` in flight),
then synthgen runs the same draws as a recipe against that server (generate stage, cache, checkpoints: the whole
product path), then the bare client again (the ratio is against the mean of the two bare runs, so neither side gains
from going second). Output tok/s and req/s of each; with --transformers the same GGUF also runs on the transformers
backend (dequantised to fp32; needs `pip install gguf accelerate`).

    python bench/local_engine.py                       # 1, 4, 8, 16 slots, 32 requests of at most 128 tokens
    python bench/local_engine.py --slots 8 --requests 64 --transformers
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

from synthgen.backends.llamacpp import LlamaCppOptions, model_file, server_params
from synthgen.build import build_stages
from synthgen.pipeline import run_recipe
from synthgen.recipe import load_recipe
from synthgen.runtime import Runtime
from synthgen.stages.generate import Generate
from synthgen.stats import RunStats

REPO = Path(__file__).resolve().parent.parent


def recipe_file(folder: Path, requests: int, max_tokens: int, backend: dict[str, Any]) -> Path:
    """The quickstart's first stage alone: `requests` draws of one instruction each."""
    recipe = {"name": "local-engine", "prompts_dir": str(REPO / "prompts"), "seed": 42, "backend": backend,
              "stages": [{"generate": {"taxonomy": str(REPO / "taxonomies" / "quickstart.yaml"), "count": requests,
                                       "sampling": {"temperature": 0.8, "max_tokens": max_tokens}, "max_retries": 0,
                                       "allow_truncated": True}}]}
    path = folder / f"recipe-{len(list(folder.glob('recipe-*')))}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def request_bodies(recipe_path: Path) -> list[bytes]:
    """The JSON bodies synthgen sends for the recipe's draws (same messages, sampling and seeds)."""
    recipe = load_recipe(recipe_path)
    stage = build_stages(recipe, RunStats())[0]
    assert isinstance(stage, Generate)
    runtime = Runtime(None, None, recipe.backend.model, recipe.backend.kind, 0)  # type: ignore[arg-type]
    return [orjson.dumps(runtime.request(job.messages, job.sampling, (stage.ctx.seed, stage.ctx.key, job.origin)).body())
            for job in stage.jobs([])]


async def bare_client(url: str, bodies: list[bytes], in_flight: int) -> tuple[float, int]:
    """Post every body, `in_flight` at a time; (seconds, completion tokens)."""
    gate, tokens = asyncio.Semaphore(in_flight), 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3600)) as session:
        async def one(body: bytes) -> None:
            nonlocal tokens
            async with gate, session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
                tokens += orjson.loads(await response.read())["usage"]["completion_tokens"]

        start = time.perf_counter()
        await asyncio.gather(*(one(body) for body in bodies))
        return time.perf_counter() - start, tokens


def synthgen_run(recipe_path: Path, out: Path) -> tuple[float, int, int]:
    """Run the recipe; (seconds, completion tokens, HTTP requests sent)."""
    start = time.perf_counter()
    result = run_recipe(load_recipe(recipe_path), out)
    return time.perf_counter() - start, result.stats.completion_tokens, result.stats.http_requests


def line(name: str, seconds: float, tokens: int, requests: int) -> str:
    return f"  {name:<13} {seconds:7.1f} s  {tokens / seconds:7.1f} tok/s  {requests / seconds:6.2f} req/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slots", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--model", default="sim-model", help="a GGUF file (default: the packaged SmolLM2-135M-Instruct)")
    parser.add_argument("--transformers", action="store_true", help="also run the transformers backend on the GGUF")
    args = parser.parse_args()
    import xllamacpp

    path = model_file(args.model)
    print(f"model {path.name}, {args.requests} requests of at most {args.max_tokens} tokens")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for slots in args.slots:
            server = xllamacpp.Server(server_params(path, LlamaCppOptions(slots=slots, context_per_slot=1024)))
            base = server.listening_address + "/v1"
            recipe = recipe_file(folder, args.requests, args.max_tokens,
                                 {"kind": "openai", "base_url": base, "max_concurrency": slots, "timeout": 3600})
            bodies = request_bodies(recipe)
            warm = [orjson.dumps({**orjson.loads(body), "max_tokens": 8, "seed": 1}) for body in bodies[:slots]]
            asyncio.run(bare_client(base + "/chat/completions", warm, slots))
            first_s, first_tokens = asyncio.run(bare_client(base + "/chat/completions", bodies, slots))
            ours_s, ours_tokens, sent = synthgen_run(recipe, folder / f"run-{slots}")
            again_s, again_tokens = asyncio.run(bare_client(base + "/chat/completions", bodies, slots))
            print(f"slots {slots}:")
            print(line("bare client", first_s, first_tokens, args.requests))
            print(line("synthgen", ours_s, ours_tokens, args.requests) + f"  http sent {sent}")
            print(line("bare again", again_s, again_tokens, args.requests))
            bare_rate = (first_tokens / first_s + again_tokens / again_s) / 2
            print(f"  synthgen / bare: {(ours_tokens / ours_s) / bare_rate:.2f} of the bare client's tok/s")
            del server
            gc.collect()
        if args.transformers:
            recipe = recipe_file(folder, args.requests, args.max_tokens,
                                 {"kind": "transformers", "model": str(path), "options": {"batch_size": 8}})
            try:
                seconds, tokens, _ = synthgen_run(recipe, folder / "run-transformers")
                print("transformers backend (batch 8):\n" + line("synthgen", seconds, tokens, args.requests))
            except Exception as exc:  # noqa: BLE001 - a bench reports what it could not measure
                print(f"transformers backend: not measured ({exc})")


if __name__ == "__main__":
    main()
