"""A ``helm upgrade`` of the operator while models are being reconciled loses nothing.

The chart (charts/optiserve, its defaults: 2 replicas, --leader-elect on a Lease, RollingUpdate
maxSurge 1 / maxUnavailable 0) is installed with helm on a local control plane of its own, and
its operator pods really run: the Deployment controller makes them, the scheduler places them,
and the local pod runner (optiserve_testing.pod_runner, the stand-in kubelet) runs each pod's
container as a local process, the image's ENTRYPOINT (`optiserve operator`) with the chart's
args and env, and stops it with SIGTERM when the rolling update deletes its pod. While two
optimization Jobs run, the release is upgraded with a changed value (``workers``), which rolls
both pods; a third model is created during the roll. Every model reaches Ready with one Job, one
spec ConfigMap and one Deployment, nothing is left without an owner, and each hand-over of the
Lease is within the bound docs/scale.md states.

What is not a cluster's: the pod runner runs the container as this machine's processes, not in
the image (tests/e2e/test_images_e2e.py runs the image itself), as root and without the pod's
securityContext; its credentials are a token of the chart's ServiceAccount handed over as
KUBECONFIG (a process cannot be given the kubelet's projected token at its fixed path), so the
chart's RBAC is what it works with. All pods share one network namespace, so the chart's
liveness address (0.0.0.0) is moved to the pod's own IP through extraEnv/extraArgs (on a cluster
each pod has its own network namespace) and the metrics port is switched off; the readiness
probe (tcpSocket) is not run: a pod is Ready once its process runs, so the rollout deletes old
pods sooner than a cluster would, before the new pod's watches are up.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from optiserve_operator.leader import TAKEOVER_BOUND
from optiserve_testing.binaries import BinariesUnavailable, control_plane_binaries
from optiserve_testing.cluster import LocalCluster, wait_established
from optiserve_testing.pod_runner import PodRunner
from optiserve_testing.waiting import wait_until
from tests.chart.helm import CHART, HelmUnavailable, helm_binary, run_helm, set_flags
from tests.chart.service_account import service_account_kubeconfig
from tests.e2e.conftest import OperatorProcess, prepare_model_namespace
from tests.e2e.objects import get, items, tiny, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.timeout(900)]

RELEASE = NAMESPACE = "optiserve"  # the chart's full name is then "optiserve": its Lease's too
MODELS = "ml"
OPERATOR_IMAGE = "ghcr.io/optiserve/operator:ha-e2e"
OPERATOR_SELECTOR = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator"
VALUES = {
    "image.repository": "ghcr.io/optiserve/operator",
    "image.tag": "ha-e2e",
    "watchNamespaces": [MODELS],
    "podLabels": {"optiserve.io/run-locally": "true"},  # the pod runner's, not kwok's
    # One network namespace for all pods here (see above).
    "metrics.enabled": False,
    "extraEnv": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
    "extraArgs": ["--liveness=http://$(POD_IP):8081/healthz", "--poll-seconds=2"],
}
RBAC_REFUSAL = re.compile(r'forbidden: User "[^"]+" cannot ', re.IGNORECASE)


@dataclass
class Release:
    cluster: LocalCluster
    runner: PodRunner

    def operator_logs(self) -> dict[str, str]:
        """Pod name -> its operator container's log, the deleted pods' included."""
        folder = self.runner.work_root / NAMESPACE
        return {
            log.parent.name: log.read_text(errors="replace")
            for log in sorted(folder.glob("*/operator.log"))
        }

    def pods(self) -> list[str]:
        found = self.cluster.kubectl(
            "get", "pods", "-n", NAMESPACE, "-l", OPERATOR_SELECTOR, "-o", "name"
        )
        return [name.split("/", 1)[1] for name in found.stdout.split()]


@pytest.fixture(scope="module")
def release() -> Iterator[Release]:
    try:
        binaries = control_plane_binaries()
        helm_binary()
    except (BinariesUnavailable, HelmUnavailable) as err:
        pytest.skip(f"local control plane or helm unavailable: {err}")
    state = Path(tempfile.mkdtemp(prefix="optiserve-helm-ha-"))
    cluster = LocalCluster(binaries, state_dir=state)
    runner: PodRunner | None = None
    cluster.start()
    try:
        cluster.kubectl("create", "namespace", NAMESPACE, check=True)
        prepare_model_namespace(cluster, MODELS)
        run_helm(
            "install",
            RELEASE,
            str(CHART),
            f"--namespace={NAMESPACE}",
            *set_flags(VALUES),
            kubeconfig=cluster.kubeconfig,
        )
        wait_established(cluster, "optimizedmodels.optiserve.io")
        kubeconfig = service_account_kubeconfig(cluster, NAMESPACE, RELEASE, state)
        runner = PodRunner(
            cluster.api_client(),
            state / "pods",
            cluster.pvc_root,
            # What the kubelet's projected token gives a pod: the chart's ServiceAccount.
            base_env={**os.environ, "KUBECONFIG": str(kubeconfig)},
            entrypoints={OPERATOR_IMAGE: ("optiserve", "operator")},
            kill_grace_s=30.0,  # the pod's terminationGracePeriodSeconds
        )
        runner.start()
        yield Release(cluster, runner)
    finally:
        if runner is not None:
            runner.stop()
        cluster.stop()


@dataclass
class LeaseWatch:
    """The Lease's holder, polled every 0.1 s in a thread."""

    cluster: LocalCluster
    # (wall-clock s: compared with the API server's timestamps, same machine; holder)
    polls: list[tuple[float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        from kubernetes import client

        self._api = client.CoordinationV1Api(self.cluster.api_client())
        self._thread = threading.Thread(target=self._run, daemon=True, name="lease-watch")
        self._thread.start()

    def holder(self) -> str:
        from kubernetes.client.exceptions import ApiException

        try:
            lease = self._api.read_namespaced_lease(RELEASE, NAMESPACE)
        except ApiException:
            return ""
        return str(lease.spec.holder_identity or "") if lease.spec else ""

    def _run(self) -> None:
        while not self._stop.is_set():
            self.polls.append((time.time(), self.holder()))
            self._stop.wait(0.1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def holders(self) -> list[str]:
        """Each holder in turn ("" while released)."""
        found: list[str] = []
        for _, holder in self.polls:
            if not found or found[-1] != holder:
                found.append(holder)
        return found

    def hand_overs(self) -> list[HandOver]:
        """Each change of holder, from the last poll that saw the old one to the first that saw
        the new one: an upper bound on the time nobody led."""
        found = []
        last: tuple[float, str] | None = None  # the last poll with a holder
        for at, holder in self.polls:
            if not holder:
                continue
            if last is not None and holder != last[1]:
                found.append(HandOver(last[1], holder, last[0], at))
            last = (at, holder)
        return found


@dataclass(frozen=True)
class HandOver:
    old: str
    new: str
    last_held: float  # wall-clock s
    taken: float

    @property
    def seconds(self) -> float:
        return self.taken - self.last_held


class ModelStream:
    """A new model every ``every_s`` in a thread, as users go on applying during an upgrade."""

    def __init__(self, cluster: LocalCluster, every_s: float = 1.5, most: int = 40) -> None:
        self.cluster, self.every_s, self.most = cluster, every_s, most
        self.names: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="model-stream")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.names) < self.most:
            name = f"m-{len(self.names):02d}"
            self.cluster.apply([tiny(name)], namespace=MODELS)
            self.names.append(name)
            self._stop.wait(self.every_s)

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(timeout=60)
        return list(self.names)


def pod_that_logged(logs: dict[str, str], text: str) -> str | None:
    for pod, log in logs.items():
        if text in log:
            return pod
    return None


def leader_of(logs: dict[str, str], identity: str) -> str | None:
    """The pod whose operator logged becoming leader as ``identity``."""
    return pod_that_logged(logs, f"leader election: {identity} now leads")


def test_a_helm_upgrade_mid_reconcile_hands_over_within_the_bound_and_loses_nothing(
    release: Release,
) -> None:
    cluster = release.cluster
    watch = LeaseWatch(cluster)
    stream: ModelStream | None = None
    try:
        wait_until("a leader", lambda: watch.holder(), timeout_s=120)
        before = set(release.pods())
        assert len(before) == 2
        # Models keep coming, each with an optimization Job, before, during and after the roll.
        stream = ModelStream(cluster)
        wait_until("a Job", lambda: items(cluster, MODELS, "jobs", "m-00"), timeout_s=120)
        # The upgrade: a changed value in the pod template rolls both operator pods.
        run_helm(
            "upgrade",
            RELEASE,
            str(CHART),
            f"--namespace={NAMESPACE}",
            "--reuse-values",
            *set_flags({"workers": 3}),
            kubeconfig=cluster.kubeconfig,
        )
        cluster.kubectl(
            "rollout",
            "status",
            f"deployment/{RELEASE}",
            "-n",
            NAMESPACE,
            "--timeout=240s",
            check=True,
            timeout_s=260,
        )
        wait_until("the old pods gone", lambda: not before & set(release.pods()), timeout_s=90)
        names = stream.stop()
        stand_in = OperatorProcess(cluster, release.runner.work_root)  # for wait_ready's logs
        models = {name: wait_ready(cluster, stand_in, MODELS, name) for name in names}
    finally:
        watch.stop()
        if stream is not None:
            stream.stop()

    logs = release.operator_logs()
    after = release.pods()
    assert len(after) == 2 and not before & set(after), (before, after)
    # The upgrade rolled the pods: the new ones run with the changed value.
    deployment = get(cluster, NAMESPACE, "deployment", RELEASE)
    assert "--workers=3" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]

    # Nothing twice, nothing lost, nothing without its model.
    uids = {m["metadata"]["uid"] for m in models.values()}
    for name, obj in models.items():
        assert len(items(cluster, MODELS, "jobs", name)) == 1, name
        assert len(items(cluster, MODELS, "configmaps", name)) == 1, name
        assert len(items(cluster, MODELS, "deployments", name)) == 1, name
        assert obj["status"]["artifact"]["digest"] == obj["status"]["recipeDigest"]
    for kind in ("jobs", "deployments", "services", "configmaps"):
        found = get(cluster, MODELS, kind, "-l", "app.kubernetes.io/managed-by=optiserve")
        for child in found["items"]:
            owners = {r["uid"] for r in child["metadata"].get("ownerReferences") or []}
            assert owners & uids, f"{kind} {child['metadata']['name']} has no live owner"
    lines = [line for text in logs.values() for line in text.splitlines()]
    assert [line for line in lines if RBAC_REFUSAL.search(line)] == []

    # The Lease moved off the old pods, each time within the bound, to a pod of the new set.
    hand_overs = watch.hand_overs()
    assert hand_overs, watch.holders()
    for moved in hand_overs:
        assert moved.seconds < TAKEOVER_BOUND, f"{moved} (bound {TAKEOVER_BOUND}s)"
    final = watch.polls[-1][1]
    assert leader_of(logs, final) in after, (final, watch.holders())
    # Mid-reconcile: a Job one operator pod created was finished by another (the model's
    # events, as each pod logged them).
    adopted = [
        name
        for name in models
        if (created := pod_that_logged(logs, f"{MODELS}/{name} JobCreated:"))
        and (finished := pod_that_logged(logs, f"{MODELS}/{name} Optimized:"))
        and created != finished
    ]
    assert adopted, (hand_overs, watch.holders())
    gaps = ", ".join(f"{moved.seconds:.1f}s" for moved in hand_overs)
    print(
        f"{len(models)} models, {len(hand_overs)} hand-over(s) during the upgrade: {gaps} "
        f"(bound {TAKEOVER_BOUND}s); Jobs one pod created and another finished: {adopted}"
    )
