"""The error tree. The library raises these with their context; only the CLI turns them into messages.

    SynthgenError
    ├── ConfigError          a recipe, taxonomy or schema is wrong: names the file and the field path
    ├── TemplateError        a prompt template fails to load or render: names the template (and variable)
    ├── InputError           an input file is unreadable or malformed: names the file and line
    ├── BackendError         talking to a model backend failed
    │   ├── FatalBackendError      a 4xx that retrying cannot fix (bad key, unknown model, context too long)
    │   └── RetryableBackendError  429, 5xx, timeouts, dropped connections, malformed bodies
    ├── RunDirError          the run directory, cache or an output path cannot be used (locked, full, foreign)
    └── StageFailure         a stage hit an unexpected error (a bug): names the stage and the record; chains it
"""

from __future__ import annotations


class SynthgenError(Exception):
    """Base of every error synthgen raises on purpose."""


class ConfigError(SynthgenError):
    """A configuration file (recipe, taxonomy, schema) is invalid at `field`."""

    def __init__(self, source: str, field: str | None, message: str) -> None:
        self.source, self.field, self.message = source, field, message
        where = f"{source}: {field}" if field else source
        super().__init__(f"{where}: {message}")


class TemplateError(SynthgenError):
    """A prompt template could not be loaded or rendered."""

    def __init__(self, template: str, message: str) -> None:
        self.template, self.message = template, message
        super().__init__(f"template {template}: {message}")


class InputError(SynthgenError):
    """An input file is missing, unreadable, or has a malformed row."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path, self.line, self.message = path, line, message
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")


class BackendError(SynthgenError):
    """A model backend call failed."""


class FatalBackendError(BackendError):
    """An error no retry can fix; the run stops and the message says what to change."""

    def __init__(self, status: int, message: str, hint: str) -> None:
        self.status, self.hint = status, hint
        super().__init__(f"backend answered {status}: {message}\n  fix: {hint}")


class RetryableBackendError(BackendError):
    """A transient failure; `cause` is a short label counted in stats (e.g. 'http_429', 'timeout')."""

    def __init__(self, cause: str, message: str, retry_after: float | None = None) -> None:
        self.cause, self.retry_after = cause, retry_after
        super().__init__(f"{cause}: {message}")


class RunDirError(SynthgenError):
    """The run directory, its cache or an output path cannot be used: locked by another run, not writable, full,
    damaged, or a folder or file synthgen did not create and will not overwrite."""


class StageFailure(SynthgenError):
    """An unexpected exception (not a SynthgenError) inside a stage; the original is chained as `__cause__`."""

    def __init__(self, stage: str, record: str | None, error: BaseException) -> None:
        self.stage, self.record = stage, record
        where = f"stage {stage}" + (f" (record {record})" if record else " (before its first record)")
        super().__init__(f"internal error in {where}: {type(error).__name__}: {error}")
