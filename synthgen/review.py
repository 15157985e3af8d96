"""The review log `review.jsonl` of a run directory: people's decisions about records, append-only.

One JSON object per line and decision::

    {"id": "e460b5357c35d61c", "action": "excluded", "who": "ana", "when": "2026-12-01T20:31:07Z",
     "why": "answer is off-topic", "filter": {"reason": "near_duplicate"}}

`action` is `excluded` or `approved`; the latest line about an id wins, so a decision is undone by a later one.
A decision about a whole filter result (every record with reject reason X, every match of a search) is expanded
to one line per record id when it is written, with the filter kept in `filter` for the audit trail: as in
Argilla (the review UI distilabel pipelines push to) a decision belongs to a record, so what a review covered never
changes when the run is resumed or extended, and record ids being content hashes, a re-run keeps every decision.
Nothing rewrites the file; `synthgen run --fresh` leaves it in place. `synthgen export` leaves excluded records out.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import orjson

from synthgen.errors import InputError
from synthgen.rundir import write_error

REVIEW_FILE = "review.jsonl"
Action = Literal["excluded", "approved"]
ACTIONS: tuple[Action, ...] = ("excluded", "approved")


@dataclass(frozen=True)
class Decision:
    """One reviewer's decision about one record."""

    id: str
    action: Action
    who: str
    when: str
    why: str = ""
    filter: dict[str, Any] | None = None


def default_reviewer() -> str:
    """Who is reviewing when `--reviewer` is not given: the login name."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def append_decisions(run_dir: Path, ids: Iterable[str], action: Action, who: str, why: str = "",
                     filter: dict[str, Any] | None = None) -> int:
    """Append one decision per id to RUN_DIR/review.jsonl (created if absent); returns how many were written."""
    if action not in ACTIONS:
        raise ValueError(f"action {action!r}: use one of {', '.join(ACTIONS)}")
    when = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [orjson.dumps({"id": record_id, "action": action, "who": who, "when": when, "why": why}
                          | ({"filter": filter} if filter else {})) + b"\n" for record_id in dict.fromkeys(ids)]
    path = run_dir / REVIEW_FILE
    try:  # one write of whole lines in append mode: readers never see half a decision
        with path.open("ab") as handle:
            handle.write(b"".join(lines))
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise write_error(path, exc) from None
    return len(lines)


def read_review(run_dir: Path) -> dict[str, Decision]:
    """The standing decision per record id (the latest line about it wins); empty if there is no review.jsonl.
    A malformed line raises InputError naming review.jsonl and the line."""
    path = run_dir / REVIEW_FILE
    decisions: dict[str, Decision] = {}
    if not path.exists():
        return decisions
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                decision = _parse(line, str(path), number)
                decisions[decision.id] = decision
    return decisions


def _parse(line: bytes, path: str, number: int) -> Decision:
    try:
        item = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise InputError(path, number, "not a JSON line") from None
    if not isinstance(item, dict) or not isinstance(item.get("id"), str) or item.get("action") not in ACTIONS:
        raise InputError(path, number, f"a decision needs a string `id` and an `action` of {', '.join(ACTIONS)}")
    return Decision(item["id"], item["action"], str(item.get("who", "")), str(item.get("when", "")),
                    str(item.get("why") or ""), item.get("filter"))


def ids_with(decisions: dict[str, Decision], action: Action) -> set[str]:
    """The ids whose standing decision is `action`."""
    return {record_id for record_id, decision in decisions.items() if decision.action == action}
