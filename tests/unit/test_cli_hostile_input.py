"""Hostile files through ``optiserve validate`` and ``optiserve render``, as a user runs them.

Each case runs the real CLI in a child process, measured alone (``run_cli``): it must end
with exit code 1, exactly one line on stderr that says what is wrong without echoing the
input, nothing on stdout, within :data:`MAX_CPU_S` of CPU time and :data:`MAX_RSS_MB` of peak
memory. CPU time rather than wall time is the bound asserted: the work done is what the
limits in ``optiserve.safe_yaml`` bound, while wall time on a shared CI machine also counts
other jobs (it is asserted too, with room for that). ``HOSTILE_REPORT=1 pytest -s`` prints
the measurements.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from .specs import minimal

MAX_CPU_S = 2.0
MAX_WALL_S = 10.0
MAX_RSS_MB = 200.0
ROOT = Path(__file__).resolve().parents[2]


def _spec_text() -> str:
    return yaml.safe_dump(minimal(), sort_keys=False)


def _binary(path: Path) -> None:
    path.write_bytes(random.Random(14).randbytes(64 * 1024))


def _utf16(path: Path) -> None:
    path.write_bytes(_spec_text().encode("utf-16"))


def _utf16_without_bom(path: Path) -> None:
    path.write_bytes(_spec_text().encode("utf-16-le"))


def _bad_utf8(path: Path) -> None:
    path.write_bytes(_spec_text().encode() + b"  description: caf\xe9 cr\xe8me\n")


def _deep_flow(path: Path) -> None:
    path.write_text("metadata: " + "[" * 500 + "]" * 500 + "\n")


def _deep_block(path: Path) -> None:
    path.write_text("".join(f"{'  ' * i}k{i}:\n" for i in range(500)) + "  " * 500 + "v\n")


def _deeper_than_python(path: Path) -> None:
    # 3 MiB of "[": past any recursion limit, if the parser were recursive
    path.write_text("[" * (3 * 1024 * 1024 - 10))


def _long_integer(path: Path) -> None:
    text = _spec_text().replace("spec:\n", "spec:\n  serving:\n    replicas: " + "9" * 5000 + "\n")
    path.write_text(text)


def _billion_laughs(path: Path) -> None:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    path.write_text("\n".join(lines) + "\n")


def _billion_laughs_merge(path: Path) -> None:
    # The same bomb through merge keys and mappings, inside a real-looking spec.
    lines = ["x0: &x0 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8}"]
    for i in range(1, 12):
        keys = ", ".join(f"k{j}: *x{i - 1}" for j in range(8))
        lines.append(f"x{i}: &x{i} {{{keys}}}")
    text = _spec_text() + "\n".join(lines).replace("x0:", "z0:", 0) + "\n"
    path.write_text(text)


def _recursive_alias(path: Path) -> None:
    path.write_text("a: &a [1, *a]\n")


def _sixteen_mib(path: Path) -> None:
    value = "x" * (16 * 1024 * 1024)
    path.write_text(_spec_text() + f"# padding\nextra: {value}\n")


def _huge_value_under_limit(path: Path) -> None:
    # 2.9 MiB in one value: read and refused, but the message must not carry it.
    obj = minimal()
    obj["spec"]["serving"] = {"image": "x" * (2900 * 1024)}
    path.write_text(yaml.safe_dump(obj, width=1 << 30))


def _many_nodes(path: Path) -> None:
    path.write_text("items: [" + ",".join(["1"] * 1_200_000) + "]\n")


def _not_a_mapping(path: Path) -> None:
    path.write_text("- just\n- a\n- list\n")


def _directory(path: Path) -> None:
    path.mkdir()


@dataclass(frozen=True)
class Case:
    make: Callable[[Path], None]
    says: str  # a fragment of the one line


CASES: dict[str, Case] = {
    "binary": Case(_binary, "binary file"),
    "utf-16": Case(_utf16, "UTF-16"),
    "utf-16-without-bom": Case(_utf16_without_bom, "UTF-16"),
    "bad-utf-8": Case(_bad_utf8, "not UTF-8"),
    "500-deep-flow": Case(_deep_flow, "nested deeper than"),
    "500-deep-block": Case(_deep_block, "nested deeper than"),
    "3-mib-deep": Case(_deeper_than_python, "nest"),  # libyaml's own depth limit may fire first
    "5000-digit-integer": Case(_long_integer, "a number of 5000 characters"),
    "billion-laughs": Case(_billion_laughs, "aliases are expanded"),
    "billion-laughs-merge-keys": Case(_billion_laughs_merge, "aliases are expanded"),
    "recursive-alias": Case(_recursive_alias, "recursive alias"),
    "16-mib-file": Case(_sixteen_mib, "larger than 3 MiB"),
    "2.9-mib-value": Case(_huge_value_under_limit, "image"),
    "1.2-million-nodes": Case(_many_nodes, "YAML nodes"),
    "not-a-mapping": Case(_not_a_mapping, "expected a mapping"),
    "a-directory": Case(_directory, "cannot read"),
}


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str
    wall_s: float
    cpu_s: float
    max_rss_mb: float


# A small parent for the CLI: Linux counts the memory a process had before exec() into the
# exec'd program's peak RSS, so measuring the CLI as pytest's own child would report pytest's
# size. This parent is small, starts the CLI, and writes that child's exit code, wall time,
# CPU time and peak RSS (getrusage(RUSAGE_CHILDREN), the only child it has).
_MEASURE = """
import resource, subprocess, sys, time
start = time.monotonic()
code = subprocess.call(sys.argv[2:], timeout=60)
wall = time.monotonic() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as out:
    out.write(f"{code} {wall} {usage.ru_utime + usage.ru_stime} {usage.ru_maxrss}")
