#!/usr/bin/env bash
# Install TensorRT for development and CI (issue 23): NVIDIA's libraries from Maven Central
# (the JavaCPP presets' linux-x86_64-redist jar) and NVIDIA's bindings wheel from PyPI, at the
# versions pinned in hack/tensorrt/versions.env. Users get TensorRT from NVIDIA's own packages in
# the optimizer image instead (see docs/tensorrt.md).
#
#   libraries: ${OPTISERVE_CACHE:-~/.cache/optiserve}/tensorrt-<redist version>/lib/  (kept there,
#              stamped with the jar's sha1; a re-run with the same pin downloads nothing)
#   venv:      tensorrt-cu13-bindings (module tensorrt_bindings), plus two small modules written
#              here: tensorrt_libs (loads the cached libraries with ctypes, so no LD_LIBRARY_PATH)
#              and tensorrt (is tensorrt_bindings), under a dist-info named tensorrt, so that
#              `pip uninstall tensorrt` removes them and `import tensorrt` works.
#
# Usage: hack/tensorrt/install.sh [--venv DIR]    (default: $VENV or ~/.cache/optiserve/venv)
#        hack/tensorrt/install.sh --libs-only     (the cached libraries, no venv)
#        hack/tensorrt/install.sh --print-dir     (the libraries' folder; installs nothing)
#        hack/tensorrt/install.sh --device ...    (the release a lent GPU runs, TENSORRT_DEVICE_*
#                                                  in versions.env; with --libs-only or --print-dir)
# Env:   OPTISERVE_CACHE, OPTISERVE_TENSORRT_JAR (a local copy of the jar: no download).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "${here}/versions.env"
for arg in "$@"; do
  if [[ "${arg}" == --device ]]; then  # the GPU runner's release replaces the pinned one
    TENSORRT_VERSION="${TENSORRT_DEVICE_VERSION}"
    TENSORRT_REDIST_VERSION="${TENSORRT_DEVICE_REDIST_VERSION}"
    TENSORRT_REDIST_URL="${TENSORRT_DEVICE_REDIST_URL}"
    TENSORRT_REDIST_SHA1="${TENSORRT_DEVICE_REDIST_SHA1}"
    TENSORRT_LIBS="${TENSORRT_DEVICE_LIBS}"
    TENSORRT_BINDINGS_WHEEL="${TENSORRT_DEVICE_BINDINGS_WHEEL}"
  fi
done

cache_root="${OPTISERVE_CACHE:-${HOME}/.cache/optiserve}"
trt_dir="${cache_root}/tensorrt-${TENSORRT_REDIST_VERSION}"
lib_dir="${trt_dir}/lib"
stamp="${trt_dir}/.complete-${TENSORRT_REDIST_SHA1}"
venv="${VENV:-${cache_root}/venv}"
libs_only=0
device=0

while (($#)); do
  case "$1" in
    --venv) venv="${2:?--venv needs a folder}"; shift 2 ;;
    --libs-only) libs_only=1; shift ;;
    --device) device=1; shift ;;
    --print-dir) echo "${lib_dir}"; exit 0 ;;
    *) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

say() { echo "tensorrt/install.sh: $*"; }
die() { echo "tensorrt/install.sh: $*" >&2; exit 1; }

