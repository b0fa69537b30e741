"""``serving.tuning`` as the image tests run it: one short search, and how its result reads.

The images tier (tests/images) runs the search inside the optimizer image itself; the e2e from
the images (tests/e2e/test_images_e2e.py) gets it from the Job's pod through the model's
status. Both ask for the same search and read its summary (``TuningSummary``'s wire form, as
``status.serving.tuning`` holds it) the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Short: two configs, one-second windows. Against images without the serve extra this ended
# in ServingTuned False/NotTuned (TritonNotFoundError), the bug the e2e guards against.
SHORT_TUNING: dict[str, Any] = {
    "latencyBudgetMs": 1000,
    "concurrency": [4],
    "maxTrials": 2,
    "maxSeconds": 60,
    "trialSeconds": 1,
    "warmupSeconds": 1,
}


def short_search_problems(summary: Mapping[str, Any]) -> list[str]:
    """What says the search of ``SHORT_TUNING`` did not tune; empty when it did (both configs
    measured, one chosen with a throughput)."""
    problems = []
    if summary.get("outcome") != "tuned":
        problems.append(f"outcome {summary.get('outcome')!r}, not 'tuned'")
    if summary.get("trials") != SHORT_TUNING["maxTrials"]:
        problems.append(f"{summary.get('trials')} trials, not {SHORT_TUNING['maxTrials']}")
    if not (summary.get("throughputRps") or 0) > 0:
        problems.append(f"no throughput for the chosen config: {summary.get('throughputRps')}")
    return problems
