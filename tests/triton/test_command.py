"""``serve(DIR)`` (behind ``optiserve serve``) serves until SIGTERM, then exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from optiserve.api.serving import ResponseCacheSpec, ServingSpec
from optiserve.serve.loadgen import traffic_report
from optiserve.serve.local import _free_ports
from optiserve.serve.repository import write_onnx_model
from optiserve_testing.waiting import http_ok, wait_until
from tests.triton.tiny_models import matmul_relu

pytestmark = [pytest.mark.triton, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
SERVE = (
    "import sys, pathlib; from optiserve.serve.command import serve; "
    "sys.exit(serve(pathlib.Path(sys.argv[1]), ports=tuple(map(int, sys.argv[2:5]))))"
)


def wait_ready(url: str, process: subprocess.Popen[str], timeout_s: float = 120) -> None:
    def ready() -> bool:
        assert process.poll() is None, process.communicate()
        return http_ok(url)

    wait_until("optiserve serve ready", ready, timeout_s, every_s=0.3)


def test_serve_runs_until_sigterm_and_answers_meanwhile(tmp_path: Path) -> None:
    serving = ServingSpec(response_cache=ResponseCacheSpec(enabled=True))
    write_onnx_model(tmp_path / "model_repository", "mm", matmul_relu(tmp_path / "m.onnx"), serving)
    http, grpc, metrics = _free_ports(3)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(tmp_path), str(http), str(grpc), str(metrics)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        wait_ready(f"http://127.0.0.1:{http}/v2/health/ready", process)
        samples = [{"x": np.full((1, 4), i, np.float32)} for i in range(12)]
        report = traffic_report(
            f"127.0.0.1:{grpc}", "mm", samples, concurrency=4, requests=64, cache_samples=4
        )
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)

    assert process.returncode == 0, err
    assert f"http    http://127.0.0.1:{http}" in out and "stopped" in out
    assert report["load"]["errors"] == 0
    assert report["load"]["requests"] == 64
    assert report["cache"]["cache_misses"] == 4  # the held-out samples, seen once each
    assert report["cache"]["repeat_hit_rate"] == 1.0
    assert report["cache"]["identical_answers"]
