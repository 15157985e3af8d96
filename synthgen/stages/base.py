"""The stage contract: `run(records) -> records`. Base classes own the bookkeeping; concrete stages do one job."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from synthgen.config import StrictModel
from synthgen.hashing import stable_int
from synthgen.record import Record
from synthgen.stages.spill import Spilled, spilled
from synthgen.stats import RunStats

if TYPE_CHECKING:
    from synthgen.embedding.encoder import Encoder
    from synthgen.runtime import Runtime

RejectSink = Callable[[Record, str, str | None], None]
Prompt = tuple[str, list[dict[str, str]]]  # (taxonomy leaf path, chat messages)


class StageParams(StrictModel):
    """Base of every stage's parameters: unknown keys are errors."""


def is_transient_reject(reason: str) -> bool:
    """A reject for a backend failure that may not happen again (`backend_timeout`, `backend_http_503`, ...):
    never cached, and retried by the next run of the recipe."""
    return reason.startswith("backend_")


def discard_rejects(record: Record, reason: str, detail: str | None) -> None:
    """The reject sink of dry runs."""


@dataclass(frozen=True)
class RunPaths:
    """The parts of the run directory a stage may use: stages get paths from here, never by walking the tree."""

    run: Path  # the run directory: its embeddings.sqlite is the embedding cache
    stages: Path  # checkpoints/: the stages' own files (spills, indexes, summaries)
    recipe: Path  # the run's frozen recipe, until it is committed as recipe.yaml


@dataclass
class StageContext:
    """What a stage may use besides its parameters. `runtime` holds the backend services, `run_paths` the run
    directory's parts and `workdir` a folder for the stage's own files (all None in dry runs). `label`
    (`02-generate`) names its files and counters; `key` (`generate`, `generate.2` for the second of its kind) is
    what seeds and record ids derive from, so inserting or removing another kind of stage changes no request and no id."""

    label: str
    index: int
    seed: int
    recipe_path: Path
    prompts_dir: Path
    resolve: Callable[[str], Path]
    stats: RunStats = field(default_factory=RunStats)
    reject: RejectSink = discard_rejects
    runtime: Runtime | None = None
    workdir: Path | None = None
    key: str = ""
    run_paths: RunPaths | None = None

    def __post_init__(self) -> None:
        self.key = self.key or self.label
        if self.workdir is None and self.run_paths is not None:
            self.workdir = self.run_paths.stages

    def encoder(self, model: str, batch_size: int = 64) -> Encoder:
        """A sentence encoder over the run's embedding cache (no cache outside a run directory)."""
        from synthgen.embedding.encoder import Encoder

        return Encoder(model, batch_size, cache_dir=self.run_paths.run if self.run_paths else None, stats=self.stats)


