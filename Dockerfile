# syntax=docker/dockerfile:1.10
# Two images from one file, both built from this checkout:
#   docker build --target operator  -t ghcr.io/optiserve/operator:0.1.0 .
#   docker build --target optimizer -t ghcr.io/optiserve/optimizer:0.1.0 .
# The operator image is slim (kopf + kubernetes client, no torch, no TensorRT); the optimizer
# image runs the optimization Jobs on an NVIDIA CUDA base. Dependencies are pinned by
# .ci/constraints.txt, the same file CI installs with. Base images are pinned by tag; pin them
# by digest too (image@sha256:...) in a release pipeline that can resolve digests.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG CUDA_IMAGE=nvcr.io/nvidia/cuda:13.0.1-runtime-ubuntu24.04

# ---- operator: build a virtualenv with `.[operator]` only -------------------------------------
FROM ${PYTHON_IMAGE} AS operator-build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY .ci/constraints.txt .ci/constraints.txt
COPY src src
COPY operator operator
COPY optimizer optimizer
# Versions come from the constraints file (-c), which hadolint cannot see.
# hadolint ignore=DL3013
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --upgrade pip \
    && /opt/venv/bin/pip install -c .ci/constraints.txt ".[operator]" \
    && /opt/venv/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)"

# ---- operator: the runtime image ----------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS operator
LABEL org.opencontainers.image.title="optiserve operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=operator-build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
# A numeric user, so Kubernetes can check runAsNonRoot without reading /etc/passwd.
USER 10001:10001
EXPOSE 8080 8081
ENTRYPOINT ["optiserve", "operator"]

# ---- optimizer: build a virtualenv with `.[optimizer,tensorrt]` ---------------------------------
FROM ${CUDA_IMAGE} AS optimizer-build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive
# Ubuntu's own python3 (3.12 on 24.04); package versions follow the pinned base image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY .ci/constraints.txt .ci/constraints.txt
COPY src src
COPY operator operator
COPY optimizer optimizer
# hadolint ignore=DL3013
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --upgrade pip \
    && /opt/venv/bin/pip install -c .ci/constraints.txt ".[optimizer,tensorrt]"

# ---- optimizer: the runtime image ---------------------------------------------------------------
FROM ${CUDA_IMAGE} AS optimizer
LABEL org.opencontainers.image.title="optiserve optimizer" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=optimizer-build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
USER 10001:10001
ENTRYPOINT ["optiserve", "optimize"]
