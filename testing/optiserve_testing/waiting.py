"""Polling for the harness and the tests: the product's one probe and loop (optiserve.serve.probe),
with a test's failure when the wait runs out."""

from __future__ import annotations

from collections.abc import Callable

from optiserve.serve.probe import http_ok, poll_until

__all__ = ["http_ok", "wait_until"]


def wait_until(
    what: str, check: Callable[[], object], timeout_s: float = 240.0, every_s: float = 1.0
) -> None:
    """Poll ``check`` until it returns something true; AssertionError naming ``what`` if never."""
    if not poll_until(check, timeout_s, every_s):
        raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
