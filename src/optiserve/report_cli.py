"""``optiserve report ARTIFACT``: the optimization report page of a finished artifact.

ARTIFACT is what the optimizer wrote: its folder (``<out>/<digest>/``), the ``report.json`` in
it, or the artifact's URI as ``status.artifact.uri`` names it (``pvc://...`` resolves under
``$OPTISERVE_PVC_ROOT`` as everywhere else; ``s3://...`` of ``storage.s3`` is read from the
bucket, through the artifact's completion marker, with the caller's AWS environment:
:mod:`optiserve.remote.report_object`), or ``om/NAME``: the model's, found with kubectl in
the caller's context (:mod:`optiserve.report_model`). The page is rendered afresh from
``report.json`` (so an old artifact gets today's page) and written to ``--out``; ``--serve``
serves it on a loopback port until interrupted, for a browser on this machine or through
``kubectl port-forward``-style tunnels.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Mapping
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from optiserve.remote.errors import FetchError
from optiserve.remote.report_object import fetch_report
from optiserve.report_model import (
    ModelLookupError,
    model_name,
    read_model,
    report_location,
    store_environment,
)
from optiserve.report_page import render_report_page
from optiserve.uri import UnsupportedUriError, local_path

REPORT_JSON = "report.json"
REPORT_PAGE = "report.html"
MAX_REPORT_BYTES = 32 * 1024 * 1024  # a report is kilobytes; anything this big is not one


class ReportError(Exception):
    """The target holds no readable optimization report."""


def find_report(target: str) -> Path:
    """``report.json`` of an artifact folder, a model repository inside it, a file or a URI."""
    try:
        path = local_path(target) if "://" in target else Path(target)
    except UnsupportedUriError as exc:
        raise ReportError(str(exc)) from None
    for candidate in (path, path / REPORT_JSON, path.parent / REPORT_JSON):
        if candidate.is_file() and candidate.name == REPORT_JSON:
            return candidate
    raise ReportError(f"{target}: no {REPORT_JSON} there (give the artifact folder or the file)")


def load_report(path: Path) -> dict[str, Any]:
    if path.stat().st_size > MAX_REPORT_BYTES:
        raise ReportError(f"{path}: larger than {MAX_REPORT_BYTES} bytes; not a report")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: not a JSON report ({exc})") from None
    if not isinstance(report, dict) or report.get("kind") != "OptimizationReport":
        raise ReportError(f"{path}: not an optiserve OptimizationReport")
    return report


def read_report(target: str, env: Mapping[str, str]) -> dict[str, Any]:
    """The report of ``target``: a local folder, file or pvc:// URI, or an s3:// URI (read
    with the store settings and credentials in ``env``)."""
    if not target.startswith("s3://"):
        return load_report(find_report(target))
    with tempfile.TemporaryDirectory(prefix="optiserve-report-") as scratch:
        try:
            path = fetch_report(target, Path(scratch), env, MAX_REPORT_BYTES, _log)
        except FetchError as exc:
            raise ReportError(f"{exc.reason}: {exc}") from None
        return load_report(path)


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _serve(page: Path, host: str, port: int) -> int:
    handler = partial(SimpleHTTPRequestHandler, directory=str(page.parent))
    with ThreadingHTTPServer((host, port), handler) as server:
        url = f"http://{host}:{server.server_address[1]}/{page.name}"
        print(f"serving {url} (Ctrl-C stops)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
    return 0


def run_report(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="optiserve report",
        description="Render the optimization report page (candidates ladder, latency, what was "
        "checked, the measurement conditions) of a finished artifact as one self-contained "
        "HTML file that makes no network request.",
    )
    parser.add_argument(
        "artifact",
        metavar="ARTIFACT",
        help="artifact folder, report.json or URI (pvc://, s3://: status.artifact.report), "
        "or om/NAME: the model's, read with kubectl in the current context",
    )
    parser.add_argument("--namespace", "-n", help="the model's namespace (with om/NAME)")
    parser.add_argument("--context", help="the kubeconfig context (with om/NAME)")
    parser.add_argument(
        "--out",
        "-o",
        type=Path,
        help=f"where to write the page (default: ./<model>-{REPORT_PAGE}; '-' for stdout)",
    )
    parser.add_argument("--serve", action="store_true", help="serve the page until interrupted")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (%(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="port to serve on (%(default)s)")
    args = parser.parse_args(argv)
    try:
        target, env = args.artifact, dict(os.environ)
        name = model_name(args.artifact)
        if name is not None:  # the model's status says where, the cluster's store how
            model = read_model(name, args.namespace, args.context)
            target = report_location(model)
            env = store_environment(model, env, target)
        report = read_report(target, env)
    except (ReportError, ModelLookupError, OSError, ValueError) as exc:  # ValueError: an endpoint
        print(f"optiserve report: {exc}", file=sys.stderr)
        return 2
    page = render_report_page(report)
    if str(args.out) == "-":
        sys.stdout.write(page)
        return 0
    out: Path = args.out or Path(f"{report.get('name') or 'model'}-{REPORT_PAGE}")
    try:
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        print(f"optiserve report: cannot write {out}: {exc.strerror}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return _serve(out.resolve(), args.host, args.port) if args.serve else 0
