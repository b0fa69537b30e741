#!/usr/bin/env bash
# Regenerate typings/tensorrt_bindings/ (committed; on mypy_path) from the real bindings that
# hack/tensorrt/install.sh put into the venv, with pybind11-stubgen pinned in versions.env.
# tests/optimizer/test_tensorrt.py fails when the stubs' version and the installed one differ.
# Usage: hack/tensorrt/stubs.sh [--venv DIR] [--out DIR]   (default out: typings/)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "${here}/../.." && pwd)"
# shellcheck source=versions.env
source "${here}/versions.env"
cache_root="${OPTISERVE_CACHE:-${HOME}/.cache/optiserve}"
venv="${VENV:-${cache_root}/venv}"
out="${root}/typings"
while (($#)); do
  case "$1" in
    --venv) venv="${2:?--venv needs a folder}"; shift 2 ;;
    --out) out="${2:?--out needs a folder}"; shift 2 ;;
    *) echo "stubs.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
py="${venv}/bin/python"
tool="${cache_root}/tools/pybind11-stubgen-${PYBIND11_STUBGEN_VERSION}"
if [[ ! -f "${tool}/.complete" ]]; then
  rm -rf "${tool}"
  "${py}" -m pip install -q --no-deps --target "${tool}" "pybind11-stubgen==${PYBIND11_STUBGEN_VERSION}"
  touch "${tool}/.complete"
fi
scratch="$(mktemp -d)"
trap 'rm -rf "${scratch}"' EXIT
# pybind11-stubgen imports the module, which loads the libraries (tensorrt_libs) from the cache.
PYTHONPATH="${tool}" "${py}" -m pybind11_stubgen --numpy-array-remove-parameters \
  --ignore-all-errors -o "${scratch}" tensorrt_bindings
"${py}" "${here}/fix_stubs.py" "${scratch}/tensorrt_bindings"
version="$("${py}" -c 'import tensorrt_bindings; print(tensorrt_bindings.__version__)')"
rm -rf "${out}/tensorrt_bindings"
mkdir -p "${out}"
cp -r "${scratch}/tensorrt_bindings" "${out}/"
printf '%s\n' "${version}" >"${out}/tensorrt_bindings/VERSION"
echo "stubs.sh: ${out}/tensorrt_bindings from tensorrt_bindings ${version}"
