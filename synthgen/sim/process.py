"""The sim server in a process of its own, for benchmarks and tests that measure or kill the client alone."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from types import TracebackType
from typing import Any


def get_json(url: str, method: str = "GET") -> Any:
    """The JSON answer of a GET (or an empty-bodied POST) to `url`."""
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


class SimProcess:
    """`synthgen sim-server OPTIONS` on a free loopback port; entering waits until it answers, leaving stops it."""

    def __init__(self, *options: str) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.root = f"http://127.0.0.1:{self.port}"
        self.base_url = self.root + "/v1"
        self._command = [sys.executable, "-m", "synthgen", "sim-server", "--port", str(self.port), *options]
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the sim process is not running")
        return self._process.pid

    def __enter__(self) -> SimProcess:
        self._process = subprocess.Popen(self._command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(400):
            try:
                get_json(self.base_url + "/models")
                return self
            except OSError:
                if self._process.poll() is not None:
                    break
                time.sleep(0.05)
        self.__exit__(None, None, None)
        raise RuntimeError(f"the sim server did not start: {' '.join(self._command)}")

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None
