"""The Ray Data dedup functions decide exactly as the local stages, with duplicates spread over blocks."""

from __future__ import annotations

import csv
import json
import logging
import random
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from synthgen.dedup.index import Match
from synthgen.dedup.minhash import MinHasher, Shingling
from synthgen.record import Record
from synthgen.stages.dedup import ExactDedup, ExactDedupParams, MinHashDedup, MinHashDedupParams
from tests.conftest import write
from tests.unit.test_dedup import context

ray = pytest.importorskip("ray")
ray_dedup = pytest.importorskip("synthgen.engine.ray_dedup")
ray_engine = pytest.importorskip("synthgen.engine.ray_engine")
ShuffleStrategy = pytest.importorskip("ray.data.context").ShuffleStrategy
pc = pytest.importorskip("pyarrow.compute")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")  # its own defaults use deprecated names

DATA = Path(__file__).resolve().parents[2] / "recipes" / "data"
BLOCKS = 8
CHAIN = ("Write a short story about a lighthouse keeper who finds a message in a bottle and decides to answer it, "
         "even though the sender may have written it fifty years ago.")
CHAIN_B = CHAIN.replace("Write a short", "Tell a brief")
CHAIN_C = CHAIN_B.replace("fifty years ago", "decades before")
SWAPS = ["quickly", "carefully", "simple", "detailed", "three", "several", "friendly", "formal", "short", "new"]


