"""Taxonomy: probabilities, inheritance, reproducible sampling, error messages, the shipped example."""

from __future__ import annotations

import io
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from synthgen.errors import ConfigError
from synthgen.prompts import PromptLibrary
from synthgen.taxonomy import Taxonomy

REPO = Path(__file__).resolve().parents[2]

TREE: dict[str, Any] = {
    "name": "demo",
    "template": "root.j2",
    "sampling": {"temperature": 1.0, "top_p": 0.9},
    "placeholders": {"audience": ["kids", "adults"]},
    "children": [
        {
            "id": "writing",
            "weight": 3,
            "sampling": {"temperature": 1.2},
            "placeholders": {"tone": ["formal", "playful"]},
            "children": [
                {"id": "poems", "weight": 1, "placeholders": {"tone": ["lyrical"]}},
                {"id": "essays", "weight": 3, "template": "essay.j2", "sampling": {"max_tokens": 50}},
            ],
        },
        {"id": "coding", "placeholders": {"language": ["python", "rust", "go"]}},
    ],
}


def by_path(taxonomy: Taxonomy) -> dict[str, Any]:
    return {leaf.path: leaf for leaf in taxonomy.leaves}


def test_probabilities_are_products_of_normalised_weights() -> None:
    leaves = by_path(Taxonomy.from_data(TREE, "demo.yaml"))
    assert list(leaves) == ["writing/poems", "writing/essays", "coding"]
    assert leaves["writing/poems"].probability == pytest.approx(0.75 * 0.25)
    assert leaves["writing/essays"].probability == pytest.approx(0.75 * 0.75)
    assert leaves["coding"].probability == pytest.approx(0.25)
    assert sum(leaf.probability for leaf in leaves.values()) == pytest.approx(1.0)


def test_template_sampling_and_placeholders_are_inherited_and_merged() -> None:
    leaves = by_path(Taxonomy.from_data(TREE, "demo.yaml"))
    poems, essays, coding = leaves["writing/poems"], leaves["writing/essays"], leaves["coding"]
    assert (poems.template, essays.template, coding.template) == ("root.j2", "essay.j2", "root.j2")
    assert poems.sampling == {"temperature": 1.2, "top_p": 0.9}
    assert essays.sampling == {"temperature": 1.2, "top_p": 0.9, "max_tokens": 50}
    assert coding.sampling == {"temperature": 1.0, "top_p": 0.9}
    assert poems.placeholders == {"audience": ["kids", "adults"], "tone": ["lyrical"]}
    assert essays.placeholders == {"audience": ["kids", "adults"], "tone": ["formal", "playful"]}
    assert coding.placeholders == {"audience": ["kids", "adults"], "language": ["python", "rust", "go"]}


def test_sampling_is_reproducible_and_matches_probabilities() -> None:
    taxonomy = Taxonomy.from_data(TREE, "demo.yaml")
    rng_a, rng_b = random.Random(42), random.Random(42)
    draws_a = [taxonomy.sample(rng_a) for _ in range(200)]
    draws_b = [taxonomy.sample(rng_b) for _ in range(200)]
    assert draws_a == draws_b
    assert len({leaf.path for leaf, _ in draws_a}) == len(taxonomy.leaves)

    n = 20_000
    rng = random.Random(0)
    counts = Counter(taxonomy.sample(rng)[0].path for _ in range(n))
    for leaf in taxonomy.leaves:
        assert counts[leaf.path] / n == pytest.approx(leaf.probability, abs=0.015)


def test_sample_draws_one_value_per_placeholder() -> None:
    taxonomy = Taxonomy.from_data(TREE, "demo.yaml")
    rng = random.Random(3)
    for _ in range(100):
        leaf, values = taxonomy.sample(rng)
        assert set(values) == set(leaf.placeholders)
        assert all(values[name] in leaf.placeholders[name] for name in values)


def test_zero_weight_leaf_is_never_sampled() -> None:
    data = {"children": [{"id": "never", "weight": 0}, {"id": "always", "weight": 2}]}
    taxonomy = Taxonomy.from_data(data, "z.yaml")
    rng = random.Random(1)
    assert {taxonomy.sample(rng)[0].path for _ in range(500)} == {"always"}


