"""Services a generating stage needs during a real run (absent in dry runs such as `synthgen render`)."""

from __future__ import annotations

from dataclasses import dataclass

from synthgen.aio import LoopThread
from synthgen.backends.base import Backend


@dataclass
class Runtime:
    """The cached backend, the loop it runs on, and the model requests go to."""

    backend: Backend
    loop: LoopThread
    model: str
    backend_kind: str
    max_pending: int
