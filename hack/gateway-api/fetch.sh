#!/usr/bin/env bash
# Fetch (once per machine) the Gateway API standard-channel CRDs at the version pinned in
# versions.env, from the Go module proxy (sigs.k8s.io/gateway-api ships them in
# config/crd/standard/), and cache them as one multi-document YAML file:
#   ${OPTISERVE_GATEWAY_API_CACHE:-$HOME/.cache/optiserve/gateway-api}/<version>/standard-crds.yaml
# A warm run only checks the file is there. Prints the file's path on its last line.
#
# Usage: hack/gateway-api/fetch.sh [--print-path]   (--print-path: fetch nothing)
# Env:   OPTISERVE_GATEWAY_API_CACHE, GO (path of the go command)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "${here}/versions.env"
module="sigs.k8s.io/gateway-api"
cache="${OPTISERVE_GATEWAY_API_CACHE:-${HOME}/.cache/optiserve/gateway-api}/${GATEWAY_API_VERSION}"
out="${cache}/standard-crds.yaml"

if [[ "${1:-}" == "--print-path" || -s "${out}" ]]; then
  echo "${out}"
  exit 0
fi

go_cmd="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
if [[ ! -x "${go_cmd}" ]]; then
  echo "fetch.sh: go not found (set GO=/path/to/go); cannot fetch ${module}@${GATEWAY_API_VERSION}" >&2
  exit 3
fi

# Outside any module, so no go.mod around is consulted or changed.
scratch="$(mktemp -d)"
trap 'rm -rf "${scratch}"' EXIT
dir="$(cd "${scratch}" && GOFLAGS=-mod=mod GOTOOLCHAIN=local "${go_cmd}" mod download -json \
  "${module}@${GATEWAY_API_VERSION}" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')"
crds=("${dir}"/config/crd/standard/gateway.networking.k8s.io_*.yaml)
if [[ -z "${dir}" || ! -f "${crds[0]}" ]]; then
  echo "fetch.sh: ${module}@${GATEWAY_API_VERSION} has no config/crd/standard/*.yaml" >&2
  exit 1
fi
# The files must be the release they claim to be (the bundle-version annotation).
if grep -L "gateway.networking.k8s.io/bundle-version: ${GATEWAY_API_VERSION}$" "${crds[@]}" | grep -q .; then
  echo "fetch.sh: CRDs of ${module}@${GATEWAY_API_VERSION} carry another bundle-version" >&2
  exit 1
fi

mkdir -p "${cache}"
tmp="$(mktemp "${cache}/.standard-crds.XXXXXX")"
for crd in "${crds[@]}"; do
  printf -- '---\n# %s\n' "$(basename "${crd}")"
  cat "${crd}"
done >"${tmp}"
mv -f "${tmp}" "${out}"  # atomic: a killed fetch leaves no half file
echo "fetch.sh: Gateway API ${GATEWAY_API_VERSION} CRDs (${#crds[@]}) cached" >&2
echo "${out}"
