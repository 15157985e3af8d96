"""Bad input, one case at a time: a message that names the culprit, a non-zero exit, no partial output."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from synthgen.cli import app
from synthgen.embedding.diversity import diversity_metrics, k_center, semantic_duplicates
from synthgen.sim import SimConfig, SimServer
from tests.conftest import write

TEMPLATES = {"plain.j2": "Write one sentence about {{ leaf }}.", "answer.j2": "Answer: {{ record.instruction }}",
             "undef.j2": "Say {{ topic }}", "syntax.j2": "Fine\n{% if %}", "escape.j2": "{{ ''.__class__.__mro__ }}",
             "env.j2": "{{ environ }}{{ open('/etc/passwd') }}"}
BASE = """name: bad
prompts_dir: prompts
backend: {kind: sim, sim: {latency: 0.0}, max_attempts: 2, retry_initial: 0.01}
stages:
  - generate:
      template: t/plain.j2
      count: 3
"""
SOURCED = """name: bad
prompts_dir: prompts
source: {path: in.jsonl, fields: [instruction]}
backend: {kind: sim, sim: {latency: 0.0}}
stages:
  - generate: {template: t/answer.j2}
"""
KEY = "sk-bad-input-SECRET-77"


@pytest.fixture(scope="module")
def guarded_sim() -> Iterator[SimServer]:
    with SimServer(SimConfig(latency=0.0, api_key=KEY, models=["sim-model"], max_context_tokens=500)) as server:
        yield server


def run(tmp_path: Path, recipe: str, *extra: str, files: dict[str, str | bytes] | None = None,
        env: dict[str, str] | None = None) -> tuple[int, str, Path]:
    """Write the recipe, its templates and input files under tmp_path/recipes, run it, return (exit code,
    output, run dir)."""
    for name, text in TEMPLATES.items():
        write(tmp_path / "recipes" / "prompts" / "t" / name, text)
    for name, content in (files or {}).items():
        path = tmp_path / "recipes" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    recipe_path = write(tmp_path / "recipes" / "r.yaml", recipe)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(recipe_path), "--out", str(out), *extra], env=env)
    return result.exit_code, result.stderr + result.stdout, out


def assert_clean_failure(code: int, message: str, out: Path, *needles: str) -> None:
    assert code != 0, message
    assert "Traceback" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    if out.exists():
        assert not (out / "dataset.jsonl").exists() and not list(out.rglob("*.tmp")), sorted(out.rglob("*"))


RECIPE_CASES: dict[str, tuple[str, dict[str, str | bytes], tuple[str, ...]]] = {
    "malformed yaml": ("name: bad\nstages: [\n  - generate: {a: 1\n", {}, ("r.yaml", "invalid YAML", "line")),
    "not a mapping": ("- just\n- a list\n", {}, ("r.yaml", "a recipe is a YAML mapping")),
    "unknown top-level key": (BASE + "colour: red\n", {}, ("r.yaml: colour", "Extra inputs")),
    "unknown stage": (BASE + "  - dedupe: {}\n", {}, ("r.yaml: stages[1]", "unknown stage 'dedupe'")),
    "unknown stage key": (BASE.replace("count: 3", "count: 3\n      tempalte: x"), {}, ("stages[0].generate.tempalte",)),
    "wrong type": (BASE.replace("count: 3", "count: three"), {}, ("stages[0].generate.count", "valid integer")),
    "two keys in a stage": (BASE + "  - exact_dedup: {}\n    length_filter: {}\n", {}, ("stages[1]", "one key")),
    "count on a later stage": (BASE + "  - generate: {template: t/plain.j2, count: 2}\n", {},
                               ("stages[1].generate.count",)),
    "unknown backend": (BASE.replace("kind: sim", "kind: telepathy"), {}, ("unknown backend 'telepathy'",)),
    "bad sim option": (BASE.replace("latency: 0.0", "latency: -1"), {}, ("latency",)),
    "missing template": (BASE.replace("t/plain.j2", "nowhere/x.j2"), {}, ("nowhere/x.j2", "not found")),
    "unknown template variable": (BASE.replace("t/plain.j2", "t/undef.j2"),
                                  {}, ("t/undef.j2", "undefined variable 'topic'")),
    "template syntax error": (BASE.replace("t/plain.j2", "t/syntax.j2"), {}, ("t/syntax.j2", "line 2")),
    "sandbox escape": (BASE.replace("t/plain.j2", "t/escape.j2"), {}, ("t/escape.j2", "sandbox")),
    "template reading the environment": (BASE.replace("t/plain.j2", "t/env.j2"), {}, ("t/env.j2",)),
    "invalid json schema": (BASE.replace("count: 3", "count: 3\n      schema: {type: objekt}"), {},
                            ("stages[0].generate.schema.type", "not a valid JSON Schema")),
    "unimportable schema model": (BASE.replace("count: 3", "count: 3\n      schema_model: nope.mod:Model"), {},
                                  ("stages[0].generate.schema_model", "cannot import")),
    "missing input file": (SOURCED, {}, ("in.jsonl", "input file not found")),
    "jsonl line not json": (SOURCED, {"in.jsonl": '{"instruction": "a"}\n{oops\n'}, ("in.jsonl:2", "not valid JSON")),
    "jsonl line not an object": (SOURCED, {"in.jsonl": '{"instruction": "a"}\n[1]\n'}, ("in.jsonl:2", "JSON object")),
    "jsonl lacks the field": (SOURCED, {"in.jsonl": '{"instruction": "a"}\n{"other": 1}\n'}, ("in.jsonl:2", "lacks field")),
    "jsonl NaN literal": (SOURCED, {"in.jsonl": '{"instruction": NaN}\n'}, ("in.jsonl:1", "not valid JSON")),
    "empty input": (SOURCED, {"in.jsonl": "\n\n"}, ("in.jsonl", "no records")),
    "non-utf8 bytes": (SOURCED, {"in.jsonl": b'{"instruction": "\xff\xfe"}\n'}, ("in.jsonl:1", "not valid JSON")),
    "20 MB single document": (SOURCED, {"in.jsonl": '{"instruction": "' + "x" * 20_000_000 + '"}\n'},
                              ("in.jsonl:1", "max_record_bytes")),
    "taxonomy with zero total weight": (BASE.replace("template: t/plain.j2", "taxonomy: tax.yaml"),
                                        {"tax.yaml": "template: t/plain.j2\nchildren:\n  - {id: a, weight: 0}\n"},
                                        ("tax.yaml", "sum to zero")),
    "cyclic taxonomy": (BASE.replace("template: t/plain.j2", "taxonomy: tax.yaml"),
                        {"tax.yaml": "children:\n  - &a {id: a, children: [*a]}\n"}, ("tax.yaml", "cycle")),
    "duplicate taxonomy ids": (BASE.replace("template: t/plain.j2", "taxonomy: tax.yaml"),
                               {"tax.yaml": "template: t/plain.j2\nchildren: [{id: a}, {id: a}]\n"},
                               ("tax.yaml", "duplicate")),
    "export folder escaping the run directory": (BASE + "  - export: {out: ../../elsewhere}\n", {},
                                                 ("stages[1].export.out", "inside the run directory")),
    "unknown backend option": (BASE.replace("kind: sim,", "kind: transformers, options: {batch_sise: 4},"), {},
                               ("options.batch_sise", "Extra inputs")),
    "vllm backend without vllm": (BASE.replace("kind: sim,", "kind: vllm,"), {}, ("synthgen[vllm]",)),
    "unknown batch mode": (BASE.replace("kind: sim,", "kind: sim, mode: offline,"), {}, ("backend.mode",)),
}


@pytest.mark.parametrize("case", sorted(RECIPE_CASES))
def test_recipe_and_input_errors(tmp_path: Path, case: str) -> None:
    recipe, files, needles = RECIPE_CASES[case]
    code, message, out = run(tmp_path, recipe, files=files)
    assert_clean_failure(code, message, out, *needles)


def backend_case(extra: tuple[str, ...], env: dict[str, str], needles: tuple[str, ...]) -> Callable[[Path, SimServer], None]:
    def check(tmp_path: Path, sim: SimServer) -> None:
        recipe = BASE.replace("kind: sim, sim: {latency: 0.0}", "kind: openai")
        code, message, out = run(tmp_path, recipe, "--base-url", sim.base_url, *extra, env=env)
        assert_clean_failure(code, message, out, *needles)
        assert KEY not in message
    return check


BACKEND_CASES = {
    "401 bad key": backend_case((), {"OPENAI_API_KEY": "sk-wrong"}, ("backend answered 401", "OPENAI_API_KEY")),
    "404 unknown model": backend_case(("--model", "ghost"), {"OPENAI_API_KEY": KEY}, ("backend answered 404", "model 'ghost'")),
    "400 context length": backend_case(("--model", "sim-model"), {"OPENAI_API_KEY": KEY}, ("backend answered 400", "max_tokens")),
}


@pytest.mark.parametrize("case", sorted(BACKEND_CASES))
def test_backend_errors(tmp_path: Path, guarded_sim: SimServer, case: str) -> None:
    BACKEND_CASES[case](tmp_path, guarded_sim)


def test_unreachable_base_url(tmp_path: Path) -> None:
    recipe = BASE.replace("kind: sim, sim: {latency: 0.0}", "kind: openai")
    code, message, out = run(tmp_path, recipe, "--base-url", "http://127.0.0.1:9/v1")
    assert_clean_failure(code, message, out, "cannot connect to http://127.0.0.1:9/v1", "--base-url")


def test_unknown_engine(tmp_path: Path) -> None:
    code, message, out = run(tmp_path, BASE, "--engine", "spark")
    assert code == 2
    assert_clean_failure(code, message, out, "--engine", "'spark'")


def test_output_directory_not_writable(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where a folder should be")
    result = CliRunner().invoke(app, ["run", "recipes/quickstart.yaml", "--out", str(tmp_path / "blocker" / "run")])
    assert result.exit_code == 2 and "cannot create the run directory" in result.stderr


def test_second_concurrent_run_is_locked(tmp_path: Path) -> None:
    from synthgen.rundir import RunDir

    with RunDir(tmp_path / "run").open():
        code, message, out = run(tmp_path, BASE)
    assert_clean_failure(code, message, out, "another synthgen run is using this directory")


def test_corrupted_cache_file(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "cache.sqlite").write_bytes(os.urandom(4096))
    code, message, out = run(tmp_path, BASE)
    assert_clean_failure(code, message, out, "cache.sqlite", "request cache is unreadable", "--fresh")


def test_disk_full_during_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from synthgen import export

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export, "_write", full)
    code, message, out = run(tmp_path, BASE + "  - export: {layout: records}\n")
    assert_clean_failure(code, message, out, "export: cannot write the export (No space left on device)")
    assert not (out / "export").exists() and not (out / "export.tmp").exists()
    shutil.rmtree(out)


def test_sim_server_refuses_a_public_address() -> None:
    result = CliRunner().invoke(app, ["sim-server", "--host", "0.0.0.0", "--port", "0"])
    assert result.exit_code == 2 and "loopback" in result.stderr


@pytest.mark.parametrize("function", [diversity_metrics, lambda x: k_center(x, 2), lambda x: semantic_duplicates(x)])
def test_nan_and_inf_embeddings_are_refused(function: Callable[[np.ndarray], object]) -> None:
    vectors = np.eye(4, dtype=np.float32)
    vectors[2, 1] = np.nan
    vectors[3, 0] = np.inf
    with pytest.raises(ValueError, match=r"NaN or infinity in 2 row\(s\), e.g. rows \[2, 3\]"):
        function(vectors)
