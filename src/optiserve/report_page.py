"""``report.html``: the optimizer's decision as a page a person reads. Pure: report in, HTML out.

The page is self-contained so that it opens from a model store, a laptop or an air-gapped
cluster alike: charts are inline SVG drawn here, styles are inline, there is no script, and a
Content-Security-Policy of ``default-src 'none'`` means a browser would refuse any request the
page tried to make. Every value that came from a spec or a model (names, reasons) is escaped.

It reads ``report.json`` as the optimizer writes it and shows what is there: the candidates
ladder (throughput against accuracy drop, the gate drawn, the winner marked), latency
percentiles per candidate, sizes, the measurement conditions, what was checked and the tuning
trials. Sections whose data a report does not have are left out, not faked.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from optiserve.report_tuning import tuning_section

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
PASS_COLOUR, FAIL_COLOUR, CHOSEN_COLOUR = "#2e7d32", "#c62828", "#1565c0"
STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#1b1b1b}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.sub{color:#555}.cards{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}
.card{border:1px solid #ddd;border-radius:6px;padding:10px 14px;min-width:150px}
.card b{display:block;font-size:20px}table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #e4e4e4;padding:5px 8px;text-align:right;vertical-align:top}
th:first-child,td:first-child,td.l{text-align:left}tr.chosen{background:#e8f0fe}
.pass{color:#2e7d32}.fail{color:#c62828}code{font-size:12px}svg text{font-size:11px}
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(value: Any, digits: int = 2, unit: str = "") -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "-"
    return f"{value:,.{digits}f}{unit}"


def _size(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return "-"  # unreachable: the loop returns at GiB


def candidates(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ladder rows with each candidate's benchmark and accuracy details merged in."""
    details: Mapping[str, Any] = report.get("candidateDetails") or {}
    rows = []
    for row in report.get("candidates") or []:
        extra = details.get(row.get("name"), {})
        rows.append({**row, "benchmark": extra.get("benchmark", {}), "steps": extra.get("steps")})
    return rows


def ladder_svg(rows: Sequence[Mapping[str, Any]], max_drop: float | None, baseline: Any) -> str:
    """Throughput (y, log scale when it spans more than 20x) against accuracy drop (x), one
    point per candidate with a throughput: green passed, red failed, a ring round the winner;
    the gate (``maxDrop``) a dashed vertical line, the baseline a dashed horizontal one."""
    width, height, left, bottom, top, right = 760, 360, 96, 40, 20, 170
    points = [
        (r, float(r["accuracyDrop"] if r.get("accuracyDrop") is not None else math.nan), t)
        for r in rows
        if isinstance(t := r.get("throughput"), int | float) and t > 0
    ]
    ys = [t for _, _, t in points] + ([baseline] if isinstance(baseline, int | float) else [])
    if not points or not ys or min(ys) <= 0:
        return "<p class='sub'>No candidate has a throughput to plot.</p>"
    drops = [d for _, d, _ in points if math.isfinite(d)]
    x_max = max([*drops, max_drop or 0.0, 1e-6]) * 1.15
    lo, hi = min(ys), max(ys)
    log = hi / lo > 20
    if log:
        y_lo, y_hi = math.log10(lo) - 0.1, math.log10(hi) + 0.1
    else:
        y_lo, y_hi = 0.0, hi * 1.15

    def x_of(drop: float) -> float:
        return left + (width - left - right) * (drop / x_max if math.isfinite(drop) else 1.0)

    def y_of(value: float) -> float:
        v = math.log10(value) if log else value
        return top + (height - top - bottom) * (1 - (v - y_lo) / (y_hi - y_lo))

    out = [
        f'<svg role="img" aria-label="candidates ladder" id="ladder" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">',
        f'<rect x="{left}" y="{top}" width="{width - left - right}" '
        f'height="{height - top - bottom}" fill="none" stroke="#999"/>',
        f'<text x="{(width - right + left) / 2}" y="{height - 8}" text-anchor="middle">'
        "accuracy drop (gate metric)</text>",
        f'<text x="14" y="{(height - bottom + top) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 14 {(height - bottom + top) / 2})">'
        f"throughput, samples/s{' (log)' if log else ''}</text>",
        f'<text x="{left - 4}" y="{y_of(hi) + 4:.1f}" text-anchor="end">{_num(hi, 0)}</text>',
        f'<text x="{left - 4}" y="{y_of(lo) + 4:.1f}" text-anchor="end">{_num(lo, 0)}</text>',
        f'<text x="{left}" y="{height - bottom + 14}" text-anchor="middle">0</text>',
    ]
    if max_drop is not None:
        gx = x_of(max_drop)
        out += [
            f'<line class="gate" x1="{gx:.1f}" x2="{gx:.1f}" y1="{top}" '
            f'y2="{height - bottom}" stroke="#c62828" stroke-dasharray="5,4"/>',
            f'<text x="{gx:.1f}" y="{height - bottom + 14}" text-anchor="middle" '
            f'fill="#c62828">gate {max_drop:g}</text>',
        ]
    if isinstance(baseline, int | float) and baseline > 0:
        by = y_of(baseline)
        out += [
            f'<line class="baseline" x1="{left}" x2="{width - right}" y1="{by:.1f}" '
            f'y2="{by:.1f}" stroke="#777" stroke-dasharray="2,3"/>',
            f'<text x="{width - right + 4}" y="{by + 4:.1f}">baseline</text>',
        ]
    for row, drop, throughput in points:
        cx, cy = x_of(drop), y_of(throughput)
        colour = PASS_COLOUR if row.get("passed") else FAIL_COLOUR
        out.append(
            f'<circle class="candidate" data-name="{esc(row.get("name"))}" cx="{cx:.1f}" '
            f'cy="{cy:.1f}" r="5" fill="{colour}"><title>{esc(row.get("name"))}: '
            f"{_num(throughput, 1)}/s, drop {_num(drop, 4)}</title></circle>"
        )
        if row.get("chosen"):
            out.append(
                f'<circle class="winner" cx="{cx:.1f}" cy="{cy:.1f}" r="10" fill="none" '
                f'stroke="{CHOSEN_COLOUR}" stroke-width="2"/>'
            )
        out.append(f'<text x="{cx + 8:.1f}" y="{cy - 6:.1f}">{esc(row.get("name"))}</text>')
    out.append("</svg>")
    return "\n".join(out)


