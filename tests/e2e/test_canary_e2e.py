"""Canary rollouts on the real control plane: real Triton pods (the pod runner), a real
Prometheus scraping them (pod discovery, the annotation-based pod job), the real operator.

A good artifact goes through the step to 100% while load spreads over the Service's
endpoints as kube-proxy would; the operator, killed mid-step, resumes at the same step with
no duplicate objects. Then two bad artifacts, each a real optimizer artifact whose model is
swapped, once written, for one with the same inputs and outputs: one that answers ~100x
slower, aborted on Triton's own p99, and one whose graph fails in onnxruntime on every real
input (an out-of-range Gather; the warmup's zeros pass, so its pod loads and is Ready),
aborted on Triton's own failure counter. Each time every stable pod stays Ready, the stable
keeps answering, and the aborted artifact is not tried again on the passes that follow.
"""

from __future__ import annotations

import collections
import http.client
import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from optiserve.api import OptimizedModel
from optiserve.render.job import artifact_uri
from optiserve_testing.cluster import LocalCluster
from optiserve_testing.prometheus import (
    LocalPrometheus,
    PodDiscovery,
    find_prometheus,
    pod_scrape_config,
)
from optiserve_testing.waiting import wait_until
from tests.e2e.canary_support import StableWatch, failing_model, slow_model, swap_when_written
from tests.e2e.conftest import OperatorProcess, prepare_model_namespace
from tests.e2e.objects import condition, get, served_digest, tiny, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.triton, pytest.mark.timeout(1200)]

NAMESPACE = "local-canary"  # kwok_config.RUN_LOCALLY_NAMESPACES: the pod runner runs its pods
NAME = "zeta"
PAUSE_S = 25
INTERVAL_S = 5
ROLLOUT = {
    "strategy": "canary",
    "steps": [{"weight": 50, "pauseSeconds": PAUSE_S}],
    "analysis": {
        "maxErrorRate": 0.05,
        # Loose: the two revisions share 2 busy CPUs; the slow artifact is ~100x slower.
        "maxLatencyP99Ratio": 10,
        "minRequests": 10,
        "intervalSeconds": INTERVAL_S,
    },
}


def model(max_drop: float) -> dict[str, Any]:
    obj = tiny(NAME, rollout=ROLLOUT)
    obj["spec"]["serving"] = {"maxBatchSize": 8, "replicas": 1, "rolloutDeadlineSeconds": 120}
    obj["spec"]["optimization"]["accuracy"]["maxDrop"] = max_drop
    return obj


