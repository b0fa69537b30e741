#!/usr/bin/env bash
# Build (once per machine) the pinned binaries of the local test control plane: kube-apiserver,
# kube-controller-manager, kube-scheduler, kube-proxy, etcd, kwok, kubectl, helm and kube-score.
# Each lands in
#   ${OPTISERVE_BIN_CACHE:-$HOME/.cache/optiserve/bin}/<name>-<version>/<name>
# and is skipped when already there, so a warm run takes well under a second.
#
# Usage: hack/cluster/build.sh [name ...]      (default: all nine)
#        hack/cluster/build.sh --print-dir NAME (print the cache dir of NAME, build nothing)
# Env:   OPTISERVE_BIN_CACHE, GO (path of the go command), BUILD_PARALLELISM (default 2).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "${here}/versions.env"

cache_root="${OPTISERVE_BIN_CACHE:-${HOME}/.cache/optiserve/bin}"
go_cmd="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
all_names=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy etcd kwok kubectl helm kube-score)

version_of() {
  case "$1" in
    kube-apiserver | kube-controller-manager | kube-scheduler | kube-proxy | kubectl) echo "${KUBERNETES_VERSION}" ;;
    etcd) echo "${ETCD_VERSION}" ;;
    kwok) echo "${KWOK_VERSION}" ;;
    helm) echo "${HELM_VERSION}" ;;
    kube-score) echo "${KUBE_SCORE_VERSION}" ;;
    *) echo "unknown binary: $1" >&2; return 2 ;;
  esac
}

cache_dir_of() { echo "${cache_root}/$1-$(version_of "$1")"; }

if [[ "${1:-}" == "--print-dir" ]]; then
  cache_dir_of "${2:?--print-dir needs a binary name}"
  exit 0
fi

