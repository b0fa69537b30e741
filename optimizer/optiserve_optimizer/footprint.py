"""What serving the chosen artifact costs: memory and CPU of a fresh runtime, measured apart.

The optimizer's own process holds torch, every candidate's session and the data, so its
memory says nothing about the server's. A child process (``footprint_child``) imports only
the runtime, reads its own peak RSS (the runtime's baseline), loads the served model, runs it
at the largest benchmark batch and reads its peak RSS again and its CPU time. The child
reports both peaks itself, from VmHWM (the peak of its own address space since exec). Not
``getrusage``: ru_maxrss survives fork and exec, so the child would start at this process's
peak (torch and every session: 400 MiB on the digits test), and the parent's
``RUSAGE_CHILDREN`` is the largest of every child it ever waited for (trtexec, the exporter).

A failed measurement is not a failed optimization: the artifact is served with the sizing
defaults and the reason is logged.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from optiserve.api.status import ServingCost

TIMEOUT_SECONDS = 600


def feed_of(arrays: Mapping[str, npt.NDArray[Any]], batch: int) -> dict[str, npt.NDArray[Any]]:
    """The first ``batch`` samples of every input (repeated when there are fewer)."""
    out: dict[str, npt.NDArray[Any]] = {}
    for name, values in arrays.items():
        reps = -(-batch // max(1, len(values)))
        out[name] = np.concatenate([values] * reps)[:batch] if reps > 1 else values[:batch]
    return out


def measure_serving_cost(
    served: Path,
    feed: Mapping[str, npt.NDArray[Any]],
    threads: int,
    device: str,
    log: Callable[[str], None],
) -> ServingCost | None:
    """The serving cost of ``served`` run on ``feed`` (one batch), or None when the child
    could not measure it (``log`` says why)."""
    with tempfile.TemporaryDirectory(prefix="optiserve-footprint-") as tmp:
        feed_file = Path(tmp) / "feed.npz"
        np.savez(feed_file, **feed)
        command = [
            sys.executable,
            "-m",
            "optiserve_optimizer.footprint_child",
            str(served),
            str(feed_file),
            str(threads),
            device,
        ]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log(f"serving cost not measured ({type(exc).__name__}): sizing defaults apply")
            return None
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        log(f"serving cost not measured (exit {done.returncode}: {tail[0][:300]})")
        return None
    try:
        data = json.loads(done.stdout.strip().splitlines()[-1])
        batches = data.pop("batches")
        cost = ServingCost.model_validate(data)
    except (ValueError, IndexError, KeyError, TypeError, AttributeError, ValidationError) as exc:
        log(f"serving cost not measured (unreadable child output: {str(exc)[:300]})")
        return None
    log(
        f"serving cost ({cost.runtime}, batch {cost.batch}, {batches} batches): peak RSS "
        f"{cost.peak_rss_bytes / 2**20:.0f} MiB, runtime alone {cost.runtime_rss_bytes / 2**20:.0f}"
        f" MiB, {cost.cpu_seconds_per_inference * 1000:.3g} ms CPU per inference"
    )
    return cost
