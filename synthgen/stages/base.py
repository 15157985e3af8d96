"""The stage contract: `run(records) -> records`. Base classes own the bookkeeping; concrete stages do one job."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from synthgen.config import StrictModel
from synthgen.record import Record
from synthgen.stats import RunStats

RejectSink = Callable[[Record, str, str | None], None]


class StageParams(StrictModel):
    """Base of every stage's parameters: unknown keys are errors."""


def is_transient_reject(reason: str) -> bool:
    """A reject for a backend failure that may not happen again (`backend_timeout`, `backend_http_503`, ...):
    never cached, and retried by the next run of the recipe."""
    return reason.startswith("backend_")


def discard_rejects(record: Record, reason: str, detail: str | None) -> None:
    """The reject sink of dry runs."""


@dataclass
class StageContext:
    """What a stage may use besides its parameters. `runtime` holds the backend services and `workdir` a
    folder for the stage's own files (both None in dry runs). `label` (`02-generate`) names its files and
    counters; `key` (`generate`, `generate.2` for the second of its kind) is what seeds and record ids derive
    from, so inserting or removing another kind of stage changes no request and no id."""

    label: str
    index: int
    seed: int
    recipe_path: Path
    prompts_dir: Path
    resolve: Callable[[str], Path]
    stats: RunStats = field(default_factory=RunStats)
    reject: RejectSink = discard_rejects
    runtime: Any = None
    workdir: Path | None = None
    key: str = ""

    def __post_init__(self) -> None:
        self.key = self.key or self.label


class Stage(ABC):
    """One job over a stream of records. Subclasses set `name` and `Params` and implement `run`."""

    name: ClassVar[str]
    Params: ClassVar[type[StageParams]] = StageParams
    predictable: ClassVar[bool] = True  # False: its requests or output count depend on model outputs (loops, fan-outs)
    is_source: ClassVar[bool] = False  # True: makes its records from its parameters alone (a first stage, no input)
    row_wise: ClassVar[bool] = False  # True: a record's output depends on that record alone (runs on any split of the input)

    def __init__(self, params: StageParams, ctx: StageContext) -> None:
        self.params = params
        self.ctx = ctx

    @abstractmethod
    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        """Consume records, yield records (zero, one or many per input)."""


class Filter(Stage):
    """A stage that keeps or drops each record; drops go to rejects with a named reason."""

    reason: ClassVar[str]
    row_wise = True

    @abstractmethod
    def keep(self, record: Record) -> bool | str:
        """True keeps the record; False drops it with `reason`; a string drops it with that reason."""

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        for record in records:
            verdict = self.keep(record)
            if verdict is True:
                yield record
            else:
                self.ctx.reject(record, verdict if isinstance(verdict, str) else self.reason, None)


StageExecutor = Callable[[Stage, Iterable[Record], str], Iterable[Record]]  # (stage, its input, its fingerprint)


def run_locally(stage: Stage, records: Iterable[Record], fingerprint: str) -> Iterable[Record]:
    """The local engine: the stage runs in this process over the stream."""
    return stage.run(records)


STAGES: dict[str, type[Stage]] = {}


def register(cls: type[Stage]) -> type[Stage]:
    """Add a stage class to the registry under its `name` (built-ins register the same way as plugins)."""
    STAGES[cls.name] = cls
    return cls
