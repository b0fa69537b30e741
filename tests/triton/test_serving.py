"""The digits CNN served by a real local tritonserver: answers, batching, cache, bad input."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from optiserve.serve import LocalTriton
from optiserve.serve.loadgen import run_load, server_counters, settled_counters
from optiserve_testing import prometheus
from optiserve_testing.example_models import (
    DIGITS_INPUT,
    DIGITS_OUTPUT,
    digits_eval,
    digits_samples,
)
from tests.triton.conftest import MODEL

pytestmark = [pytest.mark.triton, pytest.mark.models, pytest.mark.timeout(600)]


def infer(triton: LocalTriton, images: np.ndarray[Any, Any], dtype: str = "FP32") -> Any:
    client = httpclient.InferenceServerClient(triton.http_url.removeprefix("http://"))
    try:
        tensor = httpclient.InferInput(DIGITS_INPUT, list(images.shape), dtype)
        tensor.set_data_from_numpy(images)
        return client.infer(MODEL, [tensor]).as_numpy(DIGITS_OUTPUT)
    finally:
        client.close()


def cache_metric(triton: LocalTriton, name: str) -> float:
    found = prometheus.scrape(triton.metrics_url, MODEL)
    assert name in found, f"{name} missing from Triton's metrics"
    return found[name]


def test_served_model_equals_onnxruntime_and_classifies_digits(
    batching_server: LocalTriton, digits_model: Path
) -> None:
    images, labels = digits_eval()
    served = infer(batching_server, images[:32])
    expected = ort.InferenceSession(str(digits_model)).run(None, {DIGITS_INPUT: images[:32]})[0]
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-5)
    assert (served.argmax(axis=1) == labels[:32]).mean() > 0.8


def test_dynamic_batching_joins_concurrent_requests(batching_server: LocalTriton) -> None:
    result = run_load(batching_server.grpc_url, MODEL, digits_samples(64), 16, 320)

    assert result.errors == 0
    assert result.server.inferences == 320
    assert result.server.executions < result.server.inferences
    assert max(result.server.batch_executions) > 1


def test_batched_answers_go_back_to_the_request_that_asked(
    batching_server: LocalTriton, digits_model: Path
) -> None:
    images = digits_eval()[0][:64]
    expected = ort.InferenceSession(str(digits_model)).run(None, {DIGITS_INPUT: images})[0]
    before = server_counters(batching_server.grpc_url, MODEL)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: infer(batching_server, images[i : i + 1]), range(64)))

    delta = settled_counters(batching_server.grpc_url, MODEL, before, 64).since(before)
    assert delta.executions < delta.inferences == 64  # some answers were computed together
    for index, answer in enumerate(answers):
        np.testing.assert_allclose(answer[0], expected[index], rtol=1e-5, atol=1e-5)


def test_without_dynamic_batching_every_request_runs_alone(unbatched_server: LocalTriton) -> None:
    result = run_load(unbatched_server.grpc_url, MODEL, digits_samples(64), 16, 160)

    assert result.errors == 0
    assert result.server.executions == result.server.inferences == 160
    assert set(result.server.batch_executions) == {1}


def test_repeated_request_is_a_cache_hit_with_the_same_answer(cached_server: LocalTriton) -> None:
    image = digits_eval()[0][:1]
    before = server_counters(cached_server.grpc_url, MODEL)
    hits_metric = cache_metric(cached_server, "nv_cache_num_hits_per_model")

    first = infer(cached_server, image)
    again = infer(cached_server, image)
    other = infer(cached_server, digits_eval()[0][1:2])

    delta = settled_counters(cached_server.grpc_url, MODEL, before, 3).since(before)
    assert (delta.cache_misses, delta.cache_hits) == (2, 1)
    assert delta.executions == 2  # the hit never reached the model
    assert cache_metric(cached_server, "nv_cache_num_hits_per_model") == hits_metric + 1
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize(
    ("images", "dtype", "message"),
    [
        (np.zeros((1, 1, 8, 9), np.float32), "FP32", "unexpected shape"),
        (
            np.zeros((1, 1, 8, 8), np.float64),
            "FP64",
            "data-type is 'FP64', but model 'digits' expects 'FP32'",
        ),
        (np.zeros((64, 1, 8, 8), np.float32), "FP32", "batch-size must be <= 32"),
    ],
    ids=["wrong-shape", "wrong-dtype", "batch-too-large"],
)
def test_bad_input_gets_a_clear_error_and_the_server_keeps_serving(
    batching_server: LocalTriton, images: np.ndarray[Any, Any], dtype: str, message: str
) -> None:
    with pytest.raises(InferenceServerException, match=message):
        infer(batching_server, images, dtype)

    assert infer(batching_server, np.zeros((1, 1, 8, 8), np.float32)).shape == (1, 10)
    client = grpcclient.InferenceServerClient(batching_server.grpc_url)
    assert client.is_server_ready() and client.is_model_ready(MODEL)
    client.close()
