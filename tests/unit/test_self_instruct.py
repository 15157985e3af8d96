"""Self-Instruct's filters, the fast ROUGE-L pool against the all-pairs reference, and prompt composition."""

from __future__ import annotations

import json
import random
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from synthgen.errors import ConfigError, InputError
from synthgen.pipeline import run_recipe
from synthgen.prompts import PromptLibrary
from synthgen.recipe import load_recipe
from synthgen.recipes.rouge import RougePool, naive_most_similar, rouge_l, rouge_tokens
from synthgen.recipes.self_instruct import (
    BLACKLIST,
    SelfInstructParams,
    Task,
    filter_instances,
    instruction_verdict,
    pick_demos,
    pick_examples,
    seed_task,
)
from synthgen.record import Record
from synthgen.sim import SimServer
from synthgen.stages.base import StageContext
from synthgen.stages.transform import Explode, ExplodeParams
from tests.conftest import REPO, read_checkpoint_records, read_jsonl, synthgen, write


def verdict(text: str) -> str | None:
    found = instruction_verdict(text, min_words=4, max_words=150)
    return found[0] if found else None


@pytest.mark.parametrize(("words", "reason"), [(1, "too_few_words"), (3, "too_few_words"), (4, None), (150, None),
                                               (151, "too_many_words")])
def test_word_count_bounds(words: int, reason: str | None) -> None:
    assert verdict(" ".join(["Explain"] + ["tides"] * (words - 1))) == reason


@pytest.mark.parametrize("word", BLACKLIST)
def test_each_blacklisted_word_is_caught_in_any_case(word: str) -> None:
    assert verdict(f"Describe the {word} we saw in the report") == "blacklisted_word"
    assert verdict(f"Describe the {word.upper()} we saw in the report") == "blacklisted_word"


@pytest.mark.parametrize("text", ["Imagine a mapping between two user profiles", "Suggest a plotline for a drawer mystery",
                                  "Tell me where we go tomorrow evening", "Summarise the filed graphics report"])
def test_blacklist_matches_whole_words_only(text: str) -> None:
    assert verdict(text) is None


def test_instruction_reasons_in_order() -> None:
    assert verdict("Write a program that sorts a list of numbers") == "write_a_program"
    assert verdict("write a program that adds two numbers together") == "write_a_program"
    assert verdict("Write a poem about computer programs") is None
    assert verdict("Write a program to draw a house") == "blacklisted_word"  # the blacklist comes first
    assert verdict('"Quote" the most famous line of Hamlet') == "starts_with_punctuation"
    assert verdict("- List five fruits that are red") == "starts_with_punctuation"
    assert verdict("¿Cómo se dice hello en francés?") == "starts_with_non_ascii"
    assert verdict("Édith wants a list of French novels") == "starts_with_non_ascii"
    assert verdict("Give three tips for staying healthy.") is None


def test_rouge_tokens_follow_rouge_score() -> None:
    assert rouge_tokens("Don't panic! Café #42") == ["don", "t", "panic", "caf", "42"]


def test_rouge_threshold_is_strict() -> None:
    pool = RougePool(0.7)
    pool.add(rouge_tokens("Give three tips for staying healthy."))
    pool.add(list("abcdefghij"))
    match = pool.most_similar(rouge_tokens("Give three tips for staying healthy and fit"))
    assert match is not None and match.entry == 0 and match.score == pytest.approx(2 * 6 / 14)
    assert pool.most_similar(rouge_tokens("Give three reasons for learning French")) is None  # F1 0.5
    assert rouge_l(list("abcdefghij"), list("abcdefgxyz")) == pytest.approx(0.7)
    assert pool.most_similar(list("abcdefgxyz")) is None  # exactly 0.7 is kept
    assert pool.most_similar(list("abcdefghyz")) == (pytest.approx(0.8), 1)
    assert pool.most_similar([]) is None and RougePool(0.7).most_similar(["a"]) is None
    with pytest.raises(ValueError, match="0.7"):
        RougePool(1.0)


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7, 0.9])
def test_fast_pool_equals_all_pairs_reference(threshold: float) -> None:
    rng = random.Random(threshold)
    words = [f"w{i}" for i in range(12)]
    pool: list[list[str]] = []
    fast = RougePool(threshold)
    decisions = 0
    for _ in range(300):
        tokens = [rng.choice(words) for _ in range(rng.randint(0, 14))]
        if pool and rng.random() < 0.5:  # a near duplicate of an entry: the interesting side of the threshold
            tokens = [t if rng.random() < 0.8 else rng.choice(words) for t in rng.choice(pool)]
        expected, found = naive_most_similar(tokens, pool), fast.most_similar(tokens)
        if expected.score > threshold:
            assert found == expected, tokens
            decisions += 1
        else:
            assert found is None, tokens
        pool.append(tokens)
        fast.add(tokens)
    assert decisions > 20


