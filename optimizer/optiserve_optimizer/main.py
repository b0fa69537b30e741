"""Entry point: ``optiserve optimize SPEC.yaml --out DIR`` and the optimization Job's command.

Only this module turns errors into exit codes. Whatever happens, a compact JSON summary
(< 4 KiB) goes to the termination-message file, where the operator reads the result.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from optiserve_optimizer.errors import OptimizerError, SpecError, VersionSkewError, short_cause
from optiserve_optimizer.progress import Progress

TERMINATION_ENV = "OPTISERVE_TERMINATION_LOG"
DEFAULT_TERMINATION_LOG = Path("/dev/termination-log")
SUMMARY_LIMIT = 4096
REASON_LIMIT = 160  # per candidate in the termination message; report.json has it whole


def load_request(spec_file: Path) -> Any:
    """An ``OptimizedModel`` manifest, or a bare ``{source, optimization, serving?, name?}``."""
    import yaml
    from pydantic import ValidationError

    from optiserve.api import OptimizationSpec, OptimizedModel, ServingSpec, SourceSpec
    from optiserve_optimizer.pipeline import RunRequest

    if not spec_file.is_file():
        raise SpecError("spec", f"spec file {spec_file} does not exist")
    try:
        doc = yaml.safe_load(spec_file.read_text())
        if not isinstance(doc, dict):
            raise SpecError("spec", f"{spec_file} holds no mapping")
        if doc.get("kind") == "OptimizedModel":
            resource = OptimizedModel.from_wire(doc)
            return RunRequest(
                resource.metadata.name,
                resource.spec.source,
                resource.spec.optimization,
                resource.spec.serving,
            )
        return RunRequest(
            str(doc.get("name", "model")),
            SourceSpec.model_validate(doc["source"]),
            OptimizationSpec.model_validate(doc["optimization"]),
            ServingSpec.model_validate(doc.get("serving", {})),
        )
    except (yaml.YAMLError, ValidationError, KeyError) as exc:
        raise SpecError("spec", f"{spec_file} is not a valid spec: {exc}") from exc


def termination_path() -> Path | None:
    configured = os.environ.get(TERMINATION_ENV)
    if configured:
        return Path(configured)
    if DEFAULT_TERMINATION_LOG.exists() and os.access(DEFAULT_TERMINATION_LOG, os.W_OK):
        return DEFAULT_TERMINATION_LOG
    return None


def compact(summary: dict[str, Any]) -> str:
    """JSON under the 4 KiB termination-message limit: candidates are dropped first."""
    text = json.dumps(summary, separators=(",", ":"))
    while len(text.encode()) >= SUMMARY_LIMIT and summary.get("candidates"):
        summary = {**summary, "candidates": summary["candidates"][:-1], "truncated": True}
        text = json.dumps(summary, separators=(",", ":"))
    if len(text.encode()) >= SUMMARY_LIMIT:
        text = json.dumps(
            {k: v for k, v in summary.items() if k in ("ok", "digest", "error")},
            separators=(",", ":"),
        )[: SUMMARY_LIMIT - 1]
    return text


def write_termination(summary: dict[str, Any]) -> None:
    path = termination_path()
    if path is None:
        return
    try:
        path.write_text(compact(summary))
    except OSError as exc:
        print(f"could not write the termination message to {path}: {exc}", file=sys.stderr)


def summary_of(report: dict[str, Any], folder: Path, reused: bool) -> dict[str, Any]:
    keep = (
        "name",
        "precision",
        "latencyMs",
        "throughput",
        "accuracyDrop",
        "speedup",
        "passed",
        "failed",
        "chosen",
    )
    return {
        "ok": True,
        "reused": reused,
        "digest": report["recipeDigest"],
        "folder": str(folder),
        "artifact": report["artifact"],
        "metrics": report["metrics"],
        "fallbackReason": report.get("fallbackReason"),
        "candidates": [
            {**{k: c[k] for k in keep if k in c}, "reason": str(c.get("reason", ""))[:REASON_LIMIT]}
            for c in report["candidates"]
        ],
    }


def _bounded(cause: str, limit: int = 1500) -> str:
    """A cause short enough for the termination message, keeping its end (where a chained
    tool error states the reason) when it must be cut."""
    return cause if len(cause) <= limit else cause[: limit // 3] + " ... " + cause[-limit // 2 :]


def check_expected_digest(expected: str | None, computed: str, version: str) -> None:
    """Refuses to run when the operator expects another recipe digest (``expected``, from
    ``OPTISERVE_EXPECTED_DIGEST``; unset for a local run): the digest covers the optiserve
    version, so operator and optimizer images of different versions disagree here, and an
    artifact built anyway would be refused by the operator after the whole optimization."""
    if not expected or expected.strip().removeprefix("sha256:") == computed:
        return
    raise VersionSkewError(
        "version",
        f"version skew: the operator expects recipe digest {expected.strip()[:80]}, this "
        f"optimizer (optiserve {version}) computes {computed}; run matching operator and "
        "optimizer images",
    )


def run_optimize(spec_file: Path | str, out_dir: Path | str) -> int:
    """Optimizes, packages into ``out_dir/<digest>/``; returns the process exit code.

    Before any work: the operator's expected digest is checked, remote (s3://, https://)
    inputs are fetched, then the model's storage folder is pruned as ``storage.retention``
    says (only when the operator asks for it). With ``storage.s3`` the finished artifact is
    uploaded (``artifact_store``) before the summary is written.
    """
    progress = Progress()
    try:
        from optiserve.digest import optiserve_version, spec_recipe_digest
        from optiserve.render.job import EXPECTED_DIGEST_ENV
        from optiserve_optimizer.artifact_store import ArtifactStore, prune_store
        from optiserve_optimizer.package import existing_report
        from optiserve_optimizer.pipeline import run_request
        from optiserve_optimizer.remote_inputs import stage_remote_inputs
        from optiserve_optimizer.retention import prune, retention_from_env

        request = load_request(Path(spec_file))
        digest = spec_recipe_digest(
            request.name, request.source, request.optimization, request.serving
        )
        check_expected_digest(os.environ.get(EXPECTED_DIGEST_ENV), digest, optiserve_version())
        store = ArtifactStore.from_env(os.environ)  # storage.s3: build here, then upload
        if store is not None:
            store.restore(Path(out_dir), digest, progress.line)
        if existing_report(Path(out_dir), digest) is None:  # a reused artifact needs no inputs
            stage_remote_inputs(request, progress.line)
        retention = retention_from_env(os.environ, digest)
        if retention is not None:
            prune(Path(out_dir), retention, time.time(), progress.line)
            if store is not None:
                prune_store(store, retention, time.time(), progress.line)
        result = run_request(request, Path(out_dir), progress)
        if store is not None:
            store.upload(result.folder, digest, progress.line)
    except OptimizerError as exc:
        progress.line(f"FAILED {exc}")
        write_termination(
            {
                "ok": False,
                "error": {
                    "pass": exc.pass_name,
                    "message": _bounded(exc.cause),
                    "type": type(exc).__name__,
                },
            }
        )
        return exc.exit_code
    except Exception as exc:  # a bug, not bad input: still tell the operator
        progress.line(f"FAILED unexpectedly: {exc!r}")
        write_termination(
            {
                "ok": False,
                "error": {
                    "pass": "internal",
                    "message": f"{type(exc).__name__}: {short_cause(exc)}",
                    "type": type(exc).__name__,
                },
            }
        )
        return 1
    summary = summary_of(result.report, result.folder, result.reused)
    write_termination(summary)
    print(json.dumps(summary, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="optiserve optimize",
        description="Optimize a model (export, prune, recover, quantize, TensorRT), gate it "
        "on accuracy, benchmark it and write a Triton model repository + report.json.",
    )
    parser.add_argument("spec", type=Path, help="OptimizedModel YAML (or {source, optimization})")
    parser.add_argument("--out", type=Path, required=True, help="artifact folder (<out>/<digest>/)")
    args = parser.parse_args(argv)
    return run_optimize(args.spec, args.out)


if __name__ == "__main__":
    sys.exit(main())
