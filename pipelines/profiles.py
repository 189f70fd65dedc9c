"""Run profiles: where and how big, as data. One DAG serves them all.

A profile is parameter defaults (overriding the recipe's in ``parameters.py``),
a pipeline root, and platform settings (``pipelines/platform.py`` applies them: CPU and
memory on the task, the rest through ``kfp-kubernetes``). Adding a profile means adding a
row here, never a code path.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from components.errors import BadInput

SAMPLE = "package://pipelines/sample_data"


@dataclass(frozen=True)
class Resources:
    cpu: str
    memory: str
    timeout_s: int | None = None  # the pod's activeDeadlineSeconds (Kubernetes only)


@dataclass(frozen=True)
class Accelerator:
    """GPUs for a class of step: the resource KFP requests (``nvidia.com/gpu`` on a Kubernetes
    cluster), how many per pod (more than one: the step runs ``torchrun`` with that many ranks),
    the nodes that have them, and the image the step runs there (an ``components.images`` key).
    ``nodes`` > 1: a pod cannot span machines, so the step runs as a Kubeflow Trainer TrainJob of
    that many nodes with ``count`` GPUs each, on the cluster's training runtime ``runtime``; a
    control pod creates, follows and deletes it."""

    type: str
    count: int
    node_selector: dict[str, str] = field(default_factory=dict)  # replaces the platform's for this step
    tolerations: list[dict] = field(default_factory=list)  # added to the platform's
    image: str = "train-gpu"
    nodes: int = 1
    runtime: str = "torch-distributed"

    def __post_init__(self):
        if self.count < 1:
            raise ValueError(f"Accelerator {self.type}: count {self.count} must be at least 1")
        if self.nodes < 1:
            raise ValueError(f"Accelerator {self.type}: nodes {self.nodes} must be at least 1")
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", self.runtime):
            raise ValueError(f"Accelerator {self.type}: runtime {self.runtime!r} is not a training runtime name")


@dataclass(frozen=True)
class Platform:
    """Settings per class of step (``data``, ``train`` (the Model Garden controller),
    ``train-torch`` (the PyTorch trainer, in the pod), ``convert``, ``control``)."""

    resources: dict[str, Resources] = field(default_factory=dict)
    accelerators: dict[str, Accelerator] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict] = field(default_factory=list)
    # env var -> (secret name, key); only names of secrets, never values.
    secret_env: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Kubernetes platform config (kfp-kubernetes): security context, requests, timeouts, node
    # selectors, tolerations, secrets, the run-id env var. It compiles to a second YAML document
    # that Vertex AI cannot load; without it a task gets only CPU/memory limits (which Vertex
    # sizes its machine from).
    kubernetes: bool = True

    def __post_init__(self):
        if not self.kubernetes:
            ignored = [name for name, value in (("node_selector", self.node_selector),
                                                ("tolerations", self.tolerations), ("secret_env", self.secret_env),
                                                ("accelerator node selectors",
                                                 [a for a in self.accelerators.values() if a.node_selector
                                                  or a.tolerations]),
                                                ("timeout_s", [r for r in self.resources.values() if r.timeout_s]))
                       if value]
            if ignored:
                raise ValueError(f"Platform(kubernetes=False) cannot apply {', '.join(ignored)}")
            if any(a.nodes > 1 for a in self.accelerators.values()):
                raise ValueError("Platform(kubernetes=False) cannot run a TrainJob (accelerator nodes > 1)")

    def trainjob(self, step_class: str) -> Accelerator | None:
        """The step class's accelerator where it spans machines (a TrainJob), else None."""
        acc = self.accelerators.get(step_class)
        return acc if acc and acc.nodes > 1 else None


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    parameters: dict
    pipeline_root: str | None
    platform: Platform
    # A gs:// pipeline root must be given (the TPU VM reads TFRecords from the bucket).
    needs_gcs_root: bool = False
    # Pretraining-data tasks running at once (ParallelFor parallelism: a compile-time value in KFP).
    data_parallelism: int = 8


_SMALL_DATA = {
    # The bundled sample corpus (pipelines/sample_data) and a tiny model: minutes on a laptop CPU.
    "cirrus_index_url": f"{SAMPLE}/cirrussearch",
    "wikipedia_dump_date": "latest",
    "cc100_url": f"{SAMPLE}/cc100/ja.txt.xz",
    "unidic_url": f"{SAMPLE}/unidic/lex.csv",
    "cc100_num_shards": 2,
    "wikipedia_num_shards": 2,
    "tokenizer_sample_lines": 100_000,
    "variants": ["wordpiece"],
    "vocab_size": 4000,
    "limit_alphabet": 3000,
    "stage1_dupe_factor": 2,
    "stage2_max_seq_length": 256,
    "stage2_max_predictions": 38,
    "stage2_dupe_factor": 2,
    "model_size": "tiny",
    "training_backend": "cpu",
    "stage1_train_steps": 60,
    "stage2_train_steps": 40,
    # PyTorch-trainer recipes: the plan's model family at its tiny shape, short sequences, few steps.
    "torch_architecture": "tiny",
    "torch_seq_lengths": [128],
    "torch_train_steps": [20],
    "torch_global_batch_size": 8,
    "torch_micro_batch_size": 8,
}

