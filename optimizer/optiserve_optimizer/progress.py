"""Human-readable progress: one line per pass with elapsed time, and a final candidates table."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO


@dataclass
class Progress:
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    started: float = field(default_factory=time.monotonic)

    def line(self, text: str) -> None:
        total = time.monotonic() - self.started
        print(f"[{total:7.1f}s] {text}", file=self.stream, flush=True)

    @contextmanager
    def step(self, candidate: str, pass_name: str) -> Iterator[dict[str, Any]]:
        """Times a pass; the body may put short metrics into the yielded dict."""
        info: dict[str, Any] = {}
        begun = time.monotonic()
        try:
            yield info
        except Exception as exc:
            self.line(
                f"{candidate:<28} {pass_name:<12} FAILED after "
                f"{time.monotonic() - begun:.2f}s: {exc}"
            )
            raise
        shown = " ".join(f"{k}={_fmt(v)}" for k, v in info.items())
        self.line(f"{candidate:<28} {pass_name:<12} {time.monotonic() - begun:6.2f}s {shown}")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


COLUMNS = (
    "name",
    "precision",
    "latency_ms",
    "throughput",
    "speedup",
    "accuracy_drop",
    "size_bytes",
    "verdict",
)


def candidates_table(rows: Sequence[dict[str, Any]]) -> str:
    """A markdown table of candidate dicts (report.json's ``candidates``)."""
    header = "| " + " | ".join(COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = []
    for row in rows:
        verdict = "CHOSEN" if row.get("chosen") else ("pass" if row.get("passed") else "fail")
        if row.get("reason") and not row.get("chosen"):
            verdict += f" ({row['reason']})"
        cells = [row.get(c) if c != "verdict" else verdict for c in COLUMNS]
        body.append("| " + " | ".join("-" if v is None else _fmt(v) for v in cells) + " |")
    return "\n".join([header, rule, *body])