names=("$@")
[[ ${#names[@]} -eq 0 ]] && names=("${all_names[@]}")

missing=()
for name in "${names[@]}"; do
  if [[ ! -x "$(cache_dir_of "${name}")/${name}" ]] ||
    [[ "${name}" == kwok && ! -d "$(cache_dir_of kwok)/stages" ]]; then
    missing+=("${name}")
  fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "build.sh: all cached under ${cache_root}"
  exit 0
fi

if [[ ! -x "${go_cmd}" ]]; then
  echo "build.sh: go not found (set GO=/path/to/go); cannot build: ${missing[*]}" >&2
  exit 3
fi

mkdir -p "${cache_root}"
# One build at a time per machine: a second caller waits, then finds the binaries cached.
exec 9>"${cache_root}/.build.lock"
flock 9

# Half-built outputs of a failed or interrupted build are removed on exit.
scratch_dirs=()
trap 'rm -rf "${scratch_dirs[@]}"' EXIT

export CGO_ENABLED=0 GOFLAGS="-trimpath" GOTOOLCHAIN=local
build_flags=(-p "${BUILD_PARALLELISM:-2}")

# go build PKG into the cache dir of NAME, atomically (a killed build leaves no half binary).
install_binary() {
  local name="$1" pkg="$2" ldflags="$3" workdir="$4"
  local dest tmp start
  dest="$(cache_dir_of "${name}")"
  if [[ -x "${dest}/${name}" ]]; then return 0; fi
  start=$(date +%s)
  echo "build.sh: building ${name} $(version_of "${name}") ..."
  mkdir -p "${dest}"
  tmp="$(mktemp -d "${dest}/.build.XXXXXX")"
  scratch_dirs+=("${tmp}")
  if [[ "${pkg}" == *@* ]]; then
    # `go build` takes no @version; `go install pkg@version` builds outside any module.
    (cd "${workdir}" && GOBIN="${tmp}" "${go_cmd}" install "${build_flags[@]}" \
      -ldflags "-s -w ${ldflags}" "${pkg}")
  else
    (cd "${workdir}" && "${go_cmd}" build "${build_flags[@]}" -ldflags "-s -w ${ldflags}" \
      -o "${tmp}/${name}" "${pkg}")
  fi
  mv -f "${tmp}/${name}" "${dest}/${name}" && rmdir "${tmp}"
  echo "build.sh: built ${name} in $(($(date +%s) - start))s -> ${dest}/${name}"
}

# Keep the wrapper modules in step with versions.env (no-op when they already match).
sync_k8s_module() {
  local mod="${here}/k8s" args=() m
  if grep -q "k8s.io/kubernetes ${KUBERNETES_VERSION}\$" "${mod}/go.mod" &&
    ! grep -q "=> k8s.io/[a-z-]* v" <(grep -v " ${KUBERNETES_STAGING_VERSION}\$" "${mod}/go.mod"); then
    return 0
  fi
  args+=("-require=k8s.io/kubernetes@${KUBERNETES_VERSION}")
  for m in $(sed -n 's/^\t\(k8s\.io\/[a-z-]*\) => .*/\1/p' "${mod}/go.mod"); do
    args+=("-replace=${m}=${m}@${KUBERNETES_STAGING_VERSION}")
  done
  (cd "${mod}" && "${go_cmd}" mod edit "${args[@]}" && GOFLAGS=-mod=mod "${go_cmd}" mod tidy)
}

sync_etcd_module() {
  local mod="${here}/etcd"
  grep -q "go.etcd.io/etcd/server/v3 ${ETCD_VERSION}\$" "${mod}/go.mod" && return 0
  (cd "${mod}" && "${go_cmd}" mod edit "-require=go.etcd.io/etcd/server/v3@${ETCD_VERSION}" &&
    GOFLAGS=-mod=mod "${go_cmd}" mod tidy)
}

k8s_ldflags() {
  local v="${KUBERNETES_VERSION#v}" pkg flags=""
  local major="${v%%.*}" rest="${v#*.}"
  local minor="${rest%%.*}"
  # Same variables hack/lib/version.sh sets, so `kubectl version` reports the real server version.
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X ${pkg}.gitVersion=${KUBERNETES_VERSION} -X ${pkg}.gitMajor=${major}"
    flags+=" -X ${pkg}.gitMinor=${minor} -X ${pkg}.gitTreeState=clean"
    flags+=" -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
  done
  echo "${flags}"
}

# The standalone kwok binary simulates nothing without Stage objects in its --config. Keep the
# release's own default node/pod stages next to the binary, so the test harness can adapt them
# (testing/optiserve_testing/kwok_config.py) at exactly the version that was built.
copy_kwok_stages() {
  local src dest
  dest="$(cache_dir_of kwok)/stages"
  [[ -d "${dest}" ]] && return 0
  src="$("${go_cmd}" mod download -json "sigs.k8s.io/kwok@${KWOK_VERSION}" |
    sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
  scratch_dirs+=("${dest}.tmp")
  mkdir -p "${dest}.tmp"
  cp "${src}"/kustomize/stage/node/fast/node-initialize.yaml \
    "${src}"/kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    "${src}"/kustomize/stage/pod/fast/pod-{ready,complete,delete}.yaml "${dest}.tmp/"
  chmod -R u+w "${dest}.tmp" && mv "${dest}.tmp" "${dest}"
}

for name in "${missing[@]}"; do
  case "${name}" in
    kube-apiserver | kube-controller-manager | kube-scheduler | kube-proxy | kubectl)
      sync_k8s_module
      install_binary "${name}" "k8s.io/kubernetes/cmd/${name}" "$(k8s_ldflags)" "${here}/k8s"
      ;;
    etcd)
      sync_etcd_module
      install_binary etcd go.etcd.io/etcd/server/v3 \
        "-X go.etcd.io/etcd/api/v3/version.GitSHA=${ETCD_VERSION}" "${here}/etcd"
      ;;
    kwok)
      copy_kwok_stages
      # kwok and helm have no replace directives, so `go install pkg@version` works as is.
      install_binary kwok "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}" \
        "-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION}" "${here}"
      ;;
    helm)
      install_binary helm "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}" \
        "-X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}" "${here}"
      ;;
    kube-score)
      install_binary kube-score "github.com/zegl/kube-score/cmd/kube-score@${KUBE_SCORE_VERSION}" \
        "-X main.version=${KUBE_SCORE_VERSION}" "${here}"
      ;;
  esac
done
echo "build.sh: done"
