"""Running the optimizer's entry point in a test: write the spec, run it, read what it wrote.

``run_optimize`` reads a spec file and writes the termination summary (what the operator puts
on the status ladder) and, when it succeeds, ``<out>/<digest>/report.json``. Every end-to-end
optimizer test goes through ``OptimizerRunner`` (the ``optimizer`` fixture in conftest.py), so
the file layout is read in one place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# Few timed runs: the tests check what is measured and reported, not how fast.
QUICK_BENCHMARK: dict[str, Any] = {"batchSizes": [1, 8], "iterations": 2, "warmup": 1}


@dataclass(frozen=True)
class RunOutcome:
    """One ``run_optimize`` call: its exit code, the termination summary, the output folder."""

    code: int
    summary: dict[str, Any]
    termination_text: str
    out: Path

    @property
    def folder(self) -> Path:
        """The run's artifact folder (``<out>/<recipe digest>``)."""
        return self.out / str(self.summary["digest"])

    @property
    def report(self) -> dict[str, Any]:
        report: dict[str, Any] = json.loads((self.folder / "report.json").read_text())
        return report

    @property
    def error(self) -> dict[str, Any]:
        """The error of a failed run, as the termination summary gives it."""
        assert self.summary["ok"] is False, self.summary
        error: dict[str, Any] = self.summary["error"]
        return error


class OptimizerRunner:
    """Writes specs under ``tmp_path`` and runs them with the termination log pointed there."""

    def __init__(self, tmp_path: Path, termination: Path) -> None:
        self.tmp_path = tmp_path
        self.termination = termination
        self.out = tmp_path / "out"

    def write_spec(
        self,
        name: str,
        source: dict[str, Any],
        optimization: dict[str, Any],
        filename: str = "spec.yaml",
        **document: Any,
    ) -> Path:
        """The optimizer's input document (``name``, ``source``, ``optimization``, ...)."""
        path = self.tmp_path / filename
        path.write_text(
            yaml.safe_dump(
                {"name": name, "source": source, "optimization": optimization, **document}
            )
        )
        return path

    def run(self, spec: Path, expect: int = 0, out: Path | None = None) -> RunOutcome:
        """Runs ``spec`` and fails the test, showing the summary, unless it exits ``expect``."""
        from optiserve_optimizer.main import run_optimize

        out = out or self.out
        code = run_optimize(spec, out)
        text = self.termination.read_text() if self.termination.exists() else ""
        assert code == expect, f"run_optimize exited {code}, not {expect}; summary: {text[:4000]}"
        summary: dict[str, Any] = json.loads(text) if text else {}
        return RunOutcome(code, summary, text, out)

    def optimize(
        self,
        name: str,
        source: dict[str, Any],
        optimization: dict[str, Any],
        expect: int = 0,
        out: Path | None = None,
    ) -> RunOutcome:
        """``write_spec`` then ``run``."""
        return self.run(self.write_spec(name, source, optimization), expect, out)
