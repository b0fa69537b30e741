"""``make cluster`` (python -m optiserve_testing) starts a usable cluster and stops it on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from optiserve_testing.binaries import BinariesUnavailable, control_plane_binaries

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]
REPO = Path(__file__).resolve().parents[2]


def test_cluster_command_serves_kubectl_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    try:
        binaries = control_plane_binaries()
    except BinariesUnavailable as err:
        pytest.skip(f"local Kubernetes control plane unavailable: {err}")
    state = tmp_path / "state"
    command = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "optiserve_testing",
            "--namespace",
            "demo",
            "--state-dir",
            str(state),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
    )
    assert command.stdout is not None
    printed = []
    for line in command.stdout:
        printed.append(line)
        if "Ctrl-C stops everything" in line:
            break
    text = "".join(printed)
    assert "export KUBECONFIG=" in text, text
    kubeconfig = text.split("export KUBECONFIG=")[1].split()[0]
    kubectl = str(binaries.kubectl())

    def run(*args: str) -> str:
        return subprocess.run(
            [kubectl, "--kubeconfig", kubeconfig, *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout

    assert "optimizedmodels.optiserve.io" in run("get", "crd", "-o", "name")
    assert run("get", "pvc", "-n", "demo", "-o", "name").split() == [
        "persistentvolumeclaim/model-store",
        "persistentvolumeclaim/models",
    ]
    assert (state / "volumes" / "demo" / "models").is_dir()
    command.send_signal(signal.SIGINT)
    rest = command.communicate(timeout=120)[0]
    assert command.returncode == 0, text + rest
    assert "local cluster stopped" in rest
    # Nothing it started answers any more.
    refused = subprocess.run(
        [kubectl, "--kubeconfig", kubeconfig, "get", "ns", "--request-timeout=5s"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode != 0