def test_instance_filters() -> None:
    kept, dropped, conflict = filter_instances([
        {"input": "2 + 2", "output": " 4 "},
        {"input": "x", "output": ""},
        {"input": "same", "output": "same"},
        {"input": "", "output": "Here are the steps:"},
        {"input": "List them:", "output": "a, b"},
        {"input": "2 + 2", "output": "4"},
        {"input": "", "output": "A poem."},
        {"input": "", "output": "Another poem."},
    ])
    assert conflict is None
    assert kept == [{"input": "2 + 2", "output": "4"}, {"input": "", "output": "A poem."}, {"input": "", "output": "Another poem."}]
    assert dropped == {"empty_output": 1, "input_equals_output": 1, "ends_with_colon": 2, "repeated_instance": 1}


def test_same_input_with_different_outputs_is_a_conflict() -> None:
    kept, dropped, conflict = filter_instances([{"input": "Is 7 prime?", "output": "yes"}, {"input": "Is 7 prime?", "output": "no"}])
    assert conflict == "Is 7 prime?"
    assert filter_instances([{"input": "a", "output": ""}])[0] == []


def test_prompt_examples_mix_seed_and_generated_and_are_shuffled_deterministically() -> None:
    seeds = [Task(f"s{i}", f"seed {i}") for i in range(20)]
    generated = [Task(f"g{i}", f"generated {i}") for i in range(5)]

    def ids(n_generated: int, key: int) -> list[str]:
        return [t.id for t in pick_examples(random.Random(key), seeds, generated[:n_generated], 6, 2)]

    for n_generated, expected in [(0, 0), (1, 1), (2, 2), (5, 2)]:
        picked = ids(n_generated, 7)
        assert len(picked) == len(set(picked)) == 8
        assert sum(i.startswith("g") for i in picked) == expected
    assert ids(5, 7) == ids(5, 7) and ids(5, 7) != ids(5, 8)
    positions = {i for key in range(30) for i, name in enumerate(ids(5, key)) if name.startswith("g")}
    assert len(positions) > 4  # generated examples land anywhere, not always first
    assert len(pick_examples(random.Random(0), seeds[:3], [], 6, 2)) == 3


def test_malformed_seed_task_names_its_line() -> None:
    record = Record("r1", {"instruction": "Do it", "instances": [{"input": "", "output": 3}]}, {"source": "s.jsonl", "line": 4})
    with pytest.raises(InputError, match=r"s\.jsonl:4: seed task `instances`"):
        seed_task(record)
    task = seed_task(Record("r2", {"instruction": " Do  it ", "instances": [{"output": "done"}]}))
    assert task == Task("r2", "Do it", False, ({"input": "", "output": "done"},))


def test_params_are_checked(tmp_path: Path) -> None:
    assert SelfInstructParams().rouge_threshold == 0.7
    for bad, message in [("min_words: 9, max_words: 5", "min_words"), ("rouge_treshold: 0.5", "rouge_treshold"),
                         ("seed_examples: 0, generated_examples: 0", "at least 1")]:
        path = write(tmp_path / "r.yaml", f"name: x\nsource: {{path: s.jsonl}}\nstages:\n  - self_instruct: {{{bad}}}\n")
        with pytest.raises(ConfigError, match=message):
            load_recipe(path)


