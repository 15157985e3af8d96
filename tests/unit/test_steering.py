"""Steering's parts: the sim's repeating leaves, the leaf bandit, tracing probe records, `target:` on generate."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import orjson
import pytest
from pydantic import ValidationError

from synthgen.dedup.minhash import MinHasher, Shingling
from synthgen.embedding.encoder import Encoder
from synthgen.errors import ConfigError
from synthgen.hashing import stable_int
from synthgen.recipe import load_recipe
from synthgen.record import Record
from synthgen.sim import SimConfig, SimServer
from synthgen.sim.content import generate, repeated_answer, reworded
from synthgen.stages.base import StageContext
from synthgen.stages.generate import Generate, GenerateParams
from synthgen.steering import LeafBandit, Tracer, probe_end, quotas
from tests.conftest import write
from tests.unit.test_sim_server import chat, content, running

SCHEMA = {"type": "object", "properties": {"instruction": {"type": "string"}, "input": {"type": "string"}},
          "required": ["instruction", "input"]}


def test_a_repeating_leaf_answers_from_a_small_fixed_set() -> None:
    rates = {"loop": 0.6}
    picks = [repeated_answer(f"Task category: loop, topic {i}", rates, key=i, seed=0) for i in range(400)]
    chosen = [pick for pick in picks if pick is not None]
    assert 0.5 < len(chosen) / len(picks) < 0.7
    assert len({key for key, _ in chosen}) == 4  # the same few answers whatever the rest of the prompt says
    assert all(repeated_answer(f"Task category: fresh {i}", rates, key=i, seed=0) is None for i in range(100))
    assert SimConfig().leaf_duplicate_rates == {}  # by default no prompt repeats: answers stay as they were
    with pytest.raises(ValidationError):
        SimConfig(leaf_duplicate_rates={"loop": 1.5})


def test_the_sim_server_repeats_a_leaf_and_leaves_other_prompts_as_they_were() -> None:
    def answers(sim: SimServer, leaf: str) -> list[str]:
        return [content(chat(sim, messages=[{"role": "user", "content": f"Task category: {leaf}. Topic {i}."}], seed=i))
                for i in range(30)]

    with running() as plain, running(leaf_duplicate_rates={"loop": 0.6}) as repeating:
        assert answers(plain, "fresh") == answers(repeating, "fresh")
        looped = answers(repeating, "loop")
        assert len(set(looped)) < 20 and answers(plain, "loop") != looped
        assert max(looped.count(text) for text in set(looped)) >= 3


def test_the_bandit_moves_draws_away_from_a_leaf_that_is_dropped() -> None:
    prior = {"good": 0.5, "bad": 0.5}
    bandit = LeafBandit(prior, adaptive=True, floor=0.05, novelty_weight=1.0)
    assert bandit.weigher(list(prior))(random.Random(0)) == pytest.approx(prior)  # no observations: the prior
    for _ in range(40):
        bandit.update("good", True, 0.6)
        bandit.update("bad", False, None)
    weights = bandit.weigher(list(prior))(random.Random(0))
    assert weights["bad"] < 0.15 < 0.85 < weights["good"]
    assert weights["bad"] >= 0.05 and sum(weights.values()) == pytest.approx(1)
    assert weights == bandit.weigher(list(prior))(random.Random(0))  # seeded: the same every run
    static = LeafBandit(prior, adaptive=False, floor=0.05, novelty_weight=1.0)
    static.update("bad", False, None)
    assert static.weigher(list(prior))(random.Random(0)) == pytest.approx(prior)


def test_each_draw_of_a_round_gets_its_own_posterior_sample() -> None:
    prior = {"left": 0.5, "right": 0.5}
    bandit = LeafBandit(prior, adaptive=True, floor=0.0, novelty_weight=0.0)
    for _ in range(6):  # equally good and little evidence: any one posterior draw favours one leaf strongly
        for leaf in prior:
            bandit.update(leaf, True, None)
            bandit.update(leaf, False, None)
    lopsided = 0
    for seed in range(20):
        picks, weights = bandit.draw(random.Random(seed), list(prior), 200)
        assert len(picks) == 200 and sum(weights.values()) == pytest.approx(1)
        assert 0.3 < picks.count("left") / 200 < 0.7  # a round splits about evenly ...
        lopsided += max(bandit.weigher(list(prior))(random.Random(seed)).values()) > 0.9
    assert lopsided >= 5  # ... where one draw for the whole round would often give it nearly all to one leaf
    assert bandit.draw(random.Random(3), list(prior), 50) == bandit.draw(random.Random(3), list(prior), 50)


def test_novelty_lowers_a_leaf_that_keeps_adding_near_copies() -> None:
    prior = {"new": 0.5, "samey": 0.5}
    bandit = LeafBandit(prior, adaptive=True, floor=0.0, novelty_weight=1.0)
    for _ in range(50):
        bandit.update("new", True, 0.8)
        bandit.update("samey", True, 0.1)
    weights = bandit.weigher(list(prior))(random.Random(1))
    assert weights["samey"] < 0.25 < weights["new"]


def test_the_tracer_follows_records_back_to_their_candidate() -> None:
    candidate = Record("c1", {"instruction": "x"}, {})
    tracer = Tracer([candidate, Record("c2", {}, {})])
    answered = Record("a1", {"response": "y"}, {"parents": ["c1"]})
    assert [tracer.root(r) for r in tracer.traced([answered])] == ["c1"]
    tracer.sink("05-length_filter")(Record("a2", {}, {"parents": ["c2"]}), "too_short", None)
    assert tracer.reasons == {"c2": "too_short"}


RECIPE = """
name: steer-unit
seed: 3
backend: {kind: sim}
stages:
  - generate:
      template: ask.j2
      taxonomy: tasks.yaml
      count: 20
      target: {records: 5, after: exact_dedup, per_leaf: {at_least: 1}}
  - exact_dedup: {fields: [text]}
  - minhash_dedup: {fields: [text]}
