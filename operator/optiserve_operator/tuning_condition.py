"""The ``ServingTuned`` condition: what the Job's ``serving.tuning`` search concluded. Pure.

True when a config met the p99 budget; False with ``BudgetMissed`` when none did (the best
effort is served, the message has the numbers) or ``NotTuned`` when the search could not run
(the spec's settings are served, the message says why). Absent while no artifact was tuned;
set to False (``NotRequested``) when tuning is taken out of a spec that had it, so an old
verdict does not linger.

``tuning_events`` gives one Event each time the verdict changes (like ``Exposed``): Normal when
the budget is met or tuning was taken out, Warning when it is missed or the search could not
run. The message counts as a change too: a new artifact tuned to a new config within budget
says its numbers once, while a pass that finds the same verdict says nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from optiserve.api.status import Artifact, Condition, ConditionStatus
from optiserve_operator.conditions import Wanted, find
from optiserve_operator.summary import redact

SERVING_TUNED = "ServingTuned"
REASONS = {"tuned": "WithinBudget", "bestEffort": "BudgetMissed", "untuned": "NotTuned"}
NOT_REQUESTED = "NotRequested"
EventTuple = tuple[Literal["Normal", "Warning"], str, str]


def tuning_conditions(artifact: Artifact | None, current: Sequence[Condition]) -> list[Wanted]:
    tuning = artifact.tuning if artifact is not None else None
    if tuning is None:
        if any(c.type == SERVING_TUNED for c in current):
            return [Wanted(SERVING_TUNED, "False", NOT_REQUESTED, "serving.tuning is not set")]
        return []
    status: ConditionStatus = "True" if tuning.outcome == "tuned" else "False"
    return [Wanted(SERVING_TUNED, status, REASONS[tuning.outcome], redact(tuning.message))]


def tuning_events(old: Sequence[Condition], new: Sequence[Condition]) -> list[EventTuple]:
    """One event when ``ServingTuned`` changes status, reason or message; none while absent."""
    before, after = find(old, SERVING_TUNED), find(new, SERVING_TUNED)
    if after is None:
        return []
    if before and (before.status, before.reason, before.message) == (
        after.status,
        after.reason,
        after.message,
    ):
        return []
    quiet = after.status == "True" or after.reason == NOT_REQUESTED
    return [("Normal" if quiet else "Warning", after.reason, after.message)]
