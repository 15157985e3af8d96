"""Generating to a quota, steered: a generate stage with `target:` draws in rounds until enough records survive.

Before the steered stage runs, `steer` makes its draws round by round. Each round draws `round` leaves from the
current leaf weights (a generator seeded by the run's seed, the stage's key and the round number, so the rounds
are the same on every run), makes those requests (draw numbers continue across rounds) and sends every candidate
so far through a probe of the recipe's later stages up to `after`: fresh instances built as the pipeline builds
them, sharing the run's runtime, so an LLM stage's requests go through the request cache, and with their rejects
traced back to the candidate they came from. The probe runs again over every candidate each round, so rounds
grow once many draws are made: a round is `round` draws or a sixteenth of the draws so far, whichever is more,
and a large target takes O(log n) rounds whose probes add up to about 17 passes over the final candidates
(instead of n / `round`). Near the target a round is cut to the draws the target still needs at the survival
rate so far, and a tenth more, so few draws are made past it. The loop stops when `records` survive (and every
leaf has its quota), when `count` draws are spent (`budget`) or after `stall` draws without a new survivor; the
reason is in stats.json (`metrics.<stage>.steering.stop`) and the run summary. The stage then makes the same
draws again (replayed from the cache) and the pipeline goes on as usual; the candidates after the one that
reached the target are rejected `target_reached`, so the dataset has `records` records (more only where
`per_leaf` quotas need them). A killed run replays its rounds from the cache without sending anything and goes
on toward the same target.

The leaf weights are a bandit (`adaptive: true`, the default): Thompson sampling over the leaves, each leaf's
acceptance rate drawn from Beta(1 + accepted + 10 g, 1 + dropped + 10 (1 - g)) (dropped counts each re-ask for an
invalid output too, so the rate is per request, what a kept record costs; g the pooled acceptance rate of all
leaves, so a leaf with few candidates looks like the average until it has its own evidence) and multiplied
by its mean novelty (1 minus the largest cosine between a kept candidate's embedding and the records before it,
shrunk the same way toward the pooled mean), relative to the pooled mean, to the power `novelty.weight`. A
round's weights tilt the taxonomy's probabilities by those scores: w ~ prior x exp(score / TILT), the allocation
that trades records per request against staying close to the taxonomy's proportions (it maximises the expected
score minus TILT x the KL divergence from the prior). Each draw of a round picks its leaf from weights of its
own posterior draw (batched Thompson sampling: a lucky draw sways one pick, not the whole round); the round's
mean weights go to stats.json. Equally good leaves keep about the user's proportions, nearer as evidence grows
(a 0.7 share gets 0.60 at 50 candidates per leaf, 0.68 at 1,000: posterior noise evens the shares); a leaf that
keeps 3 points fewer of its records than the best gets e (2.7) times less of its share, one that keeps 40% while
others keep 95% the floor. Giving every draw to the leaf most likely to be best (plain Thompson sampling) would
do as well on records per request but pile the draws onto whichever good leaf is luckiest, which a dataset meant
to cover a taxonomy must not do. Every leaf keeps at least `floor` of a round, so none starves and a leaf that
stops repeating itself is found again. The first round uses the taxonomy's weights alone, as `adaptive: false`
does in every round.
`novelty.reject_within` rejects (`too_close`) a candidate whose cosine to a kept record or an earlier candidate
of its round is at least that, before it costs the later stages anything.
`per_leaf: proportional` gives each leaf a quota of floor(records x its probability), `{at_least: k}` a quota of
k; while a leaf is short, rounds draw only from the leaves short of their quota. Without `per_leaf` (the
default) the target is a total and the bandit decides the mix, as a user asking for N usable records expects.

On Ray the loop runs in the driver (the steered stage is not split across workers); the later stages are
distributed as usual once it has finished.
"""

from __future__ import annotations

import math
import random
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from synthgen.build import build_stage, stage_key, stage_label
from synthgen.errors import ConfigError
from synthgen.recipe import Recipe
from synthgen.record import Record
from synthgen.report_data import record_text
from synthgen.runtime import Runtime
from synthgen.stages.base import RejectSink, RunPaths, Stage
from synthgen.stats import RunStats

if TYPE_CHECKING:
    from synthgen.stages.generate import Generate, TargetParams

TILT = 0.03  # a leaf scoring 0.03 lower (3 points of acceptance) gets e (2.7) times less of its prior share
POOLED = 10  # a leaf's figures start as all leaves' pooled ones, worth this many observations: a leaf is judged
# on its own only once it has a few dozen candidates, so a handful of unlucky draws does not cut its share
GROWTH = 16  # a round is at least 1/GROWTH of the draws made so far: O(log n) rounds for a large target


