"""``optiserve serve DIR``: serve a model repository with a local Triton until interrupted."""

from __future__ import annotations

import json
import signal
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TextIO

import numpy as np
import numpy.typing as npt

from optiserve.render.text_ensemble import TEXT_INPUT
from optiserve.serve.errors import RepositoryError, ServeError
from optiserve.serve.local import LocalTriton
from optiserve.serve.repository import (
    CONFIG_FILE,
    ENSEMBLE_PLATFORM,
    model_directories,
    read_config,
)

# Where a repository may sit inside an optimizer output folder, besides the folder itself.
REPOSITORY_SUBDIRS = ("model_repository", "repository", "triton")
DEFAULT_PORTS = (8000, 8001, 8002)
EXAMPLE_TEXT = "Serving text, not token ids."


def find_repository(directory: Path) -> Path:
    """``directory`` itself when it holds ``<model>/config.pbtxt``, else a known subfolder."""
    for candidate in (directory, *(directory / sub for sub in REPOSITORY_SUBDIRS)):
        if candidate.is_dir() and any(candidate.glob(f"*/{CONFIG_FILE}")):
            return candidate
    raise RepositoryError(
        f"no Triton model repository (<model>/{CONFIG_FILE}) in {directory} "
        f"or its {', '.join(REPOSITORY_SUBDIRS)} subfolders"
    )


def text_models(repository: Path) -> list[tuple[str, bool]]:
    """(name, batched) of the ensembles that take strings (``serving.tokenizer``)."""
    found = []
    for model_dir in model_directories(repository):
        config = read_config(model_dir / CONFIG_FILE)
        if config.platform == ENSEMBLE_PLATFORM and [t.name for t in config.input] == [TEXT_INPUT]:
            found.append((config.name or model_dir.name, config.max_batch_size > 0))
    return found


def text_request_example(http_url: str, model: str, batched: bool) -> str:
    """A plain HTTP request for a text ensemble: one string (a batch of one when batched)."""
    tensor = {"name": TEXT_INPUT, "shape": [1, 1] if batched else [1], "datatype": "BYTES"}
    body = json.dumps({"inputs": [{**tensor, "data": [EXAMPLE_TEXT]}]}, separators=(",", ":"))
    return f"curl -s {http_url}/v2/models/{model}/infer -d '{body}'"


def infer_text(
    http_url: str, model: str, texts: Sequence[str], batched: bool = True, timeout_s: float = 60.0
) -> dict[str, npt.NDArray[np.float32]]:
    """The text ensemble's outputs for ``texts`` over plain HTTP/JSON (the request
    ``text_request_example`` prints): one string per batch row, name -> array."""
    shape = [len(texts), 1] if batched else [len(texts)]
    body = {
        "inputs": [{"name": TEXT_INPUT, "shape": shape, "datatype": "BYTES", "data": list(texts)}]
    }
    request = urllib.request.Request(
        f"{http_url}/v2/models/{model}/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        answer = json.load(response)
    return {
        out["name"]: np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
        for out in answer["outputs"]
    }


def serve(
    directory: Path,
    *,
    ports: tuple[int, int, int] = DEFAULT_PORTS,
    host: str = "127.0.0.1",
    startup_timeout_s: float = 120.0,
    metrics_config: Sequence[str] = (),
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Serves until SIGINT/SIGTERM (exit 0) or until Triton dies (exit 1); errors exit 2.

    ``ports`` is (http, grpc, metrics).
    """

    def stop_on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop_on_signal)
    try:
        repository = find_repository(directory)
        with LocalTriton(
            repository,
            ports=ports,
            host=host,
            startup_timeout_s=startup_timeout_s,
            metrics_config=metrics_config,
        ) as triton:
            print(f"serving {', '.join(triton.models)} from {repository}", file=out)
            print(f"  http    {triton.http_url}", file=out)
            print(f"  grpc    {triton.grpc_url}", file=out)
            print(f"  metrics {triton.metrics_url}", file=out)
            for model, batched in text_models(repository):  # serving.tokenizer's ensembles
                print(
                    f"  text    {text_request_example(triton.http_url, model, batched)}", file=out
                )
            out.flush()
            while triton.running:
                time.sleep(0.5)
            print(f"tritonserver exited:\n{triton.log_tail()}", file=err)
            return 1
    except KeyboardInterrupt:
        print("stopped", file=out)
        return 0
    except ServeError as error:
        print(f"error: {error}", file=err)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)
