"""Run statistics: counters every part of a run updates, read live by the progress bar, saved as stats.json."""

from __future__ import annotations

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
class RunStats:
    """Counters for one run. Plain integer updates: safe to read from another thread. `metrics` holds
    what a stage measured (e.g. diversity before and after it), keyed by stage label; `timeline` holds
    (seconds, requests finished, tokens) samples taken once a second during the run."""

    expected_requests: int | None = None
    planned_requests: int = 0
    finished_requests: int = 0
    cache_hits: int = 0
    http_requests: int = 0
    http_ok: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: Counter[str] = field(default_factory=Counter)
    rejects: Counter[str] = field(default_factory=Counter)
    stages: dict[str, StageCounts] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    timeline: list[tuple[float, int, int]] = field(default_factory=list)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)  # provider batch id -> status and item counts
    started: float = field(default_factory=time.monotonic)

    def stage(self, name: str) -> StageCounts:
        """The counters of stage `name`, created on first use."""
        return self.stages.setdefault(name, StageCounts())

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def sample(self) -> None:
        """Append (seconds since start, requests finished, tokens) to the timeline."""
        self.timeline.append((round(self.elapsed, 2), self.finished_requests, self.prompt_tokens + self.completion_tokens))

    def to_dict(self) -> dict[str, Any]:
        """The stats.json content."""
        wall = self.elapsed
        return {
            "stages": {name: vars(counts) for name, counts in self.stages.items()},
            "requests": {
                "planned": self.planned_requests,
                "finished": self.finished_requests,
                "cache_hits": self.cache_hits,
                "http_sent": self.http_requests,
                "http_ok": self.http_ok,
                "retries_by_cause": dict(sorted(self.retries.items())),
            },
            "rejects_by_reason": dict(sorted(self.rejects.items())),
            "tokens": {"prompt": self.prompt_tokens, "completion": self.completion_tokens},
            "metrics": self.metrics,
            "batches": self.batches,
            "timeline": [list(point) for point in self.timeline],
            "wall_time_s": round(wall, 3),
            "requests_per_s": round(self.finished_requests / wall, 2) if wall > 0 else 0.0,
        }
