"""Shared pytest set-up: the local control plane fixture (optiserve_testing) for the cluster tiers.

With ``OPTISERVE_REQUIRE_TIERS=1`` (set by ``.ci/run``) every skipped test fails instead, in
every tier: a missing control plane, tritonserver, helm, Lua, hadolint or TensorRT is a broken CI
machine, not a reason to pass. The one exception is a test marked ``gpu``: CI machines have no GPU.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

pytest_plugins = ["optiserve_testing.fixtures"]


def skip_is_allowed(item: pytest.Item) -> bool:
    """Only GPU tests may skip under OPTISERVE_REQUIRE_TIERS=1."""
    return item.get_closest_marker("gpu") is not None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report = outcome.get_result()
    if (
        report.skipped
        and os.environ.get("OPTISERVE_REQUIRE_TIERS") == "1"
        and not skip_is_allowed(item)
    ):
        report.outcome = "failed"
        report.longrepr = (
            f"skipped, but OPTISERVE_REQUIRE_TIERS=1 allows skips only for gpu tests: "
            f"{report.longrepr}"
        )