@pytest.fixture(scope="module", autouse=True)
def ray_cluster() -> Iterator[None]:
    """A local 2-CPU Ray; sort-based shuffles, since hash shuffles start aggregator actors (~5 s per groupby), and
    ordered blocks, as the Ray engine runs them."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_DISABLE_USAGE_STATS", "1")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        data_context = ray.data.DataContext.get_current()
        patch.setattr(data_context, "enable_progress_bars", False)
        patch.setattr(data_context, "shuffle_strategy", ShuffleStrategy.SORT_SHUFFLE_PULL_BASED)
        patch.setattr(data_context.execution_options, "preserve_order", True)  # as the Ray engine sets them
        yield
        ray.shutdown()


@cache
def corpus() -> tuple[Record, ...]:
    """~460 real instructions and queries, with planted exact copies, word-swap near duplicates, a chain
    A~B~C (A !~ C) and an empty text, shuffled so that copies mostly fall in other blocks."""
    rng = random.Random(7)
    tasks = [json.loads(line) for line in (DATA / "self_instruct_seed_tasks.jsonl").read_text().splitlines()]
    texts = [f"{task['instruction']}\n{task['instances'][0]['output']}" for task in tasks]
    texts += [json.loads(line)["instruction"] for line in (DATA / "evol_seeds.jsonl").read_text().splitlines()]
    with open(DATA / "banking77_sample.csv", newline="") as handle:
        texts += [row["text"] for row in csv.DictReader(handle)]
    for text in rng.sample([t for t in texts if len(t.split()) >= 12], 60):
        for _ in range(rng.randint(1, 2)):
            words = text.split()
            for _ in range(rng.randint(1, 3)):
                words[rng.randrange(len(words))] = rng.choice(SWAPS)
            texts.append(" ".join(words))
    texts += [text.upper() + " !!" for text in rng.sample(texts, 8)]
    rng.shuffle(texts)
    for position, text in ((20, CHAIN), (210, CHAIN_B), (390, CHAIN_C), (100, "")):
        texts.insert(position, text)
    return tuple(Record(f"r{i:03d}", {"text": text}, {"scores": {"quality": rng.random()}}) for i, text in enumerate(texts))


def dataset(records: tuple[Record, ...]) -> ray.data.Dataset:
    rows = [{"order": i, "id": r.id, "record": r.to_json()} for i, r in enumerate(records)]
    return ray.data.from_items(rows, override_num_blocks=BLOCKS)


def local_rejects(params: MinHashDedupParams, tmp_path: Path) -> dict[str, tuple[str, float]]:
    """Dropped id -> (reason, similarity of the match) from the local stage."""
    rejects: list[tuple[Record, str]] = []
    list(MinHashDedup(params, context(tmp_path, rejects)).run(Record.from_json(r.to_json()) for r in corpus()))
    return {record.id: (reason, record.meta["similarity"]) for record, reason in rejects}


def same_as_local(dropped: dict[str, tuple[str, Match]], local: dict[str, tuple[str, float]]) -> None:
    """The same drops for the same reasons at the same similarity (the match itself may differ on ties)."""
    assert {key: (reason, round(match.similarity, 4)) for key, (reason, match) in dropped.items()} == local


@cache
def ray_run(keep: str, verify: str) -> ray_dedup.NearDuplicates:
    params = MinHashDedupParams.model_validate({"keep": keep, "verify": verify, "batch_size": 64})
    return ray_dedup.minhash_duplicates(dataset(corpus()), params, context(Path("."), []), num_partitions=4)


@pytest.mark.parametrize(("keep", "verify"), [("first", "exact"), ("first", "estimate"), ("longest", "exact"), ("longest", "estimate")])
def test_near_duplicates_equal_the_local_stage(keep: str, verify: str, tmp_path: Path) -> None:
    local = local_rejects(MinHashDedupParams.model_validate({"keep": keep, "verify": verify}), tmp_path)
    result = ray_run(keep, verify)
    assert len(local) > 50
    same_as_local(result.dropped, local)
    assert not {match.key for _, match in result.dropped.values()} & set(result.dropped)  # matches were kept
    assert set(result.dropped) <= set(result.clusters)


@pytest.mark.slow
def test_near_duplicates_under_the_hash_shuffle_large_inputs_get(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """dedup_on_ray hashes the groupbys of inputs of HASH_SHUFFLE_BLOCKS blocks or more: the same decisions."""
    threshold = ray_engine.HASH_SHUFFLE_BLOCKS
    assert ray_engine.shuffle_strategy(threshold) is ShuffleStrategy.HASH_SHUFFLE
    assert ray_engine.shuffle_strategy(threshold - 1) is ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    monkeypatch.setattr(ray.data.DataContext.get_current(), "shuffle_strategy", ShuffleStrategy.HASH_SHUFFLE)
    params = MinHashDedupParams.model_validate({"batch_size": 64})
    result = ray_dedup.minhash_duplicates(dataset(corpus()), params, context(tmp_path, []), num_partitions=4)
    same_as_local(result.dropped, local_rejects(MinHashDedupParams(), tmp_path))


def test_pairs_in_different_blocks_are_found() -> None:
    block_of = {row["order"]: row["block"] for row in dataset(corpus()).map_batches(
        lambda b: {"order": b["order"], "block": np.full(len(b["order"]), b["order"].min())}, batch_size=None).iter_rows()}
    assert len(set(block_of.values())) == BLOCKS
    order = {r.id: i for i, r in enumerate(corpus())}
    dropped = ray_run("first", "exact").dropped
    across = [key for key, (_, match) in dropped.items() if block_of[order[key]] != block_of[order[match.key]]]
    assert len(across) > 20


def test_chain_keeps_both_ends_in_one_cluster() -> None:
    sketches = MinHasher(Shingling("char", 5)).sketch([CHAIN, CHAIN_B, CHAIN_C])
    a, b, c = (set(sketches.shingle_set(i).tolist()) for i in range(3))
    jaccard = lambda x, y: len(x & y) / len(x | y)  # noqa: E731
    assert jaccard(a, b) >= 0.8 and jaccard(b, c) >= 0.8 and jaccard(a, c) < 0.8
    ids = {r.fields["text"]: r.id for r in corpus()}
    result = ray_run("first", "exact")
    assert ids[CHAIN] not in result.dropped and ids[CHAIN_C] not in result.dropped
    assert result.dropped[ids[CHAIN_B]][1].key == ids[CHAIN]
    assert result.clusters[ids[CHAIN]] == result.clusters[ids[CHAIN_B]] == result.clusters[ids[CHAIN_C]] == ids[CHAIN]
    assert ids[""] not in result.dropped and ids[""] not in result.clusters


def test_band_rows_carry_keys_only_and_repeated_pairs_come_once() -> None:
    """Two records sharing every band (and a third sharing none): band rows hold the part, key and order, and
    each part yields the pair once however many of its bands they share; contaminated records get no rows."""
    signatures = MinHasher(Shingling("char", 5)).sketch([CHAIN, CHAIN, "something else entirely, nothing alike"]).signatures
    batch = {"order": np.array([3, 7, 9, 11]), "signature": np.array([s.tobytes() for s in [*signatures, signatures[0]]], dtype=object),
             "reason": np.array(["", "near_duplicate", "", "contaminated"])}
    rows = ray_dedup._band_rows(batch, bands=17, rows=7, parts=4)
    assert rows.column_names == ["part", "key", "order"] and rows.num_rows == 3 * 17
    parts = [rows.filter(pc.equal(rows["part"], part)) for part in range(4)]
    pairs = [ray_dedup._bucket_pairs(group).to_pylist() for group in parts if group.num_rows]
    assert all(found in ([], [{"a": 3, "b": 7}]) for found in pairs) and sum(map(len, pairs)) > 1


def test_no_candidate_pairs(tmp_path: Path) -> None:
    records = tuple(Record(f"r{i}", {"text": text}) for i, text in enumerate([CHAIN, "", "an unrelated request about banking"]))
    assert ray_dedup.minhash_duplicates(dataset(records), MinHashDedupParams(), context(tmp_path, [])) == ({}, {})


def test_exact_duplicates_equal_the_local_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Also under Ray's default hash shuffle."""
    monkeypatch.setattr(ray.data.DataContext.get_current(), "shuffle_strategy", ShuffleStrategy.HASH_SHUFFLE)
    rejects: list[tuple[Record, str]] = []
    params = ExactDedupParams()
    list(ExactDedup(params, context(tmp_path, rejects)).run(Record.from_json(r.to_json()) for r in corpus()))
    dropped = ray_dedup.exact_duplicates(dataset(corpus()), params, num_partitions=4)
    assert len(rejects) >= 8
    assert {key: match.key for key, match in dropped.items()} == {r.id: r.meta["duplicate_of"] for r, _ in rejects}


def test_decontamination_and_reference_index_equal_the_local_stage(tmp_path: Path) -> None:
    records = corpus()
    reference_dir = tmp_path / "earlier"
    reference_dir.mkdir()
    list(MinHashDedup(MinHashDedupParams(), context(reference_dir, [])).run(records[:60]))
    evaluation = [r.fields["text"].replace(" a ", " the ", 1) for r in records[60:] if len(r.fields["text"]) > 200][:3]
    write(tmp_path / "eval.jsonl", "".join(json.dumps({"question": text}) + "\n" for text in evaluation))
    params = MinHashDedupParams.model_validate({"decontaminate": [{"path": "eval.jsonl", "fields": ["question"]}],
                                                "reference_index": "earlier/01-dedup.index.npz", "keep": "longest", "batch_size": 64})
    local = local_rejects(params, tmp_path)
    result = ray_dedup.minhash_duplicates(dataset(records), params, context(tmp_path, []), num_partitions=4)
    same_as_local(result.dropped, local)
    assert [reason for reason, _ in local.values()].count("contaminated") >= 3
    assert sum(match.key == key for key, (_, match) in result.dropped.items()) > 50  # the earlier run's own records
