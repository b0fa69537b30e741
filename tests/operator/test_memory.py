"""Freed memory goes back to the system (memory.py): the allocator setting, and its effect on
a real process that fragments its heap as a burst of a thousand models does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from optiserve_operator import memory
from tests.chart.test_dockerfile import DOCKERFILE, parse

# A burst in miniature: ~130 MiB of small objects (decoded JSON: dicts, strings, lists), of
# which one in 100 outlives it, scattered among the rest as a cache's entries are.
WORKLOAD = r"""
import json, os, sys
from optiserve_operator.memory import release_memory

def rss_mib():
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

release_memory()
idle = rss_mib()
burst = [{"name": f"m-{i:06d}", "labels": {"app": "x" * (i % 50)}, "rv": [i, str(i)]}
         for i in range(300_000)]
peak = rss_mib()
kept = burst[::100]
del burst
freed = rss_mib()
release_memory()
json.dump({"idle": idle, "peak": peak, "freed": freed, "released": rss_mib(),
           "kept": len(kept)}, sys.stdout)
"""


def run_workload(allocator: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONMALLOC": allocator, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", WORKLOAD], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    found: dict[str, float] = json.loads(done.stdout)
    return found


def test_the_allocator_named_by_pythonmalloc() -> None:
    assert memory.object_allocator({}) == "pymalloc"
    assert memory.object_allocator({"PYTHONMALLOC": "malloc"}) == "malloc"
    assert memory.object_allocator({"PYTHONMALLOC": "malloc_debug"}) == "malloc"
    assert memory.object_allocator({"PYTHONMALLOC": "pymalloc_debug"}) == "pymalloc"
    assert memory.object_allocator({"PYTHONMALLOC": "debug"}) == "pymalloc"
    assert memory.object_allocator({"PYTHONMALLOC": "default"}) == "pymalloc"
    assert not memory.trim_reaches_objects({"PYTHONMALLOC": "pymalloc"})


def test_the_operator_image_runs_with_the_allocator_settings() -> None:
    _, stages = parse(DOCKERFILE.read_text())
    operator = next(stage for stage in stages if stage.name == "operator")
    env = " ".join(arg for ins, arg in operator.instructions if ins == "ENV")
    for name, value in memory.ALLOCATOR_ENV.items():
        assert f"{name}={value}" in env.split(), env


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
def test_after_a_burst_the_freed_objects_pages_go_back_with_malloc_not_with_pymalloc() -> None:
    if not memory.trim_reaches_objects({"PYTHONMALLOC": "malloc"}):
        pytest.skip("no glibc malloc_trim in this libc")
    glibc = run_workload("malloc")
    burst = glibc["peak"] - glibc["idle"]
    assert burst > 60, glibc  # the workload did grow the heap
    # Freed but fragmented: without the trim most of it stays with the process...
    assert glibc["freed"] - glibc["idle"] > 0.5 * burst, glibc
    # ...and the trim gives back all but what the survivors need (1/100 of the objects).
    assert glibc["released"] - glibc["idle"] < 0.2 * burst, glibc
    # pymalloc keeps every arena a survivor lives in: the trim cannot reach those pages.
    default = run_workload("pymalloc")
    assert default["released"] - default["idle"] > 0.5 * (default["peak"] - default["idle"])
