"""Exact and MinHash near-duplicate detection over a Ray Data dataset, deciding exactly as the local
`exact_dedup` / `minhash_dedup` stages do (same kept ids); the engine drops and rejects the ids returned.

Rows are `{"order": int, "id": str, "record": bytes}`: `order` the input position (unique, increasing) and
`record` is `Record.to_json()` (the id is read from it). JSON bytes rather than nested `fields` / `meta`
columns because Ray's Arrow conversion changes arbitrary values (lists and tuples come back as numpy arrays,
so `str()` of a field differs; mixed-type columns are coerced or pickled), while the text compared must be
the local stage's to the byte.

Near duplicates take three passes:
1. `map_batches`: each record's MinHash signature and shingle-hash set (the local `MinHasher`), its keep
   rank, and its verdict against the local stage's own evaluation index (`decontaminate`) and reference
   index (`reference_index`), built once on the driver by constructing the local stage.
2. One row per LSH band, keyed by band index + the band's hash values (datasketch's `hashranges`: band i is
   values [i*r, (i+1)*r)), so candidates are exactly the pairs the local index would propose;
   `groupby(key).map_groups` verifies each bucket's pairs (exact Jaccard or signature agreement, as
   `NearDuplicateIndex`); a pair sharing several bands is verified only in the first, so each edge is
   emitted once.
3. The driver reads the verified edges (few) and decides greedily in priority order (input order for
   `keep: first`; -priority, then input order for `longest` / `score`): a record is dropped iff a verified
   neighbour decided before it was kept, and names the most similar such neighbour.

Why greedy over the verified graph and not one survivor per connected component: the local stage compares
a record only with records kept before it. In a chain A~B~C with A !~ C it drops B (duplicate of A) and keeps
C, whose only near duplicate B was dropped; one survivor per component would drop C too. Since candidates
are the same band-sharing pairs, verification is symmetric, and a record's local verdict depends only on
which of its verified neighbours were kept before it, the greedy pass reproduces the local decisions.
The components are still returned as clusters, for reporting.

Costs: band rows carry the signature and (verify exact) the shingle set, so the shuffle moves about
b x (4 num_perm + 4 shingles) bytes per record (b = 17 bands at threshold 0.8 with 128 permutations). Every
pair in a bucket is compared, so a bucket of k identical texts costs k^2/2 comparisons where the local stage
does k: run `exact_dedup` first on data with many exact copies.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray.data

from synthgen.dedup.index import Match, NearDuplicateIndex, Verify
from synthgen.dedup.minhash import MinHasher
from synthgen.dedup.text import field_text
from synthgen.record import Record
from synthgen.stages.base import StageContext
from synthgen.stages.dedup import ExactDedupParams, MinHashDedup, MinHashDedupParams, keep_priority, text_digest

Batch = dict[str, np.ndarray]

_NODE = [("order", pa.int64()), ("id", pa.string()), ("rank", pa.float64()), ("signature", pa.binary()),
         ("shingles", pa.binary())]
_JUDGED = [("reason", pa.string()), ("match", pa.string()), ("similarity", pa.float64())]
_SKETCH_SCHEMA = pa.schema(_NODE + _JUDGED)
_BAND_SCHEMA = pa.schema([("key", pa.binary()), *_NODE])
_EDGE_SCHEMA = pa.schema([("a_order", pa.int64()), ("a_id", pa.string()), ("a_rank", pa.float64()),
                          ("b_order", pa.int64()), ("b_id", pa.string()), ("b_rank", pa.float64()),
                          ("similarity", pa.float64())])
_EXACT_SCHEMA = pa.schema([("order", pa.int64()), ("id", pa.string()), ("digest", pa.binary())])
_DROP_SCHEMA = pa.schema([("id", pa.string()), ("survivor", pa.string())])


class NearDuplicates(NamedTuple):
    """`dropped`: id -> (reason, match), the reason "near_duplicate" or "contaminated". `clusters`: id -> the
    id of the first (smallest order) record of its connected component of verified near duplicates, for every
    record with at least one; records not in it are singletons."""

    dropped: dict[str, tuple[str, Match]]
    clusters: dict[str, str]


def exact_duplicates(ds: ray.data.Dataset, params: ExactDedupParams, num_partitions: int | None = None) -> dict[str, Match]:
    """Dropped id -> Match(survivor id, 1.0): records with the digest of an earlier record (`exact_dedup`'s rule).
    `num_partitions` is the groupby's hash partition count (None: Ray's default, `DataContext.min_parallelism`)."""
    drops = (ds.map_batches(partial(_digest_batch, names=params.fields), batch_format="numpy")
             .groupby("digest", num_partitions=num_partitions)
             .map_groups(_later_copies, batch_format="pyarrow"))
    return {row["id"]: Match(row["survivor"], 1.0) for row in drops.iter_rows()}


def minhash_duplicates(ds: ray.data.Dataset, params: MinHashDedupParams, ctx: StageContext,
                       num_partitions: int | None = None) -> NearDuplicates:
    """The records `minhash_dedup` with `params` drops, and clusters of verified near duplicates. `ctx` is the
    stage's context (it resolves `decontaminate` and `reference_index` paths); see `exact_duplicates` for
    `num_partitions`."""
    stage = MinHashDedup(params, ctx)  # the local stage's hasher and its evaluation and reference indexes
    reference = stage.index if len(stage.index) else None
    sketch = partial(_sketch_batch, params=params, hasher=stage.hasher, contamination=stage.contamination, reference=reference)
    sketched = ds.map_batches(sketch, batch_format="numpy", batch_size=params.batch_size)
    judged: dict[int, tuple[str, str, Match]] = {}
    if stage.contamination is not None or reference is not None:
        sketched = sketched.materialize()  # read twice: judged rows here, band rows below
        for row in sketched.map_batches(_judged_rows, batch_format="pyarrow").iter_rows():
            judged[row["order"]] = (row["id"], row["reason"], Match(row["match"], row["similarity"]))
    lsh = stage.index.lsh
    verify = partial(_verified_pairs, bands=lsh.b, rows=lsh.r, verify=params.verify, threshold=params.threshold)
    edges = (sketched.map_batches(partial(_band_rows, bands=lsh.b, rows=lsh.r), batch_format="numpy")
             .groupby("key", num_partitions=num_partitions)
             .map_groups(verify, batch_format="pyarrow"))  # Arrow: no per-group numpy conversion
    return _decide(edges.iter_rows(), judged)


def _digest_batch(batch: Batch, *, names: list[str]) -> pa.Table:
    """Each record's order, id and `exact_dedup` digest."""
    records = [Record.from_json(line) for line in batch["record"]]
    return pa.table({"order": batch["order"], "id": [r.id for r in records], "digest": [text_digest(r, names) for r in records]},
                    schema=_EXACT_SCHEMA)


