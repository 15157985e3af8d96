"""WRAP pieces: sentence chunking, preamble stripping, lost-content rejection, assembly, real:synthetic mix."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthgen.recipes.rephrase import (
    AssembleParams,
    ChunkParams,
    CleanParams,
    MixParams,
    MixReal,
    WrapAssemble,
    WrapChunk,
    WrapClean,
    chunk_text,
    split_sentences,
    strip_preamble,
)
from synthgen.record import Record
from synthgen.stages.base import StageContext
from synthgen.stages.source import SourceConfig
from synthgen.tokens import count_tokens
from tests.conftest import REPO, write

SENTENCES = [f"Sentence number {i} talks about the {'river ' * (i % 7)}bank and its many colourful boats." for i in range(60)]


def context(tmp_path: Path, rejects: list[tuple[Record, str]]) -> StageContext:
    return StageContext(label="01-wrap", index=1, seed=3, recipe_path=tmp_path / "r.yaml", prompts_dir=tmp_path,
                        resolve=lambda name: REPO / name if not (tmp_path / name).exists() else tmp_path / name,
                        reject=lambda r, reason, detail: rejects.append((r, reason)))


def test_sentences_split_at_boundaries_and_paragraphs() -> None:
    text = 'He said "Stop." Then he left! Did she? Yes.\n\nA new paragraph\nwith a second line. e.g. 3.5 stays.'
    assert split_sentences(text) == ['He said "Stop."', "Then he left!", "Did she?", "Yes.", "A new paragraph",
                                     "with a second line.", "e.g.", "3.5 stays."]


def test_chunks_respect_the_token_limit_and_keep_every_sentence() -> None:
    text = " ".join(SENTENCES)
    chunks = chunk_text(text, 100)
    assert len(chunks) > 5
    assert all(tokens <= 100 for tokens in count_tokens(chunks))
    assert " ".join(chunks) == text  # sentence boundaries only: nothing lost, nothing reordered
    assert all(chunk.endswith(".") for chunk in chunks)


def test_an_overlong_sentence_is_cut_by_words() -> None:
    sentence = " ".join(f"word{i}" for i in range(400)) + "."
    chunks = chunk_text(sentence, 64)
    assert all(tokens <= 64 for tokens in count_tokens(chunks)) and " ".join(chunks) == sentence


@pytest.mark.parametrize("preamble", [
    "Here is a paraphrase of the text:\n\n", "Sure! Here's the rewritten version:\n", "Certainly, here is the conversation in Question/Answer form:\n",
    "Below is the text rephrased for a toddler:\n\n",
])
def test_preambles_are_stripped(preamble: str) -> None:
    assert strip_preamble(preamble + "The cat sat.\nIt was happy.") == "The cat sat.\nIt was happy."
    assert strip_preamble("Here the river bends: slowly.") == "Here the river bends: slowly."


def test_chunk_styles_selection_and_weighted_draw(tmp_path: Path) -> None:
    doc = Record("d1", {"text": " ".join(SENTENCES)})
    every = list(WrapChunk(ChunkParams(max_tokens=120), context(tmp_path, [])).run([doc]))
    assert {r.fields["style"] for r in every} == {"easy", "medium", "hard", "qa"}
    per_style = len(every) // 4
    assert all(r.fields["chunk_count"] == per_style for r in every)
    two = list(WrapChunk(ChunkParams(max_tokens=120, styles=["medium", "qa"]), context(tmp_path, [])).run([doc]))
    assert {r.fields["style"] for r in two} == {"medium", "qa"}
    drawn = {r.fields["style"] for r in WrapChunk(ChunkParams(styles_per_doc=1), context(tmp_path, [])).run([doc])}
    assert len(drawn) == 1
    rejects: list[tuple[Record, str]] = []
    assert list(WrapChunk(ChunkParams(), context(tmp_path, rejects)).run([Record("e", {"text": "  "})])) == []
    assert rejects[0][1] == "empty_document"


def test_unknown_style_is_a_config_error(tmp_path: Path) -> None:
    from synthgen.errors import ConfigError

    with pytest.raises(ConfigError, match=r"wrap_chunk.styles: unknown style\(s\) \['poetic'\]"):
        WrapChunk(ChunkParams(styles=["poetic"]), context(tmp_path, []))


def test_lost_content_rejected_and_assembly_needs_every_chunk(tmp_path: Path) -> None:
    rows = [Record(f"{doc}{i}", {"doc_id": doc, "style": "easy", "chunk_index": i, "chunk_count": 2, "chunk": "x" * 100,
                             "rephrased": text})
            for doc, i, text in [("a", 0, "Here is a paraphrase:\n" + "y" * 80), ("a", 1, "z" * 90), ("b", 0, "short"),
                                 ("b", 1, "w" * 95)]]
    rejects: list[tuple[Record, str]] = []
    ctx = context(tmp_path, rejects)
    cleaned = list(WrapClean(CleanParams(), ctx).run(rows))
    assert [r.id for r in cleaned] == ["a0", "a1", "b1"] and cleaned[0].fields["rephrased"] == "y" * 80
    documents = list(WrapAssemble(AssembleParams(), ctx).run(cleaned))
    assert [(d.fields["doc_id"], d.fields["text"]) for d in documents] == [("a", "y" * 80 + "\n\n" + "z" * 90)]
    assert [reason for _, reason in rejects] == ["lost_content", "incomplete_document"]
    assert documents[0].meta["parents"] == ["a0", "a1"]


def test_real_to_synthetic_mix(tmp_path: Path) -> None:
    write(tmp_path / "real.jsonl", '{"text": "real one"}\n{"text": "real two"}\n')
    synthetic = [Record(f"s{i}", {"text": f"synthetic {i}", "style": "qa"}) for i in range(6)]
    for real_parts, synthetic_parts, expected_real in ((1, 1, 6), (1, 2, 3), (0, 1, 0)):
        params = MixParams(real=SourceConfig(path="real.jsonl"), real_parts=real_parts, synthetic_parts=synthetic_parts)
        mixed = list(MixReal(params, context(tmp_path, [])).run(synthetic))
        kinds = [r.fields["kind"] for r in mixed]
        assert kinds.count("synthetic") == 6 and kinds.count("real") == expected_real
        assert len({r.id for r in mixed}) == len(mixed)
