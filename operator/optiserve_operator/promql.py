"""Reading a canary's analysis from Prometheus: a small PromQL client over its HTTP API.

Triton's own counters and latency summaries, per revision. The pod scrape job maps pod labels
to series labels (``optiserve.io/revision`` -> ``optiserve_io_revision``), so the canary's
series carry ``optiserve_io_revision="canary"``; the stable's carry ``"stable"`` (pods rolled
since ``render.canary_route`` labels them) or none (older pods), so they are selected as "not
the canary".
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from optiserve_operator.canary import Readings

TIMEOUT_SECONDS = 10.0
P99 = "0.99"


class PromQLError(Exception):
    """Prometheus could not be asked or did not answer with a vector."""


def query(base_url: str, expr: str, timeout: float = TIMEOUT_SECONDS) -> list[float]:
    """The values of an instant query's vector (NaN left out)."""
    url = base_url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body: Any = json.loads(response.read().decode())
    except urllib.error.HTTPError as err:
        raise PromQLError(f"Prometheus answered HTTP {err.code} to {expr!r}") from err
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise PromQLError(f"Prometheus at {base_url} cannot be read: {err}") from err
    data = body.get("data") or {} if isinstance(body, dict) else {}
    if body.get("status") != "success" or data.get("resultType") != "vector":
        raise PromQLError(f"Prometheus did not answer {expr!r} with a vector: {body!r:.200}")
    values = [float(sample["value"][1]) for sample in data.get("result") or []]
    return [v for v in values if not math.isnan(v)]


@dataclass(frozen=True)
class Revisions:
    """The label matchers of a model's stable and canary series."""

    namespace: str
    model: str

    def matchers(self, canary: bool) -> str:
        revision = '="canary"' if canary else '!="canary"'
        return (
            f'namespace="{self.namespace}",optiserve_io_model="{self.model}",'
            f"optiserve_io_revision{revision}"
        )

    def increase(self, series: str, canary: bool, window_seconds: int) -> str:
        return f"sum(increase({series}{{{self.matchers(canary)}}}[{window_seconds}s]))"

    def p99_ms(self, canary: bool) -> str:
        # Triton's summaries are per pod over its own sliding window: the slowest pod's p99.
        matchers = f'{self.matchers(canary)},quantile="{P99}"'
        return f"max(nv_inference_request_summary_us{{{matchers}}}) / 1000"


def read_readings(base_url: str, revisions: Revisions, window_seconds: int) -> Readings:
    """The canary's successes and failures over the window, and both revisions' p99."""

    def one(expr: str) -> float | None:
        values = query(base_url, expr)
        return values[0] if values else None

    window = max(int(window_seconds), 2)
    success = one(revisions.increase("nv_inference_request_success", True, window)) or 0.0
    failure = one(revisions.increase("nv_inference_request_failure", True, window)) or 0.0
    return Readings(
        canary_success=success,
        canary_failure=failure,
        canary_p99_ms=one(revisions.p99_ms(True)),
        stable_p99_ms=one(revisions.p99_ms(False)),
    )
