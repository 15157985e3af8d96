"""Prompt templates: Jinja files under a root folder, rendered in a sandbox into OpenAI chat messages.

A template is a `*.j2` file named by its path relative to the root ("quickstart/instruction.j2").
It may define two blocks::

    {% block system %}You write training data ...{% endblock %}
    {% block user %}Write one task about {{ topic }}.{% endblock %}

and renders to `[{"role": "system", ...}, {"role": "user", ...}]`; a template without blocks is
all user message, and an empty system block is left out.

Rendering is strict and sandboxed: an undefined variable is an error (never an empty string), and
templates cannot reach Python internals (`''.__class__` and friends are refused). A render is also
bounded: at most MAX_OUTPUT_CHARS characters and MAX_RENDER_SECONDS seconds, and `*` and `**` refuse
results past those bounds before computing them (`{{ 'x' * 10**9 }}` fails at once), so no template
can exhaust memory or time.

Convention for authors: put the text shared by every request first (the system block, then the
fixed instructions of the user block) and the per-row variables last. Inference servers with prefix
caching (vLLM, SGLang, most hosted APIs) then reuse the shared prefix across requests.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, Template, TemplateNotFound, TemplateSyntaxError, meta
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment, safe_range

from synthgen.errors import TemplateError

_UNDEFINED_NAME = re.compile(r"^'(?P<name>[^']+)' is undefined$")
_MISSING_ATTRIBUTE = re.compile(r"has no attribute '(?P<name>[^']+)'$")
MAX_OUTPUT_CHARS = 2**20  # a prompt is kilobytes; a megabyte is past any model's context already
MAX_RENDER_SECONDS = 5.0  # a prompt renders in microseconds; seconds mean a runaway loop
MAX_POWER_BITS = 4096  # `**` results past this are refused (a prompt needs no 1,200-digit numbers)


class _OverBudget(Exception):
    """A render went past its size or time bound."""


class _Deadline:
    """When the render under way must have finished."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.at = seconds, time.monotonic() + seconds

    def check(self) -> None:
        if time.monotonic() > self.at:
            raise _OverBudget(f"rendering took over {self.seconds:g}s (the cap on a prompt's render time); "
                              "check its loops")


_DEADLINE: ContextVar[_Deadline | None] = ContextVar("synthgen_render_deadline", default=None)


def _tick() -> None:
    """Stop the render under way (if any) once it is past its deadline."""
    deadline = _DEADLINE.get()
    if deadline is not None:
        deadline.check()


class _TimedRange:
    """`range` in templates: the sandbox's size cap, plus a deadline check at every step of a loop."""

    def __init__(self, values: range) -> None:
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, index: Any) -> Any:
        return self.values[index]

    def __iter__(self) -> Iterator[int]:
        for value in self.values:
            _tick()
            yield value


class _BoundedEnvironment(SandboxedEnvironment):
    """The sandbox, with `*` and `**` bounded and every call and `range` step checking the deadline."""

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, max_output_chars: int, **options: Any) -> None:
        super().__init__(**options)
        self.max_output_chars = max_output_chars
        self.globals["range"] = lambda *args: _TimedRange(safe_range(*args))

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            _check_repeat(left, right, self.max_output_chars)
        elif type(left) is int and type(right) is int and right > 0 and right * abs(left).bit_length() > MAX_POWER_BITS:
            raise _OverBudget(f"'{left} ** {right}' makes a number over {MAX_POWER_BITS} bits; refused")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 (jinja's spelling)
        _tick()
        return super().call(__context, __obj, *args, **kwargs)


def _check_repeat(left: Any, right: Any, limit: int) -> None:
    """Refuse `sequence * n` past `limit` items before it is built."""
    for sequence, times in ((left, right), (right, left)):
        if isinstance(sequence, str | bytes | list | tuple) and type(times) is int and len(sequence) * times > limit:
            raise _OverBudget(f"'*' would make {len(sequence) * times} items, past the {limit}-character cap on a prompt")


class PromptLibrary:
    """The templates under one root folder; parsed once, rendered per request."""

    def __init__(self, root: str | Path, max_output_chars: int = MAX_OUTPUT_CHARS,
                 max_render_seconds: float = MAX_RENDER_SECONDS) -> None:
        self.root = Path(root)
        self.max_render_seconds = max_render_seconds
        self._loader = FileSystemLoader(self.root)
        self.env = _BoundedEnvironment(
            max_output_chars,
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
        token = _DEADLINE.set(_Deadline(self.max_render_seconds))
        try:
            if "user" in blocks:
                system = self._collect(blocks["system"](context)).strip() if "system" in blocks else ""
                user = self._collect(blocks["user"](context), len(system)).strip()
            else:
                system, user = "", self._collect(template.root_render_func(context)).strip()
        except Exception as exc:  # anything a template raises while running is the template's fault
            raise TemplateError(name, _describe(exc, template)) from None
        finally:
            _DEADLINE.reset(token)
        if not user:
            raise TemplateError(name, "the user message renders empty")
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": user})
        return messages

    def _collect(self, chunks: Iterable[str], size: int = 0) -> str:
        """The rendered text, stopped once it passes the output cap (counting `size` characters already made)."""
        parts = []
        for chunk in chunks:
            size += len(chunk)
            if size > self.env.max_output_chars:
                raise _OverBudget(f"renders more than {self.env.max_output_chars} characters (the cap on a prompt); "
                                  "check its loops and repetitions")
            _tick()
            parts.append(chunk)
        return "".join(parts)

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
    if isinstance(exc, _OverBudget):
        return f"{where}{message}"
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
