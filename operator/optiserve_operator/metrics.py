"""Prometheus metrics of the operator itself (not of Triton)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
