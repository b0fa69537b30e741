"""The models-by-phase gauge, kept by every worker thread at once.

A restart's passes each record a model the new operator has not seen yet, in up to
``--workers`` threads. Counting the phases by iterating the shared table while another thread
added to it raised ``RuntimeError: dictionary changed size during iteration`` inside the
status write: the pass failed, wrote a TransientError condition to a model that was Ready and
unchanged, and its retry wrote Ready again (two status patches a model, seen after restarts of
the 500- and 1,000-model benchmarks).
"""

from __future__ import annotations

import copy
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from prometheus_client import REGISTRY

from optiserve.api.status import OptimizedModelStatus
from optiserve_operator.controller import Controller
from optiserve_operator.phases import PhaseTable
from tests.operator.helpers import BASE, CONFIG

THREADS = 8
MODELS_PER_THREAD = 400


def models_in(phase: str) -> float | None:
    return REGISTRY.get_sample_value("optiserve_models", {"phase": phase})


def test_the_table_counts_each_model_once_in_its_last_phase() -> None:
    published: list[Mapping[str, int]] = []
    table = PhaseTable(published.append)
    assert table.set(("ns", "a"), "Deploying") is None  # first seen: no previous phase
    assert table.set(("ns", "b"), "Deploying") is None
    assert table.set(("ns", "a"), "Ready") == "Deploying"
    assert published[-1] == {"Deploying": 1, "Ready": 1}
    table.forget(("ns", "a"))
    table.forget(("ns", "a"))  # a second delete event changes nothing
    assert published[-1] == {"Deploying": 1}
    assert table.set(("ns", "a"), "Ready") is None  # created again: new to the table


class QuietKube:
    """Writes nothing: every model's status is already what the pass computes."""

    def apply(self, manifest: Any, subresource: str | None = None, **_: Any) -> Any:
        raise AssertionError(f"unexpected write of {manifest['metadata']['name']}")


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Threads switch as often as the interpreter can: the race shows in every run."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


def ready_model(name: str) -> tuple[dict[str, Any], OptimizedModelStatus]:
    obj = copy.deepcopy(BASE)
    obj["metadata"].update(name=name, uid=f"uid-{name}", generation=1)
    status = OptimizedModelStatus(phase="Ready", observed_generation=1)
    obj["status"] = status.to_wire()
    return obj, status


def test_status_writes_of_many_workers_at_a_restart_neither_fail_nor_write(
    fast_switching: None,
) -> None:
    controller = Controller(QuietKube(), CONFIG)  # type: ignore[arg-type]
    failures: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def worker(index: int) -> None:
        models = [ready_model(f"m-{index}-{i}") for i in range(MODELS_PER_THREAD)]
        start.wait()
        for obj, status in models:
            try:
                controller._write_status(obj, status)
            except BaseException as err:  # what the pass would have failed with
                failures.append(err)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert models_in("Ready") == THREADS * MODELS_PER_THREAD
