"""Dedup stages: exact duplicates of normalised text, and near duplicates by verified MinHash LSH, with
decontamination against evaluation sets. Each dropped record names the id it duplicates and the similarity.

Decontamination is not near-duplicate detection: a record is `contaminated` when it contains an evaluation
item, whole or with an edit or two, scored by word n-grams and word edits (`synthgen.dedup.contamination`)
against its own `decontaminate_threshold` (default 0.9) and `decontaminate_ngram` (8), whatever `threshold`
and `preset` the near-duplicate check uses.

Shingle presets, and why:
- `short` (default; instructions, queries, titles): character 5-grams. A 15-word instruction has only 11
  word 5-grams, so one changed word moves Jaccard by ~0.4; its ~100 character 5-grams move smoothly
  with the size of an edit, and tolerate inflection and punctuation changes.
- `document` (paragraphs, web pages): word 5-grams. Long texts have hundreds of them, they are more
  specific than character grams (common English character grams match across unrelated pages), and a
  document has ~5x fewer of them, which makes signatures cheaper.

`keep: first` streams: a record is kept unless it duplicates one kept before it, and later stages never
see duplicates. `keep: longest` / `keep: score` need the whole set: records, their signatures and shingle sets are
spilled to temporary files in the run directory (ids and ranks stay in memory, ~20 bytes each), decided in
priority order, then emitted in input order. The index keeps its own signatures and shingle sets on disk
too (`synthgen.dedup.index`); ties between equally similar matches go to the earliest kept record.
A killed run re-runs this stage from its input (the decisions are deterministic); the finished index is
saved as `checkpoints/<stage>.index.npz`, and `reference_index` loads such a file to dedup against an
earlier run's records too.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from synthgen.dedup.contamination import DEFAULT_NGRAM, DEFAULT_THRESHOLD, ContaminationIndex
from synthgen.dedup.index import Match, NearDuplicateIndex
from synthgen.dedup.minhash import MinHasher, Shingling, Sketches
from synthgen.dedup.store import GrowingArray, KeyList, SketchStore
from synthgen.dedup.text import field_text, normalize
from synthgen.errors import ConfigError
from synthgen.fields import stage_fields
from synthgen.record import Record
from synthgen.stages.base import Stage, StageContext, StageParams
from synthgen.stages.source import Source, SourceConfig
from synthgen.stages.spill import spilled

PRESETS: dict[str, tuple[Literal["word", "char"], int]] = {"short": ("char", 5), "document": ("word", 5)}


def reject_duplicate(ctx: StageContext, record: Record, reason: str, match: Match, measure: str = "jaccard") -> None:
    """Send `record` to rejects with the id (or evaluation item) it duplicates and the measured similarity."""
    record.meta.update(duplicate_of=match.key, similarity=round(match.similarity, 4))
    what, measure = ("contains evaluation item", "containment") if reason == "contaminated" else ("duplicate of", measure)
    ctx.reject(record, reason, f"{what} {match.key} ({measure} {match.similarity:.3f})")


def text_digest(record: Record, names: Sequence[str]) -> bytes:
    """What exact dedup compares: a 16-byte BLAKE2b digest of the normalised text of `names`."""
    return hashlib.blake2b(normalize(field_text(record.fields, names)).encode(), digest_size=16).digest()


class ExactDedupParams(StageParams):
    """Which fields, joined, make the text compared."""

    fields: list[str] = Field(default_factory=lambda: ["text"], min_length=1)


class ExactDedup(Stage):
    """Drops records whose normalised text (NFKC, case-folded, punctuation and spaces collapsed) was seen."""

    name = "exact_dedup"
    distributed_form = "exact_dedup"
    Params = ExactDedupParams
    params: ExactDedupParams

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        seen: dict[bytes, str] = {}
        for record in stage_fields(records, self, "fields"):
            first = seen.setdefault(text_digest(record, self.params.fields), record.id)
            if first == record.id:
                yield record
            else:
                reject_duplicate(self.ctx, record, "exact_duplicate", Match(first, 1.0))


class MinHashDedupParams(StageParams):
    """Near-duplicate removal; `threshold` is the Jaccard similarity at or above which a record is dropped."""

    fields: list[str] = Field(default_factory=lambda: ["text"], min_length=1)
    preset: Literal["short", "document"] = "short"
    unit: Literal["word", "char"] | None = None
    ngram: int | None = Field(default=None, ge=1, le=32)
    num_perm: int = Field(default=128, ge=16, le=1024)
    threshold: float = Field(default=0.8, gt=0, le=1)
    seed: int = 1
    verify: Literal["exact", "estimate"] = "exact"
    keep: Literal["first", "longest", "score"] = "first"
    score: str | None = None
    decontaminate: list[SourceConfig] = Field(default_factory=list)
    decontaminate_threshold: float = Field(default=DEFAULT_THRESHOLD, gt=0, le=1)
    decontaminate_ngram: int = Field(default=DEFAULT_NGRAM, ge=2, le=32)
    reference_index: str | None = None
    batch_size: int = Field(default=1024, ge=1)

    @model_validator(mode="after")
    def _score_named(self) -> MinHashDedupParams:
        if self.keep == "score" and not self.score:
            raise ValueError("keep: score needs `score`: the meta.scores key or field to rank by")
        return self

    def shingling(self) -> Shingling:
        """The preset, with `unit` / `ngram` overriding it."""
        unit, n = PRESETS[self.preset]
        return Shingling(self.unit or unit, self.ngram or n)


def keep_priority(params: MinHashDedupParams, record: Record) -> float:
    """The rank of `record` under `keep: longest` (text length) or `keep: score` (the score; -inf if missing)."""
    if params.keep == "longest":
        return float(len(field_text(record.fields, params.fields)))
    name = params.score or ""
    value = record.meta.get("scores", {}).get(name, record.fields.get(name))
    return float(value) if isinstance(value, (int, float)) else float("-inf")


class MinHashDedup(Stage):
    """Drops records that contain an evaluation item, then those whose MinHash-LSH candidates include a verified
    near duplicate."""

    name = "minhash_dedup"
    distributed_form = "minhash_dedup"
    Params = MinHashDedupParams
    params: MinHashDedupParams

    def __init__(self, params: MinHashDedupParams, ctx: StageContext) -> None:  # type: ignore[override]
        super().__init__(params, ctx)
        self.hasher = MinHasher(params.shingling(), params.num_perm, params.seed)
        self.index = self._new_index(params.threshold)
        if params.reference_index:
            self._load_reference(ctx.resolve(params.reference_index))
        self.contamination = self._eval_index() if params.decontaminate else None

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        records = stage_fields(records, self, "fields")
        if self.params.keep == "first":
            yield from self._streaming(records)
        else:
            yield from self._ranked(records)
        if self.ctx.workdir is not None:
            path = self.ctx.workdir / f"{self.ctx.label}.index.npz"
            tmp = path.with_name(path.name + ".tmp")
            self.index.save(tmp)
            os.replace(tmp, path)
        self.index.close()  # removes its spill files: the saved .npz is what a later run loads

    def _streaming(self, records: Iterable[Record]) -> Iterator[Record]:
        for batch, sketches in self._sketched(records):
            for i, record in enumerate(batch):
                item = self.contains(record)
                verdict = None if _empty(sketches, i) else self._verdict(record.id, sketches.signatures[i],
                                                                          self._shingles(sketches, i), item)
                if verdict is None:
                    yield record
                else:
                    reject_duplicate(self.ctx, record, *verdict)

    def _ranked(self, records: Iterable[Record]) -> Iterator[Record]:
        """Records and their sketches are spilled as they arrive (ids, ranks and evaluation matches stay in compact
        form in memory), decided in rank order, then replayed in input order."""
        ids, ranks, empty, items = KeyList(), GrowingArray(np.float64), GrowingArray(np.bool_), {}
        with tempfile.TemporaryDirectory(prefix="minhash-ranked-", dir=self.ctx.workdir) as folder:
            store = SketchStore(Path(folder), self.params.num_perm)

            def see(batch: list[Record]) -> None:
                sketches = self._sketch(batch)
                sets = [np.empty(0, np.uint32) if (values := self._shingles(sketches, i)) is None else values
                        for i in range(len(batch))]
                store.append(sketches.signatures, np.cumsum([0, *(values.size for values in sets)]), np.concatenate(sets))
                for i, record in enumerate(batch):
                    if (item := self.contains(record)) is not None:
                        items[len(ids) + i] = item
                ids.extend([record.id for record in batch])
                ranks.extend([-keep_priority(self.params, record) for record in batch])
                empty.extend(np.diff(sketches.offsets) == 0)

            try:
                with spilled(records, self.ctx.workdir, self.params.batch_size, see) as replay:
                    verdicts: dict[int, tuple[str, Match]] = {}
                    for position in np.argsort(ranks.values, kind="stable").tolist():
                        if not empty.values[position] and (verdict := self._verdict(
                                ids[position], store.signature(position), store.shingle_set(position), items.get(position))):
                            verdicts[position] = verdict
                    for position, record in enumerate(replay):
                        if position in verdicts:
                            reject_duplicate(self.ctx, record, *verdicts.pop(position))
                        else:
                            yield record
            finally:
                store.close()

    def contains(self, record: Record) -> Match | None:
        """The evaluation item `record` contains, if any (see `synthgen.dedup.contamination`)."""
        return None if self.contamination is None else self.contamination.find(field_text(record.fields, self.params.fields))

    def _verdict(self, key: str, signature: np.ndarray, shingles: np.ndarray | None, item: Match | None
                 ) -> tuple[str, Match] | None:
        """None to keep (the record is then indexed), else the reject reason and the match; `item` is the
        evaluation item the record contains."""
        if item is not None:
            return "contaminated", item
        if match := self.index.find(signature, shingles):
            return "near_duplicate", match
        self.index.add(key, signature, shingles)
        return None

    def _shingles(self, sketches: Sketches, i: int) -> np.ndarray | None:
        """What exact verification compares (None under `verify: estimate`)."""
        return sketches.shingle_set(i) if self.params.verify == "exact" else None

    def _sketched(self, records: Iterable[Record]) -> Iterator[tuple[list[Record], Sketches]]:
        iterator = iter(records)
        while batch := list(islice(iterator, self.params.batch_size)):
            yield batch, self._sketch(batch)

    def _sketch(self, batch: list[Record]) -> Sketches:
        return self.hasher.sketch([field_text(r.fields, self.params.fields) for r in batch])

    def _new_index(self, threshold: float) -> NearDuplicateIndex:
        return NearDuplicateIndex(threshold, self.params.num_perm, self.params.seed, self.params.verify, self.ctx.workdir)

    def _load_reference(self, path: Path) -> None:
        field = f"stages[{self.ctx.index}].minhash_dedup.reference_index"
        try:
            saved = NearDuplicateIndex.load(path, self.params.threshold, self.params.verify, self.ctx.workdir)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise ConfigError(str(self.ctx.recipe_path), field, f"cannot load {path}: {exc}") from None
        if (saved.num_perm, saved.seed) != (self.params.num_perm, self.params.seed):
            raise ConfigError(str(self.ctx.recipe_path), field,
                              f"{path} was built with num_perm={saved.num_perm}, seed={saved.seed}; use the same values")
        self.index.close()
        self.index = saved

    def _eval_index(self) -> ContaminationIndex:
        """An index of every evaluation item; its keys read `<file>:<line>`."""
        index = ContaminationIndex(self.params.decontaminate_threshold, self.params.decontaminate_ngram)
        for config in self.params.decontaminate:
            source = Source(config, self.ctx.resolve(config.path))
            names = config.fields or self.params.fields
            for item in source:
                index.add(f"{source.path.name}:{item.meta['line']}", field_text(item.fields, names))
        return index


def _empty(sketches: Sketches, i: int) -> bool:
    """Whether document i has no shingles (empty text: kept, never compared; a length filter's job)."""
    return bool(sketches.offsets[i] == sketches.offsets[i + 1])
