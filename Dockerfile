# syntax=docker/dockerfile:1
#
# PreDiff nowcasting service images (see deploy/README.md).
#
#   docker build --target cpu -t prediff-nowcast:0.1.0 .      # API, and CPU workers
#   docker build --target gpu -t prediff-nowcast-gpu:0.1.0 .  # CUDA worker
#
# Both final stages: non-root user 10001, the shipped model (models/weights/small-v3) installed with
# the package, no compiler, no pip cache, tini as PID 1 so SIGTERM reaches the worker (it drains).
# Versions are pinned in deploy/requirements/*.txt (common + cpu + torch-cpu, or common + gpu);
# every install is `--no-deps` from those pins followed by `pip check`, so an unpinned dependency
# fails the build.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# CUDA 13.0 user space: the same CUDA minor that torch 2.13.0's and onnxruntime-gpu 1.31.1's wheels
# are built for (see deploy/requirements/gpu.txt); needs an R580+ driver on the host.
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-runtime-ubuntu24.04

# ---------------------------------------------------------------------------------------------
# CPU: build a virtual environment, then copy only it into a clean slim image.
FROM ${PYTHON_IMAGE} AS cpu-builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# dependencies first: this layer is rebuilt only when the pins change, not on every code edit
COPY deploy/requirements/common.txt deploy/requirements/cpu.txt \
     deploy/requirements/torch-cpu.txt /src/deploy/requirements/
# torch's +cpu build comes from the PyTorch CPU index alone; everything else from PyPI
RUN pip install --no-deps --index-url https://download.pytorch.org/whl/cpu \
        -r deploy/requirements/torch-cpu.txt \
    && pip install --no-deps -r deploy/requirements/common.txt -r deploy/requirements/cpu.txt
COPY pyproject.toml README.md /src/
COPY models /src/models
COPY service /src/service
# a regular (non-editable) install: the package, its console script and the weights land in the
# venv's site-packages, where service.settings looks for the shipped model
RUN pip install --no-deps /src \
    && pip check \
    && python -c "from service.settings import SHIPPED_MODEL_DIR as d; \
assert (d / 'model.yaml').is_file(), f'shipped model missing: {d}'"

FROM ${PYTHON_IMAGE} AS cpu
# apt packages are left unpinned (DL3008): the distro replaces old versions, so a pin breaks the
# build within weeks; the base image tag fixes the release they come from
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 nowcast \
    && useradd --system --uid 10001 --gid nowcast --create-home --home-dir /home/nowcast nowcast \
    && install -d -o nowcast -g nowcast /var/lib/nowcast/blobs
COPY --from=cpu-builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NOWCAST_HOST=0.0.0.0 \
    NOWCAST_PORT=8000 \
    NOWCAST_DEVICE=cpu \
    NOWCAST_MODEL_CACHE_DIR=/tmp/nowcast-cache
# other weights: mount a model folder (model.yaml + weights) and set NOWCAST_MODEL_DIR to it
USER 10001:10001
WORKDIR /home/nowcast
EXPOSE 8000
# the API's liveness; a worker container overrides this (compose) or ignores it (Kubernetes)
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
ENTRYPOINT ["tini", "--", "nowcast"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "0"]

# ---------------------------------------------------------------------------------------------
# GPU worker: the same package on the CUDA runtime base, with CUDA torch and onnxruntime-gpu.
FROM ${CUDA_IMAGE} AS gpu-builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 python3.12-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3.12 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY deploy/requirements/common.txt deploy/requirements/gpu.txt /src/deploy/requirements/
RUN pip install --no-deps -r deploy/requirements/common.txt -r deploy/requirements/gpu.txt
COPY pyproject.toml README.md /src/
COPY models /src/models
COPY service /src/service
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# pyproject.toml lists the CPU `onnxruntime`; here onnxruntime-gpu provides the same module, so
# that one requirement is the only problem `pip check` may report
RUN pip install --no-deps /src \
    && problems="$(pip check | grep -v -e '^No broken requirements' \
        -e 'requires onnxruntime, which is not installed' || true)" \
    && if [ -n "$problems" ]; then echo "$problems"; exit 1; fi \
    && python -c "from service.settings import SHIPPED_MODEL_DIR as d; \
assert (d / 'model.yaml').is_file(), f'shipped model missing: {d}'" \
    && python -c "import torch; assert torch.version.cuda.startswith('13.0'), torch.version.cuda" \
    && python -c "import onnxruntime as ort; \
assert 'CUDAExecutionProvider' in ort.get_available_providers(), ort.get_available_providers()"

FROM ${CUDA_IMAGE} AS gpu
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 nowcast \
    && useradd --system --uid 10001 --gid nowcast --create-home --home-dir /home/nowcast nowcast \
    && install -d -o nowcast -g nowcast /var/lib/nowcast/blobs
COPY --from=gpu-builder /opt/venv /opt/venv
# cuDNN is not in the CUDA runtime base; register the nvidia-cudnn-cu13 wheel that torch pins so
# onnxruntime's CUDA provider finds the same libcudnn.so.9 that torch loads
RUN /opt/venv/bin/python -c "import nvidia.cudnn as m; print(list(m.__path__)[0] + '/lib')" \
        > /etc/ld.so.conf.d/zz-nowcast-cudnn.conf \
    && ldconfig
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NOWCAST_DEVICE=cuda \
    NOWCAST_MODEL_CACHE_DIR=/tmp/nowcast-cache
USER 10001:10001
WORKDIR /home/nowcast
# a worker serves no HTTP: `nowcast worker --check` = a worker heartbeat in Redis is fresh
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["nowcast", "worker", "--check"]
ENTRYPOINT ["tini", "--", "nowcast"]
CMD ["worker"]
