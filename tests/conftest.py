"""Shared pytest set-up: the local control plane fixture (tests/harness) for the cluster tiers.

With ``OPTISERVE_REQUIRE_TIERS=1`` (set by ``.ci/run``) a skipped test of a tier that must run
in CI (models, triton, cluster, e2e, tensorrt) fails instead: a missing control plane,
tritonserver or TensorRT install is a broken CI machine, not a reason to pass. GPU tests still
skip where there is no GPU.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

pytest_plugins = ["tests.harness.fixtures"]

REQUIRED_TIERS = ("models", "triton", "cluster", "e2e", "tensorrt")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report = outcome.get_result()
    if (
        report.skipped
        and os.environ.get("OPTISERVE_REQUIRE_TIERS") == "1"
        and item.get_closest_marker("gpu") is None
        and any(item.get_closest_marker(tier) for tier in REQUIRED_TIERS)
    ):
        report.outcome = "failed"
        report.longrepr = (
            f"skipped, but OPTISERVE_REQUIRE_TIERS=1 requires this tier: {report.longrepr}"
        )