def test_single_is_one_leaf_with_the_template() -> None:
    taxonomy = Taxonomy.single("family/ask.j2", sampling={"temperature": 0.5}, placeholders={"x": [1, 2]})
    (leaf,) = taxonomy.leaves
    assert (leaf.path, leaf.probability, leaf.template) == ("ask", 1.0, "family/ask.j2")
    assert leaf.sampling == {"temperature": 0.5}
    assert taxonomy.sample(random.Random(0))[1]["x"] in (1, 2)


def test_render_tree_shows_probabilities_templates_and_placeholders() -> None:
    taxonomy = Taxonomy.from_data(TREE, "demo.yaml")
    buffer = io.StringIO()
    Console(file=buffer, width=200, color_system=None).print(taxonomy.render_tree())
    text = buffer.getvalue()
    assert "demo" in text and "weight 3" in text
    for leaf in taxonomy.leaves:
        assert f"{leaf.probability:.2%}" in text
    assert "essay.j2" in text and "language" in text


def load_text(tmp_path: Path, text: str) -> Taxonomy:
    path = tmp_path / "taxonomies" / "t.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return Taxonomy.load(path)


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        (
            "children:\n  - id: a\n  - id: b\n    children:\n      - id: c\n      - id: d\n        weight: -1\n",
            "children[1].children[1].weight",
            "Input should be greater than or equal to 0",
        ),
        ("children:\n  - id: a\n    colour: red\n", "children[0].colour", "Extra inputs are not permitted"),
        (
            "children:\n  - id: a\n    children:\n      - {id: b, weight: 0}\n      - {id: c, weight: 0}\n",
            "children[0].children",
            "weights of the children of 'a' sum to zero",
        ),
        (
            "children:\n  - id: a\n  - id: b\n  - id: a\n",
            "children[2].id",
            "duplicate id 'a' among siblings (first at children[0])",
        ),
        (
            "children:\n  - id: top\n    children:\n      - &loop\n"
            "        id: inner\n        children:\n          - *loop\n",
            "children[0].children[0].children[0]",
            "cycle: node 'inner' contains itself",
        ),
        ("children:\n  - id: has space\n", "children[0].id", "id 'has space' may only contain"),
        (
            "children:\n  - id: a\n    placeholders:\n      topic: []\n",
            "children[0].placeholders.topic",
            "placeholder 'topic' has no values",
        ),
        ("name: empty\n", "children", "a taxonomy needs at least one child node"),
    ],
)
def test_errors_name_file_and_field(tmp_path: Path, text: str, field: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    source = str(tmp_path / "taxonomies" / "t.yaml")
    assert info.value.source == source
    assert info.value.field == field
    assert message in info.value.message
    assert str(info.value).startswith(f"{source}: {field}: ")


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, "children:\n  - id: a\n   - id: b\n")
    assert info.value.source.endswith("t.yaml")
    assert "invalid YAML: line 3" in info.value.message


def test_shipped_quickstart_taxonomy_renders_with_its_templates() -> None:
    taxonomy = Taxonomy.load(REPO / "taxonomies" / "quickstart.yaml")
    library = PromptLibrary(REPO / "prompts")
    assert len(taxonomy.leaves) >= 6
    assert sum(leaf.probability for leaf in taxonomy.leaves) == pytest.approx(1.0)
    rng = random.Random(0)
    for leaf in taxonomy.leaves:
        assert leaf.template is not None
        assert (REPO / "prompts" / leaf.template).is_file()
        assert library.variables(leaf.template) <= {*leaf.placeholders, "leaf", "record"}
        values = {name: rng.choice(options) for name, options in leaf.placeholders.items()}
        messages = library.render(leaf.template, {**values, "leaf": leaf.path, "record": {}})
        assert [m["role"] for m in messages] == ["system", "user"]
        assert leaf.path in messages[-1]["content"]
    for _ in range(50):
        leaf, values = taxonomy.sample(rng)
        assert leaf.template is not None
        library.render(leaf.template, {**values, "leaf": leaf.path, "record": {}})


def test_shipped_response_template_appends_input_when_present() -> None:
    library = PromptLibrary(REPO / "prompts")
    bare = library.render("quickstart/response.j2", {"record": {"instruction": "Sort this.", "input": ""}})
    full = library.render("quickstart/response.j2", {"record": {"instruction": "Sort this.", "input": "3 1 2"}})
    assert bare[-1] == {"role": "user", "content": "Sort this."}
    assert full[-1] == {"role": "user", "content": "Sort this.\n\n3 1 2"}
    assert bare[0]["role"] == "system"
