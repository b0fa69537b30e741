"""The machine a figure was measured on: CPU model, instruction sets, load. Read, never guessed."""

from __future__ import annotations

import os
import platform
from pathlib import Path

# Instruction sets that decide which kernels onnxruntime and torch use (int8 dot products:
# avx512_vnni / avx_vnni / amx_int8; bf16: avx512_bf16 / amx_bf16; arm: asimddp, i8mm).
INSTRUCTION_SETS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "asimd",
    "asimddp",
    "i8mm",
    "sve",
)


def parse_cpuinfo(text: str) -> tuple[str, tuple[str, ...]]:
    """(CPU model, the ``INSTRUCTION_SETS`` it has) from the text of ``/proc/cpuinfo``."""
    model, flags = "", set[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return model, tuple(f for f in INSTRUCTION_SETS if f in flags)


def cpu_facts(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, tuple[str, ...]]:
    try:
        model, flags = parse_cpuinfo(cpuinfo.read_text())
    except OSError:
        model, flags = "", ()
    return model or platform.processor() or platform.machine(), flags


def load_average() -> tuple[float, float, float]:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:  # not on every platform
        return (-1.0, -1.0, -1.0)
    return (round(one, 2), round(five, 2), round(fifteen, 2))
