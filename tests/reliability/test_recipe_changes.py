"""Change the recipe, re-run: exactly the requests whose answer can differ are sent again, and the dataset
equals a fresh run's of the changed recipe (issue 14, items 5, 6, 7 and 9)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from synthgen.backends.factory import BackendConfig
from synthgen.cli import app
from synthgen.sim import SimConfig, SimServer
from synthgen.sim.process import get_json
from tests.conftest import read_jsonl, write

TEMPLATES = {"ask.j2": "Write one question about {{ leaf }}.", "answer.j2": "Answer briefly: {{ record.instruction }}"}
RECIPE = """name: change
prompts_dir: prompts
seed: 7
backend: {kind: openai, max_attempts: 2, retry_initial: 0.01}
stages:
  - generate: {template: t/ask.j2, count: 6, output: instruction}
  - generate: {template: t/answer.j2, output: answer}
  - minhash_dedup: {fields: [instruction], decontaminate: [{path: eval.jsonl, fields: [instruction]}]}
"""
FILTER = "  - length_filter: {field: instruction, min_chars: 1}\n"
MODEL = '''from pydantic import BaseModel, field_validator


class Answer(BaseModel):
    answer: str
'''
UPPER = MODEL + '''
    @field_validator("answer")
    @classmethod
    def _shout(cls, value: str) -> str:
        return value.upper()
'''


@pytest.fixture
def sim() -> Iterator[SimServer]:
    """A sim server that records a hash of every request body it receives."""
    with SimServer(SimConfig(latency=0.0, track_bodies=True)) as server:
        yield server


class Project:
    """A recipe folder under tmp_path, run against one sim server; counts the requests each run sends."""

    def __init__(self, root: Path, sim: SimServer) -> None:
        self.root, self.sim = root / "recipes", sim
        for name, text in TEMPLATES.items():
            write(self.root / "prompts" / "t" / name, text)
        write(self.root / "eval.jsonl", '{"instruction": "an evaluation question nobody generates"}\n')
        self.seen: set[str] = set()
        self.recipe(RECIPE)

    @property
    def root_url(self) -> str:
        return self.sim.base_url.removesuffix("/v1")

    def recipe(self, text: str) -> None:
        write(self.root / "r.yaml", text)

    def run(self, out: Path, *extra: str, base_url: str | None = None) -> tuple[int, int]:
        """Run the recipe into `out`; (requests sent, how many of them an earlier run had already sent)."""
        get_json(self.root_url + "/sim/reset", method="POST")
        result = CliRunner().invoke(app, ["run", str(self.root / "r.yaml"), "--out", str(out),
                                          "--base-url", base_url or self.sim.base_url, *extra])
        assert result.exit_code == 0, result.stderr + result.stdout
        bodies = get_json(self.root_url + "/sim/bodies")
        repeated = sum(body in self.seen for body in bodies)
        self.seen.update(bodies)
        return len(bodies), repeated

    def fresh_dataset(self, tmp_path: Path, name: str) -> bytes:
        """The dataset a fresh run (new run directory, empty cache) of the current recipe makes."""
        self.run(tmp_path / f"fresh-{name}")
        return (tmp_path / f"fresh-{name}" / "dataset.jsonl").read_bytes()


@pytest.fixture
def project(tmp_path: Path, sim: SimServer) -> Project:
    return Project(tmp_path, sim)


def test_item6_inserting_and_removing_a_filter_resends_nothing(tmp_path: Path, project: Project) -> None:
    out = tmp_path / "run"
    assert project.run(out) == (12, 0)
    before = read_jsonl(out / "dataset.jsonl")
    project.recipe(RECIPE.replace("  - generate: {template: t/answer.j2", FILTER + "  - generate: {template: t/answer.j2"))
    assert project.run(out) == (0, 0)
    after = read_jsonl(out / "dataset.jsonl")
    assert [r["id"] for r in after] == [r["id"] for r in before]  # ids do not depend on a stage's position
    assert (out / "dataset.jsonl").read_bytes() == project.fresh_dataset(tmp_path, "inserted")
    project.recipe(RECIPE)
    assert project.run(out) == (0, 0)
    assert read_jsonl(out / "dataset.jsonl") == before


def test_item5_switching_backend_resends_everything(tmp_path: Path, project: Project) -> None:
    out = tmp_path / "run"
    assert project.run(out) == (12, 0)
    with SimServer(SimConfig(latency=0.0, track_bodies=True)) as other:
        code = CliRunner().invoke(app, ["run", str(project.root / "r.yaml"), "--out", str(out), "--base-url", other.base_url])
        assert code.exit_code == 0, code.stderr
        assert len(get_json(other.base_url.removesuffix("/v1") + "/sim/bodies")) == 12  # no answer of the first server is served for the second
    assert project.run(out) == (0, 0)  # the first server's answers are still cached under its own identity


def test_item5_a_sim_answer_is_never_served_for_a_real_server(tmp_path: Path, project: Project) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(project.root / "r.yaml"), "--out", str(out), "--backend", "sim"])
    assert result.exit_code == 0, result.stderr
    dead = CliRunner().invoke(app, ["run", str(project.root / "r.yaml"), "--out", str(out),
                                    "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1"])
    assert dead.exit_code != 0 and "cannot connect to http://127.0.0.1:9/v1" in dead.stderr


def test_item5_cache_key_identity() -> None:
    plain = BackendConfig(kind="openai", base_url="http://h:1/v1")
    assert plain.identity() == {"kind": "openai", "options": {}, "base_url": "http://h:1/v1"}
    assert BackendConfig(kind="openai", base_url="http://user:pw@h:1/v1/").identity() == plain.identity()
    assert BackendConfig(kind="openai", base_url="http://h:1/v1", max_concurrency=3, timeout=5, rpm=60).identity() \
        == plain.identity()  # throughput settings do not change an answer
    assert BackendConfig(kind="sim", sim={"duplicate_rate": 0.5}).identity() == \
        {"kind": "sim", "options": {}, "sim": {"duplicate_rate": 0.5}}
    assert BackendConfig(kind="vllm", options={"dtype": "half"}).identity() == {"kind": "vllm", "options": {"dtype": "half"}}


def test_item5_throughput_settings_resend_nothing(tmp_path: Path, project: Project) -> None:
    out = tmp_path / "run"
    assert project.run(out) == (12, 0)
    project.recipe(RECIPE.replace("max_attempts: 2", "max_attempts: 3, max_concurrency: 4, timeout: 30"))
    assert project.run(out, "--max-concurrency", "2") == (0, 0)


def test_item7_edited_template_resends_only_its_stage(tmp_path: Path, project: Project) -> None:
    out = tmp_path / "run"
    assert project.run(out) == (12, 0)
    write(project.root / "prompts" / "t" / "answer.j2", "Answer in one line: {{ record.instruction }}")
    assert project.run(out) == (6, 0)  # the six answers; the six questions come from the cache
    assert (out / "dataset.jsonl").read_bytes() == project.fresh_dataset(tmp_path, "template")


def test_item7_changed_decontamination_file_reruns_dedup_without_requests(tmp_path: Path, project: Project) -> None:
    out = tmp_path / "run"
    assert project.run(out) == (12, 0)
    first = read_jsonl(out / "dataset.jsonl")
    leaked = first[0]["fields"]["instruction"]
    write(project.root / "eval.jsonl", orjson_line({"instruction": leaked}))
    assert project.run(out) == (0, 0)
    kept = read_jsonl(out / "dataset.jsonl")
    assert leaked not in [r["fields"]["instruction"] for r in kept] and len(kept) < len(first)
    assert (out / "dataset.jsonl").read_bytes() == project.fresh_dataset(tmp_path, "decontamination")


def test_item7_relative_and_absolute_paths_give_one_fingerprint(tmp_path: Path, project: Project) -> None:
    out = tmp_path / "run"
    assert project.run(out) == (12, 0)
    done = sorted(p.read_bytes() for p in (out / "checkpoints").glob("*.done"))
    project.recipe(RECIPE.replace("path: eval.jsonl", f"path: {project.root / 'eval.jsonl'}"))
    assert project.run(out) == (0, 0)
    assert sorted(p.read_bytes() for p in (out / "checkpoints").glob("*.done")) == done  # nothing re-ran


def test_item7_changed_schema_model_reruns_its_stage(tmp_path: Path, project: Project,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    module = "change_schema_models"
    write(tmp_path / "models" / f"{module}.py", MODEL)
    monkeypatch.syspath_prepend(str(tmp_path / "models"))
    project.recipe(RECIPE.replace("output: answer", f"schema_model: '{module}:Answer'"))
    out = tmp_path / "run"
    assert project.run(out) == (12, 0)
    assert not any(r["fields"]["answer"].isupper() for r in read_jsonl(out / "dataset.jsonl"))
    write(tmp_path / "models" / f"{module}.py", UPPER)  # same JSON schema, new validation
    monkeypatch.delitem(sys.modules, module)
    assert project.run(out) == (0, 0)  # the request (and its schema) is unchanged: answered from the cache
    assert all(r["fields"]["answer"].isupper() for r in read_jsonl(out / "dataset.jsonl"))
    monkeypatch.delitem(sys.modules, module)
    assert (out / "dataset.jsonl").read_bytes() == project.fresh_dataset(tmp_path, "schema")


def test_item9_transient_rejects_are_retried_on_the_next_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with SimServer(SimConfig(latency=0.0, faults={"server_error": 0.5}, seed=3, track_bodies=True)) as flaky:
        project = Project(tmp_path, flaky)
        project.recipe(RECIPE.replace("max_attempts: 2", "max_attempts: 1"))
        project.run(out)
        lost = [r for r in read_jsonl(out / "rejects.jsonl") if r["reason"].startswith("backend_")]
        assert lost, "the faulty server should have cost some records"
        kept = len(read_jsonl(out / "dataset.jsonl"))
        project.run(out, "--keep-rejects")
        assert len(read_jsonl(out / "dataset.jsonl")) == kept  # --keep-rejects: the earlier result stands
        port = flaky.port
    with SimServer(SimConfig(latency=0.0, track_bodies=True), port=port) as healthy:
        project.sim = healthy
        sent, repeated = project.run(out)
        lost_questions = sum(r["stage"] == "00-generate" for r in lost)
        assert repeated == len(lost)  # every lost request is sent again, and no request that had succeeded
        assert sent == len(lost) + lost_questions  # plus the answers to the questions that were lost
        assert not [r for r in read_jsonl(out / "rejects.jsonl") if r["reason"].startswith("backend_")]
        assert (out / "dataset.jsonl").read_bytes() == project.fresh_dataset(tmp_path, "healed")


def orjson_line(row: dict[str, str]) -> str:
    import json

    return json.dumps(row) + "\n"


def test_item7_a_glob_source_is_fingerprinted_by_the_files_it_lists(tmp_path: Path) -> None:
    """A `files` source given as a glob: editing, adding or removing a listed file changes the fingerprints;
    a file the glob does not match does not."""
    from synthgen.api import recipe_from_dict
    from synthgen.fingerprint import stage_fingerprints

    docs = tmp_path / "docs"
    write(docs / "a.md", "# A\n\nalpha\n")
    write(docs / "b.md", "# B\n\nbeta\n")
    recipe = recipe_from_dict({"name": "g", "source": {"path": "docs/*.md", "format": "files"},
                               "stages": [{"extract_text": {}}]}, tmp_path)

    def prints() -> list[str]:
        return stage_fingerprints(recipe, 1, None)

    first = prints()
    write(docs / "notes.txt", "not matched")
    assert prints() == first
    write(docs / "b.md", "# B\n\nbeta, edited\n")
    edited = prints()
    write(docs / "c.md", "# C\n")
    added = prints()
    assert len({tuple(first), tuple(edited), tuple(added)}) == 3