class LeafBandit:
    """Per-leaf acceptance and novelty, and the weights of the next round (see the module docstring)."""

    def __init__(self, prior: dict[str, float], adaptive: bool, floor: float, novelty_weight: float) -> None:
        self.prior, self.adaptive, self.floor, self.novelty_weight = prior, adaptive, floor, novelty_weight
        self.accepted: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.novelty: dict[str, list[float]] = {leaf: [] for leaf in prior}

    def update(self, leaf: str, accepted: bool, novelty: float | None, reasks: int = 0) -> None:
        """Count one candidate of `leaf` and the `reasks` requests before it that kept nothing; the novelty of an
        accepted one counts toward the leaf's mean."""
        self.dropped[leaf] += reasks
        if accepted:
            self.accepted[leaf] += 1
            if novelty is not None:
                self.novelty[leaf].append(novelty)
        else:
            self.dropped[leaf] += 1

    def mean_novelty(self, leaf: str) -> float | None:
        values = self.novelty[leaf]
        return sum(values) / len(values) if values else None

    def weigher(self, leaves: list[str]) -> Callable[[random.Random], dict[str, float]]:
        """Draws of the share each of `leaves` gets (summing to 1); the figures they are drawn from are taken once,
        so a round's draws cost a Beta draw per leaf each."""
        seen = sum((self.accepted + self.dropped).values())
        if not (self.adaptive and seen):
            fixed = self._shares({leaf: self.prior[leaf] for leaf in leaves})
            return lambda rng: fixed
        pooled = self.accepted.total() / seen
        novelties = [n for values in self.novelty.values() for n in values]
        typical = sum(novelties) / len(novelties) if novelties else 1.0
        novelty = {leaf: self._novelty(leaf, typical) for leaf in leaves}

        def sample(rng: random.Random) -> dict[str, float]:
            scores = {leaf: self._rate(rng, leaf, pooled) * novelty[leaf] for leaf in leaves}
            best = max(scores.values())
            return self._shares({leaf: self.prior[leaf] * math.exp((scores[leaf] - best) / TILT) for leaf in leaves})

        return sample

    def draw(self, rng: random.Random, leaves: list[str], size: int) -> tuple[list[str], dict[str, float]]:
        """`size` leaves for the next round, each picked by weights from its own posterior draw (one lucky
        draw does not decide a whole round), and the weights' mean over the round."""
        weigh = self.weigher(leaves)
        samples = [weigh(rng) for _ in range(size)]
        picks = [rng.choices(leaves, weights=[sample[leaf] for leaf in leaves])[0] for sample in samples]
        return picks, {leaf: sum(sample[leaf] for sample in samples) / size for leaf in leaves}

    def _shares(self, base: dict[str, float]) -> dict[str, float]:
        """`base` normalised, every share lifted to at least `floor`."""
        total = sum(base.values())
        shares = {leaf: value / total for leaf, value in base.items()} if total > 0 else dict.fromkeys(base, 1 / len(base))
        least = min(self.floor, 1 / len(base))
        return {leaf: least + (1 - least * len(base)) * share for leaf, share in shares.items()}

    def _rate(self, rng: random.Random, leaf: str, pooled: float) -> float:
        """A Thompson draw of the leaf's acceptance rate, shrunk toward the pooled rate by POOLED pseudo-observations."""
        return rng.betavariate(1 + self.accepted[leaf] + POOLED * pooled, 1 + self.dropped[leaf] + POOLED * (1 - pooled))

    def _novelty(self, leaf: str, typical: float) -> float:
        """The leaf's mean novelty, shrunk the same way toward all leaves' (`typical`), relative to it, to the power
        `novelty_weight`: the factor on its drawn rate."""
        values = self.novelty[leaf]
        novelty = (sum(values) + POOLED * typical) / (len(values) + POOLED)
        return (max(novelty, 1e-6) / max(typical, 1e-6)) ** self.novelty_weight


class Tracer:
    """Follows the probe's records back to the candidate each came from, and the first reason each candidate lost."""

    def __init__(self, candidates: Iterable[Record]) -> None:
        self.roots = {record.id: record.id for record in candidates}
        self.reasons: dict[str, str] = {}

    def root(self, record: Record) -> str | None:
        found = self.roots.get(record.id)
        if found is None:
            found = next((self.roots[p] for p in record.meta.get("parents", ()) if p in self.roots), None)
            if found is not None:
                self.roots[record.id] = found
        return found

    def sink(self, label: str) -> RejectSink:
        def reject(record: Record, reason: str, detail: str | None) -> None:
            if (root := self.root(record)) is not None:
                self.reasons.setdefault(root, reason)

        return reject

    def traced(self, records: Iterable[Record]) -> Iterator[Record]:
        for record in records:
            self.root(record)
            yield record


