"""The `synthgen view` web app: an aiohttp server on 127.0.0.1 serving a static page (static/, no CDN, no build
step) and a small JSON API over a `RunStore`. Record text reaches the page only as JSON and is put in the DOM as
text (never as HTML), so model output cannot inject markup; the overview's figures are the run report's own."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from aiohttp import web

from synthgen.aio import LoopThread
from synthgen.errors import SynthgenError
from synthgen.review import ACTIONS, append_decisions, ids_with, read_review
from synthgen.view.provenance import compare, descendants, lineage, steps
from synthgen.view.store import Query, RunStore, judge_score

STATIC = Path(__file__).parent / "static"
PAGE_SIZE = 25
STORE: web.AppKey[RunStore] = web.AppKey("store", RunStore)
REVIEWER: web.AppKey[str] = web.AppKey("reviewer", str)
LOCK: web.AppKey[asyncio.Lock] = web.AppKey("lock", asyncio.Lock)


def make_app(run_dir: Path, reviewer: str) -> web.Application:
    """The app for one run directory; `reviewer` signs the decisions it writes."""
    app = web.Application()
    app[STORE], app[REVIEWER], app[LOCK] = RunStore(run_dir), reviewer, asyncio.Lock()
    app.router.add_get("/", _index)
    app.router.add_static("/static/", STATIC)
    app.router.add_get("/api/overview", _overview)
    app.router.add_get("/api/records", _records)
    app.router.add_get("/api/record", _record)
    app.router.add_post("/api/review", _review)
    return app


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def _in_thread(request: web.Request, work: Callable[[], Any]) -> web.Response:
    """Run blocking `work` (file reads, index building) off the event loop, one at a time; errors become 400s."""
    async with request.app[LOCK]:
        try:
            return web.json_response(await asyncio.to_thread(work))
        except (SynthgenError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)


async def _overview(request: web.Request) -> web.Response:
    return await _in_thread(request, partial(overview, request.app[STORE]))


def overview(store: RunStore) -> dict[str, Any]:
    """The first page: the run's funnel, rejects by reason, the report's figures, what can be browsed and filtered."""
    stats, run = store.run.stats, store.run
    stages = stats.get("stages") or {}
    dataset = store.listing("dataset") if "dataset" in store.sources else None
    rejects = store.listing("rejects") if "rejects" in store.sources else None
    decisions = read_review(store.path)
    return {
        "name": run.name, "path": str(store.path), "sources": store.sources,
        "funnel": [{"stage": label, "in": c.get("records_in"), "out": c.get("records_out"), "rejected": c.get("rejected")}
                   for label, c in stages.items()],
        "rejects_by_reason": stats.get("rejects_by_reason") or {},
        "leaves": sorted(name for name in (dataset.leaves if dataset else []) if name),
        "reasons": sorted(name for name in (rejects.reasons if rejects else []) if name),
        "records": len(dataset) if dataset else 0,
        "review": {action: len(ids_with(decisions, action)) for action in ACTIONS},
        "figures": store.figures,  # HTML made by the report (its text escaped there), shown as is
    }


def _query(params: Any) -> Query:
    def number(name: str, kind: type) -> Any:
        value = params.get(name, "")
        return kind(value) if value not in ("", None) else None

    return Query(text=str(params.get("q", "")), leaf=str(params.get("leaf", "")), reason=str(params.get("reason", "")),
                 score_min=number("score_min", float), score_max=number("score_max", float),
                 length_min=number("length_min", int), length_max=number("length_max", int))


async def _records(request: web.Request) -> web.Response:
    params = request.query
    return await _in_thread(request, lambda: records(request.app[STORE], params.get("source", "dataset"), _query(params),
                                                     int(params.get("page", 0))))


def records(store: RunStore, source: str, query: Query, page: int) -> dict[str, Any]:
    """One page of the records of `source` matching `query`, each with its review status."""
    rows, more = store.search(source, query, page * PAGE_SIZE, PAGE_SIZE)
    listing, decisions = store.listing(source), read_review(store.path)
    total = int(listing.mask(query).sum()) if not query.text else None
    return {"page": page, "more": more, "total": total, "rows": [_summary(row, record, decisions) for row, record in rows],
            "size": PAGE_SIZE}


def _summary(row: int, record: dict[str, Any], decisions: dict[str, Any]) -> dict[str, Any]:
    decision = decisions.get(str(record["id"]))
    score = judge_score(record)
    return {"row": row, "id": record["id"], "fields": record.get("fields") or {}, "reason": record.get("reason"),
            "stage": record.get("stage"), "score": None if score != score else score,
            "review": decision.action if decision else None}


async def _record(request: web.Request) -> web.Response:
    return await _in_thread(request, lambda: record_page(request.app[STORE], request.query.get("id", "")))


def record_page(store: RunStore, record_id: str) -> dict[str, Any]:
    """Everything about one record: fields, reject reason, scores, prompts and completions, lineage, parent diff."""
    found = store.find(record_id)
    if found is None:
        raise ValueError(f"no record {record_id!r} in this run")
    record = store.read(*found)
    meta = record.get("meta") or {}
    parent_ids = meta.get("parents") or []
    parent_at = store.find(str(parent_ids[0])) if parent_ids else None
    parent = store.read(*parent_at) if parent_at else None
    decision = read_review(store.path).get(record_id)
    return {"id": record_id, "source": found[0], "fields": record.get("fields") or {}, "reason": record.get("reason"),
            "detail": record.get("detail"), "stage": record.get("stage"), "scores": meta.get("scores"),
            "judge": meta.get("judge"), "steps": steps(store, record), "parents": lineage(store, record),
            "children": descendants(store, record_id)["children"],
            "parent": parent and {"id": parent["id"], "compare": compare(parent, record)},
            "review": decision and vars(decision)}


async def _review(request: web.Request) -> web.Response:
    body = await request.json()
    return await _in_thread(request, lambda: review(request.app[STORE], request.app[REVIEWER], body))


def review(store: RunStore, reviewer: str, body: dict[str, Any]) -> dict[str, Any]:
    """Append decisions: about the ids given, or about every record matching a filter of one source."""
    action, why = body.get("action"), str(body.get("why") or "")
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}")
    if "filter" in body:
        source, query = str(body.get("source", "dataset")), _query(body["filter"])
        ids = store.matching_ids(source, query)
        described: dict[str, Any] | None = {"source": source, **query.describe()}
    else:
        ids, described = [str(i) for i in body.get("ids") or []], None
    written = append_decisions(store.path, ids, action, reviewer, why, described)
    return {"written": written}


class ViewServer:
    """The app served from a background thread on 127.0.0.1 (`port` 0: any free port); `url` once started."""

    def __init__(self, run_dir: Path, reviewer: str, port: int = 0, host: str = "127.0.0.1") -> None:
        self.app, self.host, self.port = make_app(run_dir, reviewer), host, port
        self._runner = web.AppRunner(self.app, access_log=None)
        self._loop: LoopThread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def __enter__(self) -> ViewServer:
        self._loop = LoopThread()
        self._loop.run(self._start())
        return self

    async def _start(self) -> None:
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = int(self._runner.addresses[0][1])

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            self._loop.run(self._runner.cleanup())
            self._loop.close()
