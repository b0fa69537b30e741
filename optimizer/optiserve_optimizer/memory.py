"""The optimizer process's peak resident memory (Linux ``getrusage``: ``ru_maxrss`` in KiB),
for the report: what a Job's memory request must cover. ``children`` is the largest of the
waited-for child processes (the serving-footprint probe runs in one)."""

from __future__ import annotations

import resource
import sys


def _bytes(maxrss: int) -> int:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    return maxrss if sys.platform == "darwin" else maxrss * 1024


def peak_rss() -> dict[str, int]:
    return {
        "peakRssBytes": _bytes(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss),
        "childrenPeakRssBytes": _bytes(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss),
    }
