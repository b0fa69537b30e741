"""The ``ServingTuned`` condition: what the Job's ``serving.tuning`` search concluded. Pure.

True when a config met the p99 budget; False with ``BudgetMissed`` when none did (the best
effort is served, the message has the numbers) or ``NotTuned`` when the search could not run
(the spec's settings are served, the message says why). Absent while no artifact was tuned;
set to False (``NotRequested``) when tuning is taken out of a spec that had it, so an old
verdict does not linger.
"""

from __future__ import annotations

from collections.abc import Sequence

from optiserve.api.status import Artifact, Condition, ConditionStatus
from optiserve_operator.conditions import Wanted
from optiserve_operator.summary import redact

SERVING_TUNED = "ServingTuned"
REASONS = {"tuned": "WithinBudget", "bestEffort": "BudgetMissed", "untuned": "NotTuned"}


def tuning_conditions(artifact: Artifact | None, current: Sequence[Condition]) -> list[Wanted]:
    tuning = artifact.tuning if artifact is not None else None
    if tuning is None:
        if any(c.type == SERVING_TUNED for c in current):
            return [Wanted(SERVING_TUNED, "False", "NotRequested", "serving.tuning is not set")]
        return []
    status: ConditionStatus = "True" if tuning.outcome == "tuned" else "False"
    return [Wanted(SERVING_TUNED, status, REASONS[tuning.outcome], redact(tuning.message))]
