"""The report page as a pure function, and `optiserve report` on artifacts and bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from optiserve.report_cli import ReportError, find_report, load_report
from optiserve.report_page import CSP, render_report_page

from .sample_report import HOSTILE, sample_report


def test_every_candidate_has_a_row_and_a_point_and_the_winner_is_marked_once() -> None:
    page = render_report_page(sample_report())
    assert page.count('<tr class="candidate') == 4
    # A candidate without a throughput (it failed before timing) has a row but no point.
    assert page.count('<circle class="candidate"') == 3
    assert page.count('class="winner"') == 1
    assert page.count('<tr class="candidate chosen"') == 1
    assert 'class="gate"' in page and "gate 0.01" in page
    assert 'class="baseline"' in page


def test_the_gate_line_sits_at_max_drop_between_passing_and_failing_points() -> None:
    page = render_report_page(sample_report())
    gate_x = float(re.search(r'<line class="gate" x1="([\d.]+)"', page)[1])  # type: ignore[index]
    xs = {
        name: float(x)
        for name, x in re.findall(
            r'<circle class="candidate" data-name="([^"]+)" cx="([\d.]+)"', page
        )
    }
    assert xs["fp32"] < gate_x and xs["int8-dynamic"] < gate_x < xs["pruned-structured"]


def test_user_text_is_escaped_and_the_page_can_make_no_request() -> None:
    page = render_report_page(sample_report(name=HOSTILE))
    assert "<script" not in page
    assert "&lt;script&gt;" in page
    assert CSP in page and "default-src 'none'" in CSP
    assert not re.search(r"(src|href)\s*=", page, re.IGNORECASE)
    assert "://" not in page.replace("pvc://", "")


def test_sections_without_data_are_left_out_not_faked() -> None:
    bare = render_report_page(sample_report(candidateDetails={}, tools={}, plan=[]))
    assert "<h2>Latency</h2>" not in bare and "<h2>Tools</h2>" not in bare
    checks = [{"name": "reference", "result": "passed", "cosine": 0.999}]
    trials = [{"maxBatchSize": 8, "throughput": 900.0, "p99Ms": 4.1}]
    full = render_report_page(sample_report(checks=checks, tuning={"trials": trials}))
    assert "<h2>What was checked</h2>" in full and "reference" in full
    assert "<h2>Tuning trials</h2>" in full and "maxBatchSize" in full


def test_a_report_with_no_candidates_still_renders() -> None:
    page = render_report_page(sample_report(candidates=[], chosen=None))
    assert "No candidate has a throughput to plot" in page


def _write(tmp_path: Path, report: object) -> Path:
    folder = tmp_path / "digest"
    folder.mkdir()
    (folder / "report.json").write_text(json.dumps(report))
    return folder


def test_find_report_takes_the_folder_the_file_the_repository_or_a_uri(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _write(tmp_path, sample_report())
    (folder / "model_repository").mkdir()
    expected = folder / "report.json"
    assert find_report(str(folder)) == expected
    assert find_report(str(expected)) == expected
    assert find_report(str(folder / "model_repository")) == expected
    monkeypatch.setenv("OPTISERVE_PVC_ROOT", str(tmp_path.parent))
    assert find_report(f"pvc://{tmp_path.name}/digest/model_repository/") == expected
    with pytest.raises(ReportError, match=r"no report\.json"):
        find_report(str(tmp_path / "nowhere"))


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"\xff\xfe\x00binary", "not a JSON report"), (b"[1, 2]", "not an optiserve")],
)
def test_load_report_refuses_what_is_not_a_report(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "report.json"
    path.write_bytes(content)
    with pytest.raises(ReportError, match=message):
        load_report(path)


def _optiserve(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "optiserve.cli", "report", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
        timeout=60,
    )


def test_cli_writes_the_page_and_answers_bad_input_with_one_line(tmp_path: Path) -> None:
    folder = _write(tmp_path, sample_report())
    done = _optiserve(str(folder), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "int8-dynamic" in (tmp_path / "digits-report.html").read_text()
    bad = _optiserve(str(tmp_path / "missing"), cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
