"""Augmentation in embedding space, decoded back to text.

Targets are made by moving input embeddings (noise, mixup interpolation, extrapolation, analogy along an
attribute direction, SMOTE for a class: `synthgen.embedding.interpolate`). Each target becomes text either
as its nearest existing input (`decode: nearest`, reporting the cosine) or by the LLM (`decode: llm`): the
backend is shown the anchor texts and the operation, its text is embedded and kept only if its cosine to
the target is >= `tau`, it is no near-copy of an anchor, and (with labels) its nearest labelled neighbours
are not dominated by a class neither parent has (manifold intrusion); otherwise it is asked again with a new
attempt number, up to `max_attempts`, then rejected with the measured cosine. Mixup texts carry soft labels.
Needs every input record first (the operations sample across the set): the records are spilled to disk and
replayed, and what stays in memory per input is its id, its text (the prompts and `decode: nearest` quote it),
its label and its vector, one row of an (n, 384) float32 array (1,536 bytes) filled in place from the cache.

`operation: gaps` aims at holes in the kept set instead (`synthgen.embedding.interpolate.gaps`): midpoints of
far-apart pairs within each `label_field` group and centroids of sparse k-means cells, the emptiest first. The
LLM is shown the two anchors and asked for one new text between them, as distilabel / DataDesigner users expect
seeds to be realised; a text must also fill its gap (`fills_gap`: nearer the target than any kept record by
`margin`, or farther from the kept set than its median nearest-neighbour distance), else `gap_not_filled`.
Its default `tau` is 0.6, not 0.8: the midpoint of two unrelated texts is only ~0.7 from either of them.
`decode: nearest` would hand back an existing record, the opposite of filling a hole, so it is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from synthgen.embedding.diversity import diversity_metrics
from synthgen.embedding.encoder import DEFAULT_MODEL, Encoder
from synthgen.embedding.interpolate import (
    add_noise,
    analogy,
    attribute_vector,
    fills_gap,
    gaps,
    interpolate,
    intrusion,
    nearest,
    nearest_neighbour_distances,
    smote,
)
from synthgen.errors import ConfigError, RetryableBackendError
from synthgen.fields import stage_fields
from synthgen.hashing import stable_int
from synthgen.prompts import PromptLibrary
from synthgen.record import Record, make_record_id
from synthgen.runtime import Runtime
from synthgen.sampling import SamplingParams
from synthgen.stages.base import StageParams, WholeSetStage
from synthgen.stages.spill import Spilled

ALPHA = {"mixup": (0.2, 0.8), "extrapolate": (1.2, 1.5)}
TAU = {"gaps": 0.6}  # default tau where 0.8 does not fit (see the module docstring)


class AugmentParams(StageParams):
    """What to move, how, and how strictly the realised text must land on its target."""

    text_field: str = "text"
    label_field: str | None = None
    operation: Literal["mixup", "smote", "noise", "extrapolate", "analogy", "gaps"] = "mixup"
    count: int = Field(default=100, ge=1, description="new records (per class for smote)")
    classes: list[str] | None = Field(default=None, description="smote: the classes to grow (default: all)")
    alpha: tuple[float, float] | None = None
    noise_scale: float = Field(default=0.5, gt=0)
    source: str | None = Field(default=None, description="analogy: the label to move away from")
    target: str | None = Field(default=None, description="analogy: the label to move towards")
    strength: float = 1.0
    decode: Literal["llm", "nearest"] = "llm"
    tau: float = Field(default=0.8, ge=-1, le=1, description="min cosine to the target (gaps: 0.6 unless set)")
    copy_threshold: float = Field(default=0.97, gt=0, le=1)
    max_attempts: int = Field(default=3, ge=1)
    intrusion_k: int = Field(default=5, ge=1)
    margin: float = Field(default=0.0, ge=-1, le=1, description="gaps: how much nearer the target than any kept record")
    cell_ratio: float = Field(default=0.5, gt=0, le=1, description="gaps: a k-means cell below this x mean size is sparse")
    templates: str = "embedding"
    sampling: SamplingParams = Field(default_factory=lambda: SamplingParams(temperature=0.9, max_tokens=200))
    model: str = DEFAULT_MODEL
    keep_input: bool = True

    @model_validator(mode="after")
    def _check_gaps(self) -> AugmentParams:
        if self.operation == "gaps" and self.decode == "nearest":
            raise ValueError("operation: gaps needs decode: llm (decode: nearest would return an existing record, "
                             "which fills no gap)")
        if "tau" not in self.model_fields_set:
            self.tau = TAU.get(self.operation, self.tau)
        return self


@dataclass
class Plan:
    """One target vector, the input rows it came from, and what the prompt and the new record need."""

    target: np.ndarray
    anchors: list[int]
    alpha: float | None = None
    variables: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


class EmbeddingAugment(WholeSetStage):
    """New records made by moving embeddings, realised as text and verified to land where aimed."""

    name = "embed_augment"
    Params = AugmentParams
    params: AugmentParams
    predictable = False  # `decode: llm` asks again for the texts that miss their target

    def start(self) -> None:
        self.ids: list[str] = []
        self.texts: list[str] = []
        self.labels: list[str] = []

    def prepare(self, records: Iterable[Record]) -> Iterable[Record]:
        return stage_fields(records, self, "text_field", "label_field")

    def see(self, batch: list[Record]) -> None:
        p = self.params
        self.ids.extend(record.id for record in batch)
        self.texts.extend(str(record.fields.get(p.text_field) or "") for record in batch)
        if p.label_field:
            self.labels.extend(str(record.fields.get(p.label_field)) for record in batch)

    def emit(self, records: Spilled) -> Iterator[Record]:
        if self.params.keep_input:
            yield from records
        if len(self.ids) < 2:
            return
        p = self.params
        encoder = self.ctx.encoder(p.model)
        vectors = encoder.encode(self.texts)
        labels = np.array(self.labels) if p.label_field else None
        plans = self._plan(vectors, labels, self.texts, np.random.default_rng(stable_int(self.ctx.seed, self.ctx.key)))
        spacing = nearest_neighbour_distances(vectors) if p.operation == "gaps" else np.zeros(0)
        if p.decode == "nearest":
            made = self._nearest(plans, vectors)
        else:
            made = self._realise(plans, vectors, labels, encoder, float(np.median(spacing)) if len(spacing) else 0.0)
        cosines = [record.meta["scores"]["target_cosine"] for record in made]
        added = encoder.encode([str(record.fields[p.text_field]) for record in made])
        self.ctx.stats.metrics[self.ctx.label] = {
            "operation": p.operation, "decode": p.decode, "targets": len(plans), "accepted": len(made),
            "mean_target_cosine": round(float(np.mean(cosines)), 4) if cosines else None,
            "before": diversity_metrics(vectors, self.ctx.seed),
            "after": diversity_metrics(np.vstack([vectors, added]), self.ctx.seed),
        }
        if p.operation == "gaps":
            self.ctx.stats.metrics[self.ctx.label].update(self._gap_metrics(vectors, spacing, added, made))
        yield from made

    def _plan(self, vectors: np.ndarray, labels: np.ndarray | None, texts: list[str], rng: np.random.Generator) -> list[Plan]:
        p, n = self.params, len(vectors)
        low, high = p.alpha or ALPHA.get(p.operation, (0.0, 1.0))
        if p.operation == "gaps":
            return self._gap_plans(vectors, labels, texts, rng)
        if p.operation == "noise":
            anchors = rng.integers(0, n, size=p.count)
            return [Plan(t, [int(a)], None, {"anchor": texts[a]}, self._hard(labels, a))
                    for t, a in zip(add_noise(vectors[anchors], p.noise_scale, rng), anchors, strict=True)]
        if p.operation in ("mixup", "extrapolate"):
            first = rng.integers(0, n, size=p.count)
            second = np.array([self._partner(int(a), n, labels, p.operation == "extrapolate", rng) for a in first])
            alphas = rng.uniform(low, high, size=p.count)
            targets = interpolate(vectors[first], vectors[second], alphas)
            return [Plan(t, [int(a), int(b)], float(al),
                         {"anchor": texts[a], "partner": texts[b], "percent": round(100 * al)},
                         self._mixed(labels, int(a), int(b), float(al)))
                    for t, a, b, al in zip(targets, first, second, alphas, strict=True)]
        if labels is None:
            raise ConfigError(str(self.ctx.recipe_path), f"stages[{self.ctx.index}].embed_augment.label_field",
                              f"{p.operation} needs labelled records: set label_field")
        if p.operation == "analogy":
            if p.source is None or p.target is None:
                raise ConfigError(str(self.ctx.recipe_path), f"stages[{self.ctx.index}].embed_augment",
                                  "analogy needs source and target")
            direction = attribute_vector(vectors, labels, p.source, p.target)
            members, partners = np.flatnonzero(labels == p.source), np.flatnonzero(labels == p.target)
            anchors = rng.choice(members, size=p.count)
            targets = analogy(vectors[anchors], direction, p.strength)
            return [Plan(t, [int(a)], None, {"anchor": texts[a], "partner": texts[rng.choice(partners)], "source": p.source,
                                             "target": p.target}, {p.target: 1.0})
                    for t, a in zip(targets, anchors, strict=True)]
        plans = []
        for label in p.classes or sorted(set(labels.tolist())):
            targets, first, second = smote(vectors, labels, label, p.count, 5, rng)
            plans += [Plan(t, [int(a), int(b)], None, {"anchor": texts[a], "partner": texts[b], "percent": 50}, {label: 1.0})
                      for t, a, b in zip(targets, first, second, strict=True)]
        return plans

    def _gap_plans(self, vectors: np.ndarray, labels: np.ndarray | None, texts: list[str],
                   rng: np.random.Generator) -> list[Plan]:
        """Targets in the emptiest regions of the kept set, each between two anchors of one group."""
        groups = labels if labels is not None else np.zeros(len(vectors), dtype=int)
        targets, anchors, empty, kinds = gaps(vectors, groups, self.params.count, rng, self.params.cell_ratio)
        thing = self.params.text_field.replace("_", " ")
        return [Plan(t, [int(a), int(b)], None, {"anchor": texts[a], "partner": texts[b], "thing": thing},
                     self._hard(labels, int(a)), {"gap": {"kind": kind, "anchors": [self.ids[a], self.ids[b]],
                                                          "emptiness_before": round(float(e), 4)}})
                for t, (a, b), e, kind in zip(targets, anchors, empty, kinds, strict=True)]

    @staticmethod
    def _gap_metrics(vectors: np.ndarray, spacing: np.ndarray, added: np.ndarray, made: list[Record]) -> dict[str, Any]:
        """Mean nearest-neighbour distance before (`spacing`: the inputs' own) and after the fills, and how many
        gaps of each kind were filled."""
        after = np.vstack([vectors, added]) if len(added) else vectors
        kinds = [record.meta["gap"]["kind"] for record in made]
        return {"mean_nn_distance": {"before": round(float(spacing.mean()), 4),
                                     "after": round(float(nearest_neighbour_distances(after).mean()), 4)},
                "gaps_filled": len(made), "cells_filled": kinds.count("cell")}

    @staticmethod
    def _partner(anchor: int, n: int, labels: np.ndarray | None, same_class: bool, rng: np.random.Generator) -> int:
        """Another row: any, or one of the anchor's class (extrapolation keeps the label meaningful)."""
        pool = np.flatnonzero(labels == labels[anchor]) if same_class and labels is not None else np.arange(n)
        pool = pool[pool != anchor]
        return int(rng.choice(pool)) if pool.size else anchor

    @staticmethod
    def _hard(labels: np.ndarray | None, index: int) -> dict[str, float]:
        return {str(labels[index]): 1.0} if labels is not None else {}

    @staticmethod
    def _mixed(labels: np.ndarray | None, a: int, b: int, alpha: float) -> dict[str, float]:
        if labels is None:
            return {}
        soft: dict[str, float] = {}
        for label, weight in ((str(labels[a]), 1.0 - alpha), (str(labels[b]), alpha)):
            soft[label] = round(soft.get(label, 0.0) + weight, 4)
        return soft

    def _record(self, plan: Plan, index: int, text: str, cosine: float, extra: dict[str, Any]) -> Record:
        p = self.params
        fields: dict[str, Any] = {p.text_field: text, "operation": p.operation, "alpha": plan.alpha}
        if p.label_field:
            fields[p.label_field] = max(plan.labels, key=lambda label: plan.labels[label]) if plan.labels else None
            fields["soft_labels"] = plan.labels
        meta = {"parents": [self.ids[a] for a in plan.anchors], "scores": {"target_cosine": round(cosine, 4)},
                **plan.meta, **extra}
        return Record(make_record_id(self.ctx.key, index), fields, meta)

    def _nearest(self, plans: list[Plan], vectors: np.ndarray) -> list[Record]:
        """Each target as the closest existing input that is not its own first anchor."""
        targets = np.stack([plan.target for plan in plans])
        best, cosines = nearest(targets, vectors, np.array([plan.anchors[0] for plan in plans]))
        return [self._record(plan, i, self.texts[b], float(c), {"decoded_from": self.ids[b]})
                for i, (plan, b, c) in enumerate(zip(plans, best, cosines, strict=True))]

    def _realise(self, plans: list[Plan], vectors: np.ndarray, labels: np.ndarray | None,
                 encoder: Encoder, median: float) -> list[Record]:
        """Ask the LLM for each target's text, verify it, ask again for the failures, reject what never lands
        (`median`: the inputs' median nearest-neighbour distance, which a gap's text must fill)."""
        p, runtime = self.params, self.ctx.runtime
        if not isinstance(runtime, Runtime):
            raise TypeError(f"{self.ctx.label}: decode: llm needs a backend runtime; this run has none")
        prompts = PromptLibrary(self.ctx.prompts_dir)
        sampling = p.sampling.to_body()
        made: dict[int, Record] = {}
        failures: dict[int, tuple[str, str]] = {}
        for attempt in range(p.max_attempts):
            todo = [i for i in range(len(plans)) if i not in made]
            if not todo:
                break
            template = f"{p.templates}/{'mixup' if p.operation == 'smote' else p.operation}.j2"
            requests = [runtime.request(prompts.render(template, plans[i].variables), sampling,
                                        (self.ctx.seed, self.ctx.key, i), attempt=attempt) for i in todo]
            answers = runtime.complete_all(requests, self.ctx.stats)
            written = [a.text.strip() if not isinstance(a, RetryableBackendError) else "" for a in answers]
            embedded = encoder.encode(written)
            for i, request, answer, text, vector in zip(todo, requests, answers, written, embedded, strict=True):
                plan = plans[i]
                if isinstance(answer, RetryableBackendError):
                    failures[i] = (f"backend_{answer.cause}", str(answer))
                    continue
                cosine = float(vector @ plan.target)
                copy = max(float(vector @ vectors[a]) for a in plan.anchors)
                intruder = (intrusion(vector, vectors, labels, set(plan.labels), p.intrusion_k)
                            if labels is not None and plan.labels else None)
                if not text or cosine < p.tau:
                    failures[i] = ("off_target", f"cosine {cosine:.3f} to the target < tau {p.tau}")
                elif copy >= p.copy_threshold:
                    failures[i] = ("near_copy", f"cosine {copy:.3f} to an anchor")
                elif intruder is not None:
                    failures[i] = ("manifold_intrusion", f"nearest neighbours are mostly {intruder!r}")
                elif "gap" in plan.meta and (miss := fills_gap(vector, plan.target, vectors, median, p.margin)):
                    failures[i] = ("gap_not_filled", miss)
                else:
                    extra: dict[str, Any] = {"attempt": attempt, "request": request.key()}
                    if "gap" in plan.meta:
                        before = plan.meta["gap"]["emptiness_before"]
                        extra["gap"] = {**plan.meta["gap"], "emptiness_after": round(min(before, 1.0 - cosine), 4),
                                        "distance_to_kept": round(1.0 - float((vectors @ vector).max()), 4)}
                    made[i] = self._record(plan, i, text, cosine, extra)
        for i, (reason, detail) in failures.items():
            if i not in made:
                self.ctx.reject(self._record(plans[i], i, "", 0.0, {}), reason, detail)
        return [made[i] for i in sorted(made)]