def _later_copies(group: pa.Table) -> pa.Table:
    """All but the first record of one digest, each with the first's id."""
    if group.num_rows < 2:
        return _DROP_SCHEMA.empty_table()
    ids = group.sort_by("order")["id"].to_pylist()
    return pa.table({"id": ids[1:], "survivor": ids[:1] * (len(ids) - 1)}, schema=_DROP_SCHEMA)


def _sketch_batch(batch: Batch, *, params: MinHashDedupParams, hasher: MinHasher, contamination: NearDuplicateIndex | None,
                  reference: NearDuplicateIndex | None) -> pa.Table:
    """Non-empty records with signature, shingle set (verify exact), rank, and any evaluation / reference match."""
    records = [Record.from_json(line) for line in batch["record"]]
    sketches = hasher.sketch([field_text(r.fields, params.fields) for r in records])
    columns: dict[str, list[Any]] = {name: [] for name in _SKETCH_SCHEMA.names}
    for i, (order, record) in enumerate(zip(batch["order"], records, strict=True)):
        if sketches.offsets[i] == sketches.offsets[i + 1]:
            continue  # empty text: always kept, never compared
        signature = sketches.signatures[i]
        shingles = sketches.shingle_set(i) if params.verify == "exact" else None
        reason, match = "", Match("", 0.0)
        if contamination is not None and (found := contamination.find(signature, shingles)):
            reason, match = "contaminated", found
        elif reference is not None and (found := reference.find(signature, shingles)):
            reason, match = "near_duplicate", found
        rank = 0.0 if params.keep == "first" else -keep_priority(params, record)
        values = (order, record.id, rank, signature.tobytes(), b"" if shingles is None else shingles.tobytes(),
                  reason, match.key, match.similarity)
        for name, value in zip(_SKETCH_SCHEMA.names, values, strict=True):
            columns[name].append(value)
    return pa.table(columns, schema=_SKETCH_SCHEMA)


