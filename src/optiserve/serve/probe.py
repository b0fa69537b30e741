"""Waiting on servers: the one HTTP readiness probe and the one polling loop.

``optiserve serve`` waits on tritonserver with them, the load generator on Triton's counters,
and the test harness (``optiserve_testing.waiting``), the tests and the benchmarks on
everything else, so a probe's timeout or a loop's deadline behaves the same everywhere.
"""

from __future__ import annotations

import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable


def http_ok(url: str, context: ssl.SSLContext | None = None, timeout_s: float = 2.0) -> bool:
    """Whether a GET of ``url`` answers 2xx (a refused or timed-out connection is False)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s, context=context) as response:
            return 200 <= int(response.status) < 300
    except (OSError, urllib.error.URLError):
        return False


def poll_until(check: Callable[[], object], timeout_s: float, every_s: float) -> bool:
    """Calls ``check`` every ``every_s`` until it returns something true (True), or until
    ``timeout_s`` has passed (False, after one last call). ``check`` raises to give up early
    (a server that exited will never become ready)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(every_s)
