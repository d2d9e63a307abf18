# GPT-J predictor image. Default: the GPU image on a pinned CUDA runtime base.
# The same file builds the CPU smoke-test image:
#   --build-arg BASE_IMAGE=<a Debian/Ubuntu image> --build-arg TORCH_VARIANT=cpu
# with the CPU torch wheel in ./wheels (see `make smoke`).
ARG BASE_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04
# checkov:skip=CKV_DOCKER_7: FROM is the BASE_IMAGE build arg, whose default above is a pinned version
# checkov:skip=CKV_DOCKER_2: health checks are the chart's startup/readiness/liveness probes, not HEALTHCHECK

# ---- build stage: a virtual environment with every dependency, then the project ---------------
FROM ${BASE_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
# cu128 for the GPU image, cpu for the smoke-test image (taken from ./wheels when present).
ARG TORCH_VARIANT=cu128
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_VARIANT}
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

# torch first: the largest layer, and the one that differs between GPU and CPU images.
RUN --mount=type=bind,source=wheels,target=/wheels \
    if [ "${TORCH_VARIANT}" = cpu ] && ls /wheels/torch-*.whl >/dev/null 2>&1; then \
      pip install --find-links /wheels "torch==${TORCH_VERSION}+cpu"; \
    else \
      pip install --extra-index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}+${TORCH_VARIANT}"; \
    fi

# Then the other dependencies, from pyproject.toml alone, so source edits do not reinstall them.
COPY pyproject.toml ./
RUN python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

# Last, the project itself, into /opt/app rather than the venv: the final stage copies the two as
# separate layers, so a source change rebuilds and ships a layer of a few hundred KB instead of the whole
# 1.5 GB venv again (and the venv's layer stays cached and shared between builds).
COPY README.md ./
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
    GPTJ_CACHE_DIR=/cache/gptj-predictor

USER 10001:10001
WORKDIR /cache
EXPOSE 8080
# Probes belong to the orchestrator (the chart's startup/readiness/liveness probes), not the image.
ENTRYPOINT ["python3", "-m", "predictor"]
