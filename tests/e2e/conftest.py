"""Fixtures for the operator end-to-end tests: the CRD, a real operator process, a namespace
with claims holding a tiny model, and the local cluster from testing/optiserve_testing."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from optiserve_operator.memory import ALLOCATOR_ENV
from optiserve_testing.cluster import LocalCluster, install_crd
from optiserve_testing.fixtures import cluster, cluster_namespace
from optiserve_testing.processes import pods_run_this_checkout
from optiserve_testing.volume_binder import claim_manifest
from tests.e2e.models import write_tiny_classifier

__all__ = ["cluster", "cluster_namespace", "install_crd"]

REPO = Path(__file__).resolve().parents[2]
pods_run_this_checkout(REPO)  # at import, before the session's cluster starts


class OperatorProcess:
    """``python -m optiserve_operator`` against the local cluster, restartable; as admin unless
    ``kubeconfig`` names other credentials (e.g. the chart's ServiceAccount)."""

    def __init__(
        self,
        cluster: LocalCluster,
        log_dir: Path,
        kubeconfig: Path | None = None,
        extra_args: Sequence[str] = (),
        resync_seconds: int = 15,
    ) -> None:
        self.cluster = cluster
        self.extra_args = list(extra_args)
        self.log_dir = log_dir
        self.kubeconfig = kubeconfig or cluster.kubeconfig
        self.resync_seconds = resync_seconds
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = (self.log_dir / f"operator-{self.starts}.log").open("wb")
        # The image's allocator settings (memory.py), unless this environment names others.
        env = {
            **ALLOCATOR_ENV,
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        }
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "optiserve_operator",
                "--standalone",
                "--kubeconfig",
                str(self.kubeconfig),
                "--poll-seconds",
                "1",
                "--resync-seconds",
                str(self.resync_seconds),
                "--log-format",
                "full",
                "--optimizer-image",
                "optiserve-optimizer:e2e",
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )

    def kill(self) -> None:
        """SIGKILL: no chance to tidy up, as when a node dies."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=30)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None

    def full_logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("*.log")))

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-4000:] for p in sorted(self.log_dir.glob("*.log"))
        )


def prepare_model_namespace(cluster: LocalCluster, name: str) -> None:
    """Namespace ``name`` with claims ``models`` (a tiny classifier) and ``model-store``."""
    cluster.kubectl("create", "namespace", name, check=True)
    cluster.wait_for_default_service_account(name)
    cluster.apply([claim_manifest(c) for c in ("models", "model-store")], namespace=name)
    write_tiny_classifier(cluster.pvc_root / name / "models")
    (cluster.pvc_root / name / "model-store").mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="session")
def crd(cluster: LocalCluster) -> None:
    install_crd(cluster)


@pytest.fixture(scope="module")
def operator(
    cluster: LocalCluster, crd: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    process = OperatorProcess(cluster, tmp_path_factory.mktemp("operator"))
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def e2e_namespace(cluster: LocalCluster) -> Iterator[str]:
    """A namespace with claims ``models`` (a tiny classifier) and ``model-store``."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    prepare_model_namespace(cluster, name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")