@pytest.fixture(scope="module")
def prometheus(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    find_prometheus()
    state = tmp_path_factory.mktemp("prometheus")
    targets = state / "pods.json"
    with (
        PodDiscovery(cluster.api_client(), targets),
        LocalPrometheus(pod_scrape_config(targets), state) as server,
    ):
        yield server.url


@pytest.fixture(scope="module")
def canary_operator(
    cluster: LocalCluster, crd: None, prometheus: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    process = OperatorProcess(
        cluster,
        tmp_path_factory.mktemp("operator"),
        extra_args=["--prometheus-url", prometheus],
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def namespace(cluster: LocalCluster) -> Iterator[str]:
    prepare_model_namespace(cluster, NAMESPACE)
    yield NAMESPACE
    cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false")


class Load:
    """Closed-loop requests, each to the next endpoint of the model's Service, as kube-proxy
    spreads connections; counts answers by the revision of the pod that gave them.

    The endpoints are what the EndpointSlice controller would publish: the Ready pods the
    Service's selector matches. (It cannot publish them here: the pod runner gives each pod a
    loopback address, and the API server refuses loopback addresses in EndpointSlices.)
    """

    def __init__(self, cluster: LocalCluster, ns: str, clients: int = 2) -> None:
        self.core = client.CoreV1Api(cluster.api_client())
        self.ns = ns
        self.by_revision: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()  # no 200 answer
        self.error_answers: collections.Counter[str] = collections.Counter()  # an error status
        self.endpoints: list[tuple[str, str]] = []  # (ip, revision)
        self._cycle = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        body = {"inputs": [{"name": "x", "shape": [1, 8], "datatype": "FP32", "data": [0.1] * 8}]}
        self._body = json.dumps(body).encode()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]
        self._threads.append(threading.Thread(target=self._refresh, daemon=True))

    def ready_endpoints(self) -> list[tuple[str, str]]:
        service = self.core.read_namespaced_service(NAME, self.ns)
        wanted = service.spec.selector if service.spec else None
        selector = ",".join(f"{k}={v}" for k, v in (wanted or {}).items())
        found = []
        for pod in self.core.list_namespaced_pod(self.ns, label_selector=selector).items:
            meta, status = pod.metadata, pod.status
            if meta is None or status is None or meta.deletion_timestamp or not status.pod_ip:
                continue
            if any(c.type == "Ready" and c.status == "True" for c in status.conditions or []):
                revision = (meta.labels or {}).get("optiserve.io/revision", "stable")
                found.append((str(status.pod_ip), revision))
        return sorted(found)

    def _refresh(self) -> None:
        while not self._stop.is_set():
            try:
                endpoints = self.ready_endpoints()
            except Exception:  # a slice read racing a delete: next round
                endpoints = self.endpoints
            with self._lock:
                self.endpoints = endpoints
            self._stop.wait(0.5)

    def _client(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                target = (
                    self.endpoints[next(self._cycle) % len(self.endpoints)]
                    if self.endpoints
                    else None
                )
            if target is None:
                self._stop.wait(0.1)
                continue
            ip, revision = target
            connection = http.client.HTTPConnection(ip, 8000, timeout=10)
            answered = False
            try:
                connection.request("POST", f"/v2/models/{NAME}/infer", self._body)
                response = connection.getresponse()
                response.read()
                ok, answered = response.status == 200, True
            except (OSError, http.client.HTTPException):
                ok = False
            finally:
                connection.close()
            with self._lock:
                (self.by_revision if ok else self.errors)[revision] += 1
                if answered and not ok:
                    self.error_answers[revision] += 1
            if not ok:
                self._stop.wait(0.05)

    def snapshot(self) -> tuple[dict[str, int], dict[str, int]]:
        with self._lock:
            return dict(self.by_revision), dict(self.errors)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)


def rollout_of(cluster: LocalCluster, ns: str) -> dict[str, Any]:
    obj = get(cluster, ns, "om", NAME) or {}
    return dict((obj.get("status") or {}).get("rollout") or {})


def stable_ready(cluster: LocalCluster, ns: str) -> int:
    deployment = get(cluster, ns, "deployment", NAME) or {}
    return int((deployment.get("status") or {}).get("readyReplicas") or 0)


def events(cluster: LocalCluster, ns: str, reason: str) -> list[dict[str, Any]]:
    listed = json.loads(cluster.kubectl("get", "events", "-n", ns, "-o", "json").stdout)
    return [e for e in listed["items"] if e["reason"] == reason]


def abort_bad_artifact(
    cluster: LocalCluster,
    operator: OperatorProcess,
    max_drop: float,
    write: Callable[[Path], None],
    stable_digest: str,
) -> tuple[dict[str, Any], str, Load]:
    """Applies a spec that makes a new artifact, swaps its model for ``write``'s once the
    optimizer has written it, and waits, under load, for the analysis to abort the canary.
    Returns the model, the bad digest and the load (with what it counted)."""
    ns = NAMESPACE
    before = get(cluster, ns, "om", NAME)["status"].get("recipeDigest")
    bad = model(max_drop)
    cluster.apply([bad], namespace=ns)
    wait_until(
        "the bad recipe digest",
        lambda: get(cluster, ns, "om", NAME)["status"].get("recipeDigest") != before,
        timeout_s=60,
        every_s=0.1,
    )
    bad_digest = get(cluster, ns, "om", NAME)["status"]["recipeDigest"]
    parsed = OptimizedModel.model_validate(bad)
    folder = cluster.claim_path(ns, artifact_uri(parsed.spec, bad_digest, namespace=ns, name=NAME))
    stop = threading.Event()
    swap = threading.Thread(target=swap_when_written, args=(folder, stop, write), daemon=True)
    swap.start()
    try:
        with StableWatch(cluster, ns, NAME) as watch, Load(cluster, ns) as load:

            def aborted() -> bool:  # this artifact's abort, not the Degraded of an earlier one
                found = get(cluster, ns, "om", NAME)
                rollout = found["status"].get("rollout") or {}
                return (
                    condition(found, "Degraded").get("reason") == "CanaryAborted"
                    and rollout.get("canaryDigest") == bad_digest
                    and rollout.get("phase") == "Aborted"
                )

            wait_until("the bad canary aborted", aborted, timeout_s=400)
    except AssertionError:
        described = cluster.kubectl("describe", "-n", ns, "om,deploy,pod").stdout
        pytest.fail(f"never aborted\n{described[-6000:]}\n{operator.logs()}")
    finally:
        stop.set()
    obj = get(cluster, ns, "om", NAME)
    assert obj["status"]["rollout"]["phase"] == "Aborted"
    assert obj["status"]["rollout"]["canaryDigest"] == bad_digest
    assert served_digest(cluster, ns, NAME) == stable_digest  # the stable still serves
    # The one stable pod (replicas: 1) served throughout: Ready at every sample, not replaced.
    assert watch.samples >= 10 and not watch.lapses, (watch.samples, watch.lapses[:10])
    assert len(watch.names) == 1, watch.names
    wait_until(
        "the aborted canary deleted",
        lambda: get(cluster, ns, "deployment", f"{NAME}-canary") is None,
        timeout_s=60,
    )
    return obj, bad_digest, load


def test_canary_promoted_resumed_after_a_kill_then_a_slow_and_an_erroring_one_aborted(
    cluster: LocalCluster, canary_operator: OperatorProcess, namespace: str
) -> None:
    ns = namespace
    cluster.apply([model(0.05)], namespace=ns)
    first = wait_ready(cluster, canary_operator, ns, NAME)
    stable_digest = first["status"]["recipeDigest"]
    assert "rollout" not in first["status"]  # the first artifact rolls: nothing to compare
    stable_seen: list[int] = []

    with Load(cluster, ns) as load:
        cluster.apply([model(0.04)], namespace=ns)

        def in_step() -> bool:
            stable_seen.append(stable_ready(cluster, ns))
            return (
                rollout_of(cluster, ns).get("phase") == "Canary"
                and len(load.ready_endpoints()) == 2
            )

        try:
            wait_until("the canary serving beside the stable", in_step, timeout_s=300)
        except AssertionError:
            described = cluster.kubectl("describe", "-n", ns, "om,deploy,pod").stdout
            pytest.fail(f"no canary\n{described[-6000:]}\n{canary_operator.logs()}")
        rollout = rollout_of(cluster, ns)
        canary_digest = rollout["canaryDigest"]
        assert rollout["stableDigest"] == stable_digest and canary_digest != stable_digest
        assert rollout["weight"] == 50 and rollout["step"] == 0
        # The Service's endpoints are one stable and one canary pod: 50%.
        assert sorted(r for _, r in load.ready_endpoints()) == ["canary", "stable"]
        printed = cluster.kubectl("get", "om", NAME, "-n", ns, "--no-headers").stdout.split()
        assert canary_digest[:12] in printed and stable_digest[:12] in printed

        # Killed mid-step: the restarted operator resumes the same step, creates nothing twice.
        time.sleep(3)  # the pass that saw the canary pods Ready has written stepStarted
        step_began, _ = load.snapshot()
        before = rollout_of(cluster, ns)
        canary_operator.kill()
        canary_operator.start()
        time.sleep(8)  # several passes (--poll-seconds 1), still inside the step's pause
        after = rollout_of(cluster, ns)
        mid_step, _ = load.snapshot()
        assert (after["step"], after["stepStarted"]) == (before["step"], before["stepStarted"])
        deployments = get(cluster, ns, "deployment", "-l", f"optiserve.io/model={NAME}")
        assert sorted(d["metadata"]["name"] for d in deployments["items"]) == [
            NAME,
            f"{NAME}-canary",
        ]
        replica_sets = get(cluster, ns, "rs", "-l", "optiserve.io/revision=canary")
        assert len(replica_sets["items"]) == 1

        promoted = wait_ready(cluster, canary_operator, ns, NAME)
        assert promoted["status"]["recipeDigest"] == canary_digest
        assert "rollout" not in promoted["status"]
        assert served_digest(cluster, ns, NAME) == canary_digest
        wait_until(
            "the canary Deployment deleted",
            lambda: get(cluster, ns, "deployment", f"{NAME}-canary") is None,
            timeout_s=60,
        )
        served, errors = load.snapshot()
    assert min(stable_seen) >= 1, "the stable's pod left service during the canary"
    assert after["phase"] == "Canary", "the step ended before the share was measured"
    # Over the 11 s inside the step (operator killed and restarted meanwhile: the pods serve
    # on), answers by revision: one endpoint each, so half each, within +-15 points.
    window = {r: mid_step.get(r, 0) - step_began.get(r, 0) for r in ("canary", "stable")}
    share = window["canary"] / max(1, window["canary"] + window["stable"])
    listed = json.loads(cluster.kubectl("get", "events", "-n", ns, "-o", "json").stdout)
    reasons = {e["reason"] for e in listed["items"]}
    assert {"CanaryStarted", "CanaryPromoting", "CanaryPromoted"} <= reasons, reasons
    assert 0.35 <= share <= 0.65, (window, served, errors)
    assert sum(window.values()) >= 20, window

    # A bad artifact, far slower than the stable: aborted by the analysis on Triton's p99.
    obj, _, _ = abort_bad_artifact(cluster, canary_operator, 0.03, slow_model, canary_digest)
    degraded = condition(obj, "Degraded")
    assert "latencyP99Ratio" in degraded["message"], degraded
    assert "above maxLatencyP99Ratio 10" in degraded["message"]

    # A bad artifact that loads and is Ready but whose every answer is an onnxruntime error:
    # aborted on Triton's failure counter (checked before the p99, whatever the latency).
    started_before = len(events(cluster, ns, "CanaryStarted"))
    obj, bad_digest, load = abort_bad_artifact(
        cluster, canary_operator, 0.02, failing_model, canary_digest
    )
    message = condition(obj, "Degraded")["message"]
    numbers = re.search(
        r"aborted at step 1: errorRate: error rate (\S+) \((\d+) of (\d+) requests failed\) "
        r"is above maxErrorRate 0\.05",
        message,
    )
    assert numbers, message
    rate, failed, total = float(numbers[1]), int(numbers[2]), int(numbers[3])
    assert rate > 0.05 and total >= 10 and abs(failed / total - rate) < 0.001, message
    assert bad_digest[:12] in message
    served, errors = load.snapshot()
    # The canary pod answered (HTTP errors), it did not crash; the stable answered throughout.
    assert load.error_answers["canary"] > 0 and served.get("stable", 0) > 0, (served, errors)
    assert "canary" not in served and errors.get("stable", 0) == 0, (served, errors)
    aborted_events = events(cluster, ns, "CanaryAborted")
    assert any(
        e["type"] == "Warning" and "errorRate" in e["message"] and bad_digest[:12] in e["message"]
        for e in aborted_events
    ), aborted_events
    assert len(events(cluster, ns, "CanaryStarted")) == started_before + 1

    # Remembered as bad: the passes that follow (3 analysis intervals, --poll-seconds 1) start
    # no canary for it again, while the stable keeps answering every request.
    with Load(cluster, ns) as after_abort:
        watch_until = time.monotonic() + 3 * INTERVAL_S
        while time.monotonic() < watch_until:
            time.sleep(0.5)
            assert get(cluster, ns, "deployment", f"{NAME}-canary") is None
            rollout = rollout_of(cluster, ns)
            assert (rollout["phase"], rollout["canaryDigest"]) == ("Aborted", bad_digest)
        answered, failed_after = after_abort.snapshot()
    assert len(events(cluster, ns, "CanaryStarted")) == started_before + 1
    assert answered.get("stable", 0) >= 10 and not failed_after, (answered, failed_after)
    assert served_digest(cluster, ns, NAME) == canary_digest
