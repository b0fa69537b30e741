"""Failures are reported with Triton's own words, fast, never hung on; a model that fails at
run time answers with errors and keeps serving."""

from __future__ import annotations

import concurrent.futures
import shutil
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from optiserve.api.serving import DynamicBatchingSpec, ServingSpec
from optiserve.serve import LocalTriton, ModelLoadError, RepositoryError
from optiserve.serve.command import serve
from optiserve.serve.probe import poll_until
from optiserve.serve.repository import write_onnx_model
from optiserve_testing import prometheus
from tests.triton.conftest import MODEL, RepoFactory
from tests.triton.tiny_models import lookup_fails_off_zero

pytestmark = [pytest.mark.triton, pytest.mark.models, pytest.mark.timeout(300)]


def test_model_that_fails_to_load_is_reported_with_tritons_error(
    make_repository: RepoFactory,
) -> None:
    repository = make_repository(ServingSpec())
    (repository / MODEL / "1" / "model.onnx").write_bytes(b"this is not an onnx file")

    with pytest.raises(ModelLoadError) as raised:
        LocalTriton(repository, startup_timeout_s=120).start()

    assert set(raised.value.models) == {MODEL}
    assert "onnx" in raised.value.models[MODEL].lower() or "protobuf" in str(raised.value)
    assert raised.value.log_tail  # the end of Triton's log travels with the error


def test_config_naming_an_output_the_model_lacks_is_reported(make_repository: RepoFactory) -> None:
    repository = make_repository(ServingSpec())
    config = repository / MODEL / "config.pbtxt"
    # Parses as a ModelConfig, but names an output the model does not have.
    config.write_text(config.read_text().replace('name: "logits"', 'name: "no_such_output"'))

    with pytest.raises(ModelLoadError) as raised:
        LocalTriton(repository, startup_timeout_s=120).start()

    assert "no_such_output not in model.onnx (its outputs: logits)" in str(raised.value)


def test_config_that_fails_tritons_validation_is_reported(make_repository: RepoFactory) -> None:
    repository = make_repository(ServingSpec())
    config = repository / MODEL / "config.pbtxt"
    config.write_text(config.read_text().replace("max_batch_size: 32", "max_batch_size: -2"))

    with pytest.raises(ModelLoadError) as raised:
        LocalTriton(repository, startup_timeout_s=120).start()

    assert MODEL in raised.value.models


def test_gpu_only_platform_is_refused_before_starting(make_repository: RepoFactory) -> None:
    repository = make_repository(ServingSpec())
    config = repository / MODEL / "config.pbtxt"
    config.write_text(config.read_text().replace("onnxruntime_onnx", "tensorrt_plan"))

    with pytest.raises(RepositoryError, match="tensorrt_plan needs the GPU Triton image"):
        LocalTriton(repository).start()


def test_serve_command_exits_with_an_error_for_an_empty_directory(tmp_path: Path) -> None:
    assert serve(tmp_path, ports=(18900, 18901, 18902)) == 2


def test_missing_version_folder_is_a_repository_error(make_repository: RepoFactory) -> None:
    repository = make_repository(ServingSpec())
    shutil.rmtree(repository / MODEL / "1")

    with pytest.raises(RepositoryError, match=r"no <version>/model\.onnx"):
        LocalTriton(repository).start()


def test_model_failing_at_run_time_answers_each_request_with_an_error_and_keeps_serving(
    tmp_path: Path,
) -> None:
    """onnxruntime errors inside ``execute``, many requests at once so that the dynamic
    batcher joins failing requests into one execution: every request gets the error in
    onnxruntime's words, Triton counts each in ``nv_inference_request_failure`` (what a
    canary's error-rate check reads), and the same server and stub answer the next good
    request. (With one TritonError shared by a batch's responses this server crashed, SIGSEGV
    or a boost lock_exception; with error responses it counted the failures as successes.)"""
    serving = ServingSpec(
        max_batch_size=8,
        dynamic_batching=DynamicBatchingSpec(max_queue_delay_microseconds=20_000),
    )
    model = lookup_fails_off_zero(tmp_path / "lookup.onnx")
    write_onnx_model(tmp_path / "repo", "lookup", model, serving)
    bad = np.full((1, 8), 0.1, dtype=np.float32)  # index 100 of an 8-row table
    good = np.zeros((1, 8), dtype=np.float32)

    with LocalTriton(tmp_path / "repo", serving) as triton:
        stubs = _python_stubs(triton)
        metrics_before = prometheus.scrape(triton.metrics_url, "lookup")
        stats_before = _statistics(triton)

        def ask(x: npt.NDArray[np.float32]) -> str | npt.NDArray[np.float32]:
            client = grpcclient.InferenceServerClient(triton.grpc_url)
            try:
                tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
                tensor.set_data_from_numpy(x)
                answer: npt.NDArray[np.float32] = client.infer("lookup", [tensor]).as_numpy("y")
                return answer
            except InferenceServerException as error:
                return str(error.message())
            finally:
                client.close()

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(ask, [bad] * 48))
        after_errors = ask(good)
        # Triton counts a request just after it answers: read until all 49 are in (or 10 s).
        readings: list[tuple[dict[str, float], dict[str, int]]] = []

        def counted() -> bool:
            readings.append((prometheus.scrape(triton.metrics_url, "lookup"), _statistics(triton)))
            metrics, stats = readings[-1]
            failed = metrics.get("nv_inference_request_failure", 0.0)
            succeeded = metrics.get("nv_inference_request_success", 0.0)
            return (
                failed - metrics_before.get("nv_inference_request_failure", 0.0) >= 48
                and succeeded - metrics_before.get("nv_inference_request_success", 0.0) >= 1
                and stats["fail"] - stats_before["fail"] >= 48
            )

        poll_until(counted, 10.0, 0.05)
        metrics, stats = readings[-1]
        still_running, stubs_after = triton.running, _python_stubs(triton)
        log_tail = triton.log_tail(10)

    assert all(isinstance(a, str) for a in answers), answers
    for answer in answers:
        assert "onnxruntime failed" in answer and "indices element out of data bounds" in answer
    # Neither the server nor its stub died (a restarted stub has another pid).
    assert still_running and stubs and stubs_after == stubs, (stubs, stubs_after, log_tail)
    assert isinstance(after_errors, np.ndarray), after_errors
    np.testing.assert_allclose(after_errors.sum(), 1.0, rtol=1e-5)  # a softmax: it answered
    delta = {k: metrics[k] - metrics_before.get(k, 0.0) for k in metrics}
    assert delta["nv_inference_request_failure"] == 48, delta
    assert delta["nv_inference_request_success"] == 1, delta
    assert stats["fail"] - stats_before["fail"] == 48, (stats, stats_before)
    # The failing requests met in batches: fewer executions than requests.
    assert stats["executions"] - stats_before["executions"] < 49, (stats, stats_before)


def _statistics(triton: LocalTriton) -> dict[str, int]:
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    try:
        found = client.get_inference_statistics("lookup", as_json=True)["model_stats"][0]
    finally:
        client.close()
    return {
        "fail": int(found["inference_stats"].get("fail", {}).get("count", 0)),
        "executions": int(found.get("execution_count", 0)),
    }


def _python_stubs(triton: LocalTriton) -> set[int]:
    """The pids of the server's python-backend stubs: they run in its process group."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, rest = stat.read_text().split(" (", 1)
        except OSError:  # gone meanwhile
            continue
        name, fields = rest.rsplit(") ", 1)
        if name.startswith("triton_python") and int(fields.split()[2]) == triton.pid:  # pgrp
            found.add(int(pid))
    return found
