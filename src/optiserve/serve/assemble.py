"""The Triton pod's init container: assemble the model repository Triton serves.

``python -m optiserve.serve.assemble --artifact=DIR --settings=JSON --out=DIR``

``DIR`` of ``--artifact`` is the artifact's model repository (read-only, from the storage
claim); ``--out`` an emptyDir Triton is pointed at. For each model the output holds the served
``config.pbtxt`` (``render.serving_config.served_model_config``: the Job's facts about the
model with the spec's serving settings) and links to the artifact's version folders, so nothing
large is copied and the artifact itself is never written. An artifact without a facts file
(made before serving settings were split from it) is served with its own ``config.pbtxt``.

Running it again over the same output gives the same result (a pod whose init container is
re-run after a restart). A failure exits non-zero with one line that says why, which the pod
reports as the init container's termination message.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from optiserve.render.serving_config import (
    ARTIFACT_FACTS_FILE,
    ArtifactFactsError,
    served_model_config,
)
from optiserve.render.triton import TritonConfigError
from optiserve.serve.errors import RepositoryError
from optiserve.serve.repository import CONFIG_FILE, model_directories

DEFAULT_TERMINATION_LOG = "/dev/termination-log"


def assemble(artifact: Path, settings: Mapping[str, Any], out: Path) -> list[str]:
    """Writes the served repository under ``out``; returns the model names."""
    names = []
    for model_dir in model_directories(artifact):
        target = out / model_dir.name
        target.mkdir(parents=True, exist_ok=True)
        for entry in sorted(model_dir.iterdir()):
            if entry.name in (CONFIG_FILE, ARTIFACT_FACTS_FILE):
                continue
            link = target / entry.name
            if link.is_symlink():
                link.unlink()
            link.symlink_to(entry.absolute(), target_is_directory=entry.is_dir())
        facts = model_dir / ARTIFACT_FACTS_FILE
        if facts.is_file():
            try:
                config = served_model_config(facts.read_text(), settings)
            except ArtifactFactsError as err:
                raise ArtifactFactsError(f"{facts}: {err}") from None
        else:
            config = (model_dir / CONFIG_FILE).read_text()
        temp = target / f".{CONFIG_FILE}.tmp"
        temp.write_text(config)
        temp.replace(target / CONFIG_FILE)  # Triton never sees half a config
        names.append(model_dir.name)
    return names


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m optiserve.serve.assemble",
        description="Assemble the Triton model repository a pod serves from an artifact.",
    )
    parser.add_argument("--artifact", required=True, type=Path, help="artifact model repository")
    parser.add_argument("--settings", required=True, help="serving settings, JSON (camelCase)")
    parser.add_argument("--out", required=True, type=Path, help="folder Triton serves")
    parser.add_argument(
        "--termination-log",
        default=os.environ.get("OPTISERVE_TERMINATION_MESSAGE_PATH", DEFAULT_TERMINATION_LOG),
        help=argparse.SUPPRESS,
    )
    args = parser.parse_args(argv)
    try:
        settings = json.loads(args.settings)
        if not isinstance(settings, dict):
            raise ValueError("--settings must be a JSON object")
        names = assemble(args.artifact, settings, args.out)
    except (
        ValueError,  # bad JSON, ArtifactFactsError, TritonConfigError
        RepositoryError,
        TritonConfigError,
        OSError,
    ) as err:
        message = f"cannot assemble the model repository: {err}"
        print(message, file=sys.stderr, flush=True)
        _write_termination(args.termination_log, message)
        return 1
    print(f"assembled {', '.join(names)} in {args.out}", flush=True)
    return 0


def _write_termination(path: str, message: str) -> None:
    # No termination log (run by hand): stderr has the message.
    with contextlib.suppress(OSError):
        Path(path).write_text(message[:4096])


if __name__ == "__main__":
    raise SystemExit(main())