fetch_libraries() {
  local scratch jar expected actual start
  scratch="$(mktemp -d "${cache_root}/.tensorrt-download.XXXXXX")"
  # A failed or interrupted run leaves nothing that looks finished.
  trap 'rm -rf "${scratch}"' EXIT
  jar="${OPTISERVE_TENSORRT_JAR:-${scratch}/tensorrt.jar}"
  if [[ -z "${OPTISERVE_TENSORRT_JAR:-}" ]]; then
    expected="$(curl -fsSL --retry 3 "${TENSORRT_REDIST_URL}.sha1" | cut -c1-40)" ||
      die "cannot read ${TENSORRT_REDIST_URL}.sha1"
    [[ "${expected}" == "${TENSORRT_REDIST_SHA1}" ]] ||
      die "Maven Central's sha1 ${expected} differs from the pinned ${TENSORRT_REDIST_SHA1}"
    say "downloading ${TENSORRT_REDIST_URL##*/} ..."
    start=${SECONDS}
    curl -fsSL --retry 3 -o "${jar}" "${TENSORRT_REDIST_URL}" || die "download failed"
    say "downloaded $(du -h "${jar}" | cut -f1) in $((SECONDS - start)) s"
  fi
  actual="$(sha1sum "${jar}" | cut -c1-40)"
  [[ "${actual}" == "${TENSORRT_REDIST_SHA1}" ]] ||
    die "${jar}: sha1 ${actual}, expected ${TENSORRT_REDIST_SHA1} (versions.env)"
  start=${SECONDS}
  mkdir -p "${scratch}/tree/lib"
  local members=()
  for name in ${TENSORRT_LIBS}; do members+=("org/bytedeco/tensorrt/linux-x86_64/${name}"); done
  if command -v unzip >/dev/null; then
    unzip -q -o -j "${jar}" "${members[@]}" -d "${scratch}/tree/lib"
  else
    python3 - "${jar}" "${scratch}/tree/lib" "${members[@]}" <<'PY'
import shutil, sys, zipfile
from pathlib import Path
jar, dest, *members = sys.argv[1:]
with zipfile.ZipFile(jar) as z:
    for m in members:
        with z.open(m) as src, open(Path(dest) / Path(m).name, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
PY
  fi
  for name in ${TENSORRT_LIBS}; do
    [[ -s "${scratch}/tree/lib/${name}" ]] || die "the jar holds no ${name}"
  done
  chmod 0755 "${scratch}/tree/lib/"*
  (cd "${scratch}/tree/lib" && sha256sum -- *) >"${scratch}/tree/SHA256SUMS"
  echo "${TENSORRT_REDIST_URL}" >"${scratch}/tree/SOURCE"
  touch "${scratch}/tree/.complete-${TENSORRT_REDIST_SHA1}"
  rm -rf "${trt_dir}"
  mv "${scratch}/tree" "${trt_dir}"
  rm -rf "${scratch}"
  trap - EXIT
  say "extracted to ${lib_dir} ($(du -sh "${lib_dir}" | cut -f1)) in $((SECONDS - start)) s"
}

mkdir -p "${cache_root}"
if [[ -f "${stamp}" ]]; then
  say "libraries cached in ${lib_dir}"
else
  # One download per machine: a second caller waits, then finds the libraries cached.
  exec 9>"${cache_root}/.tensorrt.lock"
  flock 9
  if [[ -f "${stamp}" ]]; then say "libraries cached in ${lib_dir}"; else fetch_libraries; fi
fi
((libs_only)) && exit 0
((device)) && die "--device caches the GPU runner's libraries only: add --libs-only"

py="${venv}/bin/python"
[[ -x "${py}" ]] || die "no virtualenv at ${venv} (run make venv first, or pass --venv DIR)"
wheel_name="${TENSORRT_BINDINGS_WHEEL%%==*}"
installed="$("${py}" -c "import importlib.metadata as m, sys
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: pass" "${wheel_name}")"
if [[ "${installed}" != "${TENSORRT_VERSION}" ]]; then
  say "installing ${TENSORRT_BINDINGS_WHEEL} into ${venv}"
  "${py}" -m pip install -q --no-deps "${TENSORRT_BINDINGS_WHEEL}"
fi

# The two small modules and their dist-info, rewritten only when their content changes.
site="$("${py}" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
if [[ -d "${site}/tensorrt" ]] && ! grep -qs "hack/tensorrt/install.sh" "${site}/tensorrt/__init__.py"; then
  say "${site}/tensorrt is another TensorRT install (NVIDIA's?): leaving it as it is"
  exit 0
fi
dist="${site}/tensorrt-${TENSORRT_VERSION}+optiserve.dist-info"
staged="$(mktemp -d)"
trap 'rm -rf "${staged}"' EXIT
mkdir -p "${staged}/tensorrt" "${staged}/tensorrt_libs" "${staged}/dist"
sed "s|@LIB_DIR@|${lib_dir}|" "${here}/shim/tensorrt_libs.py" >"${staged}/tensorrt_libs/__init__.py"
cp "${here}/shim/tensorrt.py" "${staged}/tensorrt/__init__.py"
cat >"${staged}/dist/METADATA" <<EOF
Metadata-Version: 2.1
Name: tensorrt
Version: ${TENSORRT_VERSION}+optiserve
Summary: import tensorrt for ${wheel_name}, with NVIDIA's libraries from ${lib_dir} (optiserve hack/tensorrt/install.sh)
Requires-Dist: ${TENSORRT_BINDINGS_WHEEL}
EOF
echo "optiserve-hack-tensorrt" >"${staged}/dist/INSTALLER"
printf 'tensorrt\ntensorrt_libs\n' >"${staged}/dist/top_level.txt"
{
  echo "tensorrt/__init__.py,,"
  echo "tensorrt_libs/__init__.py,,"
  for f in METADATA INSTALLER top_level.txt RECORD; do echo "${dist##*/}/${f},,"; done
} >"${staged}/dist/RECORD"
if ! cmp -s "${staged}/tensorrt_libs/__init__.py" "${site}/tensorrt_libs/__init__.py" ||
  ! cmp -s "${staged}/tensorrt/__init__.py" "${site}/tensorrt/__init__.py" ||
  ! cmp -s "${staged}/dist/METADATA" "${dist}/METADATA"; then
  rm -rf "${site}"/tensorrt-*+optiserve.dist-info "${site}/tensorrt" "${site}/tensorrt_libs"
  mkdir -p "${site}/tensorrt" "${site}/tensorrt_libs" "${dist}"
  cp "${staged}/tensorrt/__init__.py" "${site}/tensorrt/"
  cp "${staged}/tensorrt_libs/__init__.py" "${site}/tensorrt_libs/"
  cp "${staged}/dist/"* "${dist}/"
  say "wrote tensorrt and tensorrt_libs into ${site}"
fi
version="$("${py}" -c 'import tensorrt; print(tensorrt.__version__)')" ||
  die "import tensorrt failed in ${venv}"
[[ "${version}" == "${TENSORRT_VERSION}" ]] || die "import tensorrt gave ${version}, expected ${TENSORRT_VERSION}"
say "import tensorrt -> ${version} in ${venv}"