@contextmanager
def recording_proxy(target: str, bodies: list[dict[str, object]]) -> Iterator[str]:
    """A real HTTP server in front of `target` (a base URL) that keeps every JSON request body it forwards."""

    class Forward(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the client expects

        def _forward(self, body: bytes | None) -> None:
            request = urllib.request.Request(target.removesuffix("/v1") + self.path, body, method=self.command,
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=30) as answer:
                    status, raw = answer.status, answer.read()
            except urllib.error.HTTPError as error:
                status, raw = error.code, error.read()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self._forward(None)

        def do_POST(self) -> None:  # noqa: N802
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            bodies.append(json.loads(raw))
            self._forward(raw)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Forward)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_shipped_settings_put_generated_instructions_into_later_prompts(sim: SimServer, tmp_path: Path) -> None:
    recipe = load_recipe(REPO / "recipes" / "self_instruct.yaml")
    bodies: list[dict[str, object]] = []
    with recording_proxy(sim.base_url, bodies) as url:
        result = run_recipe(recipe.with_backend(base_url=url), tmp_path / "run")
    seeds = {row["instruction"] for row in read_jsonl(REPO / "recipes" / "data" / "self_instruct_seed_tasks.jsonl")}
    accepted = {row["fields"]["instruction"] for row in read_checkpoint_records(result.run_dir.path, "00-self_instruct")}
    shown = []  # the example instructions of each instruction-generation prompt, in the order sent
    for body in bodies:
        prompt = body["messages"][-1]["content"]  # type: ignore[index]
        if "Come up with new ones" in prompt:
            shown.append(re.findall(r"^Task \d+: (.+)$", prompt, re.MULTILINE))
    generated = [[text for text in examples if text not in seeds] for examples in shown]
    assert all(len(examples) == 8 for examples in shown)
    assert generated[0] == [] and sum(bool(g) for g in generated) >= len(shown) // 2
    assert all(len(g) <= 2 and set(g) <= accepted for g in generated)  # 6 seed + 2 machine-generated, once there are some
    summary = json.loads((result.run_dir.checkpoints / "00-self_instruct.summary.json").read_text())
    assert summary["rounds"] >= 3 and summary["stopped_by"] == "target"


def seed_tasks() -> list[Task]:
    rows = read_jsonl(REPO / "recipes" / "data" / "self_instruct_seed_tasks.jsonl")
    return [seed_task(Record(str(row["id"]), row)) for row in rows]


def demo_blocks(prompt: str) -> list[str]:
    """The demonstration tasks of a rendered prompt: the text after each 'Task:' but the last (the one asked)."""
    return prompt.split("\nTask: ")[1:-1]


def test_classification_prompt_is_the_originals_question_with_31_labelled_seed_tasks() -> None:
    labelling, _ = pick_demos(random.Random(0), seed_tasks())
    messages = PromptLibrary(REPO / "prompts").render("self_instruct/classify.j2",
                                                      {"examples": labelling, "instruction": "Sort the list."})
    assert [m["role"] for m in messages] == ["user"]  # no definition of our own ahead of the demonstrations
    prompt = messages[0]["content"]
    assert prompt.startswith("Can the following task be regarded as a classification task with finite output labels?")
    assert prompt.count("Is it classification? Yes\n") == 12 and prompt.count("Is it classification? No\n") == 19
    assert "Task: Sort the list.\nIs it classification?\n" in prompt


