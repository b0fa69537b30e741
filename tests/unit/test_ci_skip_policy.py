"""CI cannot pass by skipping: under OPTISERVE_REQUIRE_TIERS=1 a skip fails unless marked gpu."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"
TESTS = """
import pytest

def test_plain_skip():
    pytest.skip("helm is not installed")

@pytest.mark.gpu
def test_gpu_skip():
    pytest.skip("no GPU here")

def test_passes():
    assert True
"""


@pytest.mark.parametrize(("required", "failed"), [("1", 1), ("", 0)])
def test_only_gpu_tests_may_skip_in_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, required: str, failed: int
) -> None:
    monkeypatch.setenv("OPTISERVE_REQUIRE_TIERS", required)
    # The copied conftest imports optiserve_testing: the child needs this checkout on its path.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in sys.path if p))
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini("[pytest]\nmarkers =\n    gpu: needs a GPU\n")
    pytester.makepyfile(test_skips=TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=2 - failed, failed=failed)
    if failed:
        result.stdout.fnmatch_lines(["*allows skips only for gpu tests*helm is not installed*"])
