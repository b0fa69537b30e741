#!/usr/bin/env bash
# Build the operator and optimizer images from the Dockerfile without a Docker engine (issue 18):
# buildah (overlay or vfs storage, chroot isolation) on bases made from Debian's own packages by
# mmdebstrap (hack/images/base.env), since base images cannot be pulled here. Writes, per image, under
#   ${OPTISERVE_CACHE:-~/.cache/optiserve}/images/<key>/
#     <image>.oci.tar          the image as an OCI archive (tagged ghcr.io/optiserve/<image>:<version>)
#     <image>.sbom.cdx.json    a CycloneDX SBOM: Debian packages (dpkg) + Python packages, read
#     <image>.python.txt       from the built image itself; name==version, one a line
#     <image>.dpkg.txt         name, version, architecture of every Debian package
#     <image>.size             bytes: unpacked root filesystem, OCI archive
#   .complete                  written last: a folder without it is not a finished build
# <key> hashes every input (Dockerfile, pyproject.toml, README.md, constraints, the sources, this
# script, base.env), so a re-run with unchanged inputs builds nothing.
# buildah's store is our own, ${OPTISERVE_CACHE}/buildah/storage, and builds with --layers: each
# image's `<image>-deps` stage (third-party dependencies, from hack/images/deps/ only) stays in
# it, tagged localhost/optiserve/<image>-deps:cache, so a source change rebuilds only our wheel
# and the layer on top (docs/images.md). Another tool pruning buildah's default store cannot
# drop that cache, and removing the folder is always safe (the next build is a cold one).
#
# Usage: hack/images/build.sh              build (or find) the images, print their sizes
#        hack/images/build.sh --print-dir  the folder for the current inputs; builds nothing
# Env:   OPTISERVE_CACHE, OPTISERVE_PIP_CA (CA bundle for pip inside the build; default: the one
#        `pip config` names, passed as a build secret and never stored in an image),
#        OPTIMIZER_EXTRAS (default: optimizer,serve; the Dockerfile's default adds tensorrt,
#        whose libraries come from NVIDIA's index, which this project's machines cannot reach).
set -euo pipefail

# All in main, called on the last line: bash has read the whole script before it runs, so an
# edit to this file during a build cannot change what the build does.
main() {

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/../.." && pwd)"
# shellcheck source=base.env
source "${here}/base.env"
cache_root="${OPTISERVE_CACHE:-${HOME}/.cache/optiserve}/images"
# buildah's store and run folder: ours, so the dependency layers survive between builds.
store="${OPTISERVE_CACHE:-${HOME}/.cache/optiserve}/buildah"
extras="${OPTIMIZER_EXTRAS:-optimizer,serve}"
images=(operator optimizer)
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "${repo}/pyproject.toml" | head -1)"
say() { echo "images/build.sh: $*"; }

overlay_works() {
  local probe
  mkdir -p "${store}"
  probe="$(mktemp -d "${store}/.overlay-probe.XXXXXX")"
  mkdir -p "${probe}"/{lower,upper,work,merged}
  if mount -t overlay overlay -o "lowerdir=${probe}/lower,upperdir=${probe}/upper,workdir=${probe}/work" \
    "${probe}/merged" 2>/dev/null; then
    umount "${probe}/merged"
    rm -rf "${probe}"
    return 0
  fi
  rm -rf "${probe}"
  return 1
}

