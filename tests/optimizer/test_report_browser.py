"""The report pages of the digits and MiniLM examples, opened in a real headless Chromium.

Chromium writes a NetLog of every request it starts; a request the page started carries the
page's origin as its initiator (``null`` for a file:// page), while Chromium's own background
traffic (update checks, network time) has none. The page must start no request; a control page
with one external image shows that such a request is seen. A closed loopback port as the proxy
keeps every request, the browser's own included, on this machine. The test also takes a
screenshot and reads the DOM Chromium built: the ladder chart and every candidate's row.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.optimizer.runs import OptimizerRunner

pytestmark = pytest.mark.models

BROWSER_OWN = "not an origin"  # NetLog's initiator for requests no page started


def page_requests(net_log: Path, page_url: str) -> list[str]:
    """URLs of the requests that the page (not the browser itself) started, from a NetLog."""
    log = json.loads(net_log.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    found = []
    for event in log["events"]:
        params = event.get("params") or {}
        url, initiator = params.get("url"), params.get("initiator")
        if event["type"] != start_job or not url or url == page_url:
            continue
        if initiator is not None and initiator != BROWSER_OWN:
            found.append(url)
    return found


def open_in_chromium(page: Path, tmp_path: Path) -> tuple[str, list[str]]:
    """(the DOM after load, the requests the page started); writes ``<page>.png`` beside it."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    url = page.resolve().as_uri()
    net_log = tmp_path / f"{page.stem}-netlog.json"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--proxy-server=http://127.0.0.1:9",  # nothing leaves this machine
        "--window-size=1200,1600",
        "--virtual-time-budget=3000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ]
    shot = page.with_suffix(".png")
    done = subprocess.run(
        [chromium, *flags, f"--screenshot={shot}", url],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert shot.is_file(), done.stderr.decode(errors="replace")[-2000:]
    dom = subprocess.run(
        [chromium, *flags, f"--log-net-log={net_log}", "--dump-dom", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    return dom.stdout.decode(), page_requests(net_log, url)


def is_blank(png: Path) -> bool:
    import matplotlib.image

    pixels = np.asarray(matplotlib.image.imread(str(png)))
    return float(pixels.std()) < 0.01


def test_a_request_the_page_starts_is_seen(tmp_path: Path) -> None:
    control = tmp_path / "control.html"
    control.write_text('<html><body><img src="http://example.invalid/x.png"></body></html>')
    _, requests = open_in_chromium(control, tmp_path)
    assert requests == ["http://example.invalid/x.png"]


def _check_page(folder: Path, tmp_path: Path) -> None:
    report = json.loads((folder / "report.json").read_text())
    page = tmp_path / f"{report['name']}-report.html"
    shutil.copyfile(folder / "report.html", page)  # the artifact stays as the optimizer wrote it
    dom, requests = open_in_chromium(page, tmp_path)
    assert requests == []
    assert not is_blank(page.with_suffix(".png"))
    assert '<svg role="img" aria-label="candidates ladder"' in dom
    rows = [c["name"] for c in report["candidates"]]
    assert len(rows) >= 2
    for name in rows:
        assert f'data-name="{name}"' in dom or name in dom
    assert dom.count('<tr class="candidate') == len(rows)


def test_digits_report_page(digits_files: Any, tmp_path: Path, optimizer: OptimizerRunner) -> None:
    folder = optimizer.optimize(
        "digits",
        {"uri": str(digits_files.model), "format": "torchscript"},
        {
            "quantization": {"precision": "int8", "method": "dynamic"},
            "accuracy": {"dataset": str(digits_files.eval), "metric": "top1", "maxDrop": 0.02},
            "benchmark": {"batchSizes": [1, 16], "iterations": 3, "warmup": 1},
        },
    ).folder
    _check_page(folder, tmp_path)


def test_minilm_report_page(minilm_files: Any, tmp_path: Path, optimizer: OptimizerRunner) -> None:
    folder = optimizer.optimize(
        "minilm",
        {"uri": str(minilm_files.model), "format": "onnx"},
        {
            "quantization": {"precision": "int8", "method": "dynamic"},
            "accuracy": {"dataset": str(minilm_files.eval), "metric": "cosine", "maxDrop": 0.01},
            "benchmark": {"batchSizes": [1, 8], "iterations": 2, "warmup": 1},
        },
    ).folder
    _check_page(folder, tmp_path)
