"""Many OptimizedModels at once on the local control plane: what the scale benchmark
(benchmarks/scale_bench.py) and the CI scale test (tests/e2e/test_scale.py) share.

The fleet's artifacts already exist, as after an earlier optimization: each model's status
names its artifact (the recipe digest the operator computes, under the model's folder), so the
operator rolls out Triton straight away and runs no Job. The operator is paused (SIGSTOP) while
the models are created and their statuses written, then resumed: from its point of view N
models with finished artifacts appear at once. kwok plays the Triton pods (nothing runs them).

The operator runs as a user of its own (``optiserve-operator``), and the API server writes an
audit log of that user's requests (tests/e2e/operator_audit.py): what "no write on re-apply"
is counted from, independently of the operator's own bookkeeping (kopf's requests included).
``running_fleet`` is the fleet tests' cluster, started and stopped around them.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from optiserve.api import OptimizedModel
from optiserve.render.job import artifact_uri
from optiserve_operator.reconcile import recipe_digest
from optiserve_testing.binaries import Binaries, BinariesUnavailable, control_plane_binaries
from optiserve_testing.cluster import LocalCluster, install_crd
from optiserve_testing.cluster_spec import ClusterOptions, FakeNode
from optiserve_testing.processes import free_ports
from optiserve_testing.volume_binder import VolumeBinder
from optiserve_testing.waiting import wait_until
from tests.e2e.conftest import OperatorProcess, prepare_model_namespace
from tests.e2e.objects import tiny
from tests.e2e.operator_audit import AUDIT_POLICY, AuditLog, operator_kubeconfig

# What a model leaves behind in its namespace while it lives (the GC removes them after).
CHILD_KINDS = ("deployments", "replicasets", "services", "poddisruptionbudgets", "pods", "jobs")
# kube-controller-manager's client defaults (QPS 20, burst 30) pace every Deployment's
# ReplicaSet, pod and status writes to about 3 models/s here: raised, as large clusters do,
# so that the operator, not the controller manager, is what is measured.
CONTROLLER_MANAGER_ARGS = ("--kube-api-qps=300", "--kube-api-burst=500")


def scale_options(
    state_dir: Path, models: int, apiserver_args: tuple[str, ...] = ()
) -> ClusterOptions:
    """Nodes with room for ``models`` Triton pods, and the operator's audit log."""
    policy = state_dir / "audit-policy.yaml"
    policy.write_text(yaml.safe_dump(AUDIT_POLICY))
    per_node = 250
    count = max(1, -(-(models + 20) // per_node))
    nodes = tuple(
        FakeNode(f"scale-{i}", cpu="10000", memory="64Ti", pods=str(per_node)) for i in range(count)
    )
    return ClusterOptions(
        nodes=nodes,
        apiserver_args=(
            f"--audit-policy-file={policy}",
            f"--audit-log-path={state_dir / 'audit.log'}",
            "--audit-log-mode=blocking",
            *apiserver_args,
        ),
        controller_manager_args=CONTROLLER_MANAGER_ARGS,
    )


def new_state_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="optiserve-scale-"))


def model_manifest(name: str) -> dict[str, Any]:
    obj = tiny(name)
    obj["spec"]["serving"] = {"maxBatchSize": 8, "replicas": 1, "rolloutDeadlineSeconds": 600}
    return obj