_GCP_RESOURCES = {
    # Wikipedia shards at seq 512 are the largest streams; memory stays flat (issue 3).
    "data": Resources(cpu="4", memory="8Gi", timeout_s=24 * 3600),
    "train": Resources(cpu="1", memory="2Gi", timeout_s=40 * 24 * 3600),
    "train-torch": Resources(cpu="8", memory="32Gi", timeout_s=40 * 24 * 3600),
    "convert": Resources(cpu="4", memory="16Gi", timeout_s=6 * 3600),
    "control": Resources(cpu="500m", memory="512Mi", timeout_s=3600),
}

PROFILES: dict[str, Profile] = {
    "local": Profile(
        name="local",
        description="kfp.local on this machine: bundled sample corpus, tiny model, CPU",
        parameters=dict(_SMALL_DATA),
        pipeline_root=None,  # `bertja run --local --output DIR` chooses
        platform=Platform(),
        data_parallelism=2,
    ),
    "kind": Profile(
        name="kind",
        description="KFP standalone on a kind cluster: bundled sample corpus, tiny model, CPU pods",
        parameters=dict(_SMALL_DATA),
        pipeline_root=None,  # the cluster's default (MinIO)
        platform=Platform(resources={
            "data": Resources(cpu="1", memory="2Gi", timeout_s=3600),
            "train": Resources(cpu="2", memory="4Gi", timeout_s=3600),
            "train-torch": Resources(cpu="2", memory="4Gi", timeout_s=3600),
            "convert": Resources(cpu="1", memory="3Gi", timeout_s=3600),
            "control": Resources(cpu="500m", memory="512Mi", timeout_s=600),
        }),
        data_parallelism=2,
    ),
    "gcp": Profile(
        name="gcp",
        description="KFP on GKE (standalone or Kubeflow): real dumps, gs:// pipeline root, TPU VM training",
        parameters={"training_backend": "tpu"},
        data_parallelism=16,
        pipeline_root=None,  # required: --pipeline-root gs://BUCKET/PATH
        needs_gcs_root=True,
        platform=Platform(
            resources=_GCP_RESOURCES,
            node_selector={"cloud.google.com/gke-nodepool": "bertja-cpu"},
            tolerations=[{"key": "bertja/dedicated", "operator": "Equal", "value": "pipelines",
                          "effect": "NoSchedule"}],
        ),
    ),
    "vertex": Profile(
        name="vertex",
        description="Vertex AI Pipelines: the gcp profile's steps and sizes, one YAML document "
                    "(no Kubernetes settings; each task runs as a Vertex custom job)",
        parameters={"training_backend": "tpu"},
        data_parallelism=16,
        pipeline_root=None,  # required: --pipeline-root gs://BUCKET/PATH
        needs_gcs_root=True,
        # Vertex runs each task as a CustomJob: its 7-day default timeout applies (README: Vertex AI).
        platform=Platform(kubernetes=False, resources={
            step: dataclasses.replace(res, timeout_s=None) for step, res in _GCP_RESOURCES.items()}),
    ),
}


# The gcp profile with the PyTorch trainer's pods on a GKE GPU node pool (g2-standard-48: 4 x L4).
PROFILES["gke-gpu"] = dataclasses.replace(
    PROFILES["gcp"], name="gke-gpu",
    description="the gcp profile with the PyTorch trainer on a GKE GPU node pool (4 x NVIDIA L4 per pod, torchrun "
                "with 4 ranks); Model Garden recipes still train on TPU VMs",
    parameters={**PROFILES["gcp"].parameters, "torch_micro_batch_size": 16},
    platform=dataclasses.replace(
        PROFILES["gcp"].platform,
        resources={**_GCP_RESOURCES, "train-torch": Resources(cpu="44", memory="180Gi", timeout_s=40 * 24 * 3600)},
        accelerators={"train-torch": Accelerator(
            type="nvidia.com/gpu", count=4,
            node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4", "cloud.google.com/gke-nodepool": "bertja-gpu"},
            tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])}))


# The gke-gpu profile's PyTorch trainer across machines: a Kubeflow Trainer TrainJob of 2 nodes x 8 H100
# (a3-highgpu-8g) on the torch-distributed ClusterTrainingRuntime; a small control pod follows it.
PROFILES["gke-trainjob"] = dataclasses.replace(
    PROFILES["gke-gpu"], name="gke-trainjob",
    description="the gcp profile with the PyTorch trainer as a Kubeflow Trainer TrainJob across 2 GKE GPU nodes "
                "(8 x NVIDIA H100 each, torchrun with 16 ranks); Model Garden recipes still train on TPU VMs",
    platform=dataclasses.replace(
        PROFILES["gcp"].platform,
        resources={**_GCP_RESOURCES, "train-torch": Resources(cpu="180", memory="1600Gi", timeout_s=40 * 24 * 3600)},
        accelerators={"train-torch": Accelerator(
            type="nvidia.com/gpu", count=8, nodes=2,
            node_selector={"cloud.google.com/gke-accelerator": "nvidia-h100-80gb",
                           "cloud.google.com/gke-nodepool": "bertja-h100"},
            tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])}))


def get(name: str) -> Profile:
    if name not in PROFILES:
        raise BadInput(f"unknown profile {name!r}; known: {', '.join(PROFILES)}")
    return PROFILES[name]
