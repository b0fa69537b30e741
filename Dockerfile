# syntax=docker/dockerfile:1.10
# Two images from one file, both built from this checkout:
#   docker build --target operator  -t ghcr.io/optiserve/operator:0.1.0 .
#   docker build --target optimizer -t ghcr.io/optiserve/optimizer:0.1.0 .
# `make images` builds both without a Docker engine (buildah, bases made from Debian's own
# packages, hack/images/build.sh); docs/images.md says how and what they hold.
# The operator image is slim (kopf + kubernetes client, no torch, no TensorRT); the optimizer
# image runs the optimization Jobs. Dependencies are pinned by .ci/constraints.txt, the same file
# CI installs with. Base images are pinned by tag; pin them by digest too (image@sha256:...) in a
# release pipeline that can resolve digests.
#
# Bases: any image with python3 (3.11+) and its venv module. The optimizer needs no CUDA base:
# torch's pinned cu13 wheels (nvidia-cublas, nvidia-cudnn-cu13, ...) bring the CUDA libraries,
# and on a GPU node the NVIDIA container runtime adds the driver (libcuda.so.1).
ARG OPERATOR_BASE=python:3.11.14-slim-bookworm
ARG OPTIMIZER_BASE=python:3.11.14-slim-bookworm
# The optimizer's extras. tensorrt pulls NVIDIA's libraries from NVIDIA's index; a build that
# cannot reach it (this project's CI) passes OPTIMIZER_EXTRAS=optimizer.
ARG OPTIMIZER_EXTRAS=optimizer,tensorrt

# ---- operator: build a virtualenv with `.[operator]` only -------------------------------------
FROM ${OPERATOR_BASE} AS operator-build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md ./
COPY .ci/constraints.txt .ci/constraints.txt
COPY src src
COPY operator operator
COPY optimizer optimizer
# A CA bundle for pip, when the build needs one to reach PyPI, comes as a build secret
# (`--secret id=pip-ca,src=...`): mounted for this step only, never in a layer.
# pip's cache stays in this build stage, which no image ships (hack/images/build.sh mounts a
# persistent one there, so a rebuild downloads nothing it has seen).
# Versions come from the constraints file (-c), which hadolint cannot see.
# hadolint ignore=DL3013,DL3042
RUN --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --upgrade pip \
    && /opt/venv/bin/pip install -c .ci/constraints.txt ".[operator]" \
    && /opt/venv/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)"

# ---- operator: the runtime image ----------------------------------------------------------------
FROM ${OPERATOR_BASE} AS operator
LABEL org.opencontainers.image.title="optiserve operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=operator-build /opt/venv /opt/venv
# USER: the uid has no /etc/passwd entry (any runAsUser works), so getpass.getuser() reads
# this instead of failing (kopf names its peering identity with it: the operator crashed at
# start without it, found by running this image end to end).
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    USER=optiserve
# A numeric user, so Kubernetes can check runAsNonRoot without reading /etc/passwd.
USER 10001:10001
EXPOSE 8080 8081
ENTRYPOINT ["optiserve", "operator"]

# ---- optimizer: build a virtualenv with `.[optimizer,tensorrt]` ---------------------------------
FROM ${OPTIMIZER_BASE} AS optimizer-build
ARG OPTIMIZER_EXTRAS
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md ./
COPY .ci/constraints.txt .ci/constraints.txt
COPY src src
COPY operator operator
COPY optimizer optimizer
# hadolint ignore=DL3013,DL3042
RUN --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --upgrade pip \
    && /opt/venv/bin/pip install -c .ci/constraints.txt ".[${OPTIMIZER_EXTRAS}]"

# ---- optimizer: the runtime image ---------------------------------------------------------------
FROM ${OPTIMIZER_BASE} AS optimizer
LABEL org.opencontainers.image.title="optiserve optimizer" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=optimizer-build /opt/venv /opt/venv
# NVIDIA_DRIVER_CAPABILITIES: what the NVIDIA container runtime mounts from the node's driver
# (compute: libcuda, utility: nvidia-smi); the device plugin sets NVIDIA_VISIBLE_DEVICES.
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    HOME=/tmp \
    USER=optiserve
USER 10001:10001
ENTRYPOINT ["optiserve", "optimize"]
