"""Runtime image names and tags: the one place components, Dockerfiles, the Helm
chart and the kind scripts read, so a release bumps them together.

``BERTJA_IMAGE_REGISTRY`` (e.g. ``us-docker.pkg.dev/PROJECT/bertja``) and
``BERTJA_IMAGE_TAG`` override the defaults when compiling for a private registry.
"""

from __future__ import annotations

import os
from importlib import metadata

REGISTRY = "ghcr.io/bert-japanese-pipelines"

# image key -> (repository name, what runs in it, Dockerfile under images/)
IMAGES: dict[str, tuple[str, str, str]] = {
    "data": ("bertja-data", "text steps: download, corpora, tokenizers, pretraining data (fugashi + unidic-lite)", "data.Dockerfile"),
    "train": ("bertja-train", "TF Model Garden trainer, CPU TensorFlow (the pipeline's train step; it also drives TPU VMs)", "train.Dockerfile"),
    "train-tpu": ("bertja-train-tpu", "TF Model Garden trainer with tensorflow-tpu and libtpu: what a Cloud TPU VM runs", "train-tpu.Dockerfile"),
    "convert": ("bertja-convert", "conversion, evaluation and publishing (torch + transformers, no TensorFlow)", "convert.Dockerfile"),
    "tpu": ("bertja-tpu-control", "Cloud TPU VM control (google-cloud-tpu, google-cloud-storage)", "tpu-control.Dockerfile"),
    "train-gpu": ("bertja-train-gpu", "PyTorch trainer with CUDA torch (PyPI's nvidia-* wheels): GPU pods and TrainJobs",
                  "train-gpu.Dockerfile"),
}
# The PyTorch trainer on CPU (local profile, kind) runs in "convert": the train-torch extra is the
# convert extra's packages (torch CPU, transformers, safetensors), so a CPU trainer image would be a
# copy of it, one more image to build and load for nothing.
# Images only a Cloud TPU VM pulls (the startup script's ``docker run``), never a pod: a CPU
# cluster such as kind neither builds nor loads them.
TPU_VM_ONLY = frozenset({"train-tpu"})
# Images only GPU nodes pull. Their CUDA libraries (nvidia-* wheels) are GBs to download and store:
# a CPU cluster (kind, the local Docker runner) never loads them and `make images-offline` builds
# them only when named (`make image-gpu`).
GPU_ONLY = frozenset({"train-gpu"})


def cluster_images() -> list[str]:
    """Keys of the images a CPU cluster's pods run (kind, the local Docker runner), in ``IMAGES``
    order: neither the TPU VM's image nor the GPU trainer's."""
    return [key for key in IMAGES if key not in TPU_VM_ONLY | GPU_ONLY]


def default_builds() -> list[str]:
    """Keys ``make images-offline`` builds when none is named: every image but the GPU ones."""
    return [key for key in IMAGES if key not in GPU_ONLY]


def version() -> str:
    try:
        return metadata.version("bert-japanese-pipelines")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "0.0.0"


def image(key: str, registry: str | None = None, tag: str | None = None) -> str:
    """Full image reference for ``key`` (one of ``IMAGES``)."""
    if key not in IMAGES:
        raise KeyError(f"unknown image {key!r}; known: {', '.join(IMAGES)}")
    registry = registry or os.environ.get("BERTJA_IMAGE_REGISTRY") or REGISTRY
    tag = tag or os.environ.get("BERTJA_IMAGE_TAG") or version()
    return f"{registry.rstrip('/')}/{IMAGES[key][0]}:{tag}"


def dockerfile(key: str) -> str:
    """Dockerfile for ``key``, relative to the repository root (the build context)."""
    if key not in IMAGES:
        raise KeyError(f"unknown image {key!r}; known: {', '.join(IMAGES)}")
    return f"images/{IMAGES[key][2]}"


def main(argv: list[str] | None = None) -> int:
    """``python -m components.images``: one ``KEY REFERENCE DOCKERFILE`` line per image.

    The Makefile and ``deploy/kind.sh`` read this instead of repeating names and tags;
    ``--version`` prints only the version (the images' LABEL and the chart's tag).
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m components.images", description=main.__doc__)
    parser.add_argument("--registry", help=f"default: $BERTJA_IMAGE_REGISTRY or {REGISTRY}")
    parser.add_argument("--tag", help="default: $BERTJA_IMAGE_TAG or the package version")
    parser.add_argument("--version", action="store_true", help="print the package version only")
    parser.add_argument("--cluster", action="store_true",
                        help="only the images a CPU cluster's pods run (what a kind cluster loads)")
    args = parser.parse_args(argv)
    if args.version:
        print(version())
        return 0
    for key in cluster_images() if args.cluster else IMAGES:
        print(key, image(key, registry=args.registry, tag=args.tag), dockerfile(key))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
