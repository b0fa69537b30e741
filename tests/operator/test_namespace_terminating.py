"""A model whose namespace is being deleted is neither Stalled nor retried.

The API server refuses every create in a terminating namespace with 403 Forbidden (the
NamespaceLifecycle admission plugin). The text below is the answer as the API server sends it
(the same as tests/cluster/test_namespace_terminating_on_apiserver.py receives from the local
control plane); the controller runs a whole pass against a ``Kube`` that answers every create
with it, as the API server would for the model's children.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest

from optiserve_operator.controller import Controller
from optiserve_operator.failures import classify, terminating_namespace
from optiserve_operator.kube_transport import KubeError
from tests.operator.helpers import BASE, CONFIG

# As `kubectl create` prints it and as the Status's message carries it (Kubernetes 1.3x).
ANSWER = (
    'jobs.batch "digits-opt-1a2b3c4d5e" is forbidden: unable to create new content in '
    "namespace ml because it is being terminated"
)


def refused(namespace: str = "ml") -> KubeError:
    return KubeError(403, "Forbidden", ANSWER.replace("namespace ml ", f"namespace {namespace} "))


def test_the_api_servers_answer_names_the_terminating_namespace() -> None:
    assert terminating_namespace(refused()) == "ml"
    assert terminating_namespace(refused("team-a.prod")) == "team-a.prod"
    # Older wording with the name quoted.
    quoted = KubeError(403, "Forbidden", ANSWER.replace("namespace ml ", 'namespace "ml" '))
    assert terminating_namespace(quoted) == "ml"
    # Any other refusal stays what it was (a quota, an admission policy: Stalled).
    quota = KubeError(403, "Forbidden", 'jobs.batch "x" is forbidden: exceeded quota: q')
    assert terminating_namespace(quota) is None
    assert classify("create Job x", quota).permanent
    assert terminating_namespace(KubeError(409, "AlreadyExists", ANSWER)) is None
    assert terminating_namespace(ValueError(ANSWER)) is None


class TerminatingKube:
    """Answers reads with the model and nothing else, and every write that would create
    something (children, dry runs, events) as the API server does in a terminating
    namespace; records status writes."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj
        self.status_writes: list[dict[str, Any]] = []
        self.creates = 0

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Any:
        return copy.deepcopy(self.obj) if kind == "OptimizedModel" else None

    def list(self, *_: Any) -> list[Any]:
        return []

    def apply(self, manifest: Any, subresource: str | None = None, **_: Any) -> Any:
        if subresource == "status":
            self.status_writes.append(manifest["status"])
            return manifest
        if manifest["kind"] == "OptimizedModel":  # the model's own finalizer: an update
            return manifest
        self.creates += 1
        raise refused()

    def create_or_read(self, manifest: Any) -> Any:
        self.creates += 1
        raise refused()

    def emit_event(self, *_: Any) -> None:
        raise refused()


def the_model() -> dict[str, Any]:
    obj = copy.deepcopy(BASE)
    obj["metadata"].update(uid="uid-1", generation=1, resourceVersion="7")
    return obj


def test_a_pass_refused_by_a_terminating_namespace_stalls_nothing_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kube = TerminatingKube(the_model())
    controller = Controller(kube, CONFIG)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="optiserve.operator"):
        for _ in range(3):  # the children's deletions bring pass after pass
            assert controller.reconcile("ml", "digits") is None  # not requeued
    assert kube.creates == 3  # one refused create a pass, then the pass ends
    assert not any(
        cond.get("type") == "Stalled" and cond.get("status") == "True"
        for status in kube.status_writes
        for cond in status.get("conditions", [])
    )
    said = [r for r in caplog.records if "namespace terminating" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.INFO
    assert said[0].getMessage().startswith("namespace terminating: ml: ")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_deleted_model_whose_cleanup_job_cannot_start_lets_its_namespace_go(
    caplog: pytest.LogCaptureFixture,
) -> None:
    obj = the_model()
    obj["spec"]["storage"]["keepArtifactsOnDelete"] = False
    obj["metadata"].update(
        deletionTimestamp="2026-11-27T19:00:00Z", finalizers=["optiserve.io/artifacts"]
    )
    digest = "a" * 64
    obj["status"] = {"artifact": {"digest": digest, "uri": f"pvc://model-store/x/{digest}"}}
    kube = TerminatingKube(obj)
    released: list[dict[str, Any]] = []
    kube_apply = kube.apply

    def apply(manifest: Any, subresource: str | None = None, **kw: Any) -> Any:
        if manifest["kind"] == "OptimizedModel" and subresource is None:
            released.append(manifest)
        return kube_apply(manifest, subresource, **kw)

    kube.apply = apply  # type: ignore[method-assign]
    controller = Controller(kube, CONFIG)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="optiserve.operator"):
        assert controller.reconcile("ml", "digits") is None
    # The finalizer is released (an apply without it), not waited on forever.
    assert len(released) == 1 and "finalizers" not in released[0]["metadata"]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == ["ml/digits: artifacts left in model-store: the namespace is being deleted"]


def test_events_refused_by_a_terminating_namespace_are_not_warnings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from optiserve_operator.reconcile import Event

    controller = Controller(TerminatingKube(the_model()), CONFIG)  # type: ignore[arg-type]
    events = [Event("Normal", "Deploying", "a"), Event("Warning", "RolloutFailed", "b")]
    with caplog.at_level(logging.INFO, logger="optiserve.operator"):
        controller._emit(the_model(), events)
        controller._emit(the_model(), events)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    said = [r.getMessage() for r in caplog.records if "namespace terminating" in r.getMessage()]
    assert said == [
        "namespace terminating: ml: post event Deploying refused, nothing more is created"
    ]