def leaf_of(record: Record) -> str:
    """The taxonomy leaf a generated (or rejected) record was drawn from."""
    return str(record.meta.get("leaf") or record.meta["steps"][-1]["leaf"])


def reasks(record: Record) -> int:
    """How many times a generated (or rejected) record's draw was asked again after an invalid output."""
    steps = record.meta.get("steps")
    return int(steps[-1].get("attempt", 0) if steps else record.meta.get("attempt", 0))


def probe_end(recipe: Recipe, index: int, after: str | None) -> int:
    """The index of the stage records must survive: `after` (a stage key or label), else the recipe's last."""
    last = len(recipe.stage_specs) - 1
    if after is None:
        return last
    for later in range(index + 1, last + 1):
        if after in (stage_key(recipe, later), stage_label(recipe, later)):
            return later
    names = [stage_key(recipe, later) for later in range(index + 1, last + 1)]
    raise ConfigError(str(recipe.path), f"stages[{index}].{recipe.stage_specs[index].name}.target.after",
                      f"no later stage {after!r}; choose one of {names}")


def quotas(target: TargetParams, prior: dict[str, float]) -> dict[str, int]:
    """Each leaf's quota under `per_leaf`."""
    if target.per_leaf is None:
        return {leaf: 0 for leaf in prior}
    if target.per_leaf == "proportional":
        return {leaf: math.floor(target.records * p) for leaf, p in prior.items()}
    return {leaf: target.per_leaf.at_least for leaf in prior}


