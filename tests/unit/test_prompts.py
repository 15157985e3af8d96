"""PromptLibrary: block rendering, strict variables, sandboxing, error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthgen.errors import TemplateError
from synthgen.prompts import PromptLibrary


def write(root: Path, name: str, text: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture
def library(tmp_path: Path) -> PromptLibrary:
    return PromptLibrary(tmp_path)


def test_system_and_user_blocks(tmp_path: Path, library: PromptLibrary) -> None:
    write(
        tmp_path,
        "family/task.j2",
        "{% block system %}\n  You are {{ persona }}.\n{% endblock %}\n"
        "{% block user %}\nShared rules.\n\nTopic: {{ topic }}\n{% endblock %}\n",
    )
    messages = library.render("family/task.j2", {"persona": "a tutor", "topic": "tides"})
    assert messages == [
        {"role": "system", "content": "You are a tutor."},
        {"role": "user", "content": "Shared rules.\n\nTopic: tides"},
    ]


def test_template_without_blocks_is_the_user_message(tmp_path: Path, library: PromptLibrary) -> None:
    write(tmp_path, "plain.j2", "\n  Tell me about {{ topic }}.  \n")
    assert library.render("plain.j2", {"topic": "owls"}) == [{"role": "user", "content": "Tell me about owls."}]


def test_empty_system_block_is_left_out(tmp_path: Path, library: PromptLibrary) -> None:
    write(tmp_path, "t.j2", "{% block system %}  {% endblock %}{% block user %}hi{% endblock %}")
    assert library.render("t.j2", {}) == [{"role": "user", "content": "hi"}]


def test_undefined_variable_names_template_variable_and_line(tmp_path: Path, library: PromptLibrary) -> None:
    write(tmp_path, "t.j2", "{% block user %}\nfirst line\n{{ topic }}\n{% endblock %}")
    with pytest.raises(TemplateError) as info:
        library.render("t.j2", {"other": 1})
    assert info.value.template == "t.j2"
    assert "undefined variable 'topic'" in str(info.value)
    assert "line 3" in str(info.value)


def test_syntax_error_names_template_and_line(tmp_path: Path, library: PromptLibrary) -> None:
    write(tmp_path, "bad.j2", "ok\nstill ok\n{% if %}\n")
    with pytest.raises(TemplateError) as info:
        library.render("bad.j2", {})
    assert str(info.value).startswith("template bad.j2: syntax error at line 3")


@pytest.mark.parametrize(
    "expression",
    ["''.__class__.__mro__", "().__class__.__bases__[0].__subclasses__()", "''.__class__"],
)
def test_sandbox_refuses_unsafe_attributes(tmp_path: Path, library: PromptLibrary, expression: str) -> None:
    write(tmp_path, "evil.j2", "{{ " + expression + " }}")
    with pytest.raises(TemplateError) as info:
        library.render("evil.j2", {})
    message = str(info.value)
    assert "sandbox refused unsafe attribute access" in message
    assert "<class" not in message


def test_private_attribute_is_reported_as_sandbox_refusal(tmp_path: Path, library: PromptLibrary) -> None:
    write(tmp_path, "private.j2", "{{ text._secret }}")
    with pytest.raises(TemplateError, match="sandbox refused unsafe attribute access to '_secret'"):
        library.render("private.j2", {"text": "x"})


def test_variables_lists_what_the_template_reads(tmp_path: Path, library: PromptLibrary) -> None:
    write(
        tmp_path,
        "t.j2",
        "{% block system %}{{ persona }}{% endblock %}"
        "{% block user %}{% set n = 3 %}{{ n }} {{ topic }} {{ record.text }}{% for x in items %}{{ x }}{% endfor %}"
        "{% endblock %}",
    )
    assert library.variables("t.j2") == {"persona", "topic", "record", "items"}


def test_template_not_found_lists_root(tmp_path: Path, library: PromptLibrary) -> None:
    with pytest.raises(TemplateError) as info:
        library.render("missing/none.j2", {})
    assert info.value.template == "missing/none.j2"
    assert str(tmp_path.resolve()) in str(info.value)
    with pytest.raises(TemplateError, match="not found"):
        library.variables("missing/none.j2")


def test_system_block_without_user_block_is_an_error(tmp_path: Path, library: PromptLibrary) -> None:
    write(tmp_path, "t.j2", "{% block system %}sys{% endblock %}")
    with pytest.raises(TemplateError, match="no user block"):
        library.render("t.j2", {})


def test_templates_are_parsed_once(tmp_path: Path, library: PromptLibrary) -> None:
    write(tmp_path, "t.j2", "v1 {{ x }}")
    assert library.render("t.j2", {"x": 1})[0]["content"] == "v1 1"
    (tmp_path / "t.j2").unlink()
    assert library.render("t.j2", {"x": 2})[0]["content"] == "v1 2"
