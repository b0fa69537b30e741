# Sourced by the device scripts (benchmarks/gpu_*/run.sh): `log_to FILE` sends everything the
# script prints to FILE too, and makes the script wait for tee to write the last lines before
# it returns (the device tool ends whatever is left running when the command returns);
# `say` prints a timestamped line.
# shellcheck shell=bash

log_to() {
  mkdir -p "$(dirname "$1")"
  exec > >(tee "$1") 2>&1
  _log_tee_pid=$!
  trap _log_finish EXIT
}

_log_finish() {
  local code=$?
  exec 1>&- 2>&-
  wait "${_log_tee_pid}" 2>/dev/null
  exit "${code}"
}

say() { echo "[$(date +%H:%M:%S)] $(basename "$(dirname "$0")")/run.sh: $*"; }
