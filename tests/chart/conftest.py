"""The helm fixture of the chart tests: the pinned binary, or a skip that says how to build it.
(`cluster` and `cluster_namespace` come from testing/optiserve_testing via tests/conftest.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chart.helm import HelmUnavailable, helm_binary


@pytest.fixture(scope="session")
def helm() -> Path:
    try:
        return helm_binary()
    except HelmUnavailable as err:
        pytest.skip(str(err))