"""


def run_cli(*args: str) -> Run:
    """The CLI as a user runs it, measured alone (see ``_MEASURE``)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    env.pop("OPTISERVE_DEBUG", None)
    with tempfile.TemporaryDirectory() as tmp:
        numbers = Path(tmp) / "measured"
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                _MEASURE,
                str(numbers),
                sys.executable,
                "-m",
                "optiserve.cli",
                *args,
            ],
            capture_output=True,
            env=env,
            timeout=120,
        )
        code, wall, cpu, rss_kib = numbers.read_text().split()
    return Run(
        code=int(code),
        stdout=done.stdout.decode(errors="replace"),
        stderr=done.stderr.decode(errors="replace"),
        wall_s=float(wall),
        cpu_s=float(cpu),
        max_rss_mb=int(rss_kib) / 1024,
    )


@pytest.mark.parametrize("command", ["validate", "render"])
@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input_ends_in_one_line_within_bounds(
    tmp_path: Path, name: str, command: str
) -> None:
    case = CASES[name]
    path = tmp_path / f"{name}.yaml"
    case.make(path)
    run = run_cli(command, str(path))
    if os.environ.get("HOSTILE_REPORT") == "1":
        print(
            f"\n{command:8} {name:26} exit {run.code} cpu {run.cpu_s:.2f}s wall {run.wall_s:.2f}s "
            f"rss {run.max_rss_mb:.0f}MB | {run.stderr.strip()[:110]}"
        )
    lines = run.stderr.splitlines()
    assert run.code == 1, run.stderr[-2000:]
    assert len(lines) == 1, lines[:5]
    assert case.says in lines[0], lines[0]
    assert str(path) in lines[0]
    assert "Traceback" not in run.stderr
    assert len(lines[0]) < 400 + len(str(path))
    assert run.stdout == ""
    assert run.cpu_s < MAX_CPU_S, run
    assert run.wall_s < MAX_WALL_S, run
    assert run.max_rss_mb < MAX_RSS_MB, run


def test_a_file_just_under_the_limits_still_validates(tmp_path: Path) -> None:
    """The limits refuse bombs, not big honest files: 2.9 MiB of annotation is fine."""
    obj = minimal()
    obj["metadata"]["annotations"] = {"note": "y" * (200 * 1024)}
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(obj, width=1 << 30) + "# " + "z" * (2600 * 1024) + "\n")
    run = run_cli("validate", str(path))
    assert run.code == 0, run.stderr
    assert run.stdout == "ok: m\n"
    assert run.cpu_s < MAX_CPU_S and run.max_rss_mb < MAX_RSS_MB, run
