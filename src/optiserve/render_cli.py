"""``optiserve render FILE``: print every object the operator would create, as multi-doc YAML.

The output is meant for ``optiserve render m.yaml | kubectl diff -f -`` and for GitOps
previews: documents in apply order, keys sorted, no fields the API server fills in, and the
same bytes for the same input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from optiserve.api import OptimizedModel
from optiserve.render.autoscaling import AutoscalingTargetError
from optiserve.render.deployment import ArtifactLocationError
from optiserve.render.kubernetes import Manifest
from optiserve.render.manifests import render_all
from optiserve.safe_yaml import shorten
from optiserve.validate import (
    Problem,
    display_name,
    has_generated_name,
    report_problems,
    validate_files,
)


def default_optimizer_image() -> str:
    """The image the operator uses by default (operator/optiserve_operator/settings.py)."""
    from optiserve.digest import optiserve_version

    return f"ghcr.io/optiserve/optimizer:{optiserve_version()}"


def manifests_yaml(manifests: Sequence[Manifest]) -> str:
    """Multi-document YAML, keys sorted, one ``---`` before every document."""
    return "".join(
        "---\n" + yaml.safe_dump(m, sort_keys=True, width=100, default_flow_style=False)
        for m in manifests
    )


def render_models(
    models: Sequence[OptimizedModel],
    *,
    optimizer_image: str,
    namespace: str | None = None,
    owner_uid: str | None = None,
) -> list[Manifest]:
    # The digest names the Job and the artifact; it comes from the optimizer's pure digest
    # module, as in the operator, so the names printed are the names the operator uses.
    from optiserve.digest import spec_recipe_digest

    out: list[Manifest] = []
    for model in models:
        digest = spec_recipe_digest(
            model.metadata.name, model.spec.source, model.spec.optimization, model.spec.serving
        )
        out += render_all(
            model,
            digest=digest,
            optimizer_image=optimizer_image,
            namespace=namespace,
            owner_uid=owner_uid,
        )
    return out


def cmd_render(args: argparse.Namespace) -> int:
    models, problems = validate_files(args.files)
    problems += [
        Problem(
            display_name(m),
            "metadata.name",
            "render needs a name; the API server generates one only on create",
        )
        for m in models
        if has_generated_name(m)
    ]
    if report_problems(problems, "; nothing rendered"):
        return 1
    try:
        manifests = render_models(
            models,
            optimizer_image=args.optimizer_image or default_optimizer_image(),
            namespace=args.namespace,
            owner_uid=args.owner_uid,
        )
    except (AutoscalingTargetError, ArtifactLocationError) as err:
        print(f"cannot render: {shorten(str(err), 300)}", file=sys.stderr)
        return 1
    sys.stdout.write(manifests_yaml(manifests))
    return 0


def add_render_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``optiserve render`` on the CLI's subcommand parsers."""
    render = sub.add_parser(
        "render",
        help="print every Kubernetes object the operator would create for OptimizedModel files",
    )
    render.add_argument("files", nargs="+", type=Path, metavar="FILE")
    render.add_argument(
        "--namespace", "-n", default=None, help="namespace for objects whose file names none"
    )
    render.add_argument(
        "--optimizer-image", default=None, help="the operator's default optimizer image"
    )
    render.add_argument(
        "--owner-uid",
        default=None,
        help="uid of the stored OptimizedModel; adds ownerReferences as the operator sets them",
    )
    render.set_defaults(func=cmd_render)
