#!/usr/bin/env bash
# Build (once per machine) the pinned SeaweedFS `weed` binary, the real S3 server that the
# object-storage tests start (testing/optiserve_testing/s3server.py). It lands in
#   ${OPTISERVE_BIN_CACHE:-$HOME/.cache/optiserve/bin}/weed-<version>/weed
# and is skipped when already there, so a warm run takes well under a second.
#
# Usage: hack/seaweedfs/build.sh              (build if missing)
#        hack/seaweedfs/build.sh --print-dir  (print the cache dir, build nothing)
# Env:   OPTISERVE_BIN_CACHE, GO (path of the go command), BUILD_PARALLELISM (default 2).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "${here}/versions.env"

cache_root="${OPTISERVE_BIN_CACHE:-${HOME}/.cache/optiserve/bin}"
dest="${cache_root}/weed-${SEAWEEDFS_VERSION}"
go_cmd="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"

if [[ "${1:-}" == "--print-dir" ]]; then
  echo "${dest}"
  exit 0
fi
if [[ -x "${dest}/weed" ]]; then
  echo "seaweedfs/build.sh: weed ${SEAWEEDFS_VERSION} cached under ${dest}"
  exit 0
fi
if [[ ! -x "${go_cmd}" ]]; then
  echo "seaweedfs/build.sh: go not found (set GO=/path/to/go); cannot build weed" >&2
  exit 3
fi

mkdir -p "${cache_root}"
# One build at a time per machine (shared with hack/cluster/build.sh): a second caller waits,
# then finds the binary cached.
exec 9>"${cache_root}/.build.lock"
flock 9
if [[ -x "${dest}/weed" ]]; then exit 0; fi

export CGO_ENABLED=0 GOFLAGS="-trimpath" GOTOOLCHAIN=local
# Keep the wrapper module in step with versions.env (no-op when it already matches).
if ! grep -q "github.com/seaweedfs/seaweedfs ${SEAWEEDFS_VERSION}" "${here}/go.mod"; then
  (cd "${here}" && GOFLAGS=-mod=mod "${go_cmd}" get -tool \
    "github.com/seaweedfs/seaweedfs/weed@${SEAWEEDFS_VERSION}" && "${go_cmd}" mod tidy)
fi

start=$(date +%s)
echo "seaweedfs/build.sh: building weed ${SEAWEEDFS_VERSION} (a few minutes on a cold cache) ..."
mkdir -p "${dest}"
# Built into a scratch dir and moved in, so a killed build leaves no half binary.
tmp="$(mktemp -d "${dest}/.build.XXXXXX")"
trap 'rm -rf "${tmp}"' EXIT
(cd "${here}" && "${go_cmd}" build -p "${BUILD_PARALLELISM:-2}" -ldflags "-s -w" \
  -o "${tmp}/weed" github.com/seaweedfs/seaweedfs/weed)
mv -f "${tmp}/weed" "${dest}/weed"
echo "seaweedfs/build.sh: built weed in $(($(date +%s) - start))s -> ${dest}/weed"
