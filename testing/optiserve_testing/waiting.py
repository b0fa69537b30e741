"""Polling helpers the harness and the tests share: wait for a condition, probe an HTTP endpoint."""

from __future__ import annotations

import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable


def wait_until(
    what: str, check: Callable[[], object], timeout_s: float = 240.0, every_s: float = 1.0
) -> None:
    """Poll ``check`` until it returns something true; AssertionError naming ``what`` if never."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(every_s)


def http_ok(url: str, context: ssl.SSLContext | None = None, timeout_s: float = 2.0) -> bool:
    """Whether a GET of ``url`` answers 2xx (a refused or timed-out connection is False)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s, context=context) as response:
            return 200 <= int(response.status) < 300
    except (OSError, urllib.error.URLError):
        return False
