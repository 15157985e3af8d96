"""Rejection sampling over judged candidates: `best_of_n` keeps the best candidate of each prompt (or every one
above a threshold), `preference_pairs` turns each prompt's candidates into {prompt, chosen, rejected} rows for DPO.

Candidates of one prompt are the records a generate stage made from one input (`n: 4` gives 4 per input): they
share `meta.parents`. Records drawn from nothing have no parents; theirs is the drawing step (`meta.steps[0]`:
template, leaf and placeholders, i.e. the prompt). `group_by: [fields]` groups by field values instead.

Grouping streams: a group is a run of consecutive records with the same key, which is how generate releases the
`n` samples of one input (in input order) and how every streaming stage (filters, judges, dedup) passes them on.
Only one group is held at a time; a whole-set stage that reorders records must not sit between generate and these.

A score is read from `meta.scores` as a judge writes it: `score: judge` is `meta.scores["judge"]["mean"]`,
`score: judge.accuracy` is `meta.scores["judge"]["accuracy"]`. A candidate without that score is rejected
(`unscored`); a score name that no record has is a recipe error.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Iterator
from itertools import groupby
from typing import Any, Literal

from pydantic import Field, model_validator

from synthgen.errors import ConfigError
from synthgen.fields import stage_fields
from synthgen.hashing import content_hash
from synthgen.record import Record, make_record_id
from synthgen.stages.base import Stage, StageParams

Scored = tuple[Record, float]


class GroupParams(StageParams):
    """Which score ranks the candidates and what makes candidates one prompt's."""

    score: str = Field(description="`<judge>` (its mean) or `<judge>.<criterion>`, read from meta.scores")
    group_by: list[str] | None = Field(default=None, description="fields naming the prompt; default: the parent record")


