"""WRAP pieces: style draw, preamble stripping, lost-content accounting, assembly, real:synthetic mix (chunking: test_chunking)."""

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
    strip_preamble,
)
from synthgen.record import Record
from synthgen.stages.base import StageContext
from synthgen.stages.source import SourceConfig
from tests.conftest import REPO, write

SENTENCES = [f"Sentence number {i} talks about the {'river ' * (i % 7)}bank and its many colourful boats." for i in range(60)]


def context(tmp_path: Path, rejects: list[tuple[Record, str]]) -> StageContext:
    return StageContext(label="01-wrap", index=1, seed=3, recipe_path=tmp_path / "r.yaml", prompts_dir=tmp_path,
                        resolve=lambda name: REPO / name if not (tmp_path / name).exists() else tmp_path / name,
                        reject=lambda r, reason, detail: rejects.append((r, reason)))


@pytest.mark.parametrize("preamble", [
    "Here is a paraphrase of the text:\n\n", "Sure! Here's the rewritten version:\n", "Certainly, here is the conversation in Question/Answer form:\n",
    "Below is the text rephrased for a toddler:\n\n",
])
def test_preambles_are_stripped(preamble: str) -> None:
    assert strip_preamble(preamble + "The cat sat.\nIt was happy.") == "The cat sat.\nIt was happy."
    assert strip_preamble("Here the river bends: slowly.") == "Here the river bends: slowly."


