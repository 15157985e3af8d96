"""No head-of-line blocking: hung requests delay only their own records; the rest flow, and order is kept."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from synthgen.aio import LoopThread
from synthgen.backends.base import ChatRequest, Completion
from synthgen.backends.openai_compat import OpenAIBackend
from synthgen.pipeline import run_recipe
from synthgen.recipe import load_recipe
from synthgen.runtime import Runtime
from synthgen.sim import SimConfig, SimServer
from synthgen.stats import RunStats
from tests.conftest import read_jsonl, write


def generate_recipe(tmp_path: Path, name: str, base_url: str) -> Path:
    write(tmp_path / "prompts" / "ask.j2", "Write question number {{ leaf }} about {{ topic }}.")
    write(tmp_path / "tax.yaml", "placeholders: {topic: [owls, tides, bread, orbits]}\nchildren: [{id: a}, {id: b}]\n")
    return write(tmp_path / f"{name}.yaml", f"""
name: {name}
seed: 3
backend: {{kind: openai, base_url: "{base_url}", max_concurrency: 4, retry_initial: 0.001}}
stages:
  - generate: {{template: ask.j2, taxonomy: tax.yaml, count: 150, sampling: {{max_tokens: 16}}}}
""")


def test_records_keep_input_order_while_hung_requests_finish_late(tmp_path: Path) -> None:
    rows = {}
    for name, faults in (("calm", {}), ("hangs", {"hang": 0.1})):
        with SimServer(SimConfig(latency=0.002, faults=faults, hang_seconds=0.5, seed=2)) as sim:
            result = run_recipe(load_recipe(generate_recipe(tmp_path, name, sim.base_url)), tmp_path / name)
            hung = sim.stats()["faults"].get("hang", 0)
        rows[name] = [(row["id"], row["fields"]) for row in read_jsonl(result.run_dir.dataset_path)]
        assert result.stats.finished_requests == result.stats.planned_requests == 150
        assert (hung > 5) == bool(faults)
    assert len(rows["hangs"]) == 150
    assert rows["hangs"] == rows["calm"]  # the same records in the same order as a run without hangs


def test_requests_behind_a_hung_one_keep_completing(tmp_path: Path) -> None:
    """The first request hangs for 2 s on one server; the 200 behind it go to another and finish meanwhile."""
    loop = LoopThread()
    requests = [ChatRequest("sim-model", [{"role": "user", "content": f"question {i}"}], {"max_tokens": 8, "seed": i})
                for i in range(201)]
    try:
        with SimServer(SimConfig(latency=0.0, faults={"hang": 1.0}, hang_seconds=2.0)) as stuck, \
                SimServer(SimConfig(latency=0.0)) as fast:
            slow_backend = OpenAIBackend(stuck.base_url, max_concurrency=4, stats=RunStats())
            fast_backend = OpenAIBackend(fast.base_url, max_concurrency=8, stats=RunStats())
            runtime = Runtime(fast_backend, loop, "sim-model", "openai", max_pending=16)

            def work() -> Iterator[Any]:
                for i, request in enumerate(requests):
                    yield (slow_backend if i == 0 else fast_backend).complete(request)

            outcomes = runtime.stream(work(), RunStats())
            first = next(outcomes)
            completed_meanwhile = fast.stats()["completed"]  # when the hung head is released
            hung = stuck.stats()["faults"]
            rest = list(outcomes)
            for backend in (slow_backend, fast_backend):
                loop.run(backend.aclose())
    finally:
        loop.close()
    assert isinstance(first, Completion) and hung == {"hang": 1}
    # an in-order window stops submitting once max_pending (16) requests wait behind the head
    assert completed_meanwhile > 4 * runtime.max_pending
    assert len(rest) == 200 and all(isinstance(outcome, Completion) for outcome in rest)
