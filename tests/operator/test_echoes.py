"""Dropping our own status writes' watch events, and which events are urgent (echoes.py)."""

from __future__ import annotations

import copy
from typing import Any

from optiserve_operator.echoes import OwnWrites, is_edit

KEY = ("ns", "m")


def model(version: str, generation: int = 1, observed: int | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "metadata": {
            "name": "m",
            "namespace": "ns",
            "resourceVersion": version,
            "generation": generation,
            "annotations": {"a": "1"},
        }
    }
    if observed is not None:
        obj["status"] = {"observedGeneration": observed}
    return obj


def test_the_event_of_our_own_write_is_an_echo_once() -> None:
    writes = OwnWrites()
    read = model("10")
    writes.record(KEY, "11", read)
    echo = model("11", observed=1)
    assert writes.is_echo(KEY, echo)
    assert not writes.is_echo(KEY, echo)  # forgotten once seen
    assert len(writes) == 0


def test_a_later_version_is_not_an_echo() -> None:
    writes = OwnWrites()
    writes.record(KEY, "11", model("10"))
    assert not writes.is_echo(KEY, model("12", observed=1))
    assert not writes.is_echo(("ns", "other"), model("11"))


def test_a_change_folded_into_our_write_s_event_is_not_an_echo() -> None:
    # Someone set the retry annotation between the pass's read and its status write; kopf
    # may deliver only the latest event, at our write's version: it must still reconcile.
    writes = OwnWrites()
    read = model("10")
    writes.record(KEY, "12", read)
    folded = copy.deepcopy(model("12", observed=1))
    folded["metadata"]["annotations"]["optiserve.io/retry"] = "1"
    assert not writes.is_echo(KEY, folded)
    writes.record(KEY, "14", read)
    assert not writes.is_echo(KEY, model("14", generation=2, observed=1))  # a spec edit


def test_forget_and_empty_versions() -> None:
    writes = OwnWrites()
    writes.record(KEY, None, model("1"))
    assert len(writes) == 0
    writes.record(KEY, "2", model("1"))
    writes.forget(KEY)
    assert not writes.is_echo(KEY, model("2"))


def test_only_an_edit_of_a_reconciled_model_is_urgent() -> None:
    assert is_edit(model("5", generation=3, observed=2))
    assert not is_edit(model("5", generation=2, observed=2))
    assert not is_edit(model("5", generation=1))  # new: queued with the others
    assert not is_edit(model("5", generation=1, observed=0))  # the CRD's default status