def latency_svg(rows: Sequence[Mapping[str, Any]]) -> str:
    """p50 bars with a whisker to p99, one row per candidate that was timed."""
    timed = [
        (r, b)
        for r in rows
        if isinstance((b := r.get("benchmark") or {}).get("p50_ms"), int | float)
    ]
    if not timed:
        return ""
    longest = max(float(b.get("p99_ms") or b["p50_ms"]) for _, b in timed) or 1.0
    bar_h, left, width = 22, 190, 720
    height = bar_h * len(timed) + 30
    scale = (width - left - 210) / longest  # room for the label after the longest whisker
    out = [
        f'<svg role="img" aria-label="latency per candidate" id="latency" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">'
    ]
    for i, (row, bench) in enumerate(timed):
        y = 10 + i * bar_h
        p50, p99 = float(bench["p50_ms"]), float(bench.get("p99_ms") or bench["p50_ms"])
        colour = PASS_COLOUR if row.get("passed") else FAIL_COLOUR
        out += [
            f'<text x="{left - 6}" y="{y + 14}" text-anchor="end">{esc(row.get("name"))}</text>',
            f'<rect x="{left}" y="{y + 3}" width="{max(p50 * scale, 1):.1f}" height="14" '
            f'fill="{colour}" opacity="0.75"/>',
            f'<line x1="{left + p50 * scale:.1f}" x2="{left + p99 * scale:.1f}" y1="{y + 10}" '
            f'y2="{y + 10}" stroke="#333"/>',
            f'<text x="{left + p99 * scale + 6:.1f}" y="{y + 14}">p50 {_num(p50, 3)} / p99 '
            f"{_num(p99, 3)} ms</text>",
        ]
    out.append("</svg>")
    return "\n".join(out)


def _table(head: Sequence[str], body: Sequence[Sequence[str]], classes: Sequence[str]) -> str:
    rows = "".join(
        f'<tr class="{css}">' + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>"
        for row, css in zip(body, classes, strict=True)
    )
    return "<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>" + rows + "</table>"


