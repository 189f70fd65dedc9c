# syntax=docker/dockerfile:1
# bertja-train-gpu: PyTorch trainer for GPU pods and Kubeflow TrainJobs (CUDA torch + transformers, no TensorFlow)
# Build from the repository root (names, tags and the version come from components/images.py):
#   make images        or   make image-gpu (no registry)   (deploy/kind.sh images skips it: a CPU cluster never runs it)
# CPU runs of the same trainer (local profile, kind) use the convert image: same packages, CPU torch.
# Two stages: the build stage resolves pinned wheels into a virtual environment; the final
# stage gets only that environment, a non-root user and no pip, compilers or caches.

# The real bases; a machine without a registry passes stand-ins (make image-gpu):
# BUILD_IMAGE for the build stage, BASE_IMAGE for the final one.
ARG BASE_IMAGE=python:3.11.14-slim-bookworm
ARG BUILD_IMAGE=python:3.11.14-slim-bookworm

FROM ${BUILD_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv --without-pip /opt/bertja
# Dependencies first, in layers of their own that only pyproject.toml and the pins change: the core
# requirements and this image's extras' (read from pyproject.toml), at the pinned versions. A change
# to the source copied below then rebuilds only the package's own layer (--no-deps).
COPY images/constraints-gpu.txt pyproject.toml ./
# PyPI's Linux x86_64 torch wheel is the CUDA build: its CUDA libraries (cuBLAS, cuDNN, NCCL, ...)
# come as nvidia-* wheels, with triton; constraints-gpu.txt pins all of them (make constraints-gpu
# resolves it from constraints.txt's pins with pip). No CUDA base image is needed: the node's
# driver is all the container takes from the host. About 2.9 GB of wheels (make image-gpu-cost).
RUN python -c "import sys, tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print(*p['dependencies'], *(r for e in sys.argv[1].split(',') for r in p['optional-dependencies'][e]), sep='\n')" pipeline,train-torch > requirements.txt \
 && pip --python /opt/bertja/bin/python install --no-cache-dir --constraint constraints-gpu.txt --requirement requirements.txt
COPY README.md ./
COPY components ./components
COPY pipelines ./pipelines
# The package goes to a prefix of its own: the final stage copies the dependencies' environment,
# a layer cached while they stay the same, and then the package, a small layer per source change.
RUN pip --python /opt/bertja/bin/python install --no-cache-dir --no-deps --prefix /opt/bertja-package --constraint constraints-gpu.txt ".[pipeline,train-torch]"

FROM ${BASE_IMAGE}
ARG BERTJA_VERSION
LABEL org.opencontainers.image.title="bertja-train-gpu" \
      org.opencontainers.image.description="PyTorch trainer for GPU pods and Kubeflow TrainJobs (CUDA torch + transformers, no TensorFlow)" \
      org.opencontainers.image.version="${BERTJA_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# The version label is the release contract: refuse to build without it.
# The base's own pip, setuptools and wheel go too: the final stage installs nothing.
RUN test -n "${BERTJA_VERSION}" \
 && if python -m pip --version >/dev/null 2>&1; then python -m pip uninstall --yes --no-cache-dir pip setuptools wheel; fi \
 && groupadd --gid 10001 bertja \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin bertja
COPY --from=build /opt/bertja /opt/bertja
COPY --from=build /opt/bertja-package /opt/bertja
# HOME and caches live in /tmp so the root filesystem can be mounted read-only (an emptyDir at /tmp).
# NVIDIA_*: what the NVIDIA container runtime (docker --gpus, the Kubernetes device plugin) exposes.
ENV PATH=/opt/bertja/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    BERTJA_VERSION=${BERTJA_VERSION} \
    HF_HOME=/tmp/.cache/huggingface \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001:10001
WORKDIR /tmp
CMD ["bertja", "--help"]
