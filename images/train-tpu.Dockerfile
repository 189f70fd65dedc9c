# syntax=docker/dockerfile:1
# bertja-train-tpu: TF Model Garden BERT trainer for Cloud TPU VMs (tensorflow-tpu + libtpu)
# Build from the repository root (names, tags and the version come from components/images.py):
#   make images        (deploy/kind.sh images skips it: a CPU cluster never runs it)
# The same package, extras and pins as images/train.Dockerfile; only TensorFlow differs.
# Two stages: the build stage resolves pinned wheels into a virtual environment; the final
# stage gets only that environment, a non-root user and no pip, compilers or caches.

# The real bases; a machine without a registry passes stand-ins (make images-offline):
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
COPY images/constraints.txt pyproject.toml ./
# The CPU wheel "tensorflow" has no TPU runtime; "tensorflow-tpu" is the same release built with
# TPU support and ships the same "tensorflow" module, so the two must never both be installed
# (one would overwrite the other's files). tf-models-official and tensorflow-text require the
# distribution named "tensorflow", so pip installs it with them; it is removed again and
# tensorflow-tpu put in its place. tensorflow-tpu 2.20.0 requires libtpu~=0.0.14: pinned to
# 0.0.14, the release it was built against (PyPI has it; the find-links index is where
# TensorFlow's TPU install instructions point). Every other dependency is already installed at
# its constraints.txt pin, which the second install keeps.
# Consequence: `pip check` in this image reports tf-models-official's (and tensorflow-text's)
# "tensorflow" requirement as not installed. That is by name only: tensorflow-tpu==2.20.0
# provides the tensorflow 2.20.0 module they import.
RUN python -c "import sys, tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print(*p['dependencies'], *(r for e in sys.argv[1].split(',') for r in p['optional-dependencies'][e]), sep='\n')" pipeline,train,tpu > requirements.txt \
 && pip --python /opt/bertja/bin/python install --no-cache-dir --constraint constraints.txt --requirement requirements.txt \
 && pip --python /opt/bertja/bin/python uninstall --no-cache-dir --yes tensorflow \
 && pip --python /opt/bertja/bin/python install --no-cache-dir --constraint constraints.txt \
      --find-links https://storage.googleapis.com/libtpu-tf-releases/index.html \
      "tensorflow-tpu==2.20.0" "libtpu==0.0.14"
COPY README.md ./
COPY components ./components
COPY pipelines ./pipelines
# The package goes to a prefix of its own: the final stage copies the dependencies' environment,
# a layer cached while they stay the same, and then the package, a small layer per source change.
RUN pip --python /opt/bertja/bin/python install --no-cache-dir --no-deps --prefix /opt/bertja-package --constraint constraints.txt ".[pipeline,train,tpu]"

FROM ${BASE_IMAGE}
ARG BERTJA_VERSION
LABEL org.opencontainers.image.title="bertja-train-tpu" \
      org.opencontainers.image.description="TF Model Garden BERT trainer for Cloud TPU VMs (tensorflow-tpu, libtpu)" \
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
ENV PATH=/opt/bertja/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    BERTJA_VERSION=${BERTJA_VERSION} \
    TF_CPP_MIN_LOG_LEVEL=1
USER 10001:10001
WORKDIR /tmp
CMD ["bertja", "--help"]
