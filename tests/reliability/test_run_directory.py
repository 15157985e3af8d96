"""The run directory is synthgen's own: foreign folders refused, --fresh removes only synthgen's files, exports
never replace a user's folder, a full disk loses nothing, stats add up across attempts, SIGTERM stops cleanly
(issue 14, items 1, 2, 3, 4, 8 and 16); compact checkpoints (issue 19, item 4)."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import yaml
from typer.testing import CliRunner

from synthgen import api as synthgen_api
from synthgen import export
from synthgen.api import recipe_from_dict
from synthgen.checkpoints import CHECKPOINT_FORMAT
from synthgen.cli import app
from synthgen.recipe import Recipe, load_recipe
from synthgen.report import build_report
from synthgen.rundir import EXPORT_MARKER, RUN_MARKER, RunDir, read_lines
from tests.conftest import REPO, disk_full_for, read_checkpoint_records, read_jsonl, synthgen, write
from tests.integration.test_report import FakeEncoder
from tests.test_bad_input import BASE, assert_clean_failure, run

RESUME = "re-run the same command to resume: nothing is lost"


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stderr + result.stdout


def quickstart(tmp_path: Path, *, export_stage: bool = False, sim: dict[str, float] | None = None) -> Path:
    """recipes/quickstart.yaml on the built-in sim, dropping answers under 300 characters, optionally exported."""
    recipe = yaml.safe_load((REPO / "recipes" / "quickstart.yaml").read_text())
    recipe["backend"] = {"kind": "sim", "model": "sim-model", "max_concurrency": 4,
                         "sim": {"latency": 0.0, "duplicate_rate": 0.5, **(sim or {})}}
    recipe["stages"].append({"length_filter": {"field": "response", "min_chars": 300}})  # some rejects
    if export_stage:
        recipe["stages"].append({"export": {"layout": "alpaca", "fields": {"output": "response"}}})
    return write(tmp_path / "recipe.yaml", yaml.safe_dump(recipe, sort_keys=False))


def files_in(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("fresh", [True, False])
def test_item1_a_folder_synthgen_did_not_create_is_refused(tmp_path: Path, fresh: bool) -> None:
    out = tmp_path / "run"
    write(out / "dataset.jsonl", '{"mine": 1}\n')
    write(out / "notes" / "todo.txt", "keep me")
    before = files_in(out)
    code, message, _ = run(tmp_path, BASE, *(["--fresh"] if fresh else []))
    action = "empty it with --fresh" if fresh else "write into it"
    assert_clean_failure(code, message, tmp_path / "elsewhere", "not a synthgen run directory",
                         f"no {RUN_MARKER}", f"refusing to {action}", "choose a new or empty folder with --out")
    assert code == 2 and files_in(out) == before and sorted(p.name for p in out.iterdir()) == ["dataset.jsonl", "notes"]


@pytest.mark.parametrize(("out", "what"), [("/", "a parent of the working directory"), ("~", "the home folder"),
                                           (".", "the working directory"), ("..", "a parent of the working directory"),
                                           ("~/..", "a parent of the home folder")])
def test_item1_root_home_working_directory_and_parents_are_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, out: str, what: str) -> None:
    home = tmp_path / "home"
    write(home / "thesis.tex", "years of work")
    monkeypatch.setenv("HOME", str(home))
    before = sorted(p.name for p in REPO.iterdir())
    code, message = cli("run", str(write(tmp_path / "r" / "r.yaml", BASE)), "--out", out, "--fresh")
    assert code == 2 and f"{out}: is {what}; refusing to write synthgen outputs there" in message, message
    assert "Traceback" not in message
    assert sorted(p.name for p in REPO.iterdir()) == before and files_in(home) == {"thesis.tex": b"years of work"}


def test_item1_fresh_removes_only_what_synthgen_wrote(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, message = cli("run", str(quickstart(tmp_path, export_stage=True)), "--limit", "6", "--out", str(out))
    assert code == 0, message
    assert (out / RUN_MARKER).is_file() and (out / "export" / EXPORT_MARKER).is_file()
    write(out / "notes.txt", "mine")
    write(out / "analysis" / "plot.py", "mine too")
    write(out / "stats.json.bak", "a copy I made")
    with RunDir(out).open(fresh=True):
        left = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert left == [".lock", RUN_MARKER, "analysis", "analysis/plot.py", "checkpoints", "notes.txt", "stats.json.bak"]


def test_item1_a_run_directory_of_an_earlier_version_is_adopted(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert cli("run", str(quickstart(tmp_path)), "--limit", "4", "--out", str(out))[0] == 0
    before = yaml.safe_load((out / "stats.json").read_text())
    (out / RUN_MARKER).unlink()  # as an earlier synthgen left it: checkpoints/, cache.sqlite, no marker, no state
    (out / "checkpoints" / "state.json").unlink()
    code, message = cli("run", str(quickstart(tmp_path)), "--limit", "4", "--out", str(out))
    assert code == 0 and "requests 0 (http 0" in message, message
    assert (out / RUN_MARKER).is_file()
    after = yaml.safe_load((out / "stats.json").read_text())  # its stats.json held the totals so far
    assert after["tokens"] == before["tokens"] and after["requests"] == before["requests"]
    assert after["rejects_by_reason"] == before["rejects_by_reason"] and after["stages"] == before["stages"]


@pytest.mark.parametrize("name", [".", "..", "../../escape", "a/b", ".hidden", "a\\b"])
def test_item2_recipe_name_is_a_plain_name(tmp_path: Path, name: str) -> None:
    outputs = REPO / "outputs"
    listed = sorted(outputs.iterdir()) if outputs.is_dir() else None  # a user's earlier runs may be there
    code, message, out = run(tmp_path, BASE.replace("name: bad", f"name: '{name}'"))
    assert_clean_failure(code, message, out, "r.yaml: name", "is not a plain name",
                         "it names the run directory outputs/<name>")
    assert not (tmp_path / "escape").exists()
    assert (sorted(outputs.iterdir()) if outputs.is_dir() else None) == listed


def test_item2_a_plain_name_with_dots_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path / "r.yaml", BASE.replace("name: bad", "name: data.v2-final_1"))
    assert load_recipe(path).name == "data.v2-final_1"


def test_item3_export_never_replaces_a_folder_it_did_not_create(tmp_path: Path) -> None:
    code, message, out = run(tmp_path, BASE)
    assert code == 0, message
    mine = tmp_path / "mine"
    write(mine / "train.jsonl", "my own data\n")
    code, message = cli("export", str(out), "--out", str(mine))
    assert code == 2 and f"{mine}: exists and was not written by synthgen export (no {EXPORT_MARKER} in it); " \
        "refusing to replace it: choose another export folder" in message, message
    assert files_in(mine) == {"train.jsonl": b"my own data\n"} and not (tmp_path / "mine.tmp").exists()
    write(tmp_path / "blocked.tmp" / "keep.txt", "a folder named like the export's temporary")
    code, message = cli("export", str(out), "--out", str(tmp_path / "blocked"))
    assert code == 2 and "blocked.tmp: exists and was not written by synthgen export" in message, message
    assert (tmp_path / "blocked.tmp" / "keep.txt").read_text() == "a folder named like the export's temporary"
    ours = tmp_path / "ours"
    for _ in range(2):  # an earlier export of synthgen's is replaced
        code, message = cli("export", str(out), "--out", str(ours))
        assert code == 0, message
    assert sorted(p.name for p in ours.iterdir()) == [EXPORT_MARKER, "README.md", "train.jsonl"]


def test_item3_report_never_overwrites_a_file_it_did_not_write(tmp_path: Path) -> None:
    code, message, out = run(tmp_path, BASE)
    assert code == 0, message
    notes = write(tmp_path / "notes.html", "<html>my own notes</html>")
    code, message = cli("report", str(out), "--out", str(notes))
    assert code == 2 and "notes.html: exists and is not a synthgen report; refusing to overwrite it" in message, message
    assert notes.read_text() == "<html>my own notes</html>"
    for _ in range(2):  # its own report is replaced
        code, message = cli("report", str(out), "--out", str(tmp_path / "report.html"))
        assert code == 0, message


@pytest.mark.parametrize("folder", ["checkpoints", "checkpoints/sub", "backend", "cache.sqlite", "recipe.yaml",
                                    "stats.json", "dataset.jsonl", "rejects.jsonl", "dataset.jsonl.tmp", RUN_MARKER])
def test_item3_an_export_stage_cannot_write_over_the_run_files(tmp_path: Path, folder: str) -> None:
    code, message, out = run(tmp_path, BASE + f"  - export: {{out: '{folder}'}}\n")
    top = folder.split("/")[0]
    assert_clean_failure(code, message, out, "stages[1].export.out", f"is where the run keeps its own {top}")


@pytest.mark.parametrize("folder", [".", "./", "a/../.."])
def test_item3_an_export_stage_cannot_be_the_run_directory(tmp_path: Path, folder: str) -> None:
    code, message, out = run(tmp_path, BASE + f"  - export: {{out: '{folder}'}}\n")
    assert_clean_failure(code, message, out, "stages[1].export.out", "relative folder inside the run directory")


@pytest.mark.parametrize("target", ["", ".", "checkpoints", "cache.sqlite", "backend"])
def test_item3_cli_export_cannot_write_over_the_run_files(tmp_path: Path, target: str) -> None:
    code, message, out = run(tmp_path, BASE)
    assert code == 0, message
    before = files_in(out)
    code, message = cli("export", str(out), "--out", str(out / target))
    expected = "is the run directory or holds it" if target in ("", ".") else f"is where the run keeps its own {target}"
    assert code == 2 and expected in message and "Traceback" not in message, message
    assert files_in(out) == before


@pytest.mark.parametrize("suffix", ["00-generate.jsonl.zst.tmp", "00-generate.rejects.jsonl.zst.tmp", "dataset.jsonl.tmp",
                                    "stats.json.tmp", "export"])
def test_item4_a_full_disk_says_resume_and_loses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          suffix: str) -> None:
    recipe = BASE + "  - export: {layout: records}\n"
    reference = run(tmp_path / "ref", recipe)
    assert reference[0] == 0, reference[1]

    def full_export(*args: object) -> None:
        raise OSError(28, "No space left on device")

    if suffix == "export":
        monkeypatch.setattr(export, "_write", full_export)
    else:
        disk_full_for(monkeypatch, suffix)
    code, message, out = run(tmp_path, recipe)
    assert code == 2 and "Traceback" not in message and "--fresh" not in message, message
    assert f"{suffix.removesuffix('.tmp')}: cannot write" in message, message
    assert "(No space left on device); free space and " + RESUME in message, message
    assert not list(out.rglob("*.tmp")) and not (out / "recipe.yaml").exists()  # recipe.yaml: once the run succeeds
    assert (out / "dataset.jsonl").exists() == (suffix == "stats.json.tmp")  # the stats come after the dataset
    monkeypatch.undo()
    code, message, out = run(tmp_path, recipe)
    assert code == 0, message
    assert (out / "dataset.jsonl").read_bytes() == (reference[2] / "dataset.jsonl").read_bytes()
    assert (out / "export" / "records.jsonl").exists() or (out / "export" / "train.jsonl").exists()


def test_item8_a_failed_rerun_leaves_the_finished_run_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, message, out = run(tmp_path, BASE)
    assert code == 0, message
    before = {name: (out / name).read_bytes() for name in ("recipe.yaml", "dataset.jsonl", "rejects.jsonl", "stats.json")}
    disk_full_for(monkeypatch, "dataset.jsonl.tmp")  # every stage finishes, then the dataset cannot be written
    code, message, out = run(tmp_path, BASE.replace("count: 3", "count: 5"))
    assert code == 2 and "dataset.jsonl: cannot write" in message, message
    assert {name: (out / name).read_bytes() for name in before} == before


def test_item8_rerunning_a_finished_run_changes_no_stats_card_or_report(tmp_path: Path) -> None:
    recipe, out = quickstart(tmp_path, export_stage=True), tmp_path / "run"
    code, first = cli("run", str(recipe), "--limit", "20", "--out", str(out))
    assert code == 0, first
    stats, card = (out / "stats.json").read_bytes(), (out / "export" / "README.md").read_text()
    report = build_report(out, encoder=FakeEncoder()).read_text()
    data = yaml.safe_load(stats)
    assert data["rejects_by_reason"] and data["tokens"]["prompt"] > 0 and "Rejects by reason\n\nNone." not in card
    code, again = cli("run", str(recipe), "--limit", "20", "--out", str(out))
    assert code == 0 and "requests 0 (http 0" in again, again
    assert (out / "stats.json").read_bytes() == stats and (out / "export" / "README.md").read_text() == card
    assert build_report(out, encoder=FakeEncoder()).read_text() == report
    rejected = sum(data["rejects_by_reason"].values())
    assert f"({rejected} records)" in again.split("rejects:")[1].splitlines()[0]


def test_item8_stats_add_up_across_the_attempts_of_a_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = quickstart(tmp_path)
    assert cli("run", str(recipe), "--limit", "12", "--out", str(tmp_path / "ref"))[0] == 0
    reference = yaml.safe_load((tmp_path / "ref" / "stats.json").read_text())
    disk_full_for(monkeypatch, "dataset.jsonl.tmp")  # every stage finishes, then the dataset cannot be written
    out = tmp_path / "run"
    code, message = cli("run", str(recipe), "--limit", "12", "--out", str(out))
    assert code == 2 and RESUME in message, message
    monkeypatch.undo()
    code, message = cli("run", str(recipe), "--limit", "12", "--out", str(out))
    assert code == 0 and "requests 0 (http 0" in message, message  # this attempt sent nothing...
    resumed = yaml.safe_load((out / "stats.json").read_text())
    for key in ("tokens", "rejects_by_reason", "stages"):  # ...yet the run's stats count the first attempt's work
        assert resumed[key] == reference[key], key
    assert resumed["requests"]["http_sent"] == reference["requests"]["http_sent"] > 0


def test_item8_stage_metrics_survive_a_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = BASE + "  - semantic_dedup: {fields: [text]}\n"
    code, message, reference = run(tmp_path / "ref", recipe)
    assert code == 0, message
    expected = yaml.safe_load((reference / "stats.json").read_text())["metrics"]
    assert expected["01-semantic_dedup"]["before"], expected
    disk_full_for(monkeypatch, "dataset.jsonl.tmp")  # every stage finishes, then the dataset cannot be written
    code, message, out = run(tmp_path, recipe)
    assert code == 2 and RESUME in message, message
    monkeypatch.undo()
    code, message, out = run(tmp_path, recipe)  # every stage is read back from its checkpoint
    assert code == 0, message
    assert yaml.safe_load((out / "stats.json").read_text())["metrics"] == expected


def _cached(run_dir: Path) -> int:
    try:
        with sqlite3.connect(f"file:{run_dir / 'cache.sqlite'}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT COUNT(*) FROM completions").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_item16_sigterm_stops_like_ctrl_c_and_the_run_resumes(tmp_path: Path) -> None:
    recipe = quickstart(tmp_path, sim={"latency": 0.2})
    args = ["run", str(recipe), "--limit", "40"]
    run_dir = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "synthgen", *args, "--out", str(run_dir)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while _cached(run_dir) < 8 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stdout + stderr
    assert "interrupted; re-run the same command to resume" in stderr and "Traceback" not in stderr
    assert not list(run_dir.rglob("*.tmp")) and not (run_dir / "dataset.jsonl").exists()
    assert not (run_dir / "recipe.yaml").exists()
    with RunDir(run_dir).open():  # the lock was released
        pass

    resumed = synthgen(*args, "--out", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    assert "cache hits 0" not in resumed.stderr  # what the first attempt finished was replayed
    reference = synthgen(*args, "--out", str(tmp_path / "ref"))
    assert reference.returncode == 0, reference.stderr
    assert (run_dir / "dataset.jsonl").read_bytes() == (tmp_path / "ref" / "dataset.jsonl").read_bytes()
    assert len(read_jsonl(run_dir / "dataset.jsonl")) > 0


def _filter_chain(source: Path, max_chars: int = 400) -> Recipe:
    """A run without requests: exact dedup, then two length filters (each a Filter: its output is its input's)."""
    return recipe_from_dict({"name": "chain", "backend": {"kind": "sim", "model": "m"},
                             "source": {"path": str(source), "fields": ["text"]},
                             "stages": [{"exact_dedup": {}}, {"length_filter": {"min_chars": 50}},
                                        {"length_filter": {"max_chars": max_chars}}]})


def _chain_input(tmp_path: Path) -> Path:
    rng = random.Random(7)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa", "lambda", "sigma"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 90))) for _ in range(500)]
    texts += rng.sample(texts, 100)  # exact duplicates
    return write(tmp_path / "in.jsonl", "".join(json.dumps({"text": text}) + "\n" for text in texts))


def test_issue19_item4_filter_checkpoints_hold_positions_read_through_the_chain_and_resume(tmp_path: Path) -> None:
    source = _chain_input(tmp_path)
    out = tmp_path / "run"
    synthgen_api.run(_filter_chain(source), out)
    first = [orjson.loads(line) for line in read_lines(out / "checkpoints" / "00-exact_dedup.jsonl.zst")]
    assert first and all(isinstance(row, dict) for row in first)  # the source is no checkpoint: records
    for label in ("01-length_filter", "02-length_filter"):
        lines = list(read_lines(out / "checkpoints" / f"{label}.jsonl.zst"))
        assert lines and all(line.startswith(b"[") for line in lines)  # kept positions only
        plain = sum(len(json.dumps(row)) + 1 for row in read_checkpoint_records(out, label))
        assert (out / "checkpoints" / f"{label}.jsonl.zst").stat().st_size * 50 < plain
    kept_1 = [row for row in read_checkpoint_records(out, "00-exact_dedup") if len(row["fields"]["text"]) >= 50]
    assert read_checkpoint_records(out, "01-length_filter") == kept_1
    assert read_checkpoint_records(out, "02-length_filter") == read_jsonl(out / "dataset.jsonl")
    assert 0 < len(read_jsonl(out / "dataset.jsonl")) < len(kept_1) < len(first) < 600

    done = {p.name: p.read_bytes() for p in (out / "checkpoints").glob("0[01]-*.done")}
    synthgen_api.run(_filter_chain(source, max_chars=300), out)  # resumed at the last stage, over two checkpoints
    assert {p.name: p.read_bytes() for p in (out / "checkpoints").glob("0[01]-*.done")} == done  # not run again
    synthgen_api.run(_filter_chain(source, max_chars=300), tmp_path / "ref")
    assert (out / "dataset.jsonl").read_bytes() == (tmp_path / "ref" / "dataset.jsonl").read_bytes()
    assert (out / "rejects.jsonl").read_bytes() == (tmp_path / "ref" / "rejects.jsonl").read_bytes()


def test_issue19_item4_a_run_with_plain_checkpoints_of_an_earlier_version_runs_again_cleanly(tmp_path: Path) -> None:
    source = _chain_input(tmp_path)
    out = tmp_path / "run"
    synthgen_api.run(_filter_chain(source), out)
    dataset, rejects = (out / "dataset.jsonl").read_bytes(), (out / "rejects.jsonl").read_bytes()
    for done in sorted((out / "checkpoints").glob("*.done")):  # as the previous version wrote them
        rows = read_checkpoint_records(out, done.stem)
        write(done.with_suffix(".jsonl"), "".join(json.dumps(row) + "\n" for row in rows))
        write(done.with_suffix(".rejects.jsonl"),
              "".join(line.decode() + "\n" for line in read_lines(done.with_suffix(".rejects.jsonl.zst"))))
        done.write_bytes(orjson.dumps({k: v for k, v in orjson.loads(done.read_bytes()).items() if k != "format"}))
    for path in (out / "checkpoints").glob("*.zst"):
        path.unlink()
    (out / "dataset.jsonl").unlink()

    synthgen_api.run(_filter_chain(source), out)
    assert (out / "dataset.jsonl").read_bytes() == dataset and (out / "rejects.jsonl").read_bytes() == rejects
    assert sorted(p.name for p in (out / "checkpoints").glob("*.jsonl")) == []  # the plain ones are gone
    assert all(orjson.loads(p.read_bytes())["format"] == CHECKPOINT_FORMAT for p in (out / "checkpoints").glob("*.done"))
    assert read_checkpoint_records(out, "02-length_filter") == read_jsonl(out / "dataset.jsonl")
