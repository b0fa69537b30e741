# syntax=docker/dockerfile:1.10
# Two images from one file, both built from this checkout:
#   docker build --target operator  -t ghcr.io/optiserve/operator:0.1.0 .
#   docker build --target optimizer -t ghcr.io/optiserve/optimizer:0.1.0 .
# `make images` builds both without a Docker engine (buildah, bases made from Debian's own
# packages, hack/images/build.sh); docs/images.md says how and what they hold.
# The operator image is slim (kopf + kubernetes client, no torch, no TensorRT); the optimizer
# image runs the optimization Jobs. Dependencies are pinned by .ci/constraints.txt, the same file
# CI installs with. Each image is built in layers that change at different rates: `<image>-deps`
# installs the third-party dependencies from hack/images/deps/ (generated from pyproject.toml by
# hack/images/deps.py) before any source is copied, so a source change reuses that layer and
# only builds and installs our own wheel on top of it (docs/images.md). Base images are pinned by tag; pin them by digest too (image@sha256:...) in a
# release pipeline that can resolve digests.
#
# Bases: any image with python3 (3.11+) and its venv module. The optimizer needs no CUDA base:
# torch's pinned cu13 wheels (nvidia-cublas, nvidia-cudnn-cu13, ...) bring the CUDA libraries,
# and on a GPU node the NVIDIA container runtime adds the driver (libcuda.so.1).
ARG OPERATOR_BASE=python:3.11.14-slim-bookworm
ARG OPTIMIZER_BASE=python:3.11.14-slim-bookworm
# The optimizer's extras. serve: the local tritonserver (nvidia-pytriton) and tritonclient that
# the Job's serving.tuning search runs; its python-backend stub links libpython3.11.so.1.0, which
# python:3.11-slim has (a base without the shared libpython needs Debian's libpython3.11).
# tensorrt pulls NVIDIA's libraries from NVIDIA's index; a build that cannot reach it (this
# project's CI) passes OPTIMIZER_EXTRAS=optimizer,serve.
ARG OPTIMIZER_EXTRAS=optimizer,serve,tensorrt

# ---- operator: its third-party dependencies, from the dependency lists only ---------------------
# No source here: this layer changes only with the base, the lists or the constraints.
FROM ${OPERATOR_BASE} AS operator-deps
COPY .ci/constraints.txt hack/images/deps/base.txt hack/images/deps/operator.txt \
     /opt/optiserve/requirements/
# A CA bundle for pip, when the build needs one to reach PyPI, comes as a build secret
# (`--secret id=pip-ca,src=...`): mounted for this step only, never in a layer.
# Versions come from the lists and the constraints file (-c), which hadolint cannot see.
# hadolint ignore=DL3013,DL3042
RUN --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
    && lists=/opt/optiserve/requirements \
    && python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --upgrade pip \
    && /opt/venv/bin/pip install -c "${lists}/constraints.txt" \
       -r "${lists}/base.txt" -r "${lists}/operator.txt" \
    && /opt/venv/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)"

# ---- operator: our own wheel, from the sources ---------------------------------------------------
FROM ${OPERATOR_BASE} AS operator-build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY .ci/constraints.txt .ci/constraints.txt
COPY src src
COPY operator operator
COPY optimizer optimizer
# pip's cache stays in this build stage, which no image ships (hack/images/build.sh mounts a
# persistent one there).
# hadolint ignore=DL3013,DL3042
RUN --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
    && python3 -m venv /opt/build \
    && /opt/build/bin/pip wheel --no-deps -c .ci/constraints.txt -w /wheels ".[operator]"

# ---- operator: the runtime image: the dependency layer, then our wheel -------------------------
FROM operator-deps AS operator
LABEL org.opencontainers.image.title="optiserve operator" \
      org.opencontainers.image.licenses="Apache-2.0"
# --no-deps --no-index: everything else is in the layer below; a dependency missing from
# hack/images/deps/ fails `pip check` here instead of at run time.
# hadolint ignore=DL3013,DL3042
RUN --mount=type=secret,id=pip-ca --mount=type=bind,from=operator-build,source=/wheels,target=/wheels \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
    /opt/venv/bin/pip install --no-deps --no-index /wheels/optiserve-*.whl \
    && /opt/venv/bin/pip check
# USER: the uid has no /etc/passwd entry (any runAsUser works), so getpass.getuser() reads
# this instead of failing (kopf names its peering identity with it: the operator crashed at
# start without it, found by running this image end to end).
# PYTHONMALLOC=malloc, MALLOC_ARENA_MAX=2: Python objects from glibc's malloc, in two arenas,
# whose free pages the operator returns to the system after a burst
# (operator/optiserve_operator/memory.py: ALLOCATOR_ENV, and why).
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONMALLOC=malloc \
    MALLOC_ARENA_MAX=2 \
    HOME=/tmp \
    USER=optiserve
# A numeric user, so Kubernetes can check runAsNonRoot without reading /etc/passwd.
USER 10001:10001
EXPOSE 8080 8081
ENTRYPOINT ["optiserve", "operator"]

# ---- optimizer: its third-party dependencies, from the dependency lists only --------------------
FROM ${OPTIMIZER_BASE} AS optimizer-deps
ARG OPTIMIZER_EXTRAS
COPY .ci/constraints.txt hack/images/deps/base.txt hack/images/deps/optimizer.txt \
     hack/images/deps/serve.txt hack/images/deps/tensorrt.txt /opt/optiserve/requirements/
# One `-r <extra>.txt` per extra in OPTIMIZER_EXTRAS (optimizer, serve, tensorrt).
# hadolint ignore=DL3013,DL3042,SC2086
RUN --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
    && dir=/opt/optiserve/requirements \
    && lists="-r ${dir}/base.txt" \
    && IFS=, && for extra in ${OPTIMIZER_EXTRAS}; do lists="${lists} -r ${dir}/${extra}.txt"; done \
    && unset IFS \
    && python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --upgrade pip \
    && /opt/venv/bin/pip install -c "${dir}/constraints.txt" ${lists}

# ---- optimizer: our own wheel, from the sources --------------------------------------------------
FROM ${OPTIMIZER_BASE} AS optimizer-build
ARG OPTIMIZER_EXTRAS
WORKDIR /src
COPY pyproject.toml README.md ./
COPY .ci/constraints.txt .ci/constraints.txt
COPY src src
COPY operator operator
COPY optimizer optimizer
# hadolint ignore=DL3013,DL3042
RUN --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
    && python3 -m venv /opt/build \
    && /opt/build/bin/pip wheel --no-deps -c .ci/constraints.txt -w /wheels ".[${OPTIMIZER_EXTRAS}]"

# ---- optimizer: the runtime image: the dependency layer, then our wheel ------------------------
FROM optimizer-deps AS optimizer
LABEL org.opencontainers.image.title="optiserve optimizer" \
      org.opencontainers.image.licenses="Apache-2.0"
# hadolint ignore=DL3013,DL3042
RUN --mount=type=secret,id=pip-ca --mount=type=bind,from=optimizer-build,source=/wheels,target=/wheels \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
    /opt/venv/bin/pip install --no-deps --no-index /wheels/optiserve-*.whl \
    && /opt/venv/bin/pip check
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