def test_one_sampled_style_per_document_by_default_all_as_an_option(tmp_path: Path) -> None:
    docs = [Record(f"d{i}", {"text": f"Document {i}. " + " ".join(SENTENCES[:20])}) for i in range(40)]
    default = list(WrapChunk(ChunkParams(max_tokens=120), context(tmp_path, [])).run(docs))
    styles = {doc: {r.fields["style"] for r in default if r.fields["doc_id"] == doc} for doc in (d.id for d in docs)}
    assert all(len(drawn) == 1 for drawn in styles.values())  # the paper: one style per document
    assert set.union(*styles.values()) == {"easy", "medium", "hard", "qa"}  # drawn, not always the same
    every = list(WrapChunk(ChunkParams(max_tokens=120, styles_per_doc="all"), context(tmp_path, [])).run(docs[:1]))
    assert {r.fields["style"] for r in every} == {"easy", "medium", "hard", "qa"}
    assert all(r.fields["chunk_count"] == len(every) // 4 for r in every)
    two = list(WrapChunk(ChunkParams(max_tokens=120, styles=["medium", "qa"], styles_per_doc="all"),
                         context(tmp_path, [])).run(docs[:1]))
    assert {r.fields["style"] for r in two} == {"medium", "qa"}
    rejects: list[tuple[Record, str]] = []
    assert list(WrapChunk(ChunkParams(), context(tmp_path, rejects)).run([Record("e", {"text": "  "})])) == []
    assert rejects[0][1] == "empty_document"


def test_unknown_style_is_a_config_error(tmp_path: Path) -> None:
    from synthgen.errors import ConfigError

    with pytest.raises(ConfigError, match=r"wrap_chunk.styles: unknown style\(s\) \['poetic'\]"):
        WrapChunk(ChunkParams(styles=["poetic"]), context(tmp_path, []))


def chunk_rows(spec: dict[str, list[str]]) -> list[Record]:
    """Rewritten chunks of 100 'x's per (document, style), rewrites as given."""
    return [Record(f"{doc}{i}", {"doc_id": doc, "style": "easy", "chunk_index": i, "chunk_count": len(texts),
                                 "chunk": f"original {doc}{i} " + "x" * 90, "rephrased": text})
            for doc, texts in spec.items() for i, text in enumerate(texts)]


def test_every_pair_is_accounted_for(tmp_path: Path) -> None:
    rows = chunk_rows({"a": ["Here is a paraphrase:\n" + "y" * 80, "z" * 90], "b": ["short", "w" * 95],
                       "c": ["tiny"], "d": ["no", "nope"]})
    rejects: list[tuple[Record, str]] = []
    ctx = context(tmp_path, rejects)
    cleaned = list(WrapClean(CleanParams(), ctx).run(rows))
    assert len(cleaned) == len(rows) and cleaned[0].fields["rephrased"] == "y" * 80
    assert [r.id for r in cleaned if r.fields["lost"]] == ["b0", "c0", "d0", "d1"] and rejects == []
    documents = list(WrapAssemble(AssembleParams(), ctx).run(cleaned))
    assert [(d.fields["doc_id"], d.fields["text"]) for d in documents] == [("a", "y" * 80 + "\n\n" + "z" * 90)]
    assert documents[0].meta["parents"] == ["a0", "a1"]
    pair_rejects = {r.fields["doc_id"]: reason for r, reason in rejects if reason != "lost_content"}
    assert pair_rejects == {"b": "incomplete_document", "c": "all_chunks_lost", "d": "all_chunks_lost"}
    assert sorted(r.id for r, reason in rejects if reason == "lost_content") == ["b0", "c0", "d0", "d1"]


def test_partial_policy_keeps_the_original_chunk_in_place_of_a_lost_one(tmp_path: Path) -> None:
    rows = chunk_rows({"a": ["y" * 95, "lost", "z" * 95], "b": ["gone"]})
    rejects: list[tuple[Record, str]] = []
    ctx = context(tmp_path, rejects)
    cleaned = list(WrapClean(CleanParams(), ctx).run(rows))
    [document] = WrapAssemble(AssembleParams(min_kept=0.5, fill_lost="original"), ctx).run(cleaned)
    assert document.fields["text"] == "\n\n".join(["y" * 95, rows[1].fields["chunk"], "z" * 95])
    assert document.meta["wrap"] == {"chunks_total": 3, "chunks_rewritten": 2, "kept_original": [1]}
    assert [reason for _, reason in rejects] == ["lost_content", "lost_content", "all_chunks_lost"]
    [omitted] = WrapAssemble(AssembleParams(min_kept=0.5, fill_lost="omit"), ctx).run(cleaned[:3])
    assert omitted.fields["text"] == "y" * 95 + "\n\n" + "z" * 95 and omitted.meta["wrap"]["omitted"] == [1]


def test_a_chunk_that_never_arrived_makes_the_document_incomplete(tmp_path: Path) -> None:
    rows = chunk_rows({"a": ["y" * 95, "w" * 95, "z" * 95]})
    rejects: list[tuple[Record, str]] = []
    ctx = context(tmp_path, rejects)
    cleaned = list(WrapClean(CleanParams(), ctx).run([rows[0], rows[2]]))  # chunk 1 failed in the backend
    assert list(WrapAssemble(AssembleParams(min_kept=0.5), ctx).run(cleaned)) == []
    assert [reason for _, reason in rejects] == ["incomplete_document"]


def test_real_to_synthetic_mix_counts_unique_documents(tmp_path: Path) -> None:
    write(tmp_path / "real.jsonl", '{"text": "real one"}\n{"text": "real two"}\n{"text": "real three"}\n')
    synthetic = [Record(f"s{i}", {"text": f"synthetic {i}", "style": "qa"}) for i in range(6)]
    for real_parts, synthetic_parts, repeat, expected_real, repeated in (
            (1, 1, False, 3, 0), (1, 2, False, 3, 0), (1, 3, False, 2, 0), (0, 1, False, 0, 0), (1, 1, True, 6, 3),
            (2, 1, True, 12, 9)):
        params = MixParams(real=SourceConfig(path="real.jsonl"), real_parts=real_parts, synthetic_parts=synthetic_parts,
                           repeat_real=repeat)
        ctx = context(tmp_path, [])
        mixed = list(MixReal(params, ctx).run(synthetic))
        kinds = [r.fields["kind"] for r in mixed]
        assert kinds.count("synthetic") == 6 and kinds.count("real") == expected_real
        assert len({r.id for r in mixed}) == len(mixed)
        real_texts = [r.fields["text"] for r in mixed if r.fields["kind"] == "real"]
        assert len(real_texts) - len(set(real_texts)) == repeated
        metrics = ctx.stats.metrics[ctx.label]
        wanted = 6 * real_parts // synthetic_parts
        assert metrics == {"real_wanted": wanted, "real_rows": expected_real, "real_unique": min(3, expected_real),
                           "real_repeated": repeated, "real_missing": wanted - expected_real}
