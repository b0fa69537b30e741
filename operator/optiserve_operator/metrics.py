"""Prometheus metrics of the operator itself (not of Triton)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from optiserve.api.status import DEGRADED, OPTIMIZED, PROGRESSING, READY, RECONCILING, STALLED

CONDITION_TYPES = (READY, OPTIMIZED, PROGRESSING, DEGRADED, RECONCILING, STALLED)

RECONCILES = Counter("optiserve_reconciles_total", "Reconcile passes, by result.", ["result"])
ERRORS = Counter(
    "optiserve_reconcile_errors_total", "Reconcile passes that raised, by error type.", ["error"]
)
DURATION = Histogram(
    "optiserve_reconcile_duration_seconds",
    "Wall time of one reconcile pass (API calls included).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PHASE_SECONDS = Histogram(
    "optiserve_phase_duration_seconds",
    "Time an OptimizedModel spent in a phase before leaving it.",
    ["phase"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200),
)
MODELS = Gauge("optiserve_models", "OptimizedModels by phase, as last reconciled.", ["phase"])
QUEUE_DEPTH = Gauge("optiserve_workqueue_depth", "Keys waiting for a worker.")
CHILD_OPERATIONS = Counter(
    "optiserve_child_operations_total", "Writes to child objects.", ["kind", "verb"]
)
API_REQUESTS = Counter(
    "optiserve_api_requests_total",
    "Requests of the reconcile workers to the API server (watches are kopf's), by HTTP method "
    "and status code (429: throttled by the server, retried after its Retry-After).",
    ["method", "code"],
)
CLIENT_WAIT = Counter(
    "optiserve_client_rate_limit_wait_seconds_total",
    "Seconds the workers waited for the client-side rate limit (--api-qps, --api-burst).",
)
MODEL_CONDITIONS = Gauge(
    "optiserve_model_condition",
    "1 while an OptimizedModel's condition of this type is True, else 0 (alerts read Degraded, "
    "Stalled, Optimized and Ready).",
    ["namespace", "name", "type"],
)


def publish_conditions(namespace: str, name: str, conditions: dict[str, str]) -> None:
    """One series per condition type of the model: its status as 1 or 0."""
    for type_, status in conditions.items():
        MODEL_CONDITIONS.labels(namespace, name, type_).set(1.0 if status == "True" else 0.0)


def forget_model(namespace: str, name: str) -> None:
    """Drops a deleted model's series, so an alert on it resolves instead of lingering."""
    for type_ in CONDITION_TYPES:
        try:
            MODEL_CONDITIONS.remove(namespace, name, type_)
        except KeyError:
            continue
