"""Client-side rate limits (optiserve_operator.ratelimit) and how ``Kube`` obeys a 429.

The 429 tests talk HTTP to a small local server that answers as a throttling API server does
(status 429, ``Retry-After``); the real API server's throttling is in
tests/e2e/test_api_throttling.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kubernetes import client

import optiserve_operator.kube_transport as transport_module
from optiserve_operator.kube import Kube
from optiserve_operator.kube_transport import KubeError
from optiserve_operator.ratelimit import (
    MAX_THROTTLE_DELAY,
    MAX_THROTTLE_RETRIES,
    TokenBucket,
    throttle_delay,
    transport_retries,
)
from optiserve_operator.settings import parse_settings


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_burst_is_free_then_requests_are_paced_at_qps() -> None:
    clock = FakeClock()
    bucket = TokenBucket(qps=10, burst=3, clock=clock, sleep=clock.sleep)
    waits = [bucket.acquire() for _ in range(3)]
    assert waits == [0.0, 0.0, 0.0]
    for _ in range(20):
        bucket.acquire()
    # 20 requests beyond the burst take 2 s at 10 a second.
    assert clock.now == pytest.approx(2.0)


def test_waiters_queue_for_successive_tokens_not_the_same_one() -> None:
    clock = FakeClock()
    bucket = TokenBucket(qps=4, burst=1, clock=clock, sleep=clock.sleep)
    assert bucket.reserve() == 0.0
    # Three callers reserve at the same instant: each is due a quarter second after the last.
    assert [bucket.reserve() for _ in range(3)] == pytest.approx([0.25, 0.5, 0.75])


def test_idle_time_refills_up_to_the_burst_only() -> None:
    clock = FakeClock()
    bucket = TokenBucket(qps=1, burst=2, clock=clock, sleep=clock.sleep)
    bucket.acquire()
    bucket.acquire()
    clock.now += 100  # a long idle spell banks only `burst` tokens
    assert [bucket.reserve() for _ in range(3)] == pytest.approx([0.0, 0.0, 1.0])


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        TokenBucket(qps=0, burst=1)
    with pytest.raises(SystemExit):
        parse_settings(["--api-qps", "0"])
    assert (parse_settings([]).api_qps, parse_settings([]).api_burst) == (20.0, 30)
    assert parse_settings(["--api-qps", "5", "--api-burst", "7"]).api_burst == 7


def test_throttle_delay_obeys_retry_after_doubles_and_is_capped() -> None:
    no_jitter = float
    assert throttle_delay("3", 0, jitter=no_jitter) == 3.0
    assert throttle_delay("3", 2, jitter=no_jitter) == 12.0
    assert throttle_delay(None, 0, jitter=no_jitter) == 1.0
    assert throttle_delay("0", 0, jitter=no_jitter) == 1.0  # never a hot loop
    assert throttle_delay("Wed, 21 Oct 2015 07:28:00 GMT", 0, jitter=no_jitter) == 1.0
    assert throttle_delay("5", 10, jitter=no_jitter) == MAX_THROTTLE_DELAY
    assert throttle_delay("1", 0, jitter=lambda: 1.0) == pytest.approx(1.2)


class Throttling(BaseHTTPRequestHandler):
    """Answers 429 (Retry-After: 1) to the first ``refusals`` requests, then 200."""

    refusals = 0
    seen: list[float] = []

    def do_GET(self) -> None:
        type(self).seen.append(time.monotonic())
        if len(self.seen) <= self.refusals:
            body = json.dumps(
                {"kind": "Status", "code": 429, "reason": "TooManyRequests", "message": "slow"}
            )
            self.send_response(429)
            self.send_header("Retry-After", "1")
        else:
            body = json.dumps({"kind": "ConfigMap", "metadata": {"name": "x"}})
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *_: object) -> None:
        return


@pytest.fixture
def server() -> Iterator[tuple[str, type[Throttling]]]:
    handler = type("Handler", (Throttling,), {"seen": [], "refusals": 0})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()


def kube_for(url: str, limiter: TokenBucket | None = None) -> Kube:
    configuration = client.Configuration()
    configuration.host = url
    configuration.retries = transport_retries()  # as Kube.from_environment sets it
    return Kube(client.ApiClient(configuration), limiter)


def test_a_429_is_retried_after_its_retry_after(server: tuple[str, type[Throttling]]) -> None:
    url, handler = server
    handler.refusals = 2
    found = kube_for(url).get("v1", "ConfigMap", "ns", "x")
    assert found is not None and found["metadata"]["name"] == "x"
    gaps = [b - a for a, b in zip(handler.seen, handler.seen[1:], strict=False)]
    assert len(handler.seen) == 3
    # Retry-After 1, then doubled: at least 1 s and 2 s apart, not a tight loop.
    assert gaps[0] >= 1.0 and gaps[1] >= 2.0


def test_a_429_that_persists_becomes_an_error_after_bounded_retries(
    server: tuple[str, type[Throttling]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, handler = server
    handler.refusals = 1000
    monkeypatch.setattr(transport_module, "throttle_delay", lambda *_: 0.0)
    with pytest.raises(KubeError) as raised:
        kube_for(url).get("v1", "ConfigMap", "ns", "x")
    assert raised.value.status == 429
    # The work queue's per-model backoff takes over from here (handlers.worker).
    assert len(handler.seen) == MAX_THROTTLE_RETRIES + 1


def test_every_request_takes_a_token(server: tuple[str, type[Throttling]]) -> None:
    url, handler = server
    kube = kube_for(url, TokenBucket(qps=20, burst=1))
    started = time.monotonic()
    for _ in range(6):
        kube.get("v1", "ConfigMap", "ns", "x")
    # One free, five more at 20 a second: at least a quarter second.
    assert time.monotonic() - started >= 0.24
    assert len(handler.seen) == 6
