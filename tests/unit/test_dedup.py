"""Exact and near dedup, signatures equal to datasketch's, verification, keep policies, decontamination, index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from synthgen.dedup.evaluate import exact_greedy_drops, planted_corpus, quality
from synthgen.dedup.index import NearDuplicateIndex
from synthgen.dedup.minhash import MinHasher, Shingling
from synthgen.dedup.text import field_text, normalize
from synthgen.record import Record
from synthgen.stages.base import StageContext
from synthgen.stages.dedup import ExactDedup, ExactDedupParams, MinHashDedup, MinHashDedupParams
from tests.conftest import write

BASE = "the quick brown fox jumps over the lazy dog while the farmer watches from the old red barn near the river"


def context(tmp_path: Path, rejects: list[tuple[Record, str]]) -> StageContext:
    return StageContext(label="01-dedup", index=1, seed=0, recipe_path=tmp_path / "r.yaml", prompts_dir=tmp_path,
                        resolve=lambda name: tmp_path / name, reject=lambda r, reason, detail: rejects.append((r, reason)),
                        workdir=tmp_path)


def records(*texts: str, field: str = "text") -> list[Record]:
    return [Record(f"r{i}", {field: text}) for i, text in enumerate(texts)]


def test_normalize_folds_unicode_case_punctuation_and_spaces() -> None:
    assert normalize("  Ｈｅｌｌｏ,\tWORLD!!  ") == "hello world"
    assert normalize("Straße — naïve\u00a0café") == normalize("STRASSE naïve café") == "strasse naïve café"
    assert normalize("snake_case-and.dots") == "snake case and dots"
    assert normalize("") == "" and normalize("...") == ""
    assert field_text({"a": "x", "b": 3}, ["a", "b", "c"]) == "x\n3\n"


def test_exact_dedup_on_a_field_combination(tmp_path: Path) -> None:
    rejects: list[tuple[Record, str]] = []
    rows = [Record("a", {"instruction": "Sum the list.", "input": "1 2"}),
            Record("b", {"instruction": "sum  the LIST", "input": "1, 2"}),
            Record("c", {"instruction": "Sum the list.", "input": "3 4"})]
    kept = list(ExactDedup(ExactDedupParams(fields=["instruction", "input"]), context(tmp_path, rejects)).run(rows))
    assert [r.id for r in kept] == ["a", "c"]
    ((record, reason),) = rejects
    assert reason == "exact_duplicate" and record.meta["duplicate_of"] == "a" and record.meta["similarity"] == 1.0


@pytest.mark.parametrize("shingling", [Shingling("word", 5), Shingling("char", 5), Shingling("word", 2), Shingling("char", 9)])
def test_signatures_equal_datasketch(shingling: Shingling) -> None:
    """Raw texts (normalised inside the batch) give datasketch's signatures of the normalised text."""
    texts = [BASE, "short", "", " ", "...", "a b", "Über STRASSE — ñandú, " * 5, BASE.replace("fox", "cat"),
             "  lead\tand\n\ntrail  ", "x\x00y", "ＦＵＬＬ width_and.dots!!", "\x00"]
    hasher = MinHasher(shingling, num_perm=64, seed=7)
    ours = hasher.signatures(texts)
    for i, text in enumerate(texts):
        assert np.array_equal(ours[i], hasher.reference(text).hashvalues), text


def test_near_duplicates_dropped_distinct_kept(tmp_path: Path) -> None:
    rejects: list[tuple[Record, str]] = []
    rows = records(BASE, BASE.replace("lazy", "sleepy"), "an entirely different sentence about tax forms and deadlines",
                   BASE.upper() + "!!!")
    stage = MinHashDedup(MinHashDedupParams(threshold=0.8), context(tmp_path, rejects))
    assert [r.id for r in stage.run(rows)] == ["r0", "r2"]
    assert [(r.id, reason, r.meta["duplicate_of"]) for r, reason in rejects] == [("r1", "near_duplicate", "r0"), ("r3", "near_duplicate", "r0")]
    assert 0.8 <= rejects[0][0].meta["similarity"] < 1.0 and rejects[1][0].meta["similarity"] == 1.0
    assert (tmp_path / "01-dedup.index.npz").exists()


def test_verification_removes_lsh_false_positives(tmp_path: Path) -> None:
    """A pair below the threshold that LSH proposes as a candidate is still kept."""
    hasher = MinHasher(Shingling("char", 5))
    base = normalize(BASE)
    for variant in (BASE.replace("quick brown", "slow grey"), BASE.replace("farmer", "old farmer's dog"), BASE[:-20]):
        texts = [base, normalize(variant)]
        sketches = hasher.sketch(texts)
        a, b = sketches.shingle_set(0), sketches.shingle_set(1)
        jaccard = np.intersect1d(a, b).size / np.union1d(a, b).size
        index = NearDuplicateIndex(threshold=0.9)
        index.add("base", sketches.signatures[0], a)
        if jaccard < 0.9 and "base" in index.lsh.query(index._lean(sketches.signatures[1])):
            assert index.find(sketches.signatures[1], b) is None
            break
    else:
        pytest.fail("no LSH false positive found among the variants")


