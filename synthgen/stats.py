"""Run statistics: counters every part of a run updates, read live by the progress bar, saved as stats.json."""

from __future__ import annotations

import copy
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StageCounts:
    """Records into and out of one stage, and how many it rejected."""

    records_in: int = 0
    records_out: int = 0
    rejected: int = 0


@dataclass
class StagePlan:
    """What a stage is expected to take in, make and ask for when nothing is dropped (the progress line's plan)."""

    label: str
    inputs: int
    outputs: int
    requests: int | None  # None: not known before (loops, fan-outs)


EXAMPLE_CHARS = 200  # a reject's example in the card and the report


def reject_example(fields: dict[str, Any]) -> str:
    """A rejected record's string fields on one line (`name: text | ...`), shortened to EXAMPLE_CHARS."""
    text = " | ".join(f"{name}: {' '.join(value.split())}" for name, value in fields.items() if isinstance(value, str))
    return text if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS - 1] + "…"


def steered_stages(metrics: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(stage label, summary) of each stage steered to a `target:` (`metrics.<stage>.steering`, synthgen.steering)."""
    return [(label, m["steering"]) for label, m in metrics.items()
            if isinstance(m, dict) and isinstance(m.get("steering"), dict)]


_SUMMED = {"planned": "planned_requests", "finished": "finished_requests", "reasks": "reasks", "cache_hits": "cache_hits",
           "http_sent": "http_requests", "http_ok": "http_ok", "prompt_tokens": "prompt_tokens",
           "completion_tokens": "completion_tokens"}  # totals() key -> RunStats attribute


@dataclass
class RunStats:
    """Counters for one run. Plain integer updates: safe to read from another thread. `metrics` holds
    what a stage measured (e.g. diversity before and after it), keyed by stage label; `timeline` holds
    (seconds, requests finished, tokens) samples taken once a second during the run."""

    planned_requests: int = 0
    finished_requests: int = 0
    reasks: int = 0  # new requests (new seed) for outputs that were truncated or failed validation: never re-sends
    cache_hits: int = 0
    http_requests: int = 0
    http_ok: int = 0
    http_in_flight: int = 0  # HTTP requests sent and not answered yet (the backend's window in use)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: Counter[str] = field(default_factory=Counter)
    rejects: Counter[str] = field(default_factory=Counter)
    reject_examples: dict[str, str] = field(default_factory=dict)  # reason -> reject_example of its first reject
    stages: dict[str, StageCounts] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    timeline: list[tuple[float, int, int]] = field(default_factory=list)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)  # provider batch id -> status and item counts
    backend: dict[str, Any] = field(default_factory=dict)  # the client's view: server slots, window, timeouts
    plan: list[StagePlan] = field(default_factory=list)  # the stages this attempt runs, in order
    finished_stages: dict[str, float] = field(default_factory=dict)  # stage label -> seconds when its output was complete
    tokens_by_model: dict[str, list[int]] = field(default_factory=dict)  # model -> [prompt, completion] tokens sent
    embedded: int = 0  # texts the run's encoders embedded (cache hits included): an embedding stage's progress
    started: float = field(default_factory=time.monotonic)
    earlier_wall: float = 0.0  # seconds earlier attempts in the same run directory took

    def count_reject(self, reason: str, fields: dict[str, Any]) -> None:
        """Count one reject; the first of each reason is kept as its example."""
        self.rejects[reason] += 1
        if reason not in self.reject_examples:
            self.reject_examples[reason] = reject_example(fields)

    def count_tokens(self, model: str, prompt: int, completion: int) -> None:
        """Count the tokens of one fresh (paid) completion from `model`."""
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        counts = self.tokens_by_model.setdefault(model, [0, 0])
        counts[0] += prompt
        counts[1] += completion

    def finish_stage(self, label: str) -> None:
        """Note that stage `label` has yielded all its output (its time is a marker on the report's timeline)."""
        self.finished_stages[label] = round(self.elapsed, 2)

    def stage(self, name: str) -> StageCounts:
        """The counters of stage `name`, created on first use."""
        return self.stages.setdefault(name, StageCounts())

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def totals(self, earlier: dict[str, Any] | None = None) -> dict[str, Any]:
        """The counters that add up over the attempts of one run directory, `earlier` ones (this dict) included."""
        earlier = earlier or {}
        sums: dict[str, Any] = {key: getattr(self, name) + earlier.get(key, 0) for key, name in _SUMMED.items()}
        sums["retries"] = dict(Counter(earlier.get("retries", {})) + self.retries)
        sums["wall_time_s"] = round(self.earlier_wall + self.elapsed + earlier.get("wall_time_s", 0.0), 3)
        return sums

    def plus(self, earlier: dict[str, Any]) -> RunStats:
        """A copy with `earlier` (the `totals` of earlier attempts) added: what stats.json reports for the run."""
        total = copy.deepcopy(self)
        for key, name in _SUMMED.items():
            setattr(total, name, getattr(self, name) + earlier.get(key, 0))
        total.retries.update(earlier.get("retries", {}))
        total.earlier_wall += earlier.get("wall_time_s", 0.0)
        return total

    def sample(self) -> None:
        """Append (seconds since start, requests finished, tokens) to the timeline."""
        self.timeline.append((round(self.elapsed, 2), self.finished_requests, self.prompt_tokens + self.completion_tokens))

    def to_dict(self) -> dict[str, Any]:
        """The stats.json content."""
        wall = self.earlier_wall + self.elapsed
        return {
            "stages": {name: vars(counts) for name, counts in self.stages.items()},
            "requests": {
                "planned": self.planned_requests,
                "finished": self.finished_requests,
                "reasks": self.reasks,
                "cache_hits": self.cache_hits,
                "http_sent": self.http_requests,
                "http_ok": self.http_ok,
                "retries_by_cause": dict(sorted(self.retries.items())),
            },
            "rejects_by_reason": dict(sorted(self.rejects.items())),
            "reject_examples": dict(sorted(self.reject_examples.items())),
            "tokens": {"prompt": self.prompt_tokens, "completion": self.completion_tokens},
            "metrics": self.metrics,
            "batches": self.batches,
            "backend": self.backend,
            "timeline": [list(point) for point in self.timeline],
            "stage_finished_s": self.finished_stages,
            "wall_time_s": round(wall, 3),
            "requests_per_s": round(self.finished_requests / wall, 2) if wall > 0 else 0.0,
        }


def totals_of(stats_json: dict[str, Any]) -> dict[str, Any]:
    """RunStats.totals as read back from a stats.json (RunStats.to_dict)."""
    requests, tokens = stats_json.get("requests", {}), stats_json.get("tokens", {})
    return {
        **{key: requests.get(key, 0) for key in ("planned", "finished", "cache_hits", "http_sent", "http_ok")},
        "retries": requests.get("retries_by_cause", {}), "prompt_tokens": tokens.get("prompt", 0),
        "completion_tokens": tokens.get("completion", 0), "wall_time_s": stats_json.get("wall_time_s", 0.0),
    }
