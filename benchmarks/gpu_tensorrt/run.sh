#!/usr/bin/env bash
# On the device machine, from the repo root (docs/tensorrt.md says how a GPU session sends the
# pieces first): reassemble TensorRT's libraries from .trt-pieces (benchmarks/gpu_tensorrt/
# pack.sh made them here), install the carried wheels from .whl, make `import tensorrt` work
# (the same two small modules hack/tensorrt/install.sh writes), then run bench.py. Everything
# lands in $OUT: log.txt, tensorrt.md, results.json. Rehearse on a CPU machine with
#   OUT=/tmp/rehearsal PYTHON=~/.cache/optiserve/venv/bin/python WHEELS=<cp311 wheels> \
#     bash benchmarks/gpu_tensorrt/run.sh
# which must stop at bench.py's first GPU call with the "no usable CUDA GPU" error (exit 3).
# Arguments go to bench.py (e.g. --skip sparse,pipeline --rounds 3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out="${OUT:-/tmp/gpu-tensorrt-out}"
py="${PYTHON:-python3}"
wheels="${WHEELS:-.whl}"
pieces="${PIECES:-.trt-pieces}"
site="${SITE:-/tmp/trt-site}"
libs="${LIBS:-/tmp/trt-libs}"
# shellcheck source=../device_log.sh
source benchmarks/device_log.sh
log_to "${out}/log.txt"
start=${SECONDS}

say "python $("${py}" --version 2>&1), $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"
ls "${wheels}"/*.whl >/dev/null || { say "no wheels in ${wheels} (carry .whl)"; exit 2; }
"${py}" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target "${site}" "${wheels}"/*.whl
export PYTHONPATH="${site}:${PWD}/src:${PWD}/optimizer:${PWD}"
say "wheels installed into ${site} ($((SECONDS - start)) s)"

[[ -f "${pieces}/MANIFEST" ]] || { say "no ${pieces}/MANIFEST (carry it with the last piece)"; exit 2; }
if ! (cd "${pieces}" && sha256sum --quiet -c MANIFEST); then
  say "pieces missing or damaged (above): send them again"
  exit 2
fi
say "$(grep -c trt-libs "${pieces}/MANIFEST") library pieces verified ($((SECONDS - start)) s)"

if [[ ! -f "${libs}/.complete" ]]; then
  rm -rf "${libs}"
  mkdir -p "${libs}"
  if command -v zstd >/dev/null; then
    unzstd=(zstd -d -q --long=30)
  else  # the carried zstandard wheel
    unzstd=("${py}" -c "import sys, zstandard; zstandard.ZstdDecompressor(max_window_size=1 << 30).copy_stream(sys.stdin.buffer, sys.stdout.buffer)")
  fi
  cat "${pieces}"/[0-9][0-9]/trt-libs.tar.zst.* | "${unzstd[@]}" | tar -x -C "${libs}"
  touch "${libs}/.complete"
fi
say "libraries in ${libs}/lib: $(du -sh "${libs}/lib" | cut -f1) ($((SECONDS - start)) s)"

# TensorRT 10+ builders open a per-architecture kernel library, libnvinfer_builder_resource_sm<NN>,
# that NVIDIA's own packages ship and the Maven Central redist does not (it holds only the _ptx
# one, whose kernel libraries are named per architecture too). Without it createInferBuilder fails
# ("Unable to load library: libnvinfer_builder_resource_sm90..."). Where it is missing, point that
# name at the _ptx library, and say so: engines built this way may lack tactics that NVIDIA's
# full library has, so figures from them are a lower bound for TensorRT on this card.
cc="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '. ' || true)"
ptx_resource="$(ls "${libs}"/lib/libnvinfer_builder_resource_ptx.so.* 2>/dev/null | head -1 || true)"
if [[ -n "${cc}" && -n "${ptx_resource}" ]]; then
  sm_resource="${ptx_resource/_ptx./_sm${cc}.}"
  if [[ ! -e "${sm_resource}" ]]; then
    ln -s "$(basename "${ptx_resource}")" "${sm_resource}"
    say "builder resource for sm${cc} missing from the redist: $(basename "${sm_resource}") -> $(basename "${ptx_resource}")"
  fi
fi

mkdir -p "${site}/tensorrt" "${site}/tensorrt_libs"
cp hack/tensorrt/shim/tensorrt.py "${site}/tensorrt/__init__.py"
cp hack/tensorrt/shim/tensorrt_libs.py "${site}/tensorrt_libs/__init__.py"
export OPTISERVE_TENSORRT_LIBS="${libs}/lib"
# NVRTC opens its builtins library, and TensorRT may open cuDNN / cuBLAS, by soname: let the
# loader find the CUDA wheels PyTorch brings (the shim preloads NVRTC itself; this covers the rest).
nvidia_libs="$("${py}" -c 'import glob, sys; print(":".join(sorted({d for p in sys.path for d in glob.glob(p + "/nvidia/*/lib")})))' 2>/dev/null || true)"
# TensorRT 10.6 opens its builder resource by bare name, and the redist's libnvinfer has no RUNPATH:
# the libraries' folder goes on the loader's path too (11.2's RUNPATH is $ORIGIN).
export LD_LIBRARY_PATH="${libs}/lib:${nvidia_libs}${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}"
say "import tensorrt -> $("${py}" -c 'import tensorrt, tensorrt_libs; print(tensorrt.__version__, "from", tensorrt_libs.LIB_DIR)' 2>&1 | tail -1)"

set +e
PYTHONUNBUFFERED=1 "${py}" benchmarks/gpu_tensorrt/bench.py --out "${out}" "$@"
code=$?
say "bench.py exit ${code} after $((SECONDS - start)) s"
# Then the test suite's `gpu` tests on the real GPU, bounded so that a hang cannot eat the device
# time; their result goes to $OUT beside the benchmark's. GPU_TESTS names other test files.
if [[ -z "${SKIP_GPU_TESTS:-}" ]]; then
  # shellcheck disable=SC2086  # a list of test files
  timeout 150 "${py}" -m pytest -p no:cacheprovider -m gpu -q -rA --junitxml "${out}/gpu-tests.xml" \
    ${GPU_TESTS:-tests/optimizer/test_tensorrt.py tests/optimizer/test_baseline_device.py} 2>&1 |
    tee "${out}/gpu-tests.txt" | tail -25
  say "gpu tests exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"
fi
exit "${code}"