# The build context is what .dockerignore lets in: hash exactly that, names and contents.
inputs_hash() {
  cd "${repo}"
  {
    printf '%s\n' "extras=${extras}"
    find Dockerfile .dockerignore pyproject.toml README.md .ci/constraints.txt src operator \
      optimizer hack/images/build.sh hack/images/base.env hack/images/sbom.py hack/images/deps.py \
      hack/images/deps -type f \
      ! -name '*.pyc' ! -path '*/__pycache__/*' ! -path '*.egg-info/*' -print0 \
      | LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-16
}
# The base's recipe: base.env and make_base (how this script runs mmdebstrap), not the rest of
# this script, so an edit elsewhere here keeps the base and the dependency layers built on it.
base_hash() { { cat "${here}/base.env"; declare -f make_base; } | sha256sum | cut -c1-16; }
make_base() { # <output tar>
  # No docs, man pages or translations: nothing in the images reads them.
  # merged-usr hook: /usr merged by the hook, not by the usrmerge package (which pulls in perl).
  mmdebstrap --variant=minbase --format=tar --include="${BASE_PACKAGES}" \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --aptopt='Acquire::Check-Valid-Until "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    "${BASE_SUITE}" "$1" \
    "deb ${BASE_MIRROR} ${BASE_SUITE} main" \
    "deb ${BASE_SECURITY_MIRROR} ${BASE_SUITE}-security main"
}

key="$(inputs_hash)"
out="${cache_root}/${key}"
if [[ "${1:-}" == "--print-dir" ]]; then
  echo "${out}"
  exit 0
elif (($#)); then
  echo "build.sh: unknown argument $1" >&2
  exit 2
fi

print_sizes() {
  for image in "${images[@]}"; do
    read -r unpacked archive <"${out}/${image}.size"
    say "$(printf '%-9s unpacked %6d MiB, archive %6d MiB  %s' "${image}" \
      $((unpacked / 1048576)) $((archive / 1048576)) "${out}/${image}.oci.tar")"
  done
}

if [[ -f "${out}/.complete" ]]; then
  say "up to date (${key})"
  print_sizes
  exit 0
fi

for tool in buildah mmdebstrap; do
  command -v "${tool}" >/dev/null || {
    echo "build.sh: ${tool} is missing: apt-get install -y buildah mmdebstrap" >&2
    exit 1
  }
done
# overlay when this machine's kernel and file system allow it (no copy of the whole root file
# system per step, as vfs makes); vfs otherwise. OPTISERVE_BUILDAH_DRIVER forces one.
driver="${OPTISERVE_BUILDAH_DRIVER:-$(overlay_works && echo overlay || echo vfs)}"
# The run folder holds mount state that must not outlive a reboot: /run, not the cache.
bah=(buildah --storage-driver "${driver}" --root "${store}/storage" --runroot /run/optiserve-buildah)
say "buildah storage driver: ${driver}, store ${store}/storage"
python3 "${here}/deps.py" --check

# One build at a time per machine: two would race on the same folder and the vfs store.
mkdir -p "${cache_root}"
exec 9>"${cache_root}/.lock"
flock 9
if [[ -f "${out}/.complete" ]]; then
  say "built by another run meanwhile (${key})"
  print_sizes
  exit 0
fi

# ---- the base: Debian from Debian's packages, imported into buildah's store ---------------------
base_ref="localhost/optiserve/debian-base:${BASE_SUITE}-$(base_hash)"
base_tar="${cache_root}/bases/debian-${BASE_SUITE}-$(base_hash).tar"
if [[ ! -f "${base_tar}" ]]; then
  say "making the base with mmdebstrap (${BASE_SUITE}: ${BASE_PACKAGES})"
  mkdir -p "${cache_root}/bases"
  make_base "${base_tar}.part"
  mv "${base_tar}.part" "${base_tar}"
fi
if ! "${bah[@]}" inspect --type image "${base_ref}" >/dev/null 2>&1; then
  say "importing the base as ${base_ref}"
  ctr="$("${bah[@]}" from scratch)"
  "${bah[@]}" add "${ctr}" "${base_tar}" /
  "${bah[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd /bin/sh "${ctr}"
  "${bah[@]}" commit --rm "${ctr}" "${base_ref}"
fi

# ---- pip's CA bundle: a build secret, never a layer ----------------------------------------------
ca="${OPTISERVE_PIP_CA:-$(pip config get global.cert 2>/dev/null || true)}"
ca="${ca:-${PIP_CERT:-}}"
secret=()
if [[ -n "${ca}" ]]; then
  [[ -s "${ca}" ]] || { echo "build.sh: pip's CA bundle ${ca} is missing or empty" >&2; exit 1; }
  secret=(--secret "id=pip-ca,src=${ca}")
fi

# ---- the images ----------------------------------------------------------------------------------
# pip's cache, mounted into the RUN steps (never into an image), so a rebuild after a source
# change need not download again where PyPI's answers are cacheable (on this project's machines
# pip stores nothing, here or in its host cache: every build downloads the wheels).
mkdir -p "${cache_root}/pip-cache"
tmp="${out}.part"
rm -rf "${tmp}"
mkdir -p "${tmp}"
cleanup() {
  local status=$?
  if ((status != 0)); then
    say "failed; nothing is kept in ${out}"
    rm -rf "${tmp}"
  fi
}
trap cleanup EXIT

# The build context, copied with fixed mtimes and modes: buildah's layer cache keys a COPY on
# the copied files' metadata as well as their contents, so the checkout itself (a fresh clone,
# a `git checkout` that rewrote a file) would never find the dependency layers again.
context="${tmp}/context"
mkdir -p "${context}"
(cd "${repo}" && find Dockerfile .dockerignore pyproject.toml README.md .ci/constraints.txt \
  hack/images/deps src operator optimizer -type f ! -name '*.pyc' ! -path '*/__pycache__/*' \
  ! -path '*.egg-info/*' -print0 | tar --null -T - -cf -) | tar -xf - -C "${context}"
chmod -R u=rwX,go=rX "${context}"
find "${context}" -exec touch -h -d @0 {} +
bud=("${bah[@]}" bud --layers --isolation chroot --pull=never
  --build-arg "OPERATOR_BASE=${base_ref}" --build-arg "OPTIMIZER_BASE=${base_ref}"
  --build-arg "OPTIMIZER_EXTRAS=${extras}" "${secret[@]}"
  --volume "${cache_root}/pip-cache:/root/.cache/pip")
for image in "${images[@]}"; do
  ref="localhost/optiserve/${image}:${key}"
  # The dependency stage first, under a fixed tag: a tagged image (and the layers it stands on)
  # is what survives the prune below, so the next build finds it in the layer cache.
  say "building ${image}-deps (reused when the base, the lists and the constraints are unchanged)"
  start=${SECONDS}
  "${bud[@]}" --target "${image}-deps" -t "localhost/optiserve/${image}-deps:cache" "${context}"
  say "built ${image}-deps in $((SECONDS - start)) s"
  say "building ${image} (${ref})"
  start=${SECONDS}
  "${bud[@]}" --target "${image}" --label "io.optiserve.inputs=${key}" -t "${ref}" "${context}"
  say "built ${image} in $((SECONDS - start)) s"

  # What the build installed, read from the image itself (as its own user, like a pod).
  ctr="$("${bah[@]}" from --pull=never "${ref}")"
  mnt="$("${bah[@]}" mount "${ctr}")"
  dpkg-query --admindir="${mnt}/var/lib/dpkg" -W \
    -f '${Package}\t${Version}\t${Architecture}\n' | LC_ALL=C sort >"${tmp}/${image}.dpkg.txt"
  "${bah[@]}" run --isolation chroot --user 10001:10001 "${ctr}" -- /opt/venv/bin/python -c \
    'import importlib.metadata as m, json; print(json.dumps(sorted(
       ({"name": d.metadata["Name"], "version": d.version,
         "license": d.metadata.get("License-Expression") or d.metadata.get("License") or ""}
        for d in m.distributions()), key=lambda d: d["name"].lower())))' \
    >"${tmp}/${image}.python.json"
  unpacked="$(du -sb "${mnt}" | cut -f1)"
  "${bah[@]}" umount "${ctr}" >/dev/null
  "${bah[@]}" rm "${ctr}" >/dev/null

  start=${SECONDS}
  "${bah[@]}" push --quiet "${ref}" \
    "oci-archive:${tmp}/${image}.oci.tar:ghcr.io/optiserve/${image}:${version}"
  say "wrote ${image}.oci.tar in $((SECONDS - start)) s"
  python3 "${here}/sbom.py" --image "ghcr.io/optiserve/${image}:${version}" \
    --archive "${tmp}/${image}.oci.tar" --dpkg "${tmp}/${image}.dpkg.txt" \
    --python "${tmp}/${image}.python.json" --sbom "${tmp}/${image}.sbom.cdx.json" \
    --python-list "${tmp}/${image}.python.txt"
  echo "${unpacked} $(stat -c %s "${tmp}/${image}.oci.tar")" >"${tmp}/${image}.size"
  # The archive is the image now; the store's copy is only disk (vfs keeps full copies).
  "${bah[@]}" rmi "${ref}" >/dev/null
done
# Keep the current base and dependency stages; drop earlier bases, then every untagged image
# (earlier dependency stages, the source and wheel layers of this and earlier builds).
"${bah[@]}" images --format '{{.Name}}:{{.Tag}}' | grep '^localhost/optiserve/debian-base:' \
  | grep -vxF "${base_ref}" | xargs -r "${bah[@]}" rmi >/dev/null 2>&1 || true
"${bah[@]}" rmi --prune >/dev/null 2>&1 || true

rm -rf "${context}"
touch "${tmp}/.complete"
rm -rf "${out}"
mv "${tmp}" "${out}"
# Earlier builds (other inputs) are gigabytes each, with their unpacked root file systems.
for old in "${cache_root}"/*/.complete; do
  if [[ -e "${old}" && "$(dirname "${old}")" != "${out}" ]]; then rm -rf "$(dirname "${old}")"; fi
done
say "done (${key})"
print_sizes
}

main "$@"