def _judged_rows(batch: pa.Table) -> pa.Table:
    """The records pass 1 already decided: matches of an evaluation item or of the reference index."""
    return batch.filter(pc.not_equal(batch["reason"], "")).select(["order", "id", "reason", "match", "similarity"])


def _band_rows(batch: Batch, *, bands: int, rows: int) -> pa.Table:
    """One row per (record, LSH band), keyed by the band's index and hash values; contaminated records left out."""
    columns: dict[str, list[Any]] = {name: [] for name in _BAND_SCHEMA.names}
    for i in np.flatnonzero(batch["reason"] != "contaminated"):
        signature = np.frombuffer(batch["signature"][i], dtype=np.uint32)
        for band in range(bands):
            columns["key"].append(band.to_bytes(2, "big") + signature[band * rows : (band + 1) * rows].tobytes())
            for name, _ in _NODE:
                columns[name].append(batch[name][i])
    return pa.table(columns, schema=_BAND_SCHEMA)


def _verified_pairs(group: pa.Table, *, bands: int, rows: int, verify: Verify, threshold: float) -> pa.Table:
    """Verified pairs (earlier order first) of one band bucket whose first shared band is this one; the
    similarity is `NearDuplicateIndex`'s."""
    if group.num_rows < 2:
        return _EDGE_SCHEMA.empty_table()  # most buckets
    columns: dict[str, list[Any]] = {name: [] for name in _EDGE_SCHEMA.names}
    group = group.sort_by("order")
    band = int.from_bytes(group["key"][0].as_py()[:2], "big")
    nodes = {name: group[name].to_pylist() for name in ("order", "id", "rank")}
    signatures = np.stack([np.frombuffer(value, dtype=np.uint32) for value in group["signature"].to_pylist()])
    sets = [np.frombuffer(value, dtype=np.uint32) for value in group["shingles"].to_pylist()]
    for a in range(group.num_rows - 1):
        agree = signatures[a + 1 :] == signatures[a]
        first_shared = agree[:, : bands * rows].reshape(-1, bands, rows).all(axis=2).argmax(axis=1)
        for offset in np.flatnonzero(first_shared == band):
            b = a + 1 + offset
            if verify == "exact":
                common = np.intersect1d(sets[a], sets[b], assume_unique=True).size
                similarity = common / (sets[a].size + sets[b].size - common)
            else:
                similarity = float(np.count_nonzero(agree[offset])) / signatures.shape[1]
            if similarity >= threshold:
                for side, k in (("a", a), ("b", b)):
                    for name, values in nodes.items():
                        columns[f"{side}_{name}"].append(values[k])
                columns["similarity"].append(similarity)
    return pa.table(columns, schema=_EDGE_SCHEMA)


def _decide(edges: Iterable[Mapping[str, Any]], judged: Mapping[int, tuple[str, str, Match]]) -> NearDuplicates:
    """The local greedy rule over the verified graph, plus its connected components."""
    nodes: dict[int, tuple[float, str]] = {}
    neighbours: dict[int, list[tuple[int, float]]] = defaultdict(list)
    parent: dict[int, int] = {}
    for edge in edges:
        a, b, similarity = edge["a_order"], edge["b_order"], edge["similarity"]
        nodes[a], nodes[b] = (edge["a_rank"], edge["a_id"]), (edge["b_rank"], edge["b_id"])
        neighbours[a].append((b, similarity))
        neighbours[b].append((a, similarity))
        root_a, root_b = _root(parent, a), _root(parent, b)
        parent[max(root_a, root_b)] = min(root_a, root_b)  # a root is its component's smallest order
    dropped = {key: (reason, match) for key, reason, match in judged.values()}
    kept: set[int] = set()
    for order in sorted(nodes, key=lambda node: (nodes[node][0], node)):
        best = judged[order][2] if order in judged else None
        for other, similarity in neighbours[order]:
            if other in kept and (best is None or similarity > best.similarity):
                best = Match(nodes[other][1], similarity)
        if best is None:
            kept.add(order)
        else:
            dropped[nodes[order][1]] = ("near_duplicate", best)
    return NearDuplicates(dropped, {key: nodes[_root(parent, order)][1] for order, (_, key) in nodes.items()})


def _root(parent: dict[int, int], node: int) -> int:
    """Union-find root of `node`, halving the path on the way."""
    while (up := parent.get(node, node)) != node:
        parent[node] = parent.get(up, up)
        node = up
    return node
