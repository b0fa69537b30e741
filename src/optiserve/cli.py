"""``optiserve``: one command line for the laptop and the cluster.

Heavy parts (torch, onnxruntime, kopf) are imported only by the subcommand that needs them,
so ``optiserve validate`` and ``optiserve crd`` start fast in the slim operator image.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


def _cmd_crd(args: argparse.Namespace) -> int:
    from optiserve.crd import crd_yaml

    sys.stdout.write(crd_yaml())
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from optiserve.validate import validate_files

    models, problems = validate_files(args.files)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) found", file=sys.stderr)
        return 1
    for model in models:
        print(f"ok: {model.metadata.name}")
    return 0


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


if __name__ == "__main__":
    raise SystemExit(main())