def seeded_status(manifest: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The status an earlier optimization of this spec left: its finished artifact."""
    name = manifest["metadata"]["name"]
    spec = OptimizedModel.model_validate(manifest).spec
    digest = recipe_digest(name, spec)
    uri = artifact_uri(spec, digest, namespace=namespace, name=name)
    artifact = {"digest": digest, "uri": uri, "precision": "fp32", "format": "onnx"}
    return {"artifact": artifact, "recipeDigest": digest}


@dataclass
class RssSampler:
    """The operator's resident memory (VmRSS) every ``every_s``, in a thread."""

    pid: int
    every_s: float = 0.5
    samples: list[tuple[float, float]] = field(default_factory=list)  # (monotonic s, MiB)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = rss_mib(self.pid)
            if rss is not None:
                self.samples.append((time.monotonic(), rss))
            self._stop.wait(self.every_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def peak(self, since: float = 0.0, until: float = float("inf")) -> float:
        return max((m for t, m in self.samples if since <= t <= until), default=0.0)


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Fleet:
    """A cluster sized for ``size`` models, the operator as its own user, one namespace."""

    def __init__(
        self,
        binaries: Binaries,
        size: int,
        namespace: str = "fleet",
        apiserver_args: tuple[str, ...] = (),
    ) -> None:
        self.size = size
        self.namespace = namespace
        self.state_dir = new_state_dir()
        options = scale_options(self.state_dir, size, apiserver_args)
        self.cluster = LocalCluster(binaries, options, self.state_dir)
        self.audit = AuditLog(self.state_dir / "audit.log")
        self.metrics_port = free_ports(1)[0]
        self._stop_binder = threading.Event()
        self.operator: OperatorProcess | None = None

    def start(self, operator_args: tuple[str, ...] = ()) -> None:
        self.cluster.start()
        binder = VolumeBinder(self.cluster.api_client(), self.cluster.pvc_root)
        threading.Thread(target=binder.run, args=(self._stop_binder,), daemon=True).start()
        install_crd(self.cluster)
        prepare_model_namespace(self.cluster, self.namespace)
        from kubernetes import client

        api = self.cluster.api_client()
        api.configuration.connection_pool_maxsize = 16
        self.custom = client.CustomObjectsApi(api)
        self.apps = client.AppsV1Api(api)
        logs = self.state_dir / "operator-logs"
        logs.mkdir()
        self.operator = OperatorProcess(
            self.cluster,
            logs,
            kubeconfig=operator_kubeconfig(self.cluster),
            extra_args=(
                "--poll-seconds",
                "10",
                "--metrics-port",
                str(self.metrics_port),
                *operator_args,
            ),
            resync_seconds=300,
        )
        self.operator.start()
        self.wait_operator()

    def wait_operator(self, timeout_s: float = 90.0) -> None:
        """Until the (re)started operator serves its metrics (its start-up is done)."""

        def serving() -> bool:
            try:
                self.metric("optiserve_workqueue_depth")
            except OSError:
                return False
            return True

        wait_until("the operator's metrics", serving, timeout_s=timeout_s, every_s=0.5)

    def stop(self) -> None:
        self._stop_binder.set()
        if self.operator is not None:
            self.operator.stop()
        self.cluster.stop()

    @property
    def pid(self) -> int:
        assert self.operator is not None and self.operator.process is not None
        return self.operator.process.pid

    def pause_operator(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume_operator(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def names(self, prefix: str = "m", count: int | None = None) -> list[str]:
        return [f"{prefix}-{i:04d}" for i in range(self.size if count is None else count)]

    def apply(self, names: list[str]) -> str:
        """``kubectl apply`` of the models (one document stream, as a user would)."""
        text = yaml.safe_dump_all([model_manifest(n) for n in names])
        return self.cluster.kubectl(
            "apply", "-n", self.namespace, "-f", "-", input=text, check=True, timeout_s=900
        ).stdout

    def seed(self, names: list[str], threads: int = 8) -> None:
        """Write each model's finished artifact into its status (parallel status patches)."""
        from concurrent.futures import ThreadPoolExecutor

        def one(name: str) -> None:
            body = {"status": seeded_status(model_manifest(name), self.namespace)}
            self.custom.patch_namespaced_custom_object_status(
                "optiserve.io", "v1alpha1", self.namespace, "optimizedmodels", name, body
            )

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, names))

    def create_seeded(self, names: list[str]) -> None:
        """The models appear with finished artifacts: created and seeded while the operator
        is paused, so its first look at each already finds the artifact."""
        self.pause_operator()
        try:
            self.apply(names)
            self.seed(names)
        finally:
            self.resume_operator()

    def models(self) -> list[dict[str, Any]]:
        found = cast(
            dict[str, Any],
            self.custom.list_namespaced_custom_object(
                "optiserve.io", "v1alpha1", self.namespace, "optimizedmodels"
            ),
        )
        return list(found["items"])

    def ready(self, names: set[str] | None = None) -> int:
        return sum(
            1
            for obj in self.models()
            if is_ready(obj) and (names is None or obj["metadata"]["name"] in names)
        )

    def children(self, namespace: str | None = None) -> dict[str, int]:
        """Objects of each child kind still in the namespace (the fleet's, or ``namespace``)."""
        counts = {}
        for kind in CHILD_KINDS:
            found = self.cluster.kubectl(
                "get", kind, "-n", namespace or self.namespace, "-o", "name"
            )
            counts[kind] = len(found.stdout.split())
        return counts

    def metric(self, name: str, labels: str = "") -> float:
        """The sum of the operator's Prometheus series called ``name`` (whose labels
        include the text ``labels``, e.g. ``code="429"``)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return sum_series(text, name, labels)


@contextmanager
def running_fleet(
    size: int,
    operator_args: tuple[str, ...] = (),
    apiserver_args: tuple[str, ...] = (),
    namespace: str = "fleet",
) -> Iterator[Fleet]:
    """A started ``Fleet`` (the test skipped where there is no local control plane), stopped
    however the ``with`` block ends: the module-scoped fixture of each fleet test."""
    try:
        binaries = control_plane_binaries()
    except BinariesUnavailable as err:
        pytest.skip(f"local Kubernetes control plane unavailable: {err}")
    fleet = Fleet(binaries, size, namespace=namespace, apiserver_args=apiserver_args)
    try:
        fleet.start(operator_args)
        yield fleet
    finally:
        fleet.stop()


def sum_series(text: str, name: str, labels: str = "") -> float:
    """The sum of the series ``name`` in Prometheus text whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line[len(name) : len(name) + 1] not in (" ", "{"):
            continue
        series, value = line.rsplit(" ", 1)
        if labels in series:
            total += float(value)
    return total


def is_ready(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"].get("generation"):
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def ready_timeline(
    fleet: Fleet, names: set[str], timeout_s: float, every_s: float = 1.0
) -> Iterator[tuple[float, int]]:
    """(seconds since the call, models of ``names`` Ready) until all are, or the timeout."""
    started = time.monotonic()
    while True:
        ready = fleet.ready(names)
        elapsed = time.monotonic() - started
        yield elapsed, ready
        if ready >= len(names) or elapsed > timeout_s:
            return
        time.sleep(every_s)


def spec_change(fleet: Fleet, name: str, replicas: int) -> int:
    """Change a model's replicas (not its recipe); the new generation."""
    patched = cast(
        dict[str, Any],
        fleet.custom.patch_namespaced_custom_object(
            "optiserve.io",
            "v1alpha1",
            fleet.namespace,
            "optimizedmodels",
            name,
            {"spec": {"serving": {"replicas": replicas}}},
        ),
    )
    return int(patched["metadata"]["generation"])


def observed(fleet: Fleet, name: str, generation: int) -> bool:
    obj = cast(
        dict[str, Any],
        fleet.custom.get_namespaced_custom_object(
            "optiserve.io", "v1alpha1", fleet.namespace, "optimizedmodels", name
        ),
    )
    return bool((obj.get("status") or {}).get("observedGeneration") == generation)
