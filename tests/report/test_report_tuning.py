"""The report page's tuning section: verdict, scatter of the trials, escaped, never faked."""

from __future__ import annotations

import re

from optiserve.report_page import render_report_page
from optiserve.report_tuning import tuning_section

from .sample_report import HOSTILE, sample_report

TRIALS = [
    {"trial": 1, "throughputRps": 600.0, "p99Ms": 80.0, "withinBudget": True, "chosen": False},
    {"trial": 2, "throughputRps": 800.0, "p99Ms": 60.0, "withinBudget": True, "chosen": True},
    {"trial": 3, "throughputRps": 900.0, "p99Ms": 130.0, "withinBudget": False, "chosen": False},
    {"trial": 4, "note": "load failed: boom", "throughputRps": 0.0, "p99Ms": 0.0},
]
TUNING = {
    "summary": {"outcome": "tuned", "message": "maxBatch 16 ...", "latencyBudgetMs": 100.0},
    "method": "hill climbing",
    "trials": TRIALS,
}


def test_every_trial_that_ran_is_a_point_the_winner_is_ringed_and_the_budget_drawn() -> None:
    page = render_report_page(sample_report(tuning=TUNING))
    section = page[page.index("<h2>Serving tuning</h2>") :]
    assert section.count('r="4"') == 3  # the failed trial 4 has no point
    assert section.count('r="10"') == 1
    assert "p99 budget 100 ms" in section
    assert "<h2>Tuning trials</h2>" in page and "load failed: boom" in page
    # Within the budget is left of the budget line, over it right of it.
    budget_x = float(re.search(r'<line x1="([\d.]+)"[^>]*stroke-dasharray', section)[1])  # type: ignore[index]
    xs = [float(x) for x in re.findall(r'<circle cx="([\d.]+)" cy="[\d.]+" r="4"', section)]
    assert xs[0] < budget_x and xs[1] < budget_x and xs[2] > budget_x


def test_a_budget_miss_reads_as_a_failure_and_user_text_is_escaped() -> None:
    missed = {"summary": {"outcome": "bestEffort", "message": HOSTILE}, "trials": TRIALS}
    section = tuning_section(missed)
    assert "<p class='fail'>bestEffort:" in section
    assert "<script" not in section and "&lt;script&gt;" in section


def test_missing_or_malformed_tuning_renders_nothing_rather_than_failing() -> None:
    assert tuning_section(None) == ""
    assert tuning_section({"trials": "not a list"}) == ""
    odd = {"summary": {"outcome": "untuned"}, "trials": [{"p99Ms": "x", "throughputRps": None}]}
    assert "<svg" not in tuning_section(odd) and "untuned" in tuning_section(odd)
    assert "Serving tuning" not in render_report_page(sample_report())