class Steering:
    """One steered stage's rounds (see the module docstring); `run` makes them and tells the stage what to do."""

    def __init__(self, recipe: Recipe, index: int, stage: Generate, runtime: Runtime, stats: RunStats,
                 limit: int | None, paths: RunPaths) -> None:
        self.recipe, self.index, self.stage, self.runtime, self.stats, self.limit = recipe, index, stage, runtime, stats, limit
        self.target = cast("TargetParams", stage.steering())
        self.last = probe_end(recipe, index, self.target.after)
        self.probe_paths = RunPaths(paths.run, paths.stages / f"{stage.ctx.label}.steering", paths.recipe)
        self.probe_paths.stages.mkdir(parents=True, exist_ok=True)
        self.prior = {leaf.path: leaf.probability for leaf in stage.taxonomy.leaves}
        self.quota = quotas(self.target, self.prior)
        self.bandit = LeafBandit(self.prior, self.target.adaptive, self.target.floor, self.target.novelty.weight)
        novelty = self.target.novelty
        self.encoder = stage.ctx.encoder(novelty.model) if novelty.weight > 0 or novelty.reject_within else None
        self.candidates: list[Record] = []
        self.vectors: dict[str, np.ndarray] = {}
        self.survivors: list[Record] = []
        self.leaves: dict[int, str] = {}
        self.withheld: dict[str, str] = {}

    def run(self) -> dict[str, Any]:
        """Make the rounds, set the stage to replay them, and return the summary kept in stats.json."""
        budget = cast(int, type(self.stage).draw_count(self.stage.params))
        made = idle = 0
        rounds: list[dict[str, Any]] = []
        while True:
            stop = ("target_reached" if self.reached(self.survivors) else "budget" if made >= budget
                    else "stall" if idle >= self.target.stall else None)
            if stop is not None:
                break
            size = self.round_size(made, budget)
            before = len(self.survivors)
            rounds.append(self.round(len(rounds), made, size))
            made += size
            idle = 0 if len(self.survivors) > before else idle + size
        if stop == "target_reached":
            self.cut()
        self.stage.follow(made, self.leaves, self.withheld)
        kept = sum(record.id not in self.withheld for record in self.survivors)
        return {"target": self.target.records, "stop": stop, "records": kept, "draws": made,
                "requests": made * self.stage.params.n, "rounds": rounds}

    def round_size(self, made: int, budget: int) -> int:
        """`round` draws or 1/GROWTH of those made, whichever is more, but no more than the target still needs at
        the survival rate so far (and a tenth more), nor than the budget left."""
        size = max(self.target.round, made // GROWTH)
        if self.survivors:
            short = max(self.target.records - len(self.survivors), sum(self.shortfall(self.survivors).values()))
            size = min(size, math.ceil(short * made / len(self.survivors) * 1.1))
        return min(size, budget - made)

    def shortfall(self, survivors: list[Record]) -> dict[str, int]:
        """How many records each leaf still lacks of its `per_leaf` quota (leaves with none left out)."""
        counts = Counter(leaf_of(record) for record in survivors)
        return {leaf: quota - counts[leaf] for leaf, quota in self.quota.items() if counts[leaf] < quota}

    def reached(self, survivors: list[Record]) -> bool:
        return len(survivors) >= self.target.records and not self.shortfall(survivors)

    def round(self, number: int, first: int, size: int) -> dict[str, Any]:
        """Draw, generate, measure novelty, probe; update the bandit; the round's entry in stats.json."""
        short = list(self.shortfall(self.survivors))
        rng = self.stage.seeded("steer", number)
        picks, weights = self.bandit.draw(rng, short or list(self.prior), size)
        self.leaves.update({first + k: leaf for k, leaf in enumerate(picks)})
        failed: list[Record] = []
        generator = build_stage(self.recipe, self.index, self.stats, limit=self.limit, runtime=self.runtime,
                                reject_sink=lambda label: lambda record, reason, detail: failed.append(record),
                                paths=self.probe_paths)
        cast("Generate", generator).follow(first + size, self.leaves, {})
        generator.take_draws(range(first, first + size))
        new = list(generator.run(()))
        novelty = self.novelty(new)
        self.candidates.extend(new)
        alive = self.probe([c for c in self.candidates if c.id not in self.withheld])
        self.survivors = [c for c in self.candidates if c.id in alive]
        accepted: Counter[str] = Counter()
        dropped: Counter[str] = Counter()
        reasked: Counter[str] = Counter()
        for record in new + failed:
            leaf, kept, asked_again = leaf_of(record), record.id in alive, reasks(record)
            self.bandit.update(leaf, kept, novelty.get(record.id), asked_again)
            (accepted if kept else dropped)[leaf] += 1
            reasked[leaf] += asked_again
        return {"round": number, "draws": size, "weights": {leaf: round(w, 4) for leaf, w in weights.items()},
                "accepted": dict(accepted), "dropped": dict(dropped), "reasked": dict(+reasked),
                "survivors": len(self.survivors),
                "novelty": {leaf: round(v, 4) for leaf in self.prior if (v := self.bandit.mean_novelty(leaf)) is not None}}

    def novelty(self, new: list[Record]) -> dict[str, float]:
        """Each new candidate's novelty: 1 - its largest cosine to a survivor or an earlier candidate of its round
        not withheld; candidates within `reject_within` of one are withheld (`too_close`)."""
        if self.encoder is None or not new:
            return {}
        vectors = self.encoder.encode([record_text(record.fields) for record in new])
        kept = np.stack([self.vectors[s.id] for s in self.survivors]) if self.survivors else vectors[:0]
        to_kept = (vectors @ kept.T).max(axis=1) if len(kept) else np.full(len(new), -1.0)
        within = vectors @ vectors.T
        threshold, scores, usable = self.target.novelty.reject_within, {}, list[int]()
        for k, record in enumerate(new):
            self.vectors[record.id] = vectors[k]
            closest = max([float(to_kept[k]), *(float(within[k, j]) for j in usable)])
            scores[record.id] = 1.0 - max(closest, 0.0)
            if threshold is not None and closest >= threshold:
                self.withheld[record.id] = "too_close"
            else:
                usable.append(k)
        return scores

    def probe(self, candidates: list[Record]) -> set[str]:
        """The ids of the candidates that have a record out of the stages up to `after`."""
        tracer, probe_stats = Tracer(candidates), RunStats()
        stream: Iterable[Record] = iter(candidates)
        for later in range(self.index + 1, self.last + 1):
            stage: Stage = build_stage(self.recipe, later, probe_stats, limit=self.limit, runtime=self.runtime,
                                       reject_sink=tracer.sink, paths=self.probe_paths)
            stream = tracer.traced(stage.run(stream))
        return {root for record in stream if (root := tracer.root(record)) is not None}

    def cut(self) -> None:
        """Withhold (`target_reached`) every candidate after the one whose survival reached the target."""
        kept: list[Record] = []
        alive = {record.id for record in self.survivors}
        for position, record in enumerate(self.candidates):
            if record.id in alive:
                kept.append(record)
                if self.reached(kept):
                    for later in self.candidates[position + 1:]:
                        self.withheld.setdefault(later.id, "target_reached")
                    return


def steer(recipe: Recipe, stages: list[Stage], index: int, runtime: Runtime, stats: RunStats, limit: int | None,
          paths: RunPaths) -> None:
    """Make stage `index`'s rounds toward its target and set it to replay them; the summary goes to its metrics."""
    stage = cast("Generate", stages[index])
    steering = Steering(recipe, index, stage, runtime, stats, limit, paths)
    stats.metrics.setdefault(stage.ctx.label, {})["steering"] = steering.run()
    shutil.rmtree(steering.probe_paths.stages, ignore_errors=True)  # the probe's whole-set stages' spills
