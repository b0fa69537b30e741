"""The repository a Triton pod's init container assembles, served by the real local tritonserver:
the artifact the optimizer packages, two sets of serving settings, each read back from Triton's
own model config endpoint (GET /v2/models/<name>/config), without touching the artifact."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient

from optiserve.api.serving import ServingSpec
from optiserve.render.serving_config import serving_settings
from optiserve.serve import LocalTriton
from optiserve.serve.assemble import main as assemble
from optiserve.serve.repository import onnx_signature
from optiserve_optimizer import package
from tests.triton.tiny_models import WEIGHT, matmul_relu

pytestmark = [pytest.mark.triton, pytest.mark.timeout(600)]
NAME = "mm"


def packaged_artifact(tmp_path: Path) -> Path:
    """The optimizer's own packaging of a tiny model: ``<digest>/model_repository``."""
    model = matmul_relu(tmp_path / "m.onnx")
    signature = onnx_signature(model)
    built_with = ServingSpec(max_batch_size=8)
    config, _ = package.model_config(NAME, signature, built_with, "onnxruntime_onnx")
    facts = package.artifact_facts(NAME, signature, built_with, "onnxruntime_onnx")
    folder = package.write_repository(tmp_path / "store", "d1", NAME, model, config, {}, facts)
    return folder / package.REPOSITORY


def served_config(triton: LocalTriton) -> Any:
    with urllib.request.urlopen(f"{triton.http_url}/v2/models/{NAME}/config", timeout=10) as r:
        return json.load(r)


def test_each_pod_serves_the_settings_it_was_given_from_one_artifact(tmp_path: Path) -> None:
    artifact = packaged_artifact(tmp_path)
    before = sorted(str(p.relative_to(artifact)) for p in artifact.rglob("*"))
    delays = {}
    for delay in (300, 4000):
        serving = ServingSpec.model_validate(
            {
                "maxBatchSize": 8,
                "dynamicBatching": {"maxQueueDelayMicroseconds": delay},
                "instanceGroup": {"count": 2},
            }
        )
        settings = json.dumps(serving_settings(serving))
        out = tmp_path / f"served-{delay}"
        assert assemble([f"--artifact={artifact}", f"--settings={settings}", f"--out={out}"]) == 0
        with LocalTriton(out, serving, startup_timeout_s=120) as triton:
            config = served_config(triton)
            client = httpclient.InferenceServerClient(triton.http_url.removeprefix("http://"))
            try:
                x = np.ones((2, 4), dtype=np.float32)
                tensor = httpclient.InferInput("x", [2, 4], "FP32")
                tensor.set_data_from_numpy(x)
                y = client.infer(NAME, [tensor]).as_numpy("y")
            finally:
                client.close()
        delays[delay] = int(config["dynamic_batching"]["max_queue_delay_microseconds"])
        assert config["max_batch_size"] == 8  # the artifact's
        assert config["instance_group"][0]["count"] == 2
        np.testing.assert_allclose(y, np.maximum(x @ WEIGHT, 0), rtol=1e-6)
    assert delays == {300: 300, 4000: 4000}
    # The artifact itself is untouched: same files, and its own config has the defaults.
    assert sorted(str(p.relative_to(artifact)) for p in artifact.rglob("*")) == before
    assert "max_queue_delay_microseconds: 500" in (artifact / NAME / "config.pbtxt").read_text()
