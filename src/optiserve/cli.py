"""``optiserve``: one command line for the laptop and the cluster.

Heavy parts (torch, onnxruntime, kopf) are imported only by the subcommand that needs them,
so ``optiserve validate`` and ``optiserve crd`` start fast in the slim operator image.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

# EX_SOFTWARE of sysexits.h: a bug, not a bad input (bad input exits 1).
INTERNAL_ERROR = 70


def _cmd_crd(args: argparse.Namespace) -> int:
    from optiserve.crd import crd_yaml

    sys.stdout.write(crd_yaml())
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from optiserve.validate import display_name, report_problems, validate_files

    models, problems = validate_files(args.files)
    if report_problems(problems):
        return 1
    for model in models:
        print(f"ok: {display_name(model)}")
    return 0


def _run_operator(argv: list[str]) -> int:
    from optiserve_operator.main import run_operator

    return run_operator(argv)


def _run_optimize(argv: list[str]) -> int:
    from optiserve_optimizer.main import main as optimize_main

    return optimize_main(argv)


def _run_serve(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="optiserve serve",
        description="Serve a Triton model repository (or an optimizer output folder) with a "
        "real local tritonserver until interrupted. On a CPU machine ONNX models run through "
        "Triton's python backend with onnxruntime (see docs/serving.md).",
    )
    parser.add_argument("directory", type=Path, metavar="DIR")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address the HTTP, gRPC and metrics endpoints bind to (default: %(default)s; "
        "0.0.0.0 serves other machines too)",
    )
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--startup-timeout", type=float, default=120.0, metavar="SECONDS")
    parser.add_argument(
        "--metrics-config",
        action="append",
        default=[],
        metavar="SETTING",
        help="passed to tritonserver's --metrics-config (repeatable), e.g. summary_latencies=true",
    )
    args = parser.parse_args(argv)
    from optiserve.serve.command import serve

    return serve(
        args.directory,
        ports=(args.http_port, args.grpc_port, args.metrics_port),
        host=args.host,
        startup_timeout_s=args.startup_timeout,
        metrics_config=args.metrics_config,
    )


def _run_report(argv: list[str]) -> int:
    from optiserve.report_cli import run_report

    return run_report(argv)


# Subcommands with parsers of their own (and heavy imports): everything after the name is theirs.
DELEGATED: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "optimize": (_run_optimize, "optimize a model locally: optiserve optimize SPEC --out DIR"),
    "serve": (_run_serve, "serve a model repository with a real local Triton"),
    "operator": (_run_operator, "run the operator (kopf) against the current cluster"),
    "report": (_run_report, "the report page of an optimization: optiserve report ARTIFACT"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="optiserve",
        description="Optimize a model and serve it with NVIDIA Triton, on Kubernetes or locally.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    crd = sub.add_parser("crd", help="print the OptimizedModel CustomResourceDefinition")
    crd.set_defaults(func=_cmd_crd)

    validate = sub.add_parser(
        "validate", help="check OptimizedModel YAML files with the API server's rules"
    )
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE")
    validate.set_defaults(func=_cmd_validate)

    from optiserve.render_cli import add_render_parser

    add_render_parser(sub)
    for name, (_, help_text) in DELEGATED.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] in DELEGATED:
        run, _ = DELEGATED[arguments[0]]
        return run(arguments[1:])
    args = build_parser().parse_args(arguments)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except Exception as err:  # the last line of defence: no traceback reaches a user
        if os.environ.get("OPTISERVE_DEBUG") == "1":
            raise
        detail = " ".join(str(err).split())[:200]
        print(
            f"optiserve {args.command}: internal error ({type(err).__name__}: {detail}); "
            "OPTISERVE_DEBUG=1 shows the traceback",
            file=sys.stderr,
        )
        return INTERNAL_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
