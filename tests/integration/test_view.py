"""`synthgen view` driven by a real headless browser (Debian's chromium through playwright), then `synthgen export`
honouring the decisions made in it; and the view's store, provenance and review API without a browser."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import yaml

from synthgen import api
from synthgen.backends.base import ChatRequest
from synthgen.record import Record
from synthgen.view.provenance import descendants, word_diff
from synthgen.view.server import ViewServer, record_page, records, review
from synthgen.view.store import Query, RunStore
from tests.conftest import read_jsonl, synthgen

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
INJECTED = '<img id="injected" src="x" onerror="document.title=\'owned\'">'


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A quickstart run on the built-in sim, plus one record whose text is HTML (as a model might write)."""
    out = tmp_path_factory.mktemp("view") / "run"
    api.run("recipes/quickstart.yaml", out, backend="sim", limit=40)
    with (out / "dataset.jsonl").open("ab") as handle:
        handle.write(Record("00000000000000aa", {"instruction": INJECTED, "response": "markup test"}, {}).to_json() + b"\n")
    return out


def test_store_pages_filters_and_traces_records(run_dir: Path) -> None:
    store = RunStore(run_dir)
    rows = read_jsonl(run_dir / "dataset.jsonl")
    first = records(store, "dataset", Query(), 0)
    assert first["total"] == len(rows) and [r["id"] for r in first["rows"]] == [r["id"] for r in rows[:25]]
    assert [r["id"] for r in records(store, "dataset", Query(), 1)["rows"]] == [r["id"] for r in rows[25:50]]
    word = rows[3]["fields"]["response"].split()[1].lower()
    hits = records(store, "dataset", Query(text=word), 0)["rows"]
    expected = [r["id"] for r in rows if word in "\n".join(v for v in r["fields"].values() if isinstance(v, str)).lower()]
    assert [h["id"] for h in hits] == expected[:25] and rows[3]["id"] in expected
    long_ones = records(store, "dataset", Query(length_min=300), 0)["rows"]
    assert all(sum(len(v) for v in h["fields"].values() if isinstance(v, str)) >= 299 for h in long_ones)
    leaf = rows[0]["meta"]["steps"][0]["leaf"]
    assert {r["id"] for r in records(store, "dataset", Query(leaf=leaf), 0)["rows"]} == {
        r["id"] for r in rows if r["meta"].get("steps") and r["meta"]["steps"][0]["leaf"] == leaf}

    page = record_page(store, rows[0]["id"])  # made by 05-generate from an instruction made by 00-generate
    (parent,) = page["parents"]
    assert parent["source"] == "04-refusal_filter" and page["parent"]["id"] == parent["id"]
    assert descendants(store, parent["id"])["children"][0]["id"] == rows[0]["id"]
    instruction_step, response_step = page["steps"]
    assert "Task category: " + rows[0]["meta"]["steps"][0]["leaf"] in instruction_step["messages"][-1]["content"]
    assert rows[0]["fields"]["instruction"] in response_step["messages"][-1]["content"]  # its input record's fields
    step = response_step["step"]  # the re-rendered prompt is the one sent: the same request key (no schema here)
    request = ChatRequest(step["model"], response_step["messages"], step["sampling"], None, step["sample"], step["attempt"])
    assert request.key() == step["request"]
    assert all(shown["completion"] for shown in page["steps"])
    compared = {f["field"]: f for f in page["parent"]["compare"]}
    assert compared["response"]["parent"] == "" and ("insert", rows[0]["fields"]["response"]) in compared["response"]["diff"]


