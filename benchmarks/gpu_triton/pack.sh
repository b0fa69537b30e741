#!/usr/bin/env bash
# Prepare what benchmarks/gpu_triton/run.sh needs on the device machine (run here, from the repo
# root; needs network once). All git-ignored; a re-run reuses what is there.
#   .whl-triton/   the nvidia-pytriton wheel (tritonserver + python backend, 55 MB): call 1
#   .whl-serve/    cp312 wheels of tritonclient and what the load generator and optiserve.api
#                  import (grpcio, protobuf, python-rapidjson, pydantic and its dependencies)
#   .trt-pieces/minilm/  MiniLM's config and fp16 weights, from benchmarks/gpu_tensorrt/pack.sh
# Then two device calls, the second right after the first returns (warm machine):
#   run(command="ls .whl-triton", carry=[".whl-triton"], timeout_s=60)
#   run(command="set -o pipefail; bash benchmarks/gpu_triton/run.sh --requests 2000 --rounds 3",
#       carry=[".trt-pieces/minilm", ".whl-serve"], timeout_s=240)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
py="${VENV:-${HOME}/.cache/optiserve/venv}/bin/python"
pin() { grep -E "^$1==" .ci/constraints.txt || echo "missing-pin-$1"; }
download() {
  "${py}" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_35_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$@"
}
download .whl-triton "$(pin nvidia-pytriton)"
download .whl-serve "$(pin tritonclient)" "$(pin grpcio)" "$(pin protobuf)" \
  "$(pin python-rapidjson)" \
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
  typing-extensions==4.16.0  # as benchmarks/gpu_tensorrt/pack.sh (pydantic needs a recent one)
[[ -f .trt-pieces/minilm/model.safetensors ]] || bash benchmarks/gpu_tensorrt/pack.sh
du -sh .whl-triton .whl-serve .trt-pieces/minilm
