"""Extraction in worker processes: parsing a PDF is CPU-bound Python, so many files are read in parallel.

Workers start by `forkserver` (POSIX) or `spawn`, never plain `fork`: the run holds threads (the stats sampler,
the backend loop) and forking a threaded process can deadlock. A worker returns a `Document` or the reject
(reason, message); a parser's unexpected exception on a foreign file is an `unreadable` reject naming it, since
one odd file must not stop a run over thousands. Workers start only for more than `POOL_FROM` files to parse,
and once per run: for a handful of files the start costs more than it saves.
"""

from __future__ import annotations

import hashlib
import multiprocessing
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from itertools import chain
from pathlib import Path

from synthgen.documents.readers import Document, UnreadableDocument, read_document

Outcome = Document | tuple[str, str]  # the document, or (reject reason, message)
POOL_FROM = 8  # files to parse: starting the workers costs about a second, parsing a PDF page about a millisecond
PARSED = frozenset({".pdf", ".docx", ".html", ".htm"})  # formats parsed in the workers


def extract(path: str) -> Outcome:
    """The document in `path` with its content hash in `sha256`, or why it cannot be read."""
    try:
        document = read_document(Path(path))
        document.sha256 = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        return document
    except UnreadableDocument as exc:
        return exc.reason, exc.message
    except OSError as exc:
        return "unreadable", f"cannot open the file: {exc.strerror or exc}"
    except Exception as exc:  # noqa: BLE001 - a third-party parser failing on one file is that file's reject
        return "unreadable", f"the reader failed: {type(exc).__name__}: {exc}"


def extract_many(paths: Iterable[str], workers: int, pool_from: int = POOL_FROM) -> Iterator[Outcome]:
    """`extract` of each path, in order, streaming. With more than `pool_from` files to parse (PDF, DOCX, HTML),
    those go to `workers` processes (started once, fed a sliding window of `4 * workers` files); text and
    Markdown files are read in this process, where reading costs less than sending the text back."""
    stream = iter(paths)
    head: list[str] = []
    for path in stream:  # read ahead until the pool pays or the input ends
        head.append(path)
        if sum(map(_parsed, head)) > pool_from:
            break
    if workers <= 1 or sum(map(_parsed, head)) <= pool_from:
        yield from map(extract, chain(head, stream))
        return
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
        pending: deque[Future[Outcome] | Outcome] = deque()
        for path in chain(head, stream):
            pending.append(pool.submit(extract, path) if _parsed(path) else extract(path))
            if len(pending) >= 4 * workers:
                yield _result(pending.popleft())
        while pending:
            yield _result(pending.popleft())


def _parsed(path: str) -> bool:
    return Path(path).suffix.lower() in PARSED


def _result(item: Future[Outcome] | Outcome) -> Outcome:
    return item.result() if isinstance(item, Future) else item