class Stage(ABC):
    """One job over a stream of records. Subclasses set `name` and `Params` and implement `run`."""

    name: ClassVar[str]
    Params: ClassVar[type[StageParams]] = StageParams
    predictable: ClassVar[bool] = True  # False: its requests or output count depend on model outputs (loops, fan-outs)
    is_source: ClassVar[bool] = False  # True: makes its records from its parameters alone (a first stage, no input)
    row_wise: ClassVar[bool] = False  # True: a record's output depends on that record alone (runs on any split of the input)
    makes_requests: ClassVar[bool] = False  # True: calls the backend (an engine gives its workers one each)
    distributed_form: ClassVar[str | None] = None  # the name of its whole-input form on an engine (e.g. `minhash_dedup`)

    def __init__(self, params: StageParams, ctx: StageContext) -> None:
        self.params = params
        self.ctx = ctx

    @abstractmethod
    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        """Consume records, yield records (zero, one or many per input)."""

    def seeded(self, *parts: Any) -> random.Random:
        """A generator seeded by the run's seed, this stage's key and `parts`: the same on every run and machine."""
        return random.Random(stable_int(self.ctx.seed, self.ctx.key, *parts))

    def rng(self, record: Record, *parts: Any) -> random.Random:
        """`seeded` for one record: its id, then `parts`."""
        return self.seeded(record.id, *parts)

    @classmethod
    def draw_count(cls, params: StageParams) -> int | None:
        """How many records the stage makes from nothing under `params` (its draws, as a first stage), or None."""
        return None

    def take_draws(self, draws: range) -> None:
        """Make only `draws` of its records (an engine's share for one worker); for stages with a `draw_count`."""
        raise TypeError(f"{self.ctx.label} makes no records from nothing")

    def steering(self) -> Any | None:
        """The `target:` the pipeline steers this stage to (synthgen.steering) before it runs, or None."""
        return None

    def planned_requests(self, inputs: int) -> int | None:
        """Requests this stage makes for `inputs` records, assuming nothing is dropped (None: not known before)."""
        return 0 if not self.makes_requests else None

    def rendered_prompts(self, records: Iterable[Record]) -> Iterator[Prompt] | None:
        """Every prompt it would send for `records`, rendered without a backend (None: it renders none ahead)."""
        return None

    def max_output_tokens(self) -> int | None:
        """The bound on each completion's tokens, when the stage sets one."""
        return None

    def outputs(self, inputs: int) -> int:
        """Records this stage yields for `inputs` records when it drops nothing (for the next stage's plan)."""
        return inputs

    def embedded_texts(self) -> tuple[str, int, list[str]] | None:
        """(model, batch size, fields) when the stage first embeds every record's joined `fields`: an engine may
        compute those vectors ahead, into the run's embedding cache."""
        return None


class MapStage(Stage):
    """Row-wise: one record in, zero or more out, each depending on that record alone; the base owns the loop."""

    row_wise = True

    @abstractmethod
    def map(self, record: Record) -> Iterable[Record]:
        """The records made from `record` (rejects go to `self.ctx.reject`)."""

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        for record in records:
            yield from self.map(record)


class Filter(MapStage):
    """A stage that keeps or drops each record; every drop goes to rejects with its named reason."""

    @abstractmethod
    def keep(self, record: Record) -> str | None:
        """None keeps the record; a reason drops it."""

    def map(self, record: Record) -> Iterator[Record]:
        reason = self.keep(record)
        if reason is None:
            yield record
        else:
            self.ctx.reject(record, reason, None)


class WholeSetStage(Stage):
    """Needs every record before it decides: the base spills the input to Parquet in the stage's folder, showing
    each chunk to `see` on the way (embed it, sketch it), then `emit` streams the output from the spilled input."""

    chunk: ClassVar[int] = 4096  # records per spilled row group and per `see` call

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        self.start()
        with spilled(self.prepare(records), self.ctx.workdir, self.chunk, self.see) as replay:
            yield from self.emit(replay)

    def prepare(self, records: Iterable[Record]) -> Iterable[Record]:
        """The input as spilled (a stage checks its fields here)."""
        return records

    def start(self) -> None:
        """Reset what `see` gathers (a stage object may run more than once)."""

    def see(self, batch: list[Record]) -> None:
        """Look at one chunk of the input while it is spilled."""

    @abstractmethod
    def emit(self, records: Spilled) -> Iterator[Record]:
        """The output, given the whole input again (each iteration replays it in order)."""


StageExecutor = Callable[[Stage, Iterable[Record], str], Iterable[Record]]  # (stage, its input, its fingerprint)


class TextPairStage(WholeSetStage):
    """A whole-set stage over each record's (query, passage) texts, gathered while its input is spilled:
    `pair_fields` names the two fields; `queries` and `passages` hold their texts in input order."""

    def pair_fields(self) -> tuple[str, str]:
        raise NotImplementedError

    def start(self) -> None:
        self.queries: list[str] = []
        self.passages: list[str] = []

    def see(self, batch: list[Record]) -> None:
        query, passage = self.pair_fields()
        self.queries.extend(str(r.fields.get(query) or "") for r in batch)
        self.passages.extend(str(r.fields.get(passage) or "") for r in batch)


def run_locally(stage: Stage, records: Iterable[Record], fingerprint: str) -> Iterable[Record]:
    """The local engine: the stage runs in this process over the stream."""
    return stage.run(records)