def test_input_first_prompt_shows_numbered_examples_and_tasks_without_input() -> None:
    _, demos = pick_demos(random.Random(0), seed_tasks())
    assert pick_demos(random.Random(0), seed_tasks())[1] == demos  # fixed for a run: a shared prompt prefix
    prompt = PromptLibrary(REPO / "prompts").render("self_instruct/instances_input_first.j2", {
        "demos": demos, "max_instances": 5, "instruction": "Sort the list."})[0]["content"]
    assert prompt.startswith("Come up with examples for the following tasks.")
    blocks = demo_blocks(prompt)
    assert len(blocks) == 12 and "(empty)" not in prompt
    assert sum(block.split("\n")[1].startswith("Output: ") for block in blocks) == 4  # no input: the output directly
    assert sum(block.split("\n")[1:3] == ["Example 1", block.split("\n")[2]] and block.split("\n")[2].startswith("Input: ")
               for block in blocks) == 8


def test_output_first_prompt_demonstrates_one_input_per_class_label() -> None:
    prompt = PromptLibrary(REPO / "prompts").render("self_instruct/instances_output_first.j2", {
        "max_instances": 5, "instruction": "Is the review positive?"})[0]["content"]
    seeds = {task.instruction: task for task in seed_tasks() if task.is_classification}
    blocks = demo_blocks(prompt)
    assert len(blocks) >= 6
    for block in blocks:
        labels = re.findall(r"^Class label: (.+)$", block, re.MULTILINE)
        instruction = block.split("\n")[0]
        if "\nInput: " in block:  # every label gets its own input, and the seed task's own instance is among them
            assert len(set(labels)) == len(labels) >= 2 and block.count("\nInput: ") == len(labels)
            assert seeds[instruction].instances[0]["output"] == labels[0]
            assert seeds[instruction].instances[0]["input"] in block
        else:
            assert len(labels) == 1  # a task without input: its label only
    assert prompt.rstrip().endswith('"input": "<input with that label, or empty when the task needs none>"}, ...]}.')


def test_explode_merge_makes_one_flat_record_per_object(tmp_path: Path) -> None:
    rejects: list[tuple[str, str]] = []
    ctx = StageContext(label="02-explode", index=2, seed=0, recipe_path=tmp_path / "r.yaml", prompts_dir=tmp_path,
                       resolve=lambda name: tmp_path / name, reject=lambda r, reason, detail: rejects.append((r.id, reason)))
    stage = Explode(ExplodeParams(field="instances", merge=True), ctx)
    task = Record("t1", {"instruction": "Add.", "instances": [{"input": "1+1", "output": "2"}, {"input": "", "output": "3"}]})
    odd = Record("t2", {"instruction": "Odd.", "instances": [{"input": "a", "output": "b"}, "c"]})
    rows = list(stage.run([task, odd]))
    assert [row.fields for row in rows] == [{"instruction": "Add.", "input": "1+1", "output": "2"},
                                            {"instruction": "Add.", "input": "", "output": "3"}]
    assert [row.meta["parents"] for row in rows] == [["t1"], ["t1"]] and rows[0].id != rows[1].id
    assert rejects == [("t2", "item_not_a_mapping")]
    with pytest.raises(ValueError, match="not both"):
        ExplodeParams(field="instances", into="instance", merge=True)


def test_self_instruct_run_exports_one_row_per_instance(tmp_path: Path) -> None:
    recipe = load_recipe(REPO / "recipes" / "self_instruct.yaml")
    result = run_recipe(recipe.with_backend(kind="sim"), tmp_path / "run")
    tasks = read_checkpoint_records(result.run_dir.path, "01-exact_dedup")
    instances = [(t["fields"]["instruction"], i["input"], i["output"]) for t in tasks for i in t["fields"]["instances"]]
    assert len(tasks) == 100 and len(instances) > len(tasks)
    for layout in ("alpaca", "messages", "sharegpt"):
        done = synthgen("export", str(result.run_dir.path), "--layout", layout, "--out", str(tmp_path / layout))
        assert done.returncode == 0, done.stderr
        rows = read_jsonl(tmp_path / layout / "train.jsonl")
        assert len(rows) == len(instances), layout
    alpaca = read_jsonl(tmp_path / "alpaca" / "train.jsonl")
    assert sorted((r["instruction"], r["input"], r["output"]) for r in alpaca) == sorted(instances)
