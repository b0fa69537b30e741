"""Requests of different shapes in flight together each get their own right answer."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import tritonclient.grpc as grpcclient

from optiserve.api.serving import DynamicBatchingSpec, ServingSpec
from optiserve.serve import LocalTriton
from optiserve.serve.repository import write_onnx_model
from tests.triton.tiny_models import row_sum

pytestmark = [pytest.mark.triton, pytest.mark.timeout(300)]


def test_concurrent_requests_of_mixed_lengths_are_answered_correctly(tmp_path: Path) -> None:
    serving = ServingSpec(dynamic_batching=DynamicBatchingSpec(max_queue_delay_microseconds=20_000))
    write_onnx_model(tmp_path / "repo", "rowsum", row_sum(tmp_path / "r.onnx"), serving)
    rng = np.random.default_rng(0)
    # Two requests per length, so requests that can share a batch do.
    requests = [rng.integers(0, 100, size=(1 + i % 2, 3 + i % 4)) for i in range(24)]

    with LocalTriton(tmp_path / "repo", serving) as triton:

        def ask(tokens: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
            client = grpcclient.InferenceServerClient(triton.grpc_url)
            try:
                tensor = grpcclient.InferInput("tokens", list(tokens.shape), "INT64")
                tensor.set_data_from_numpy(tokens)
                answer: npt.NDArray[np.int64] = client.infer("rowsum", [tensor]).as_numpy("total")
                return answer
            finally:
                client.close()

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(ask, requests))

    for tokens, answer in zip(requests, answers, strict=True):
        np.testing.assert_array_equal(answer, tokens.sum(axis=1, keepdims=True))
