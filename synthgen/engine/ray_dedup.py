"""Exact and MinHash near-duplicate detection over a Ray Data dataset, deciding exactly as the local
`exact_dedup` / `minhash_dedup` stages do (same kept ids); the engine drops and rejects the ids returned.

Rows are `{"order": int, "id": str, "record": bytes}`: `order` the input position (unique, increasing) and
`record` is `Record.to_json()` (the id is read from it). JSON bytes rather than nested `fields` / `meta`
columns because Ray's Arrow conversion changes arbitrary values (lists and tuples come back as numpy arrays,
so `str()` of a field differs; mixed-type columns are coerced or pickled), while the text compared must be
the local stage's to the byte.

Near duplicates take four passes:
1. `map_batches`: each record's MinHash signature (the local `MinHasher`), its keep rank, and its verdict
   against the local stage's own evaluation index (`decontaminate`) and reference index (`reference_index`),
   built once on the driver by constructing the local stage; materialized, as the next passes read it again.
   The shingle sets are not kept (at 1M records of ~1.7 KB they are ~3 GB in the object store): pass 3
   recomputes them for the records of candidate pairs only.
2. Candidate pairs: one small row per LSH band (band index + the band's hash values as key, datasketch's
   `hashranges`: band i is values [i*r, (i+1)*r), and the record's order), so candidates are exactly the
   pairs the local index would propose. Rows are grouped into `num_partitions` parts by a hash value of the
   band (a few large groups: a group per bucket would cost a Python call per row); in each part, Arrow's
   `group_by` finds the buckets, those of one record are dropped and every other yields its pairs (earlier
   order, later order). The driver collects the pairs as one numpy array and removes repeats (a pair sharing
   several bands): ints only, about as many as near-duplicate pairs plus LSH false positives.
3. Verification: the pair array goes to the tasks through the object store; a pair is verified in its later
   record's part, so each record of a pair, read again from the input, sends what the check compares (its
   shingle set for `verify: exact`, else its signature, recomputed) once to every part holding one of its
   pairs, and each part checks its pairs (exact Jaccard or signature agreement, as `NearDuplicateIndex`),
   emitting each verified edge once.
4. The driver reads the verified edges and decides greedily in priority order (input order for
   `keep: first`; -priority, then input order for `longest` / `score`): a record is dropped iff a verified
   neighbour decided before it was kept, and names the most similar such neighbour.

Why greedy over the verified graph and not one survivor per connected component: the local stage compares
a record only with records kept before it. In a chain A~B~C with A !~ C it drops B (duplicate of A) and keeps
C, whose only near duplicate B was dropped; one survivor per component would drop C too. Since candidates
are the same band-sharing pairs, verification is symmetric, and a record's local verdict depends only on
which of its verified neighbours were kept before it, the greedy pass reproduces the local decisions.
The components are still returned as clusters, for reporting.

Costs: the band shuffle moves b x (4 (r + 1) + 16) bytes per record (b = 17 bands, r = 7 rows at threshold 0.8
with 128 permutations: ~800 bytes), and only records with a candidate ship their sketch, once per part. A
bucket of k identical texts yields k^2/2 pairs (on the driver too) where the local stage does k comparisons:
run `exact_dedup` first on data with many exact copies.
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

from synthgen.dedup.contamination import ContaminationIndex
from synthgen.dedup.index import Match, NearDuplicateIndex, Verify
from synthgen.dedup.minhash import MinHasher
from synthgen.dedup.text import field_text
from synthgen.record import Record
from synthgen.stages.base import StageContext
from synthgen.stages.dedup import ExactDedupParams, MinHashDedup, MinHashDedupParams, keep_priority, text_digest

Batch = dict[str, np.ndarray]

_NODE = [("order", pa.int64()), ("id", pa.string()), ("rank", pa.float64()), ("signature", pa.binary())]
_JUDGED = [("reason", pa.string()), ("match", pa.string()), ("similarity", pa.float64())]
_SKETCH_SCHEMA = pa.schema(_NODE + _JUDGED)
_PAIR_SCHEMA = pa.schema([("a", pa.int64()), ("b", pa.int64())])
_ROUTED_SCHEMA = pa.schema([("part", pa.int64()), ("order", pa.int64()), ("id", pa.string()), ("rank", pa.float64()),
                            ("sketch", pa.binary())])
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
    stage's context (it resolves `decontaminate` and `reference_index` paths); `num_partitions` is the number of
    parts the band rows and sketches are grouped into (None: the sketched dataset's block count)."""
    stage = MinHashDedup(params, ctx)  # the local stage's hasher and its evaluation and reference indexes
    reference = stage.index if len(stage.index) else None
    sketch = partial(_sketch_batch, params=params, hasher=stage.hasher, contamination=stage.contamination, reference=reference)
    sketched = ds.map_batches(sketch, batch_format="numpy", batch_size=params.batch_size).materialize()  # read 2-3 times
    judged: dict[int, tuple[str, str, Match]] = {}
    if stage.contamination is not None or reference is not None:
        for row in sketched.map_batches(_judged_rows, batch_format="pyarrow").iter_rows():
            judged[row["order"]] = (row["id"], row["reason"], Match(row["match"], row["similarity"]))
    parts = num_partitions or max(1, sketched.num_blocks())
    per_part = max(1, -(-sketched.count() // parts))  # sketches per map task: about one block per part into each shuffle
    bands = partial(_band_rows, bands=stage.index.bands, rows=stage.index.rows, parts=parts)
    found = (sketched.map_batches(bands, batch_format="numpy", batch_size=per_part)
             .groupby("part", num_partitions=parts).map_groups(_bucket_pairs, batch_format="pyarrow"))
    batches = [np.stack([batch["a"], batch["b"]], axis=1) for batch in found.iter_batches(batch_size=None, batch_format="numpy")]
    pairs = np.unique(np.concatenate(batches), axis=0) if batches else np.empty((0, 2), np.int64)  # sorted by (a, b)
    if not len(pairs):
        return _decide([], judged)
    pairs_ref = ray.put(pairs)
    route = partial(_routed_sketches, pairs=pairs_ref, parts=parts, params=params, hasher=stage.hasher)
    verify = partial(_verified_pairs, pairs=pairs_ref, parts=parts, verify=params.verify, threshold=params.threshold)
    edges = (ds.map_batches(route, batch_format="numpy", batch_size=per_part)
             .groupby("part", num_partitions=parts).map_groups(verify, batch_format="pyarrow"))
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


def _sketch_batch(batch: Batch, *, params: MinHashDedupParams, hasher: MinHasher, contamination: ContaminationIndex | None,
                  reference: NearDuplicateIndex | None) -> pa.Table:
    """Non-empty records with signature, rank, and any evaluation / reference match."""
    records = [Record.from_json(line) for line in batch["record"]]
    sketches = hasher.sketch([field_text(r.fields, params.fields) for r in records])
    columns: dict[str, list[Any]] = {name: [] for name in _SKETCH_SCHEMA.names}
    for i, (order, record) in enumerate(zip(batch["order"], records, strict=True)):
        if sketches.offsets[i] == sketches.offsets[i + 1]:
            continue  # empty text: always kept, never compared
        signature = sketches.signatures[i]
        reason, match = "", Match("", 0.0)
        if contamination is not None and (found := contamination.find(field_text(record.fields, params.fields))):
            reason, match = "contaminated", found
        elif reference is not None and (found := reference.find(signature, sketches.shingle_set(i)
                                                                  if params.verify == "exact" else None)):
            reason, match = "near_duplicate", found
        values = (order, record.id, _rank(params, record), signature.tobytes(), reason, match.key, match.similarity)
        for name, value in zip(_SKETCH_SCHEMA.names, values, strict=True):
            columns[name].append(value)
    return pa.table(columns, schema=_SKETCH_SCHEMA)


def _judged_rows(batch: pa.Table) -> pa.Table:
    """The records pass 1 already decided: matches of an evaluation item or of the reference index."""
    return batch.filter(pc.not_equal(batch["reason"], "")).select(["order", "id", "reason", "match", "similarity"])


def _band_rows(batch: Batch, *, bands: int, rows: int, parts: int) -> pa.Table:
    """One row per (record, LSH band): the band's index and hash values as key, the order, and the part the key
    is grouped in; contaminated records left out."""
    keep = batch["reason"] != "contaminated"
    signatures = (np.stack([np.frombuffer(value, dtype=np.uint32) for value in batch["signature"][keep]]) if keep.any()
                  else np.empty((0, bands * rows), np.uint32))
    keys = np.empty((len(signatures), bands, rows + 1), dtype=np.uint32)
    keys[:, :, 0] = np.arange(bands)
    keys[:, :, 1:] = signatures[:, : bands * rows].reshape(-1, bands, rows)
    count = len(signatures) * bands
    return pa.table({"part": (keys[:, :, 1].ravel() % parts).astype(np.int64),
                     "key": pa.FixedSizeBinaryArray.from_buffers(pa.binary(4 * (rows + 1)), count, [None, pa.py_buffer(keys)]),
                     "order": np.repeat(batch["order"][keep], bands)})


def _bucket_pairs(group: pa.Table) -> pa.Table:
    """Each pair (earlier order, later order) sharing a band bucket in one part, once per part."""
    buckets = group.group_by("key").aggregate([("order", "list")])
    members = buckets.filter(pc.greater(pc.list_value_length(buckets["order_list"]), 1))["order_list"].to_pylist()
    pairs = [np.empty((0, 2), np.int64)]
    for bucket in members:
        orders = np.sort(np.asarray(bucket, dtype=np.int64))
        earlier, later = np.triu_indices(len(orders), 1)
        pairs.append(np.stack([orders[earlier], orders[later]], axis=1))
    unique = np.unique(np.concatenate(pairs), axis=0)
    return pa.table({"a": unique[:, 0], "b": unique[:, 1]}, schema=_PAIR_SCHEMA)


def _rank(params: MinHashDedupParams, record: Record) -> float:
    """The decision order's first key: 0 under `keep: first` (input order alone), else minus the priority."""
    return 0.0 if params.keep == "first" else -keep_priority(params, record)


def _routed_sketches(batch: Batch, *, pairs: ray.ObjectRef, parts: int, params: MinHashDedupParams,
                     hasher: MinHasher) -> pa.Table:
    """What verification compares (shingle set or signature), recomputed from the input rows for each record
    in a candidate pair, once for every part holding one of its pairs: a pair is verified in its later record's part."""
    candidates = ray.get(pairs)
    orders = batch["order"]
    starts, ends = np.searchsorted(candidates[:, 0], orders, side="left"), np.searchsorted(candidates[:, 0], orders, side="right")
    is_later = np.isin(orders, candidates[:, 1])
    paired = np.flatnonzero(is_later | (ends > starts))
    records = [Record.from_json(batch["record"][i]) for i in paired]
    sketches = hasher.sketch([field_text(record.fields, params.fields) for record in records])
    columns: dict[str, list[Any]] = {name: [] for name in _ROUTED_SCHEMA.names}
    for n, (i, record) in enumerate(zip(paired, records, strict=True)):
        sketch = sketches.shingle_set(n) if params.verify == "exact" else sketches.signatures[n]
        targets = set((candidates[starts[i] : ends[i], 1] % parts).tolist())
        if is_later[i]:
            targets.add(int(orders[i]) % parts)
        for part in sorted(targets):
            for name, value in (("part", part), ("order", orders[i]), ("id", record.id), ("rank", _rank(params, record)),
                                ("sketch", sketch.tobytes())):
                columns[name].append(value)
    return pa.table(columns, schema=_ROUTED_SCHEMA)


def _verified_pairs(group: pa.Table, *, pairs: ray.ObjectRef, parts: int, verify: Verify, threshold: float) -> pa.Table:
    """The verified candidate pairs of one part (earlier order first); the similarity is `NearDuplicateIndex`'s."""
    candidates = ray.get(pairs)
    candidates = candidates[candidates[:, 1] % parts == group["part"][0].as_py()]
    nodes = {name: group[name].to_pylist() for name in ("order", "id", "rank")}
    row = {order: i for i, order in enumerate(nodes["order"])}
    sketches = [np.frombuffer(value, dtype=np.uint32) for value in group["sketch"].to_pylist()]
    columns: dict[str, list[Any]] = {name: [] for name in _EDGE_SCHEMA.names}
    for a, b in candidates.tolist():
        i, j = row[a], row[b]
        if verify == "exact":
            common = np.intersect1d(sketches[i], sketches[j], assume_unique=True).size
            similarity = common / (sketches[i].size + sketches[j].size - common)
        else:
            similarity = float(np.count_nonzero(sketches[i] == sketches[j])) / sketches[i].size
        if similarity >= threshold:
            for side, k in (("a", i), ("b", j)):
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
