# GPT-J predictor image. Default: the GPU image. The same file builds the CPU smoke-test image:
#   --build-arg BASE_IMAGE=<a Debian bookworm image> --build-arg TORCH_VARIANT=cpu
# with the CPU torch wheel in ./wheels (see `make smoke`).
#
# Every Python package comes from a lock, locks/image-${TORCH_VARIANT}.txt (`make lock` writes it): exact
# versions, each file installed only if its sha256 is the one locked, so two builds a week apart hold the
# same bytes, and the versions are the ones `make test` ran with (the .venv installs the same pins).
#
# The GPU base is CUDA's -base flavour, not -runtime. PyPI's CUDA torch brings CUDA's libraries itself, as
# nvidia-* wheels (cuBLAS, cuDNN, cuFFT, cuSPARSE, NCCL...: 2.0 GB of the image's 3.2 GB compressed,
# docs/image.md); -runtime adds the same libraries again as Ubuntu packages, a second copy in every pull
# (cuBLAS, cuFFT, cuRAND, cuSOLVER, cuSPARSE and NCCL alone: 1.25 GB compressed as wheels), and pull time is
# most of a cold start on a fresh GPU node. -base carries only what the wheels do not: the settings the
# NVIDIA container toolkit reads (NVIDIA_VISIBLE_DEVICES, NVIDIA_DRIVER_CAPABILITIES, and
# NVIDIA_REQUIRE_CUDA, which refuses a node whose driver is too old for CUDA 13.0 with a clear message
# instead of a CUDA error at load time) and the CUDA runtime; the driver comes from the node. Its CUDA
# release is the one torch's wheels were built for (nvidia-cuda-runtime 13.0 in the lock; a test checks they
# match), and Ubuntu 24.04's python3 is 3.12, the Python image-cuda.txt is for.
ARG BASE_IMAGE=nvidia/cuda:13.0.2-base-ubuntu24.04
# checkov:skip=CKV_DOCKER_7: FROM is the BASE_IMAGE build arg, whose default above is a pinned version
# checkov:skip=CKV_DOCKER_2: health checks are the chart's startup/readiness/liveness probes, not HEALTHCHECK

# ---- build stage: a virtual environment with every dependency, then the project ---------------
FROM ${BASE_IMAGE} AS build
# cuda: the GPU image (locks/image-cuda.txt). cpu: the smoke-test image (locks/image-cpu.txt), whose
# torch==2.13.0+cpu is not on PyPI: taken from ./wheels when it is there, else from PyTorch's CPU index
# (the same file: the lock's hash decides).
ARG TORCH_VARIANT=cuda
ARG CPU_TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# The CA bundle pip trusts: the build image's own by default; a build behind a TLS-intercepting proxy
# mounts its bundle and names it here (make smoke does). Build stage only: not in the final image.
ARG PIP_CERT=/etc/ssl/certs/ca-certificates.crt
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Every dependency ships binary wheels: no compiler in either stage.
# Package versions belong to the base image's release (Ubuntu for CUDA, Debian for CPU): not pinnable here.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# The project goes to /opt/app, outside the venv (see below); this .pth file puts it on the venv's path.
RUN python3 -m venv /opt/venv \
 && echo /opt/app > "$(/opt/venv/bin/python3 -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/gptj-app.pth"
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Every dependency, from the lock alone (so source edits do not reinstall them): each file checked against
# its sha256 (--require-hashes), nothing the lock does not name (--no-deps), wheels only (--only-binary:
# nothing is compiled). COPY, not a bind mount, so that a new lock always rebuilds this layer. One layer for
# torch and the rest: the final stage copies the venv as one layer anyway.
COPY locks/image-${TORCH_VARIANT}.txt /tmp/lock.txt
RUN --mount=type=bind,source=wheels,target=/wheels \
    if [ "${TORCH_VARIANT}" = cpu ] && ! ls /wheels/torch-*.whl >/dev/null 2>&1; then \
      set -- --extra-index-url "${CPU_TORCH_INDEX_URL}"; \
    fi \
 && pip install --require-hashes --no-deps --only-binary=:all: --find-links /wheels "$@" -r /tmp/lock.txt

# Last, the project itself, into /opt/app rather than the venv: the final stage copies the two as
# separate layers, so a source change rebuilds and ships a layer of a few hundred KB instead of the whole
# 1.5 GB venv again (and the venv's layer stays cached and shared between builds).
COPY pyproject.toml README.md ./
COPY predictor ./predictor
# pip byte-compiles what it installs: the read-only root filesystem never needs to write .pyc files.
RUN pip install --no-deps --target /opt/app .

# ---- final stage: the runtime base, Python, the venv, the project; nothing to build with ----------
FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
# Runtime packages only (python3 without -venv or -dev); versions come with the base image's release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 predictor \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /cache --shell /usr/sbin/nologin predictor \
 && mkdir -p /cache && chown 10001:10001 /cache
# Dependencies first, then the project (see the build stage).
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/app /opt/app

# The root filesystem may be read-only: every cache lives under /cache (an emptyDir in the pod,
# a tmpfs in `podman run --read-only`); KServe's storage initializer mounts the model at /mnt/models.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/cache \
    XDG_CACHE_HOME=/cache \
    HF_HOME=/cache/huggingface \
    TRITON_CACHE_DIR=/cache/triton \
    TORCHINDUCTOR_CACHE_DIR=/cache/inductor \
    MPLCONFIGDIR=/cache/matplotlib \
    GPTJ_CACHE_DIR=/cache/gptj-predictor \
    GPTJ_ENABLE_GRPC=true

USER 10001:10001
WORKDIR /cache
# HTTP (v1, v2, OpenAI, metrics) and KServe's gRPC v2 service (--grpc_port; --enable_grpc false turns it off)
EXPOSE 8080 8081
# Probes belong to the orchestrator (the chart's startup/readiness/liveness probes), not the image.
ENTRYPOINT ["python3", "-m", "predictor"]
