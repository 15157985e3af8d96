"""Prompt templates: Jinja files under a root folder, rendered in a sandbox into OpenAI chat messages.

A template is a `*.j2` file named by its path relative to the root ("quickstart/instruction.j2").
It may define two blocks::

    {% block system %}You write training data ...{% endblock %}
    {% block user %}Write one task about {{ topic }}.{% endblock %}

and renders to `[{"role": "system", ...}, {"role": "user", ...}]`; a template without blocks is
all user message, and an empty system block is left out.

Rendering is strict and sandboxed: an undefined variable is an error (never an empty string), and
templates cannot reach Python internals (`''.__class__` and friends are refused).

Convention for authors: put the text shared by every request first (the system block, then the
fixed instructions of the user block) and the per-row variables last. Inference servers with prefix
caching (vLLM, SGLang, most hosted APIs) then reuse the shared prefix across requests.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, Template, TemplateNotFound, TemplateSyntaxError, meta
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from synthgen.errors import TemplateError

_UNDEFINED_NAME = re.compile(r"^'(?P<name>[^']+)' is undefined$")
_MISSING_ATTRIBUTE = re.compile(r"has no attribute '(?P<name>[^']+)'$")


class PromptLibrary:
    """The templates under one root folder; parsed once, rendered per request."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._loader = FileSystemLoader(self.root)
        self.env = SandboxedEnvironment(
            undefined=StrictUndefined,
            loader=self._loader,
            keep_trailing_newline=False,
            autoescape=False,
        )
        self._templates: dict[str, Template] = {}
        self._variables: dict[str, frozenset[str]] = {}

    def render(self, name: str, variables: Mapping[str, Any]) -> list[dict[str, str]]:
        """Render template `name` with `variables` into chat messages (system first when present)."""
        template = self._template(name)
        blocks = template.blocks
        if "system" in blocks and "user" not in blocks:
            raise TemplateError(name, "has a system block but no user block")
        context = template.new_context(dict(variables))
        try:
            if "user" in blocks:
                system = "".join(blocks["system"](context)).strip() if "system" in blocks else ""
                user = "".join(blocks["user"](context)).strip()
            else:
                system, user = "", "".join(template.root_render_func(context)).strip()
        except Exception as exc:  # anything a template raises while running is the template's fault
            raise TemplateError(name, _describe(exc, template)) from None
        if not user:
            raise TemplateError(name, "the user message renders empty")
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": user})
        return messages

    def variables(self, name: str) -> set[str]:
        """The variables template `name` reads from its caller (for checking a recipe before any request)."""
        if name not in self._variables:
            self._template(name)
            source, _, _ = self._loader.get_source(self.env, name)
            self._variables[name] = frozenset(meta.find_undeclared_variables(self.env.parse(source)))
        return set(self._variables[name])

    def _template(self, name: str) -> Template:
        """Load and compile `name` once; later calls return the compiled template."""
        template = self._templates.get(name)
        if template is None:
            try:
                template = self.env.get_template(name)
            except TemplateNotFound as exc:
                missing = f" (it includes {exc.name!r})" if exc.name != name else ""
                raise TemplateError(name, f"not found in {self.root.resolve()}{missing}") from None
            except TemplateSyntaxError as exc:
                where = f" in {exc.name}" if exc.name and exc.name != name else ""
                raise TemplateError(name, f"syntax error{where} at line {exc.lineno}: {exc.message}") from None
            self._templates[name] = template
        return template


def _describe(exc: Exception, template: Template) -> str:
    """A one-line account of a render failure, with the template line where it happened."""
    line = _template_line(exc, template)
    where = f"line {line}: " if line else ""
    message = str(exc)
    if isinstance(exc, SecurityError):
        return f"{where}the sandbox refused unsafe attribute access: {message}"
    if isinstance(exc, UndefinedError):
        undefined = _UNDEFINED_NAME.search(message)
        if undefined:
            return f"{where}undefined variable {undefined['name']!r}"
        attribute = _MISSING_ATTRIBUTE.search(message)
        if attribute and attribute["name"].startswith("_"):
            return f"{where}the sandbox refused unsafe attribute access to {attribute['name']!r}"
        return f"{where}undefined value: {message}"
    return f"{where}{type(exc).__name__}: {message}"


def _template_line(exc: BaseException, template: Template) -> int | None:
    """The template source line of the innermost traceback frame inside `template`, if any."""
    line = None
    traceback = exc.__traceback__
    while traceback is not None:
        if template.filename and traceback.tb_frame.f_code.co_filename == template.filename:
            line = template.get_corresponding_lineno(traceback.tb_lineno)
        traceback = traceback.tb_next
    return line
