"""Exact and near dedup, signatures equal to datasketch's, verification, keep policies, decontamination, index."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from datasketch import LeanMinHash, MinHashLSH

from synthgen.dedup.evaluate import exact_greedy_drops, planted_corpus, quality
from synthgen.dedup.index import LSH_WEIGHTS, Match, NearDuplicateIndex
from synthgen.dedup.minhash import SCHEME, MinHasher, Shingling
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
        if jaccard < 0.9 and (index.band_keys(sketches.signatures[:1]) == index.band_keys(sketches.signatures[1:])).any():
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
    ((keys, _, set_offsets, _),) = loaded.chunks()
    assert len(loaded) == 2 and keys == ["r0", "r1"] and (np.diff(set_offsets) > 0).all()
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


def reference_decisions(texts: list[str], params: MinHashDedupParams, order: list[int]) -> dict[int, tuple[int, float] | None]:
    """The decisions of an index built on datasketch's MinHashLSH (the implementation before the compact index):
    texts in `order`, each checked against LSH candidates by exact Jaccard (ties: the earliest indexed)."""
    sketches = MinHasher(params.shingling(), params.num_perm, params.seed).sketch(texts)
    lsh = MinHashLSH(threshold=params.threshold, num_perm=params.num_perm, weights=LSH_WEIGHTS)
    indexed: dict[int, np.ndarray] = {}
    decisions: dict[int, tuple[int, float] | None] = {}
    for i in order:
        signature, shingles = LeanMinHash(seed=params.seed, hashvalues=sketches.signatures[i], scheme=SCHEME), sketches.shingle_set(i)
        best = None
        for j in sorted(lsh.query(signature), key=list(indexed).index):
            common = np.intersect1d(shingles, indexed[j], assume_unique=True).size
            similarity = common / (shingles.size + indexed[j].size - common)
            if similarity >= params.threshold and (best is None or similarity > best[1]):
                best = j, similarity
        decisions[i] = best
        if best is None:
            lsh.insert(i, signature)
            indexed[i] = shingles
    return decisions


@pytest.mark.parametrize(("keep", "threshold"), [("first", 0.8), ("longest", 0.7)])
def test_compact_index_decides_as_datasketch_lsh(tmp_path: Path, keep: str, threshold: float) -> None:
    """Same kept ids, duplicate_of and similarity as verified MinHashLSH candidates, on ~3,800 texts with planted
    near duplicates (enough kept documents for several sorted runs of band keys)."""
    texts = planted_corpus(1500, seed=5, words=(8, 30), edits=(0.03, 0.3))
    params = MinHashDedupParams(keep=keep, threshold=threshold, batch_size=256)
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i])) if keep == "longest" else list(range(len(texts)))
    expected = reference_decisions(texts, params, order)
    rejects: list[tuple[Record, str]] = []
    kept = [r.id for r in MinHashDedup(params, context(tmp_path, rejects)).run(Record(str(i), {"text": t}) for i, t in enumerate(texts))]
    assert kept == [str(i) for i in range(len(texts)) if expected[i] is None]
    found = {r.id: (r.meta["duplicate_of"], r.meta["similarity"]) for r, _ in rejects}
    planted = {str(i): (str(best[0]), round(best[1], 4)) for i, best in expected.items() if best is not None}
    assert len(planted) > 300 and found == planted


def test_load_time_is_linear_in_keys(tmp_path: Path) -> None:
    """Loading 20k keys takes about 10x loading 2k (the old index re-inserted key by key: quadratic), and a loaded
    index holds what was saved."""
    rng = np.random.default_rng(0)

    def saved(count: int) -> tuple[NearDuplicateIndex, Path]:
        index, sizes = NearDuplicateIndex(0.8, folder=tmp_path), rng.integers(50, 150, count)
        index.extend([f"key-{i}" for i in range(count)], rng.integers(0, 2**32, (count, 128), dtype=np.uint32),
                     np.concatenate(([0], np.cumsum(sizes))), rng.integers(0, 2**32, int(sizes.sum()), dtype=np.uint32))
        index.save(tmp_path / f"{count}.npz")
        return index, tmp_path / f"{count}.npz"

    def seconds(path: Path) -> float:
        times = []
        for _ in range(3):
            began = time.perf_counter()
            NearDuplicateIndex.load(path, folder=tmp_path).close()
            times.append(time.perf_counter() - began)
        return min(times)

    (_, small), (large_index, large) = saved(2000), saved(20000)
    assert seconds(large) / seconds(small) < 12
    loaded = NearDuplicateIndex.load(large, folder=tmp_path)
    for ours, theirs in zip(loaded.chunks(), large_index.chunks(), strict=True):
        assert ours[0] == theirs[0] and all(np.array_equal(a, b) for a, b in zip(ours[1:], theirs[1:], strict=True))
    keys, signatures, _, _ = next(large_index.chunks(rows=10))
    assert loaded.find(signatures[3]) == Match(keys[3], 1.0)


@pytest.mark.parametrize("keep", ["first", "longest"])
def test_index_and_ranking_keep_sketches_on_disk(tmp_path: Path, keep: str) -> None:
    """Python-heap peak while deduping ~2,500 texts of ~1.3 KB: signatures and shingle sets are spilled, not held
    (holding them, as the datasketch-based index and the ranked list did, peaked at 70-80 MB here)."""
    texts = planted_corpus(1000, seed=9, words=(150, 250))
    params = MinHashDedupParams(keep=keep, batch_size=128)
    list(MinHashDedup(params, context(tmp_path, [])).run(records(BASE)))  # imports done before measuring
    stage = MinHashDedup(params, StageContext(label="01-dedup", index=1, seed=0, recipe_path=tmp_path / "r.yaml",
                                              prompts_dir=tmp_path, resolve=lambda name: tmp_path / name,
                                              reject=lambda r, reason, detail: None, workdir=tmp_path))
    tracemalloc.start()
    try:
        kept = sum(1 for _ in stage.run(Record(str(i), {"text": t}) for i, t in enumerate(texts)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert 2000 < kept < len(texts) and peak < 24 * 2**20
    assert not list(tmp_path.glob("*.spill")) and not list(tmp_path.glob("minhash-*"))  # spill folders removed
