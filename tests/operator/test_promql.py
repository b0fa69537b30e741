"""The canary's PromQL: queries name the labels the pod scrape job really makes, and an
unreadable Prometheus is an error the planner can hold on (not a traceback)."""

from __future__ import annotations

import socket

import pytest

from optiserve.render.canary import LABEL_REVISION
from optiserve.render.kubernetes import LABEL_MODEL
from optiserve_operator.promql import PromQLError, Revisions, query, read_readings
from optiserve_testing.prometheus import _label_name


def test_queries_select_each_revision_by_the_mapped_pod_labels() -> None:
    revisions = Revisions("ml", "digits")
    canary = revisions.increase("nv_inference_request_failure", True, 60)
    stable = revisions.p99_ms(False)
    model_label, revision_label = _label_name(LABEL_MODEL), _label_name(LABEL_REVISION)
    assert f'{model_label}="digits"' in canary and f'{revision_label}="canary"' in canary
    assert "[60s]" in canary and canary.startswith("sum(increase(nv_inference_request_failure{")
    # The stable's pods carry revision "stable" (or, rolled before that label, none).
    assert f'{revision_label}!="canary"' in stable and 'quantile="0.99"' in stable
    assert stable.startswith("max(nv_inference_request_summary_us{") and stable.endswith("/ 1000")


def test_an_unreachable_prometheus_is_a_promql_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(PromQLError, match="cannot be read"):
            query(f"http://127.0.0.1:{port}", "up", timeout=2)
        with pytest.raises(PromQLError):
            read_readings(f"http://127.0.0.1:{port}", Revisions("ml", "digits"), 30)
