"""The grounding check (quote in the passage, answer supported by it), chunk pairing, the sim's quotes and the RAG layouts."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest

from synthgen.export import ExportConfig, export_records
from synthgen.record import Record
from synthgen.sim.content import generate, quoting
from synthgen.stages.base import StageContext
from synthgen.stages.grounding import GroundingCheck, GroundingParams, locate_quote, says_not_in_context
from synthgen.stages.questions import ChunkQuestions, ChunkQuestionsParams
from tests.conftest import REPO, read_jsonl

PASSAGE = ("The Stanley walking tour starts at the bus terminus.\nIt follows the waterfront past the Tin Hau temple, "
           "which was built in 1767 by fishermen, and ends at Murray House, a colonial building moved stone by stone "
           "from Central in 1998.")


def context(tmp_path: Path, rejects: list[tuple[Record, str]]) -> StageContext:
    return StageContext(label="02-grounding_check", index=2, seed=1, recipe_path=tmp_path / "r.yaml", prompts_dir=tmp_path,
                        resolve=lambda name: REPO / name, reject=lambda r, reason, detail: rejects.append((r, reason)))


def qa(kind: str, question: str, quote: str, answer: str, starts: list[int | None] | None = None) -> Record:
    fields = {"kind": kind, "question": question, "quote": quote, "answer": answer, "contexts": ["Unrelated text.", PASSAGE],
              "source_ids": ["doc#0", "doc#1"], "source_starts": starts or [0, 500]}
    return Record(f"{kind}-{len(quote)}-{len(answer)}", fields, {})


def test_a_quote_is_located_exactly_and_fuzzily_but_not_a_paraphrase() -> None:
    quote = "built in 1767 by fishermen"
    score, index, start, end = locate_quote(quote, ["Unrelated text.", PASSAGE])
    assert (score, index, PASSAGE[start:end]) == (100, 1, quote)
    score, index, start, end = locate_quote("Built in 1767 by  fisherman,", [PASSAGE])  # case, spacing, one letter, a comma
    assert score >= 90 and PASSAGE[start:end].startswith("built in 1767")
    assert locate_quote("fishermen erected it in the eighteenth century", [PASSAGE])[0] < 90
    assert locate_quote(PASSAGE + " More.", [PASSAGE])[1] == -1  # longer than the passage: not a quote of it


@pytest.mark.parametrize(("answer", "refuses"), [
    ("The passage does not mention the ticket price.", True), ("The text doesn't say who designed it.", True),
    ("There is no information about opening hours.", True), ("This cannot be answered from the passage.", True),
    ("It was built in 1767 by fishermen.", False), ("Murray House was moved from Central in 1998.", False),
])
def test_refusal_answers_are_recognised(answer: str, refuses: bool) -> None:
    assert says_not_in_context(answer) is refuses


@pytest.mark.slow  # loads MiniLM
def test_the_checks_name_their_reasons_and_keep_grounded_answers(tmp_path: Path) -> None:
    rejects: list[tuple[Record, str]] = []
    stage = GroundingCheck(GroundingParams(), context(tmp_path, rejects))
    good = qa("factual", "When was the Tin Hau temple in Stanley built?", "which was built in 1767 by fishermen",
              "Fishermen built the Tin Hau temple in 1767.")
    records = [
        good,
        qa("factual", "When was it built", "which was built in 1767 by fishermen", "In 1767."),
        qa("unanswerable", "The passage does not give this information?", "", "The passage does not give this information."),
        qa("factual", "Q?", "", "An answer."),
        qa("factual", "Q?", "in 1767", "1767."),
        qa("factual", "Q?", "the temple was erected in the eighteenth century by local sailors", "In the 1700s."),
        qa("factual", "Q?", "which was built in 1767 by fishermen", "The passage does not say who built it."),
        qa("explanatory", "Q?", "which was built in 1767 by fishermen", "Quantum chromodynamics explains how quarks bind."),
        qa("unanswerable", "What does the tour cost?", "", "The passage does not mention the price of the tour."),
        qa("unanswerable", "What does the tour cost?", "starts at the bus terminus", "The passage does not mention it."),
        qa("unanswerable", "What does the tour cost?", "", "It costs 20 dollars."),
    ]
    kept = list(stage.run(records))
    assert [r.fields["kind"] for r in kept] == ["factual", "unanswerable"]
    assert [reason for _, reason in rejects] == ["not_a_question", "not_a_question", "empty_quote", "quote_too_short", "quote_not_in_source", "answer_refuses",
                                                 "answer_unsupported", "unanswerable_with_quote", "unanswerable_not_refused"]
    span = kept[0].fields["quote_span"]
    assert span["source_id"] == "doc#1" and PASSAGE[span["start"]:span["end"]] == good.fields["quote"]
    assert (span["doc_start"], span["doc_end"]) == (500 + span["start"], 500 + span["end"])
    assert kept[0].meta["scores"]["grounding_quote"] == 100 and kept[0].meta["scores"]["grounding_support"] >= 0.35


def test_an_upper_support_bound_drops_answers_that_only_repeat_the_quote(tmp_path: Path) -> None:
    rejects: list[tuple[Record, str]] = []
    stage = GroundingCheck(GroundingParams(max_support=0.95), context(tmp_path, rejects))
    quote = "ends at Murray House, a colonial building moved stone by stone"
    assert list(stage.run([qa("factual", "Where does the tour end?", quote, quote)])) == []
    assert [reason for _, reason in rejects] == ["answer_copies_quote"]


def chunk(doc: str, index: int) -> Record:
    return Record(f"{doc}-{index}", {"doc_id": doc, "chunk_id": f"{doc}#{index}", "text": f"{doc} text {index}",
                                     "start": 100 * index}, {})


def test_chunk_questions_pair_chunks_of_one_document_only(tmp_path: Path) -> None:
    stage = ChunkQuestions(ChunkQuestionsParams(), context(tmp_path, []))
    chunks = [chunk("a", 0), chunk("a", 1), chunk("a", 2), chunk("b", 0)]
    tasks = list(stage.run(chunks))
    assert [t.fields["kind"] for t in tasks if t.fields["doc_id"] == "b"] == ["factual", "explanatory", "unanswerable"]
    assert len(tasks) == 3 * 4 + 3 and len({t.id for t in tasks}) == len(tasks)
    for task in tasks:
        own = task.fields["chunk_id"]
        assert task.fields["source_ids"][0] == own and task.fields["contexts"][0] == task.fields["text"]
        if task.fields["kind"] == "comparison":
            other = task.fields["source_ids"][1]
            assert other != own and other.startswith(task.fields["doc_id"] + "#")
            assert task.fields["source_starts"][1] == 100 * int(other.split("#")[1])
        else:
            assert len(task.fields["contexts"]) == 1
    assert [t.fields for t in stage.run(chunks)] == [t.fields for t in tasks]  # seeded


def test_the_sim_copies_verbatim_quotes_from_the_context_and_leaves_other_answers_alone() -> None:
    schema = {"type": "object", "required": ["quote", "answer"], "properties": {
        "quote": {"type": "string", "description": "a verbatim quote from the passage"},
        "answer": {"type": "string", "description": "the answer, supported by the quote"}}}
    prompt = f"Ask a question.\n<context>\n{PASSAGE}\n</context>"
    for seed in range(20):
        answer = orjson.loads(quoting(schema, prompt, random.Random(seed), ("river",)) or "{}")
        assert answer["quote"] and answer["quote"] in PASSAGE
        assert set(answer["answer"].split()) & set(answer["quote"].split())
    asking = {**schema, "properties": {**schema["properties"], "question": {"type": "string", "description": "ending with a question mark"}},
              "required": ["question", "quote", "answer"]}
    assert orjson.loads(quoting(asking, prompt, random.Random(0), ()) or "{}")["question"].endswith("?")
    empty = {**schema, "properties": {**schema["properties"], "quote": {**schema["properties"]["quote"], "maxLength": 0}}}
    assert orjson.loads(quoting(empty, prompt, random.Random(0), ()) or "{}")["quote"] == ""
    plain = {"type": "object", "properties": {"quote": {"type": "string"}}}
    assert quoting(plain, prompt, random.Random(0), ()) is None and quoting(schema, "no context", random.Random(0), ()) is None
    assert generate(5, 1, ("river",), plain) == generate(5, 1, ("river",), plain)


def test_rag_layouts_carry_the_contexts(tmp_path: Path) -> None:
    record = Record("r1", {"question": "When was the temple built?", "answer": "In 1767.", "contexts": [PASSAGE, "Other."],
                           "source_ids": ["doc#1", "doc#2"]}, {})
    export_records([record], ExportConfig(layout="rag"), tmp_path / "rag")
    assert read_jsonl(tmp_path / "rag" / "train.jsonl") == [
        {"question": "When was the temple built?", "answer": "In 1767.", "contexts": [PASSAGE, "Other."], "source_ids": ["doc#1", "doc#2"]}]
    export_records([record, Record("r2", {"question": "Q?", "answer": "A."}, {})], ExportConfig(layout="rag_messages"),
                   tmp_path / "sft")
    (row,) = read_jsonl(tmp_path / "sft" / "train.jsonl")
    user, assistant = row["messages"]
    assert PASSAGE in user["content"] and "Other." in user["content"] and user["content"].endswith("Question: When was the temple built?")
    assert assistant == {"role": "assistant", "content": "In 1767."}
