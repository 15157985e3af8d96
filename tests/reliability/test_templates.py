"""Issue 14 item 15: no template can exhaust memory or time; the message names the template."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from synthgen.errors import TemplateError
from synthgen.prompts import PromptLibrary
from tests.conftest import write
from tests.test_bad_input import assert_clean_failure, run

RUNAWAY = {
    "repeat": ("{{ 'x' * 10**9 }}", "'*' would make 1000000000 items, past the 1048576-character cap on a prompt"),
    "huge range": ("{% for i in range(10**9) %}x{% endfor %}", "Range too big"),
    "output loop": ("{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}",
                    "renders more than 1048576 characters (the cap on a prompt)"),
    "power": ("{{ 7 ** 100000 }}", "'7 ** 100000' makes a number over 4096 bits; refused"),
    "nested loops": ("{% for i in range(10**5) %}{% for j in range(10**5) %}{% endfor %}{% endfor %}done",
                     "rendering took over 5s (the cap on a prompt's render time)"),
}


@pytest.mark.parametrize("case", sorted(RUNAWAY))
def test_item15_runaway_template_stops_with_a_message_naming_it(tmp_path: Path, case: str) -> None:
    source, needle = RUNAWAY[case]
    write(tmp_path / "t" / "runaway.j2", source)
    began = time.monotonic()
    with pytest.raises(TemplateError) as caught:
        PromptLibrary(tmp_path).render("t/runaway.j2", {})
    assert time.monotonic() - began < 15
    assert str(caught.value).startswith("template t/runaway.j2: ") and needle in str(caught.value)


def test_item15_the_caps_are_settable_and_shared_by_both_blocks(tmp_path: Path) -> None:
    write(tmp_path / "t.j2", "{% block system %}{{ 'a' * 60 }}{% endblock %}{% block user %}{{ 'b' * 60 }}{% endblock %}")
    assert [len(m["content"]) for m in PromptLibrary(tmp_path, max_output_chars=120).render("t.j2", {})] == [60, 60]
    with pytest.raises(TemplateError, match="renders more than 100 characters"):
        PromptLibrary(tmp_path, max_output_chars=100).render("t.j2", {})
    write(tmp_path / "slow.j2", "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x")
    began = time.monotonic()
    with pytest.raises(TemplateError, match=r"rendering took over 0.2s"):
        PromptLibrary(tmp_path, max_render_seconds=0.2).render("slow.j2", {})
    assert time.monotonic() - began < 5


def test_item15_ordinary_arithmetic_loops_and_ranges_are_unchanged(tmp_path: Path) -> None:
    write(tmp_path / "ok.j2", "{{ 'ab' * 3 }} {{ 3 * [1] }} {{ 2 ** 10 }} {{ 6 * 7 }} {{ range(4)|length }} "
                              "{{ range(3)|list }} {% for i in range(3) %}{{ i }}{% endfor %} {{ range(10)[2] }}")
    (message,) = PromptLibrary(tmp_path).render("ok.j2", {})
    assert message["content"] == "ababab [1, 1, 1] 1024 42 4 [0, 1, 2] 012 2"


def test_item15_cli_run_with_a_runaway_template_fails_cleanly(tmp_path: Path) -> None:
    recipe = """name: runaway
prompts_dir: prompts
backend: {kind: sim, sim: {latency: 0.0}}
stages:
  - generate: {template: t/big.j2, count: 2}
"""
    code, message, out = run(tmp_path, recipe, files={"prompts/t/big.j2": "Write {{ 'x' * 10**9 }}"})
    assert code == 2
    assert_clean_failure(code, message, out, "error: template t/big.j2: line 1: '*' would make 1000000000 items")
