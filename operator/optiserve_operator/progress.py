"""What a running optimizer has done so far, read from the tail of its log. Pure.

The optimizer prints one line per finished pass (``optiserve_optimizer.progress.Progress``):

    [   12.3s] int8-dynamic                 quantize       0.84s nodes=42
    [   13.0s] int8-dynamic                 gate+bench     0.61s drop=0.001 passed=True ...

and, at the start, the plan, one bare ``name: step -> step`` line per candidate after a
``recipe <digest>; plan:`` line. A candidate is finished when its ``gate+bench`` line is
there. The operator reads only a bounded tail of the log (see ``kube.Kube.pod_log``), so the
count is of what that tail shows, and the plan's size is known only while its lines are in it.
Reading the log needs no change to the optimizer's image, no write access for the Job's pod
(its service account token is not mounted) and no sidecar; it needs ``get`` on ``pods/log``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from optiserve_operator.summary import redact

_TIMED = re.compile(r"^\[\s*(?P<elapsed>\d+(?:\.\d+)?)s\] (?P<text>.*)$")
_STEP = re.compile(r"^(?P<candidate>\S+)\s+(?P<pass>\S+)\s+(?P<rest>(?:FAILED|\d).*)$")
_PLAN_HEADER = re.compile(r"^recipe \S+; plan:$")
_PLAN_LINE = re.compile(r"^(?P<candidate>[^\s:]+): \S")
FINISHING_PASS = "gate+bench"
MAX_NAMES = 8
MAX_TEXT = 300


@dataclass(frozen=True)
class JobProgress:
    elapsed_s: float
    last_step: str  # "<candidate> <pass>" of the last pass that finished, "" if none yet
    finished: tuple[str, ...]  # candidates gated and benchmarked, in order
    planned: int | None  # candidates in the plan, when the plan is in the tail read

    def describe(self) -> str:
        """One short line for a condition message."""
        parts = [f"{self.elapsed_s:.0f}s in"]
        if self.planned is not None:
            parts.append(f"{len(self.finished)} of {self.planned} candidates finished")
        else:
            parts.append(f"{len(self.finished)} candidates finished")
        if self.finished:
            names = ", ".join(self.finished[-MAX_NAMES:])
            more = "..., " if len(self.finished) > MAX_NAMES else ""
            parts[-1] += f" ({more}{names})"
        if self.last_step:
            parts.append(f"last step {self.last_step}")
        return redact("; ".join(parts), MAX_TEXT)


def parse_progress(log: str) -> JobProgress | None:
    """The progress the log tail shows; None when it shows none of the optimizer's lines."""
    elapsed: float | None = None
    last_step = ""
    finished: list[str] = []
    planned: int | None = None
    in_plan = False
    for line in log.splitlines():
        timed = _TIMED.match(line.rstrip())
        if timed is None:
            # Bare lines continue a multi-line message: the plan's candidates, or a table.
            if in_plan and _PLAN_LINE.match(line) and not line.startswith("note:"):
                planned = (planned or 0) + 1
            continue
        elapsed = float(timed["elapsed"])
        text = timed["text"]
        in_plan = bool(_PLAN_HEADER.match(text))
        if in_plan:
            planned = 0
            continue
        step = _STEP.match(text)
        if step is None:
            continue
        failed = step["rest"].startswith("FAILED")
        last_step = f"{step['candidate']} {step['pass']}" + (" (failed)" if failed else "")
        if step["pass"] == FINISHING_PASS and not failed and step["candidate"] not in finished:
            finished.append(step["candidate"])
    if elapsed is None:
        return None
    return JobProgress(elapsed, last_step, tuple(finished), planned)
