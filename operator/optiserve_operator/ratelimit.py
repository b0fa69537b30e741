"""Client-side rate limits on the operator's API requests, as client-go applies them.

``TokenBucket`` is client-go's ``flowcontrol.NewTokenBucketRateLimiter(qps, burst)``: ``qps``
tokens a second, at most ``burst`` banked, every request takes one and waits for it. It bounds
what the operator asks of the API server whatever the number of models or workers, so a burst
of a thousand reconciles is spread out instead of arriving at once.

``throttle_delay`` is how long to wait before retrying a request the API server refused with
429 Too Many Requests (API Priority and Fairness, or ``--max-requests-inflight``): the
server's ``Retry-After`` seconds, at least a second, doubled on each further refusal of the same
request, capped, plus jitter so that workers refused together do not come back together.
After ``MAX_THROTTLE_RETRIES`` the 429 goes to the work queue's per-model backoff like any
other error: no retry storm.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

from urllib3.util.retry import Retry

# controller-runtime's client defaults (client-go's are 5 and 10).
DEFAULT_QPS = 20.0
DEFAULT_BURST = 30
MAX_THROTTLE_RETRIES = 3
MAX_THROTTLE_DELAY = 30.0


class TokenBucket:
    """Thread-safe: the workers' threads share one bucket."""

    def __init__(
        self,
        qps: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError(f"qps must be > 0 and burst >= 1 (got {qps}, {burst})")
        self.qps = qps
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._stamp = clock()

    def reserve(self) -> float:
        """Take a token, perhaps one that is only due later; seconds until it is due.

        Tokens may go negative: each waiter is handed the next one due, in order, so waiters
        are served first come, first served and never more than ``qps`` a second overall.
        """
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.qps)
            self._stamp = now
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / self.qps

    def acquire(self) -> float:
        """Wait for a token; the seconds waited."""
        delay = self.reserve()
        if delay > 0:
            self._sleep(delay)
        return delay


def throttle_delay(
    retry_after: str | None, attempt: int, jitter: Callable[[], float] = random.random
) -> float:
    """Seconds before retry ``attempt`` (0 for the first) of a request answered 429."""
    try:
        base = max(float(retry_after or 1), 1.0)
    except ValueError:  # an HTTP date, or garbage: the minimum
        base = 1.0
    delay = min(base * 2.0**attempt, MAX_THROTTLE_DELAY)
    return delay * (1.0 + 0.2 * jitter())


def transport_retries() -> Retry:
    """The HTTP pool's own retries: connection errors only.

    By default urllib3 retries, by itself, a GET answered 429 or 503 with ``Retry-After`` (up
    to three times, and a PATCH or POST never): invisible to the limits and metrics here and
    different per verb. ``Kube`` handles every status itself instead.
    """
    return Retry(total=3, status_forcelist=(), respect_retry_after_header=False)
