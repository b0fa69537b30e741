"""Which failures are the user's to fix and which will pass by themselves. Pure.

The same split as kopf's ``PermanentError`` / ``TemporaryError`` (docs/errors.rst), decided
from the error itself rather than by each call site:

* **permanent** (a user error): the spec cannot be rendered (``ValueError`` and friends from
  ``optiserve.render``), or the API server refuses a child the spec describes: 400/422
  ``Invalid``/``BadRequest`` (a name too long for a Service, a bad quantity, an invalid
  selector key), 403 ``Forbidden`` (an admission policy, a quota, Pod Security), 404 (a
  resource type not installed, such as KEDA's ScaledObject), 413 (too large). Retrying the
  same request gives the same answer, so the model is marked ``Stalled`` with the API
  server's reason and is not tried again until its spec (generation) or retry token changes.
* **transient**: 5xx, 401, 408, 409 conflicts, 429, timeouts and connection errors, and
  anything else unexpected. Retried with backoff; the last error is shown in a condition meanwhile.

Messages are one bounded line with credentials removed; never a traceback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from optiserve.api.status import (
    DEGRADED,
    OPTIMIZED,
    PROGRESSING,
    READY,
    RECONCILING,
    STALLED,
    OptimizedModelStatus,
)
from optiserve_operator import conditions as c
from optiserve_operator.kube_transport import KubeError
from optiserve_operator.summary import redact

# Condition reasons of permanent failures; a model stalled with one of them waits for a
# spec change (see failures.held).
REASON_RENDER_FAILED = "RenderFailed"
REASON_CHILD_REJECTED = "ChildRejected"
REASON_FORBIDDEN = "Forbidden"
REASON_INVALID_NAME = "InvalidName"
PERMANENT_REASONS = frozenset(
    {REASON_RENDER_FAILED, REASON_CHILD_REJECTED, REASON_FORBIDDEN, REASON_INVALID_NAME}
)
REASON_TRANSIENT = "TransientError"

# The API server's NamespaceLifecycle admission refuses every create in a namespace being
# deleted: 403 Forbidden, `jobs.batch "x" is forbidden: unable to create new content in
# namespace ml because it is being terminated`. Not the model's fault and nothing to retry:
# the model goes with its namespace.
_NAMESPACE_TERMINATING = re.compile(
    r"unable to create new content in namespace \"?([a-z0-9.-]+)\"? "
    r"because it is being terminated"
)

# 4xx answers that say "try again later" rather than "never like this": expired
# credentials (refreshed on the next call), a request timeout, a conflict, throttling.
_RETRYABLE_4XX = frozenset({401, 408, 409, 429})
# Exceptions a renderer raises for a spec it cannot turn into a manifest.
RENDER_ERRORS: tuple[type[Exception], ...] = (ValueError, TypeError, LookupError, ArithmeticError)
MESSAGE_LIMIT = 512


# The Service shares the model's name (an RFC 1035 label) and every child carries it as a
# label value: both allow at most 63 characters.
_SERVICE_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name the model's children, or None when it can."""
    if _SERVICE_NAME.match(name):
        return None
    shown = name if len(name) <= 80 else name[:77] + "..."
    return (
        f"the name {shown!r} ({len(name)} characters) cannot name the model's Service nor "
        "label its children: use at most 63 lower-case letters, digits and '-', starting "
        "with a letter and ending with a letter or digit"
    )


@dataclass(frozen=True)
class Failure:
    permanent: bool
    reason: str  # CamelCase condition/event reason
    message: str  # one redacted line, at most MESSAGE_LIMIT characters


def render_failure(doing: str, err: BaseException) -> Failure:
    """A renderer refused the spec: the user's to fix."""
    return Failure(True, REASON_RENDER_FAILED, _message(doing, _describe(err)))


def classify(doing: str, err: BaseException) -> Failure:
    """``err`` raised while ``doing`` (e.g. "create Job tiny-opt-1a2b"), classified."""
    if isinstance(err, KubeError):
        text = f"{err.status} {err.reason}: {err.message}".rstrip(": ")
        if 400 <= err.status < 500 and err.status not in _RETRYABLE_4XX:
            # 400/422 invalid, 403 forbidden (RBAC, an admission policy, a quota, Pod
            # Security), 404 (a resource type not installed, e.g. KEDA's), 413 too large.
            reason = REASON_FORBIDDEN if err.status == 403 else REASON_CHILD_REJECTED
            return Failure(True, reason, _message(doing, f"refused by the API server: {text}"))
        return Failure(False, REASON_TRANSIENT, _message(doing, text))
    return Failure(False, REASON_TRANSIENT, _message(doing, _describe(err)))


def terminating_namespace(err: BaseException) -> str | None:
    """The namespace, when ``err`` is the API server refusing a create because that namespace
    is being deleted; None for any other error."""
    if isinstance(err, KubeError) and err.status == 403:
        found = _NAMESPACE_TERMINATING.search(err.message)
        if found is not None:
            return found.group(1)
    return None


def _describe(err: BaseException) -> str:
    # The exception's class and text (never a traceback); ``_message`` makes it one line
    # and bounds it.
    text = str(err).strip()
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _message(doing: str, text: str) -> str:
    return redact(f"{doing}: {text}" if doing else text, MESSAGE_LIMIT)


def held(status: OptimizedModelStatus, generation: int, wanted_job: str) -> bool:
    """A permanent failure is already reported for this generation and retry token.

    Trying again would be refused the same way, so nothing happens until the spec
    (``metadata.generation``) or the ``optiserve.io/retry`` annotation changes: no retry loop,
    no repeated Warning event.
    """
    stalled = c.find(status.conditions, STALLED)
    return (
        stalled is not None
        and stalled.status == "True"
        and stalled.reason in PERMANENT_REASONS
        and stalled.observed_generation == generation
        and status.observed_generation == generation
        and status.job_name == wanted_job
    )


def stalled_status(
    status: OptimizedModelStatus, generation: int, failure: Failure, now: str
) -> OptimizedModelStatus:
    """``status`` with a permanent failure reported: Failed, Stalled and Degraded say why.

    An ``Optimized=True`` condition stays (an artifact that exists is not undone because its
    Deployment was refused); anything else says the optimization cannot go on either.
    """
    message = redact(failure.message)
    wanted = [
        c.Wanted(READY, "False", failure.reason, message),
        c.Wanted(PROGRESSING, "False", c.REASON_FAILED, message),
        c.Wanted(DEGRADED, "True", failure.reason, message),
        c.Wanted(RECONCILING, "False", failure.reason, ""),
        c.Wanted(STALLED, "True", failure.reason, message),
    ]
    if not c.is_true(status.conditions, OPTIMIZED):
        wanted.append(c.Wanted(OPTIMIZED, "False", failure.reason, message))
    return status.model_copy(
        update={
            "observed_generation": generation,
            "phase": "Failed",
            "conditions": c.merge_conditions(status.conditions, wanted, now, generation),
        }
    )


def retrying_status(
    status: OptimizedModelStatus, generation: int, failure: Failure, now: str
) -> OptimizedModelStatus:
    """``status`` noting a transient failure that is being retried (the rest unchanged).

    The message names no attempt count or delay, so repeated failures write nothing new and
    the status write does not itself trigger another pass.
    """
    wanted = [c.Wanted(RECONCILING, "True", failure.reason, redact(failure.message))]
    return status.model_copy(
        update={"conditions": c.merge_conditions(status.conditions, wanted, now, generation)}
    )