def test_raw_completions_are_found_under_the_backend_identity_the_run_recorded(run_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    frozen = yaml.safe_load((copy / "recipe.yaml").read_text())
    assert frozen["run"]["backend"]["kind"] == "sim"
    # a backend's identity may hold more than its config says (llama.cpp adds its model file's sha256): stand that
    # in by a config whose own identity differs from the one the requests were cached under
    frozen["backend"] = {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "elsewhere"}
    (copy / "recipe.yaml").write_text(yaml.safe_dump(frozen))
    row = read_jsonl(copy / "dataset.jsonl")[0]
    steps = record_page(RunStore(copy), row["id"])["steps"]
    assert len(steps) == 2 and all(shown["completion"] for shown in steps)


def test_word_diff_marks_changed_words() -> None:
    assert word_diff("the quick fox", "the slow fox") == [("equal", "the "), ("delete", "quick"), ("insert", "slow"),
                                                          ("equal", " fox")]


def test_a_filter_decision_covers_every_match(run_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "copy"
    run.mkdir()
    for name in ("dataset.jsonl", "rejects.jsonl", "stats.json", "recipe.yaml"):
        (run / name).write_bytes((run_dir / name).read_bytes())
    store = RunStore(run)
    word = read_jsonl(run / "dataset.jsonl")[0]["fields"]["instruction"].split()[0].lower()
    matching = store.matching_ids("dataset", Query(text=word))
    assert review(store, "ana", {"action": "excluded", "why": "topic", "filter": {"q": word}}) == {"written": len(matching)}
    lines = read_jsonl(run / "review.jsonl")
    assert [line["id"] for line in lines] == matching
    assert lines[0]["filter"] == {"source": "dataset", "text": word} and lines[0]["who"] == "ana"

    with (run / "rejects.jsonl").open("a") as handle:
        for number, reason in enumerate(["too_short", "refusal", "too_short"]):
            handle.write(json.dumps({"id": f"r{number}", "stage": "11-length_filter", "reason": reason, "detail": None,
                                     "fields": {"response": "no"}, "meta": {}}) + "\n")
    store = RunStore(run)
    assert [row["id"] for row in records(store, "rejects", Query(reason="too_short"), 0)["rows"]][-2:] == ["r0", "r2"]
    review(store, "ana", {"action": "excluded", "source": "rejects", "filter": {"reason": "refusal"}})
    assert read_jsonl(run / "review.jsonl")[-1]["id"] == "r1"


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt install chromium)")
@pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="needs playwright (pip install 'synthgen[dev]')")
def test_browse_search_open_and_exclude_three_in_a_browser_then_export(run_dir: Path, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    ids = [row["id"] for row in read_jsonl(run_dir / "dataset.jsonl")]
    with ViewServer(run_dir, "tester") as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.goto(server.url)
        expect(page.locator("body[data-ready='1']")).to_have_count(1)
        expect(page.locator("#funnel")).to_contain_text("05-generate")
        expect(page.locator("#figures img").first).to_be_visible()

        page.click("#tab-records")
        expect(page.locator("#list tr.row")).to_have_count(25)
        page.fill("#q", "injected")  # search: only the record holding markup matches
        page.click("#apply")
        expect(page.locator("#list tr.row")).to_have_count(1)
        page.click("#list tr.row a.open")
        expect(page.locator("#record-title")).to_have_text("record 00000000000000aa")
        expect(page.locator("#record .text").first).to_have_text(INJECTED)  # shown as text, not run as HTML
        assert page.locator("#injected").count() == 0 and page.title() == "synthgen view"

        page.fill("#q", "")
        page.click("#apply")
        expect(page.locator("#list tr.row")).to_have_count(25)
        page.click(f"#list tr.row[data-id='{ids[0]}'] a.open")  # a generated record: its provenance
        expect(page.locator("#record .prompt").nth(1)).to_contain_text("Task category:")  # system, then user
        expect(page.locator("#record .completion").first).to_be_visible()
        expect(page.locator("#record ins").first).to_be_visible()  # diffed against its parent

        page.fill("#why", "off-topic")
        for record_id in ids[1:4]:
            page.click(f"#list tr.row[data-id='{record_id}'] button.exclude")
            expect(page.locator(f"#list tr.row[data-id='{record_id}'] td.review")).to_have_text("excluded")
        expect(page.locator("#review-counts")).to_contain_text("3 excluded")
        page.screenshot(path=str(tmp_path / "view.png"))
        browser.close()

    decisions = read_jsonl(run_dir / "review.jsonl")
    assert [(d["id"], d["action"], d["who"], d["why"]) for d in decisions] == [
        (record_id, "excluded", "tester", "off-topic") for record_id in ids[1:4]]
    result = synthgen("export", str(run_dir), "--out", str(tmp_path / "export"))
    assert result.returncode == 0, result.stderr
    exported = [row["id"] for row in read_jsonl(tmp_path / "export" / "train.jsonl")]
    assert exported == [record_id for record_id in ids if record_id not in ids[1:4]]
    assert "3 records excluded by review" in (tmp_path / "export" / "README.md").read_text()
    assert json.loads((run_dir / "stats.json").read_text()).get("review") is None  # the run's own stats untouched


def test_view_of_a_folder_that_is_no_run_says_so(tmp_path: Path) -> None:
    result = synthgen("view", str(tmp_path))
    assert result.returncode == 2 and "no stats.json" in result.stderr