def _candidates_table(rows: Sequence[Mapping[str, Any]]) -> str:
    body, classes = [], []
    for r in rows:
        bench = r.get("benchmark") or {}
        verdict = "passed" if r.get("passed") else "failed"
        body.append(
            [
                esc(r.get("name")) + (" <b>(chosen)</b>" if r.get("chosen") else ""),
                esc(r.get("precision")),
                _num(bench.get("p50_ms", r.get("latencyMs")), 3),
                _num(bench.get("p95_ms"), 3),
                _num(bench.get("p99_ms"), 3),
                _num(r.get("throughput"), 1),
                _size(r.get("sizeBytes")),
                _num(r.get("accuracyDrop"), 4),
                f'<span class="{"pass" if r.get("passed") else "fail"}">{verdict}</span>',
                f'<span class="l">{esc(r.get("reason"))}</span>',
            ]
        )
        classes.append("candidate chosen" if r.get("chosen") else "candidate")
    head = ["candidate", "precision", "p50 ms", "p95 ms", "p99 ms", "samples/s", "size"]
    return _table([*head, "accuracy drop", "gate", "why"], body, classes)


def _key_values(title: str, values: Mapping[str, Any]) -> str:
    if not values:
        return ""
    body = [[esc(k), f"<code>{esc(_plain(v))}</code>"] for k, v in values.items()]
    return f"<h2>{esc(title)}</h2>" + _table(["", ""], body, [""] * len(body))


def _plain(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_plain(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_plain(v) for v in value)
    return str(value)


def _list_section(title: str, items: Any) -> str:
    """A table of dicts (checks, tuning trials), columns from the union of their keys."""
    if not isinstance(items, list) or not items:
        return ""
    dicts = [i if isinstance(i, Mapping) else {"value": i} for i in items]
    keys: list[str] = []
    for item in dicts:
        keys += [k for k in item if k not in keys]
    body = [[esc(_plain(item.get(k, ""))) for k in keys] for item in dicts]
    return f"<h2>{esc(title)}</h2>" + _table(keys, body, [""] * len(body))


def render_report_page(report: Mapping[str, Any]) -> str:
    rows = candidates(report)
    metrics: Mapping[str, Any] = report.get("metrics") or {}
    baseline: Mapping[str, Any] = report.get("baseline") or {}
    accuracy: Mapping[str, Any] = (report.get("optimization") or {}).get("accuracy") or {}
    max_drop = accuracy.get("maxDrop")
    artifact: Mapping[str, Any] = report.get("artifact") or {}
    chosen = report.get("chosen") or "-"
    cards = [
        ("chosen", esc(chosen)),
        ("speedup", esc(metrics.get("speedup") or "-")),
        ("against", esc(baseline.get("runtime") or "-")),
        ("accuracy drop", f"{_num(metrics.get('accuracyDrop'), 4)} / {esc(max_drop)}"),
        ("size ratio", _num(metrics.get("sizeRatio"), 2, "x")),
    ]
    tuning = report.get("tuning") or {}
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        f"<title>optiserve report: {esc(report.get('name'))}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{esc(report.get('name'))}: {esc(chosen)}</h1>",
        f"<div class='sub'>recipe <code>{esc(str(report.get('recipeDigest', ''))[:12])}</code>"
        f" · created {esc(report.get('createdAt'))} · artifact "
        f"<code>{esc(artifact.get('uri'))}</code></div>",
        "<div class='cards'>"
        + "".join(f"<div class='card'>{esc(k)}<b>{v}</b></div>" for k, v in cards)
        + "</div>",
    ]
    if report.get("fallbackReason"):
        parts.append(f"<p class='fail'>{esc(report['fallbackReason'])}</p>")
    parts += [
        "<h2>Candidates</h2>",
        ladder_svg(rows, max_drop, baseline.get("throughput")),
        _candidates_table(rows),
        "<h2>Latency</h2>" if any((r.get("benchmark") or {}) for r in rows) else "",
        latency_svg(rows),
        _key_values("Baseline", baseline),
        _key_values("Measurement", report.get("measurement") or {}),
        _list_section("What was checked", report.get("checks")),
        tuning_section(tuning),  # the verdict and a throughput/p99 scatter (report_tuning.py)
        _list_section("Tuning trials", tuning.get("trials") if isinstance(tuning, dict) else None),
        _list_section("Plan", report.get("plan")),
        _list_section("Notes", report.get("notes")),
        _key_values("Tools", report.get("tools") or {}),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"