"""


def _recipe(tmp_path: Path, text: str = RECIPE) -> Path:
    write(tmp_path / "prompts" / "ask.j2", "Write about {{ leaf }}.")
    write(tmp_path / "tasks.yaml", "children: [{id: a, weight: 3}, {id: b}]\n")
    return write(tmp_path / "recipes" / "r.yaml", text)


def test_target_names_its_later_stage_and_quota(tmp_path: Path) -> None:
    recipe = load_recipe(_recipe(tmp_path))
    target = recipe.stage_specs[0].params.target  # type: ignore[attr-defined]
    assert probe_end(recipe, 0, target.after) == 1 and probe_end(recipe, 0, "02-minhash_dedup") == 2
    assert probe_end(recipe, 0, None) == 2
    with pytest.raises(ConfigError, match="no later stage 'judge'"):
        probe_end(recipe, 0, "judge")
    assert quotas(target, {"a": 0.75, "b": 0.25}) == {"a": 1, "b": 1}
    proportional = target.model_copy(update={"per_leaf": "proportional"})
    assert quotas(proportional, {"a": 0.75, "b": 0.25}) == {"a": 3, "b": 1}
    with pytest.raises(ValidationError, match="`target` needs `count`"):
        GenerateParams(template="ask.j2", target={"records": 5})


def test_a_followed_generate_draws_the_planned_leaves_and_withholds(tmp_path: Path) -> None:
    _recipe(tmp_path)
    ctx = StageContext(label="00-generate", index=0, seed=3, recipe_path=tmp_path / "r.yaml",
                       prompts_dir=tmp_path / "prompts", resolve=lambda p: tmp_path / p, key="generate")
    stage = Generate(GenerateParams(template="ask.j2", taxonomy="tasks.yaml", count=6), ctx)
    unsteered = [job.leaf.path for job in stage.jobs(())]
    stage.follow(4, {0: "b", 1: "b", 2: "a", 3: "b"}, {})
    assert [job.leaf.path for job in stage.jobs(())] == ["b", "b", "a", "b"]
    assert Generate(GenerateParams(template="ask.j2", taxonomy="tasks.yaml", count=6), ctx).row_wise
    assert unsteered == [job.leaf.path for job in Generate(stage.params, ctx).jobs(())]  # no plan: as before


@pytest.mark.slow  # loads MiniLM
def test_a_paraphrased_repeat_slips_past_minhash_but_not_embeddings() -> None:
    base = generate(stable_int("repeat", "loop", 0), 0, ("loop",), None, 0)
    reworded_texts = [reworded(base, False, random.Random(i)) for i in range(40)]
    assert SimConfig().leaf_repeat == "exact" and len(set(reworded_texts)) == 40
    for unit in ("word", "char"):  # minhash_dedup's `document` and `short` presets
        sketches = MinHasher(Shingling(unit, 5)).sketch([base, *reworded_texts])
        jaccard = [len(np.intersect1d(sketches.shingle_set(0), sketches.shingle_set(i))) /
                   len(np.union1d(sketches.shingle_set(0), sketches.shingle_set(i))) for i in range(1, 41)]
        assert sum(j >= 0.8 for j in jaccard) <= 4  # MinHash at 0.8 misses most of them
    vectors = Encoder().encode([base, *reworded_texts])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    assert sum(vectors[1:] @ vectors[0] >= 0.9) >= 36  # the embedding still sees the same text
    structured = generate(stable_int("repeat", "loop", 1), 0, ("loop",), SCHEMA, 0)
    assert orjson.loads(reworded(structured, True, random.Random(0))).keys() == orjson.loads(structured).keys()


def test_the_sim_server_paraphrases_repeats_only_when_asked() -> None:
    def answers(sim: SimServer) -> list[str]:
        return [content(chat(sim, messages=[{"role": "user", "content": f"Task category: loop. Topic {i}."}], seed=i))
                for i in range(30)]

    with running(leaf_duplicate_rates={"loop": 0.6}) as exact, \
            running(leaf_duplicate_rates={"loop": 0.6}, leaf_repeat="paraphrase") as paraphrasing:
        exact_answers, paraphrased = answers(exact), answers(paraphrasing)
    repeats = [i for i, text in enumerate(exact_answers) if exact_answers.count(text) > 1]
    assert len(repeats) >= 10
    assert len({paraphrased[i] for i in repeats}) > len({exact_answers[i] for i in repeats})  # reworded, not copied
    assert all(paraphrased[i] != exact_answers[i] for i in repeats)
    assert [a for i, a in enumerate(exact_answers) if i not in repeats] == \
        [a for i, a in enumerate(paraphrased) if i not in repeats]  # answers that are no repeat stay as they were
