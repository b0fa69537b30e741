"""Stand-in for the Triton image's ``tritonserver`` in pods the local pod runner runs.

The Deployment optiserve renders starts ``tritonserver --model-repository=... --http-port=8000
...``. There is no image here, and the CPU ``tritonserver`` of the nvidia-pytriton wheel has no
onnxruntime backend, so this script takes the same arguments and serves the repository with
``optiserve serve`` (the python backend running the ONNX model with onnxruntime), bound to the
pod's own loopback address (``OPTISERVE_POD_IP``, see pod_spec.py) on the ports it was given.
Flags that only tune the real server (cache size, exit timeout, readiness strictness, ...) are
accepted and ignored; ``optiserve serve`` turns the response cache on when the repository's
config asks for it. Run as a file (``python tritonserver_shim.py ARGS``): it imports only the
installed ``optiserve`` package.
"""

from __future__ import annotations

import argparse
import os
import sys

from optiserve.cli import main as optiserve_main


def serve_arguments(argv: list[str], host: str) -> list[str]:
    """``optiserve serve`` arguments for a ``tritonserver`` command line."""
    parser = argparse.ArgumentParser(prog="tritonserver", allow_abbrev=False)
    parser.add_argument("--model-repository", required=True)
    parser.add_argument("--http-port", default="8000")
    parser.add_argument("--grpc-port", default="8001")
    parser.add_argument("--metrics-port", default="8002")
    # Metrics settings reach the real tritonserver under optiserve serve (latency summaries).
    parser.add_argument("--metrics-config", action="append", default=[])
    known, _ignored = parser.parse_known_args(argv)
    return [
        "serve",
        known.model_repository,
        f"--host={host}",
        f"--http-port={known.http_port}",
        f"--grpc-port={known.grpc_port}",
        f"--metrics-port={known.metrics_port}",
        *(f"--metrics-config={setting}" for setting in known.metrics_config),
    ]


if __name__ == "__main__":
    arguments = serve_arguments(sys.argv[1:], os.environ.get("OPTISERVE_POD_IP", "127.0.0.1"))
    print("tritonserver stand-in: optiserve " + " ".join(arguments), flush=True)
    raise SystemExit(optiserve_main(arguments))
