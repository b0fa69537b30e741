#!/usr/bin/env bash
# On the device machine, from the repo root: install the carried wheels (the Triton of the
# nvidia-pytriton wheel, tritonclient, pydantic) into a target folder, then run bench.py on the
# carried MiniLM weights. $OUT gets log.txt, triton_gpu.md, triton_gpu.json. Two calls carry it
# (each under the device tool's 64 MiB): first `.whl-triton` (the 55 MB pytriton wheel), then
# `.trt-pieces/minilm` and `.whl-serve` with this command (pack.sh beside this file says how).
# Rehearse on a CPU machine:
#   OUT=/tmp/r PYTHON=~/.cache/optiserve/venv/bin/python SKIP_INSTALL=1 \
#     bash benchmarks/gpu_triton/run.sh --requests 64 --rounds 1
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out="${OUT:-/tmp/gpu-triton-out}"
py="${PYTHON:-python3}"
site="${SITE:-/tmp/serve-site}"
# shellcheck source=../device_log.sh
source benchmarks/device_log.sh
log_to "${out}/log.txt"
say "python $("${py}" --version 2>&1), $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"
if [[ -z "${SKIP_INSTALL:-}" ]]; then
  "${py}" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "${site}" .whl-triton/*.whl .whl-serve/*.whl
  export PYTHONPATH="${site}${PYTHONPATH:+:${PYTHONPATH}}"
fi
# The python-backend stub embeds CPython: it needs this interpreter's libpython.
say "libpython: $(ldconfig -p | grep -o 'libpython3[.0-9]*\.so[.0-9]*' | sort -u | tr '\n' ' ')"
PYTHONUNBUFFERED=1 "${py}" benchmarks/gpu_triton/bench.py --minilm .trt-pieces/minilm --out "${out}" "$@"
