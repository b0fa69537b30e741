"""Fixtures for the operator end-to-end tests: the CRD, a real operator process, a namespace
with claims holding a tiny model, and the local cluster from tests/harness."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from optiserve.crd import crd_yaml
from tests.e2e.models import write_tiny_classifier
from tests.harness.cluster import LocalCluster
from tests.harness.fixtures import cluster, cluster_namespace
from tests.harness.volume_binder import claim_manifest

__all__ = ["cluster", "cluster_namespace"]

REPO = Path(__file__).resolve().parents[2]
# Job pods run this machine's tools with this process's environment (the pod runner copies it
# when the cluster starts): the venv's `optiserve` on PATH, the source roots on PYTHONPATH.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(REPO / root) for root in ("src", "operator", "optimizer")]
    + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
)


def _optimize_subcommand_missing() -> bool:
    found = subprocess.run(
        ["optiserve", "optimize", "--help"], capture_output=True, text=True, check=False
    )
    return found.returncode != 0


def _shim_optimize() -> None:
    """Until ``optiserve optimize`` is wired into the CLI, put a three-line ``optiserve`` first
    on PATH that runs the real optimizer entry point for ``optimize`` (inert afterwards).

    Done at import, before any fixture: the pod runner copies this environment when the
    session's cluster starts."""
    if not _optimize_subcommand_missing():
        return
    shim_dir = Path(tempfile.mkdtemp(prefix="optiserve-shim-"))
    shim = shim_dir / "optiserve"
    shim.write_text(
        f'#!/bin/sh\nif [ "$1" = optimize ]; then shift; '
        f'exec {sys.executable} -m optiserve_optimizer.main "$@"; fi\n'
        f'exec {sys.executable} -m optiserve.cli "$@"\n'
    )
    shim.chmod(0o755)
    os.environ["PATH"] = f"{shim_dir}{os.pathsep}{os.environ['PATH']}"


_shim_optimize()


class OperatorProcess:
    """``python -m optiserve_operator`` against the local cluster, restartable; as admin unless
    ``kubeconfig`` names other credentials (e.g. the chart's ServiceAccount)."""

    def __init__(
        self,
        cluster: LocalCluster,
        log_dir: Path,
        kubeconfig: Path | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.cluster = cluster
        self.log_dir = log_dir
        self.kubeconfig = kubeconfig or cluster.kubeconfig
        self.extra_args = extra_args  # more flags of `optiserve operator`, e.g. --policy-dir
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = (self.log_dir / f"operator-{self.starts}.log").open("wb")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
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
                "15",
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

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-4000:] for p in sorted(self.log_dir.glob("*.log"))
        )


def install_crd(cluster: LocalCluster) -> None:
    """Apply the generated CRD and wait until the API server serves it."""
    # Server-side: the CRD is too large for kubectl's last-applied-configuration annotation.
    applied = cluster.kubectl("apply", "--server-side", "-f", "-", input=crd_yaml())
    assert applied.returncode == 0, applied.stderr
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "crd/optimizedmodels.optiserve.io",
        "--timeout=60s",
        check=True,
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