def test_keep_longest_and_keep_score(tmp_path: Path) -> None:
    rows = records(BASE, BASE + " today", BASE.replace("lazy", "sleepy"))
    rejects: list[tuple[Record, str]] = []
    kept = list(MinHashDedup(MinHashDedupParams(keep="longest"), context(tmp_path, rejects)).run(rows))
    assert [r.id for r in kept] == ["r1"] and {r.meta["duplicate_of"] for r, _ in rejects} == {"r1"}
    for record, score in zip(rows, (0.1, 0.5, 0.9)):
        record.meta = {"scores": {"quality": score}}
    kept = list(MinHashDedup(MinHashDedupParams(keep="score", score="quality"), context(tmp_path, [])).run(rows))
    assert [r.id for r in kept] == ["r2"]


def test_decontamination_against_an_eval_file(tmp_path: Path) -> None:
    write(tmp_path / "eval.jsonl", '{"question": "What is the capital of France?"}\n{"question": "' + BASE + '"}\n')
    rejects: list[tuple[Record, str]] = []
    params = MinHashDedupParams.model_validate({"decontaminate": [{"path": "eval.jsonl", "fields": ["question"]}]})
    rows = records("the quick brown fox jumps over the lazy dog while the farmer watches from the old red barn near a river",
                   "a completely unrelated question about photosynthesis")
    kept = list(MinHashDedup(params, context(tmp_path, rejects)).run(rows))
    assert [r.id for r in kept] == ["r1"]
    ((record, reason),) = rejects
    assert reason == "contaminated" and record.meta["duplicate_of"] == "eval.jsonl:2"


def test_saved_index_dedups_a_later_run(tmp_path: Path) -> None:
    first = MinHashDedup(MinHashDedupParams(), context(tmp_path, []))
    assert len(list(first.run(records(BASE, "another sentence entirely about the weather in spring")))) == 2
    saved = tmp_path / "01-dedup.index.npz"
    loaded = NearDuplicateIndex.load(saved)
    assert len(loaded) == 2 and set(loaded.shingle_sets) == {"r0", "r1"}
    later_dir = tmp_path / "later"
    later_dir.mkdir()
    rejects: list[tuple[Record, str]] = []
    ctx = context(later_dir, rejects)
    ctx.resolve = lambda name: Path(name)
    second = MinHashDedup(MinHashDedupParams(reference_index=str(saved)), ctx)
    rows = [Record("n0", {"text": BASE.replace("red", "blue")}), Record("n1", {"text": "brand new text with nothing in common"})]
    assert [r.id for r in second.run(rows)] == ["n1"]
    assert rejects[0][0].meta["duplicate_of"] == "r0"


def dropped_by(params: MinHashDedupParams, texts: list[str], tmp_path: Path) -> set[int]:
    rejects: list[tuple[Record, str]] = []
    list(MinHashDedup(params, context(tmp_path, rejects)).run(Record(str(i), {"text": t}) for i, t in enumerate(texts)))
    return {int(record.id) for record, _ in rejects}


def test_planted_corpus_precision_and_recall(tmp_path: Path) -> None:
    texts = planted_corpus(600, seed=3, words=(8, 30))
    for threshold in (0.7, 0.8, 0.9):
        params = MinHashDedupParams(threshold=threshold)
        result = quality(dropped_by(params, texts, tmp_path), exact_greedy_drops(texts, params.shingling(), threshold))
        assert result.truth > 5 and result.precision >= 0.95 and result.recall >= 0.95, (threshold, result)


def test_decontamination_catches_edited_copies_with_its_own_threshold(tmp_path: Path) -> None:
    """One edit in an 8-word query (character 5-gram Jaccard ~0.6): `contaminated` under the containment check,
    whatever the near-duplicate `threshold`; `decontaminate_threshold` alone moves the decision (two edits
    from 0.75 down, none at 1.0)."""
    write(tmp_path / "eval.jsonl", '{"question": "How do I reset my card PIN today?"}\n')
    rows = records("How do I reset my card PIN now?", "How do I reset card my PIN today?",
                   "How do I reset my password?", "Please help: I cannot reset my card PIN at the ATM today",
                   "How can I reset my card PIN now?")
    for threshold, dropped in ((0.75, ["r0", "r1", "r4"]), (0.9, ["r0", "r1"]), (1.0, [])):
        rejects: list[tuple[Record, str]] = []
        params = MinHashDedupParams.model_validate({"decontaminate": [{"path": "eval.jsonl", "fields": ["question"]}],
                                                    "threshold": 0.99, "decontaminate_threshold": threshold})
        list(MinHashDedup(params, context(tmp_path, rejects)).run(rows))
        assert [(r.id, reason, r.meta["duplicate_of"]) for r, reason in rejects] == [(key, "contaminated", "eval.jsonl:1")
                                                                                    for key in dropped]
