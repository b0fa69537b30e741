"""metav1.Condition bookkeeping and the status a reconcile pass reports. Pure.

A condition keeps its ``lastTransitionTime`` while its status stays the same, so tools that
watch transitions (kstatus, Argo CD, ``kubectl wait``) see real changes only. Every condition
carries the generation it was computed for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from optiserve.api.status import (
    DEGRADED,
    OPTIMIZED,
    PROGRESSING,
    READY,
    RECONCILING,
    STALLED,
    Condition,
    ConditionStatus,
    Phase,
)

# Order in which conditions appear in status (stable order keeps diffs quiet).
CONDITION_ORDER = (READY, OPTIMIZED, PROGRESSING, DEGRADED, RECONCILING, STALLED)

# Reasons (CamelCase, as the API requires).
REASON_READY = "Ready"
REASON_OPTIMIZED = "Optimized"
REASON_OPTIMIZING = "Optimizing"
REASON_JOB_FAILED = "OptimizationFailed"
REASON_SUMMARY_UNREADABLE = "SummaryUnreadable"
REASON_ROLLING_OUT = "RollingOut"
REASON_DEADLINE = "ProgressDeadlineExceeded"
REASON_ROLLED_BACK = "RolledBack"
REASON_INVALID = "InvalidSpec"
REASON_POLICY_DENIED = "PolicyDenied"  # the spec asks for what optiserve.policy refuses
REASON_COMPLETE = "Complete"
REASON_AS_EXPECTED = "AsExpected"
REASON_FAILED = "Failed"


@dataclass(frozen=True)
class Wanted:
    """A condition as a reconcile pass wants it, before times and generations are added."""

    type: str
    status: ConditionStatus
    reason: str
    message: str = ""


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    current: Sequence[Condition], wanted: Iterable[Wanted], now: str, generation: int
) -> list[Condition]:
    """The new condition list: ``wanted`` replaces same-typed entries of ``current``.

    ``lastTransitionTime`` moves only when the status changes; conditions of other types
    (set by someone else) are kept as they are.
    """
    by_type = {c.type: c for c in current}
    for want in wanted:
        old = by_type.get(want.type)
        since = old.last_transition_time if old and old.status == want.status else now
        by_type[want.type] = Condition(
            type=want.type,
            status=want.status,
            reason=want.reason,
            message=want.message,
            last_transition_time=since,
            observed_generation=generation,
        )
    rank = {t: i for i, t in enumerate(CONDITION_ORDER)}
    return sorted(by_type.values(), key=lambda c: (rank.get(c.type, len(rank)), c.type))


def find(conditions: Sequence[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: Sequence[Condition], type_: str) -> bool:
    found = find(conditions, type_)
    return found is not None and found.status == "True"


@dataclass(frozen=True)
class Outcome:
    """What a pass concluded, in the few words the conditions are derived from."""

    phase: Phase
    optimized: Wanted  # the Optimized condition, decided by the optimization step
    reason: str  # why the phase is what it is (used by Ready/Progressing/Degraded)
    message: str
    # In progress, but cannot move on by itself (a Job pod nothing can schedule or pull):
    # Degraded and Stalled say why, while the Job stays in case the cause goes away.
    stuck: bool = False


def conditions_for(outcome: Outcome) -> list[Wanted]:
    """Ready, Optimized, Progressing, Degraded and kstatus's Reconciling/Stalled for a phase.

    kstatus (Flux, ``kstatus`` CLI) reads Reconciling=True as "in progress" and Stalled=True as
    "failed"; Argo CD's health check reads Ready and Degraded (see docs/operator.md).
    """
    phase, reason, message = outcome.phase, outcome.reason, outcome.message
    in_progress = phase in ("Pending", "Optimizing", "Deploying")
    failed = phase == "Failed" or outcome.stuck
    ready = phase == "Ready"
    return [
        Wanted(READY, "True" if ready else "False", REASON_READY if ready else reason, message),
        outcome.optimized,
        Wanted(
            PROGRESSING,
            "True" if in_progress else "False",
            reason if in_progress else (REASON_FAILED if failed else REASON_COMPLETE),
            message if in_progress or failed else "",
        ),
        Wanted(
            DEGRADED,
            "True" if failed else "False",
            reason if failed else REASON_AS_EXPECTED,
            message if failed else "",
        ),
        Wanted(
            RECONCILING,
            "True" if in_progress and not outcome.stuck else "False",
            reason,
            message if in_progress and not outcome.stuck else "",
        ),
        Wanted(STALLED, "True" if failed else "False", reason, message if failed else ""),
    ]