class GroupStage(Stage):
    """Reads each group of consecutive candidates with their scores and hands it to `select`."""

    predictable = False  # what it keeps depends on the judge's scores

    params: GroupParams

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        self.candidates = self.groups = self.kept = 0
        self.seen_score = False
        checked = stage_fields(records, self, "group_by") if self.params.group_by else records
        for _, group in groupby(checked, key=self.group_key):
            members = list(group)
            self.candidates += len(members)
            scored = [(record, score) for record in members if (score := self.read_score(record)) is not None]
            if scored:
                self.groups += 1
                for record in self.select(scored):
                    self.kept += 1
                    yield record
        if self.candidates and not self.seen_score:
            raise ConfigError(str(self.ctx.recipe_path), f"stages[{self.ctx.index}].{self.name}.score",
                              f"no record has the score {self.params.score!r} in meta.scores; put a judge stage "
                              "that writes it before this one")
        self.ctx.stats.metrics[self.ctx.label] = self.funnel()

    def group_key(self, record: Record) -> str:
        """The identity of the prompt `record` answers (see the module docstring)."""
        if self.params.group_by:
            return content_hash([record.fields.get(name) for name in self.params.group_by], 16)
        parents = record.meta.get("parents") or []
        if parents:
            return content_hash(parents, 16)
        first = (record.meta.get("steps") or [{}])[0]
        return content_hash([first.get("template"), first.get("leaf"), first.get("placeholders")], 16)

    def read_score(self, record: Record) -> float | None:
        """The candidate's score, or None after rejecting it as `unscored`."""
        judge, _, criterion = self.params.score.partition(".")
        held = record.meta.get("scores")
        held = held if isinstance(held, dict) else {}
        scores = held.get(judge)
        value = scores.get(criterion or "mean") if isinstance(scores, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            self.seen_score = True
            return float(value)
        self.ctx.reject(record, "unscored", f"no meta.scores[{judge!r}][{criterion or 'mean'!r}]; scores held: {sorted(held)}")
        return None

    @abstractmethod
    def select(self, group: list[Scored]) -> Iterator[Record]:
        """The records made from one prompt's scored candidates (the others rejected with a reason)."""

    def funnel(self) -> dict[str, Any]:
        """What `stats.metrics[<label>]` records: candidates in, prompts, records kept, candidates per kept record."""
        return {"candidates": self.candidates, "prompts": self.groups, "kept": self.kept,
                "candidates_per_kept": round(self.candidates / self.kept, 3) if self.kept else None}


class BestOfNParams(GroupParams):
    """`keep: best` keeps each prompt's best candidate (if it reaches `threshold`, when set); `keep: above` keeps
    every candidate that reaches `threshold`."""

    keep: Literal["best", "above"] = "best"
    threshold: float | None = None

    @model_validator(mode="after")
    def _threshold_for_above(self) -> BestOfNParams:
        if self.keep == "above" and self.threshold is None:
            raise ValueError("`keep: above` needs a `threshold` (e.g. threshold: 4 on a 1-5 scale)")
        return self


class BestOfN(GroupStage):
    """Rejection sampling: of n judged candidates per prompt, keep the best (ties: the first) or all above a bar.
    Each kept record gets `meta.best_of = {candidates, rank, scores}` (scores in candidate order, rank 1 = best)."""

    name = "best_of_n"
    Params = BestOfNParams
    params: BestOfNParams

    def select(self, group: list[Scored]) -> Iterator[Record]:
        scores = [score for _, score in group]
        order = sorted(range(len(group)), key=lambda i: -scores[i])  # stable: ties keep candidate order
        best, bar = scores[order[0]], self.params.threshold
        for rank, i in enumerate(order, start=1):
            record, score = group[i]
            if bar is not None and score < bar:
                self.ctx.reject(record, "below_threshold", f"{self.params.score}={score:g} < threshold {bar:g}")
            elif self.params.keep == "best" and rank > 1:
                self.ctx.reject(record, "not_best", f"{self.params.score}={score:g}: rank {rank} of {len(group)} (best {best:g})")
            else:
                meta = {**record.meta, "best_of": {"candidates": len(group), "rank": rank, "scores": scores}}
                yield Record(record.id, record.fields, meta)


class PreferenceParams(GroupParams):
    """Pairs of one prompt's candidates whose scores differ by at least `min_margin`: the best against the worst,
    or (`pairs: all`) every such pair."""

    min_margin: float = Field(default=1.0, ge=0, description="one step of a 1-5 or 1-10 rubric: a clear preference")
    pairs: Literal["best_worst", "all"] = "best_worst"
    prompt_fields: list[str] = Field(default_factory=lambda: ["instruction"], min_length=1)
    response_field: str = "response"


class PreferencePairs(GroupStage):
    """Makes {prompt, chosen, rejected, score_chosen, score_rejected, margin} records; the prompt joins the
    non-empty `prompt_fields` with blank lines. Candidates in no pair are rejected (`margin_too_small`, or
    `not_paired` for the middle ones of a best-worst pair; a lone candidate: `single_candidate`)."""

    name = "preference_pairs"
    Params = PreferenceParams
    params: PreferenceParams

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        return super().run(stage_fields(records, self, "prompt_fields", "response_field"))

    def select(self, group: list[Scored]) -> Iterator[Record]:
        if len(group) == 1:
            self.ctx.reject(group[0][0], "single_candidate", "a preference pair needs two candidates of one prompt")
            return
        order = sorted(range(len(group)), key=lambda i: -group[i][1])  # stable: ties keep candidate order
        best, worst, margin = group[order[0]][1], group[order[-1]][1], self.params.min_margin
        if self.params.pairs == "best_worst":
            pairs = [(order[0], order[-1])] if best - worst >= margin else []
        else:
            pairs = [(i, j) for k, i in enumerate(order) for j in order[k + 1:] if group[i][1] - group[j][1] >= margin]
        used = {i for pair in pairs for i in pair}
        for i, (record, score) in enumerate(group):
            if i in used:
                continue
            if pairs and self.params.pairs == "best_worst":
                self.ctx.reject(record, "not_paired", f"{self.params.score}={score:g}: neither the best nor the worst")
            else:
                self.ctx.reject(record, "margin_too_small", f"{self.params.score}={score:g}: no candidate differs by "
                                                            f"min_margin {margin:g} (best {best:g}, worst {worst:g})")
        for i, j in pairs:
            yield self.pair(group[i], group[j], len(group))

    def pair(self, chosen: Scored, rejected: Scored, candidates: int) -> Record:
        """The {prompt, chosen, rejected} record of two candidates, traced to both."""
        (better, high), (worse, low) = chosen, rejected
        texts = (better.fields.get(name) for name in self.params.prompt_fields)
        prompt = "\n\n".join(text for text in texts if isinstance(text, str) and text.strip())
        field = self.params.response_field
        fields = {"prompt": prompt, "chosen": better.fields.get(field), "rejected": worse.fields.get(field),
                  "score_chosen": high, "score_rejected": low, "margin": round(high - low, 6)}
        meta = {**better.meta, "parents": [better.id, worse.id],
                "preference": {"score": self.params.score, "candidates": candidates}}
        return Record(make_record_id(better.id, worse.id, self.ctx.key), fields, meta)
