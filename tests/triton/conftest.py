"""Fixtures for the tests against a real local tritonserver (see docs/serving.md)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from optiserve.api.serving import DynamicBatchingSpec, ResponseCacheSpec, ServingSpec
from optiserve.serve import LocalTriton
from optiserve.serve.repository import write_onnx_model
from optiserve_testing.example_models import digits_onnx

MODEL = "digits"
RepoFactory = Callable[[ServingSpec], Path]

# A long enough queue delay that concurrent requests reliably meet in one batch even when
# the shared CPU is busy; the benchmark uses the default.
BATCHING = DynamicBatchingSpec(enabled=True, max_queue_delay_microseconds=5000)
NO_BATCHING = DynamicBatchingSpec(enabled=False)


@pytest.fixture(scope="session")
def digits_model() -> Path:
    return digits_onnx()


@pytest.fixture(scope="session")
def make_repository(tmp_path_factory: pytest.TempPathFactory, digits_model: Path) -> RepoFactory:
    """A production repository (platform onnxruntime_onnx) of the digits CNN."""

    def make(serving: ServingSpec) -> Path:
        repository = tmp_path_factory.mktemp("repository")
        write_onnx_model(repository, MODEL, digits_model, serving)
        return repository

    return make


def _serve(repository: Path, serving: ServingSpec) -> Iterator[LocalTriton]:
    with LocalTriton(repository, serving, startup_timeout_s=120) as triton:
        yield triton


@pytest.fixture(scope="module")
def batching_server(make_repository: RepoFactory) -> Iterator[LocalTriton]:
    serving = ServingSpec(dynamic_batching=BATCHING)
    yield from _serve(make_repository(serving), serving)


@pytest.fixture(scope="module")
def unbatched_server(make_repository: RepoFactory) -> Iterator[LocalTriton]:
    serving = ServingSpec(dynamic_batching=NO_BATCHING)
    yield from _serve(make_repository(serving), serving)


@pytest.fixture(scope="module")
def cached_server(make_repository: RepoFactory) -> Iterator[LocalTriton]:
    serving = ServingSpec(response_cache=ResponseCacheSpec(enabled=True, size_bytes=1 << 20))
    yield from _serve(make_repository(serving), serving)
