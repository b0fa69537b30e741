"""The report page's tuning section: the search's verdict and its trials as an inline SVG
scatter (throughput against p99, the budget as a line, the packaged config circled).

Pure, and as self-contained as the page (``report_page.py``): no script, no fetched image (the
PNG beside report.json is for people browsing the artifact; the page draws its own).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

WITHIN, OVER = "#2e7d32", "#c62828"


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def tuning_svg(trials: Sequence[Mapping[str, Any]], budget_ms: Any) -> str:
    """One dot per trial that ran: x = p99 (ms), y = throughput (requests/s)."""
    points = [
        (t, x, y)
        for t in trials
        if (x := _finite(t.get("p99Ms"))) is not None
        and (y := _finite(t.get("throughputRps"))) is not None
        and y > 0
    ]
    if not points:
        return ""
    budget = _finite(budget_ms)
    width, height, left, bottom, top, right = 640, 300, 70, 40, 16, 20
    x_max = max([x for _, x, _ in points] + ([budget] if budget else [])) * 1.1 or 1.0
    y_max = max(y for _, _, y in points) * 1.1 or 1.0

    def sx(x: float) -> float:
        return left + x / x_max * (width - left - right)

    def sy(y: float) -> float:
        return height - bottom - y / y_max * (height - bottom - top)

    out = [
        f'<svg role="img" aria-label="tuning trials" id="tuning" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" '
        'stroke="#999"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#999"/>',
        f'<text x="{(width + left) / 2}" y="{height - 8}" text-anchor="middle">p99 latency '
        f"(ms, 0 to {x_max:.3g})</text>",
        f'<text x="14" y="{(height - bottom) / 2}" transform="rotate(-90 14 '
        f'{(height - bottom) / 2})" text-anchor="middle">requests/s (0 to {y_max:.4g})</text>',
    ]
    if budget:
        out.append(
            f'<line x1="{sx(budget):.1f}" y1="{top}" x2="{sx(budget):.1f}" '
            f'y2="{height - bottom}" stroke="#777" stroke-dasharray="5,4"/>'
            f'<text x="{sx(budget) + 4:.1f}" y="{top + 10}">p99 budget {budget:g} ms</text>'
        )
    for trial, x, y in points:
        colour = WITHIN if trial.get("withinBudget") else OVER
        out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="4" fill="{colour}"/>')
        out.append(
            f'<text x="{sx(x) + 6:.1f}" y="{sy(y) - 6:.1f}">{_esc(trial.get("trial"))}</text>'
        )
        if trial.get("chosen"):
            out.append(
                f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="10" fill="none" stroke="#1565c0" '
                'stroke-width="2"/>'
            )
    out.append("</svg>")
    return "\n".join(out)


def tuning_section(tuning: Any) -> str:
    """The verdict and the scatter (the trials table follows, from ``report_page``)."""
    if not isinstance(tuning, Mapping):
        return ""
    summary = tuning.get("summary")
    summary = summary if isinstance(summary, Mapping) else {}
    trials = tuning.get("trials")
    trials = [t for t in trials if isinstance(t, Mapping)] if isinstance(trials, list) else []
    if not summary and not trials:
        return ""
    outcome = str(summary.get("outcome") or "")
    css = "pass" if outcome == "tuned" else "fail"
    parts = [
        "<h2>Serving tuning</h2>",
        f"<p class='{css}'>{_esc(outcome)}: {_esc(summary.get('message'))}</p>",
    ]
    if tuning.get("method"):
        parts.append(f"<p class='sub'>{_esc(tuning['method'])}</p>")
    parts.append(tuning_svg(trials, summary.get("latencyBudgetMs")))
    return "\n".join(p for p in parts if p)
