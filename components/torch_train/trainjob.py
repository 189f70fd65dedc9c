"""Many machines through Kubeflow Trainer: a ``TrainJob`` created, followed and always deleted.

The PyTorch trainer (``bertja train --engine torch``) runs on every node of a ``TrainJob`` under
``torchrun`` (the torch runtime sets ``PET_NNODES``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR``...,
which torchrun reads), writing checkpoints, status files and the Hugging Face directory to the
shared ``--model-dir`` (``gs://``). This module is the control side, like ``components.tpu`` for TPU
VMs: the manifest is built here, checked against ``kubeflow-trainer-api``'s models (a field the
model does not know would be dropped silently, so a round trip must give back the same dict), and
sent with the ``kubeflow`` client (``TrainerClient``, Kubernetes backend), which also reads the
training runtime and the trainer's public ConfigMap. Input is checked before any request.

Names are derived from the run id and variant, so the exit task (and a retried train task) finds
the job without being told. Deleting a job that is gone is success.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import re
import sys
import threading
import time

from components import storage
from components.errors import BadInput
from components.train.stages import DEFAULT_LEASE_TTL_S

GROUP, VERSION, PLURAL, KIND = "trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob"
API_VERSION = f"{GROUP}/{VERSION}"
DEFAULT_RUNTIME = "torch-distributed"
RUNTIME_KINDS = ("ClusterTrainingRuntime", "TrainingRuntime")
GPU_RESOURCE = "nvidia.com/gpu"
RUN_LABEL, VARIANT_LABEL, BACKEND_LABEL = "bertja-run", "bertja-variant", "bertja-backend"
MANAGED_BY_LABEL = ("app.kubernetes.io/managed-by", "bertja")
# JobSet names each child Job "<TrainJob>-<replicated job>-<index>" and its pods' hostnames
# "<Job>-<pod index>", both DNS labels (<= 63). The longest replicated job a torch runtime may have
# is "dataset-initializer"; room for it and two indexes up to 99 leaves 37 characters.
MAX_NAME = 63 - len("-dataset-initializer-99-99")
DEFAULT_POLL_S = 30.0
DEFAULT_TIMEOUT_S = 7 * 24 * 3600.0
DEFAULT_DELETE_TIMEOUT_S = 600.0
PROGRESS_EVERY_S = 300.0  # an unchanged state is still reported this often (elapsed time)

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def log(message: str) -> None:
    """Control-plane log line on stderr (the KFP task's log); stdout stays machine-readable."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M:%S")
    print(f"[trainjob {stamp}] {message}", file=sys.stderr, flush=True)


class TrainJobError(RuntimeError):
    """The cluster or the job did something we cannot continue from (not a user input problem)."""


class TrainJobFailed(TrainJobError):
    """The TrainJob ended Failed; the message carries its condition's reason and message."""


# ---------------------------------------------------------------------------
# Names and input checks
# ---------------------------------------------------------------------------

def trainjob_name(run_id: str, variant: str) -> str:
    """``bj-<run>-<variant>-<hash>``: deterministic, a DNS-1035 label of at most ``MAX_NAME``.

    The hash of the full run id and variant keeps names of truncated ids apart.
    """
    if not run_id or not str(run_id).strip():
        raise BadInput("run_id: empty; cannot derive a TrainJob name")
    digest = hashlib.sha256(f"{run_id}\0{variant}".encode()).hexdigest()[:8]

    def slug(s: str, n: int) -> str:
        return re.sub(r"[^a-z0-9]+", "-", str(s).lower()).strip("-")[:n].strip("-")

    tail = "-".join(p for p in (slug(variant, 12), digest) if p)
    head = slug(run_id, MAX_NAME - len("bj-") - len(tail) - 1)
    return "-".join(p for p in ("bj", head, tail) if p)


def check_name(name: str, what: str = "--name") -> str:
    if not name or len(name) > MAX_NAME or not _DNS1035.match(name):
        raise BadInput(f"{what} {name!r}: a TrainJob name is 1-{MAX_NAME} lowercase letters, digits and "
                       "hyphens, starting with a letter and not ending with a hyphen (its pods' names must fit)")
    return name


def check_namespace(namespace: str | None) -> str | None:
    if namespace is not None and (not namespace or len(namespace) > 63 or not _DNS1123.match(namespace)):
        raise BadInput(f"--namespace {namespace!r}: not a Kubernetes namespace name")
    return namespace


def run_labels(run_id: str, variant: str, backend: str) -> dict[str, str]:
    """The labels ``gc`` finds a run's jobs by (the TPU VMs' scheme: run id lowercased, last 63)."""
    value = re.sub(r"^[^a-z0-9]+|[^a-z0-9]+$", "", str(run_id)[-63:].lower())
    return {RUN_LABEL: value, VARIANT_LABEL: variant, BACKEND_LABEL: backend}


def _check_labels(labels: dict, what: str) -> dict[str, str]:
    for k, v in labels.items():
        if not isinstance(k, str) or not isinstance(v, str) or not _LABEL_KEY.match(k) or not _LABEL_VALUE.match(v):
            raise BadInput(f"{what}: {k}={v} is not a valid Kubernetes label (values <= 63 letters, digits, "
                           "'-', '_', '.', starting and ending with a letter or digit)")
    return dict(labels)


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """What one TrainJob runs and where; ``checked()`` validates it before anything is sent."""

    name: str
    image: str
    command: tuple[str, ...]
    runtime: str = DEFAULT_RUNTIME
    runtime_kind: str = "ClusterTrainingRuntime"
    num_nodes: int = 1
    gpus_per_node: int = 0
    cpu: str = ""  # per node, a Kubernetes quantity ("8", "7500m"); "" leaves the runtime's
    memory: str = ""  # per node ("64Gi")
    labels: dict = dataclasses.field(default_factory=dict)
    env: dict = dataclasses.field(default_factory=dict)
    node_selector: dict = dataclasses.field(default_factory=dict)
    tolerations: tuple = ()
    service_account: str = ""
    active_deadline_s: int = 0  # 0: none

    def checked(self) -> JobSpec:
        check_name(self.name)
        if not self.image or any(c.isspace() for c in self.image):
            raise BadInput(f"--image {self.image!r}: expected an image reference without spaces")
        if not self.command or not all(isinstance(a, str) for a in self.command) or not self.command[0]:
            raise BadInput("command: expected a non-empty list of strings (argv, no shell)")
        if not self.runtime or not _DNS1123.match(self.runtime):
            raise BadInput(f"--runtime {self.runtime!r}: not a training runtime name")
        if self.runtime_kind not in RUNTIME_KINDS:
            raise BadInput(f"runtime kind {self.runtime_kind!r}: expected one of {', '.join(RUNTIME_KINDS)}")
        for what, value, low in (("--num-nodes", self.num_nodes, 1), ("--gpus-per-node", self.gpus_per_node, 0),
                                 ("--active-deadline", self.active_deadline_s, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise BadInput(f"{what} {value!r}: expected an integer >= {low}")
        for what, value in (("--cpu", self.cpu), ("--memory", self.memory)):
            if value and not _QUANTITY.match(str(value)):
                raise BadInput(f"{what} {value!r}: not a Kubernetes quantity (e.g. 8, 7500m, 64Gi)")
        labels = _check_labels({**self.labels, MANAGED_BY_LABEL[0]: MANAGED_BY_LABEL[1]}, "labels")
        _check_labels(self.node_selector, "--node-selector")
        for k in self.env:
            if not isinstance(k, str) or not _ENV_NAME.match(k) or not isinstance(self.env[k], str):
                raise BadInput(f"--env {k}: not NAME=VALUE with a valid variable name")
        for t in self.tolerations:
            if not isinstance(t, dict) or not set(t) <= {"key", "operator", "value", "effect", "tolerationSeconds"}:
                raise BadInput(f"--tolerations: {t!r} is not a toleration (key, operator, value, effect)")
        if self.service_account and not _DNS1123.match(self.service_account):
            raise BadInput(f"--service-account {self.service_account!r}: not a Kubernetes service account name")
        return dataclasses.replace(self, command=tuple(self.command), labels=labels,
                                   tolerations=tuple(dict(t) for t in self.tolerations))

    def resources(self) -> dict[str, str]:
        out = {"cpu": str(self.cpu)} if self.cpu else {}
        if self.memory:
            out["memory"] = str(self.memory)
        if self.gpus_per_node:
            out[GPU_RESOURCE] = str(self.gpus_per_node)
        return out

    def pod_patch(self) -> dict:
        """Scheduling settings for the runtime's ``node`` pods (camelCase, empty ones left out)."""
        spec = {"serviceAccountName": self.service_account, "nodeSelector": dict(self.node_selector),
                "tolerations": [dict(t) for t in self.tolerations]}
        return {k: v for k, v in spec.items() if v}


def trainer_command(*, plan: str, data: list[str], model_dir: str, tokenizer_dir: str,
                    options: dict | None = None) -> list[str]:
    """The argv every node runs: torchrun (node rank, peers and processes per node from the
    runtime's ``PET_*`` variables) starting ``bertja train --engine torch`` without a shell."""
    from components.torch_train.configs import PLANS

    if plan not in PLANS:
        raise BadInput(f"--plan {plan!r}: expected one of {', '.join(PLANS)}")
    if not data:
        raise BadInput("--data: no token-shards directories")
    for what, uri in (("--model-dir", model_dir), ("--tokenizer-dir", tokenizer_dir), *(("--data", d) for d in data)):
        if not uri or "," in uri or uri.startswith("-"):
            raise BadInput(f"{what} {uri!r}: expected a directory URI (every node must reach it: gs://)")
    argv = ["torchrun", "--no-python", "bertja", "train", "--engine", "torch", "--plan", plan,
            "--data", ",".join(data), "--model-dir", model_dir, "--tokenizer-dir", tokenizer_dir]
    for key, value in (options or {}).items():
        if value is None or value == "" or value == []:
            continue
        if not re.match(r"^[a-z][a-z0-9-]*$", key):
            raise BadInput(f"trainer option {key!r}: not an option name")
        argv += [f"--{key}", ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)]
    return argv


# ---------------------------------------------------------------------------
# The manifest and its check against kubeflow-trainer-api
# ---------------------------------------------------------------------------

def build_manifest(spec: JobSpec) -> dict:
    """The TrainJob body (Kubernetes JSON) for a checked spec: exactly what ``create`` sends."""
    trainer = {"image": spec.image, "command": list(spec.command), "numNodes": spec.num_nodes}
    if spec.resources():
        trainer["resourcesPerNode"] = {"requests": spec.resources(), "limits": spec.resources()}
    if spec.env:
        trainer["env"] = [{"name": k, "value": v} for k, v in spec.env.items()]
    body = {"runtimeRef": {"name": spec.runtime, "kind": spec.runtime_kind}, "trainer": trainer}
    if spec.pod_patch():
        pod = {"template": {"spec": {"template": {"spec": spec.pod_patch()}}}}
        body["runtimePatches"] = [{"manager": _sdk_manager(), "trainingRuntimeSpec": {"template": {
            "spec": {"replicatedJobs": [{"name": "node", **pod}]}}}}]
    if spec.active_deadline_s:
        body["activeDeadlineSeconds"] = spec.active_deadline_s
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": spec.name, "labels": dict(spec.labels)},
            "spec": body}


def _sdk_manager() -> str:
    """The field manager the ``kubeflow`` client writes on runtime patches (not ours to choose)."""
    from kubeflow.trainer.options.kubernetes import RuntimePatch

    return RuntimePatch().manager


def _differences(before, after, path: str = "") -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        out = [f"{path}.{k}: dropped" for k in before if k not in after]
        out += [f"{path}.{k}: added" for k in after if k not in before]
        for k in before:
            if k in after:
                out += _differences(before[k], after[k], f"{path}.{k}")
        return out
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [d for i, (b, a) in enumerate(zip(before, after)) for d in _differences(b, a, f"{path}[{i}]")]
    if before != after or type(before) is not type(after):
        return [f"{path}: {before!r} became {after!r}"]
    return []


def validate_manifest(manifest: dict, source: str = "TrainJob manifest") -> dict:
    """Parses the manifest with ``TrainerV1alpha1TrainJob`` and serialises it back; any field the
    model does not know (dropped) or changes is an error naming its path."""
    from kubeflow_trainer_api import models
    from pydantic import ValidationError

    try:
        model = models.TrainerV1alpha1TrainJob.from_dict(manifest)
    except (ValidationError, ValueError, TypeError) as e:
        raise BadInput(f"{source}: not a valid TrainJob: {' '.join(str(e).split())[:600]}") from e
    changed = _differences(manifest, model.to_dict())
    if changed:
        raise BadInput(f"{source}: kubeflow-trainer-api's TrainJob model does not round-trip it "
                       f"(unknown or mistyped fields): {'; '.join(changed[:8])}")
    return manifest


# ---------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------

def _api_status(error: BaseException) -> int | None:
    """The HTTP status of the Kubernetes ApiException behind a client error (the client wraps them)."""
    from kubernetes.client.exceptions import ApiException

    seen = error
    while seen is not None:
        if isinstance(seen, ApiException):
            return seen.status
        seen = seen.__cause__ or seen.__context__
    return None


def _one_line(error: BaseException) -> str:
    from kubernetes.client.exceptions import ApiException

    parts, seen = [], error
    while seen is not None:
        if isinstance(seen, ApiException):
            parts.append(f"HTTP {seen.status} {seen.reason}: {(seen.body or '')[:300]}")
        else:
            parts.append(str(seen))
        seen = seen.__cause__
    return " <- ".join(" ".join(p.split()) for p in parts if p)


def _elapsed(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s // 60 % 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class TrainJobControl:
    """TrainJobs in one namespace through ``kubeflow.trainer.TrainerClient`` (Kubernetes backend).

    ``api_server`` (``http://HOST:PORT``) talks to that server without credentials (a test stand-in,
    ``kubectl proxy``); otherwise the client loads the in-cluster config in a pod or the kubeconfig.
    """

    def __init__(self, namespace: str | None = None, *, api_server: str | None = None,
                 kubeconfig: str | None = None, context: str | None = None, poll_s: float = DEFAULT_POLL_S):
        from kubeflow.common.types import KubernetesBackendConfig
        from kubeflow.trainer import TrainerClient

        check_namespace(namespace)
        if api_server is not None and not re.match(r"^https?://[^/\s]+/?$", api_server):
            raise BadInput(f"--api-server {api_server!r}: expected http(s)://HOST[:PORT]")
        if not poll_s > 0:
            raise BadInput(f"--poll {poll_s!r}: must be > 0 seconds")
        configuration = None
        if api_server:
            from kubernetes import client

            configuration = client.Configuration()
            configuration.host = api_server.rstrip("/")
        try:
            self.client = TrainerClient(KubernetesBackendConfig(
                namespace=namespace or ("default" if api_server else None), config_file=kubeconfig,
                context=context, client_configuration=configuration))
        except Exception as e:  # kubeconfig missing or unreadable: say so in one line
            raise TrainJobError(f"cannot configure the Kubernetes client: {_one_line(e)}") from e
        self.backend = self.client.backend
        self.namespace = self.backend.namespace.strip()
        self.poll_s = poll_s
        # Set by a signal handler: ``follow`` stops at its next check (never inside the client's calls).
        self.cancelled = threading.Event()

    def where(self, name: str) -> str:
        return f"TrainJob {self.namespace}/{name}"

    # -- raw objects (conditions and labels, which the client's TrainJob type leaves out) --
    def get(self, name: str) -> dict | None:
        """The TrainJob object as the API returns it; None when it does not exist."""
        try:
            return self.backend.custom_api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        except Exception as e:
            if _api_status(e) == 404:
                return None
            raise TrainJobError(f"{self.where(name)}: get failed: {_one_line(e)}") from e

    def list_ours(self) -> list[dict]:
        """TrainJobs in the namespace that carry our managed-by and run labels."""
        selector = f"{MANAGED_BY_LABEL[0]}={MANAGED_BY_LABEL[1]},{RUN_LABEL}"
        try:
            found = self.backend.custom_api.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL,
                                                                          label_selector=selector)
        except Exception as e:
            raise TrainJobError(f"listing TrainJobs in {self.namespace}: {_one_line(e)}") from e
        return list(found.get("items") or [])

    # -- create --
    def create(self, spec: JobSpec) -> dict:
        """Creates the TrainJob (after resolving its runtime and checking the manifest).

        A job of that name that is already there (a retried task) is adopted unless it failed;
        a failed one is deleted and created again (the trainer resumes from its checkpoints).
        """
        from kubeflow.trainer import CustomTrainerContainer, TrainerType
        from kubeflow.trainer.options import (ActiveDeadlineSeconds, JobSetSpecPatch, JobSetTemplatePatch,
                                              JobSpecPatch, JobTemplatePatch, Labels, Name, PodSpecPatch,
                                              PodTemplatePatch, ReplicatedJobPatch, RuntimePatch, TrainerCommand,
                                              TrainingRuntimeSpecPatch)

        spec = spec.checked()
        try:
            runtime = self.client.get_runtime(spec.runtime)
        except Exception as e:
            if _api_status(e) == 404:
                raise BadInput(f"--runtime {spec.runtime!r}: no TrainingRuntime of that name in namespace "
                               f"{self.namespace} and no ClusterTrainingRuntime either") from e
            raise TrainJobError(f"reading training runtime {spec.runtime!r}: {_one_line(e)}") from e
        if runtime.trainer.trainer_type != TrainerType.CUSTOM_TRAINER:
            raise BadInput(f"--runtime {spec.runtime!r}: a {runtime.trainer.framework} runtime with a built-in "
                           "trainer; the trainer image needs a custom-trainer runtime (e.g. torch-distributed)")
        spec = dataclasses.replace(spec, runtime_kind=runtime.kind.value)
        manifest = validate_manifest(build_manifest(spec))

        existing = self.get(spec.name)
        if existing is not None:
            state, why = job_state(existing)
            if state != "Failed":
                log(f"{self.where(spec.name)} exists ({state}): following it (a retried task)")
                return existing
            log(f"{self.where(spec.name)} exists and failed ({why}): deleting it and creating it again")
            self.delete(spec.name)

        options = [Name(spec.name), Labels(dict(spec.labels)), TrainerCommand(list(spec.command))]
        if spec.pod_patch():
            pod = PodSpecPatch(service_account_name=spec.service_account or None,
                               node_selector=dict(spec.node_selector) or None,
                               tolerations=[dict(t) for t in spec.tolerations] or None)
            options.append(RuntimePatch(training_runtime_spec=TrainingRuntimeSpecPatch(template=JobSetTemplatePatch(
                spec=JobSetSpecPatch(replicated_jobs=[ReplicatedJobPatch(name="node", template=JobTemplatePatch(
                    spec=JobSpecPatch(template=PodTemplatePatch(spec=pod))))])))))
        if spec.active_deadline_s:
            options.append(ActiveDeadlineSeconds(spec.active_deadline_s))
        trainer = CustomTrainerContainer(image=spec.image, num_nodes=spec.num_nodes,
                                         resources_per_node=spec.resources() or None, env=dict(spec.env) or None)
        try:
            self.client.train(runtime=runtime, trainer=trainer, options=options)
        except Exception as e:
            raise TrainJobError(f"{self.where(spec.name)}: create failed: {_one_line(e)}") from e
        log(f"{self.where(spec.name)} created: {spec.num_nodes} node(s) x {spec.resources() or 'runtime resources'}, "
            f"runtime {runtime.kind.value}/{runtime.name}, image {spec.image}")
        return manifest

    # -- follow --
    def follow(self, name: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, model_dir: str | None = None) -> dict:
        """Polls until the job is Complete (returns a summary) or Failed (raises ``TrainJobFailed``
        with its condition's message and the first node's last log lines); a progress line with the
        elapsed time whenever the state changes, and at least every ``PROGRESS_EVERY_S``. A set
        ``cancelled`` (SIGTERM) ends it with ``TrainJobError`` at the next check."""
        check_name(name)
        start = time.monotonic()
        last_line, last_time = None, 0.0
        while True:
            if self.cancelled.is_set():
                raise TrainJobError(f"{self.where(name)}: SIGTERM: cancelled after "
                                    f"{_elapsed(time.monotonic() - start)}")
            raw = self.get(name)
            if raw is None:
                raise TrainJobError(f"{self.where(name)} disappeared while it was followed (deleted by someone)")
            state, why = job_state(raw)
            nodes = self._nodes(name)
            elapsed = time.monotonic() - start
            line = f"{self.where(name)}: {state}" + (f" ({why})" if why else "")
            if nodes:
                line += f"; nodes {', '.join(f'{n}={s}' for n, s in nodes)}"
            beat = _heartbeat(model_dir) if model_dir else ""
            if beat:
                line += f"; {beat}"
            if line != last_line or time.monotonic() - last_time >= PROGRESS_EVERY_S:
                log(f"{line}; elapsed {_elapsed(elapsed)}")
                last_line, last_time = line, time.monotonic()
            if state == "Complete":
                return {"name": name, "namespace": self.namespace, "state": state, "message": why,
                        "elapsed_s": round(elapsed, 1), "nodes": dict(nodes)}
            if state == "Failed":
                tail = self._log_tail(name)
                if tail:
                    log("last lines of node-0:\n" + "\n".join(tail))
                raise TrainJobFailed(f"{self.where(name)} failed after {_elapsed(elapsed)}: {why or 'no message'}")
            if elapsed >= timeout_s:
                raise TrainJobError(f"{self.where(name)} not finished after {_elapsed(elapsed)} "
                                    f"(--timeout {timeout_s:g} s); last state {state}")
            self.cancelled.wait(min(self.poll_s, max(0.0, timeout_s - elapsed)) or self.poll_s)

    def _nodes(self, name: str) -> list[tuple[str, str]]:
        """Per trainer node its pod phase, through the client's ``get_job`` (best effort)."""
        try:
            job = self.client.get_job(name)
        except Exception as e:
            log(f"{self.where(name)}: node states unavailable: {_one_line(e)}")
            return []
        return sorted((s.name, s.status or "Unknown") for s in job.steps)

    def _log_tail(self, name: str, lines: int = 20) -> list[str]:
        try:
            return list(self.client.get_job_logs(name))[-lines:]
        except Exception as e:
            log(f"{self.where(name)}: logs unavailable: {_one_line(e)}")
            return []

    # -- delete --
    def delete(self, name: str, *, timeout_s: float = DEFAULT_DELETE_TIMEOUT_S) -> bool:
        """Deletes the job and waits until it is gone. True: deleted now; False: it was not there."""
        check_name(name)
        try:
            self.client.delete_job(name)
        except Exception as e:
            if _api_status(e) == 404:
                log(f"{self.where(name)}: already gone")
                return False
            raise TrainJobError(f"{self.where(name)}: delete failed: {_one_line(e)}") from e
        deadline = time.monotonic() + timeout_s
        while self.get(name) is not None:
            if time.monotonic() >= deadline:
                raise TrainJobError(f"{self.where(name)}: still there {timeout_s:g} s after its deletion "
                                    "(a finalizer that does not finish?)")
            time.sleep(min(self.poll_s, 5.0))
        log(f"{self.where(name)} deleted")
        return True


def job_state(raw: dict) -> tuple[str, str]:
    """``(state, reason: message)`` from a TrainJob's conditions: Complete, Failed, Suspended,
    else Running once it has any status, else Created."""
    conditions = {c.get("type"): c for c in (raw.get("status") or {}).get("conditions") or []
                  if str(c.get("status")) == "True"}
    for kind in ("Failed", "Complete", "Suspended"):
        if kind in conditions:
            c = conditions[kind]
            return kind, ": ".join(p for p in (c.get("reason"), c.get("message")) if p)
    jobs = (raw.get("status") or {}).get("jobsStatus") or []
    return ("Running" if any(j.get("active") for j in jobs) else "Created"), ""


def _heartbeat(model_dir: str) -> str:
    """The trainer's last heartbeat in the shared model dir, as a short phrase (best effort)."""
    from components.train import status

    try:
        beat = status.read(model_dir).get("heartbeat")
    except Exception:  # storage hiccups must not stop the follower
        return ""
    if not beat:
        return ""
    loss = beat.get("loss")
    return (f"stage {beat.get('stage')} step {beat.get('step')}/{beat.get('train_steps')}"
            + (f" loss {loss:.4f}" if isinstance(loss, (int, float)) else ""))


# ---------------------------------------------------------------------------
# The two entry points the pipeline wraps, and the janitor
# ---------------------------------------------------------------------------

def train_on_trainjob(control: TrainJobControl, spec: JobSpec, *, model_dir: str,
                      timeout_s: float = DEFAULT_TIMEOUT_S) -> dict:
    """Create, follow, and delete in every case (success, failure, SIGTERM: the exit task deletes
    again, for a pod killed outright). Returns the follow summary plus the final model dir."""
    import signal

    previous = None
    if threading.current_thread() is threading.main_thread():
        def cancelled(signum, frame):
            log(f"SIGTERM: cancelling; {control.where(spec.name)} is deleted next")
            control.cancelled.set()
        previous = signal.signal(signal.SIGTERM, cancelled)
    try:
        control.create(spec)
        result = control.follow(spec.name, timeout_s=timeout_s, model_dir=model_dir)
    except BaseException:
        try:
            control.delete(spec.name)
        except Exception as e:  # the first error is the one to report; the exit task deletes again
            log(f"{control.where(spec.name)}: delete after the failure failed too: {e}")
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    control.delete(spec.name)
    hf_dir = storage.join(model_dir, "hf")
    if not storage.exists(storage.join(hf_dir, "config.json")):
        raise TrainJobError(f"{control.where(spec.name)} completed but {hf_dir} holds no model (config.json): "
                            "did the trainer write to a directory the control task cannot read?")
    return {**result, "model_dir": model_dir, "hf_dir": hf_dir}


def train_variant(control: TrainJobControl, *, variant: str, plan: str, data: list[str], tokenizer_dir: str,
                  model_dir: str, image: str, trainer_options: dict | None = None, runtime: str = DEFAULT_RUNTIME,
                  num_nodes: int = 1, gpus_per_node: int = 0, cpu: str = "", memory: str = "",
                  node_selector: dict | None = None, tolerations: list | None = None, service_account: str = "",
                  timeout_s: float = DEFAULT_TIMEOUT_S, environ=None) -> dict:
    """The pipeline's train step on a TrainJob: named and labelled from the backend's run id (the
    exit task derives the same name), every path shared (``gs://``: every node reads and writes it).
    Returns ``train_on_trainjob``'s result plus the trainer's final metrics (``status/complete.json``)."""
    from components.run_identity import backend_of, find_run_id
    from components.train import status

    found = find_run_id(environ)
    if found is None:
        raise BadInput("no run id from the backend (BERTJA_RUN_ID or Vertex labels): a TrainJob is named after "
                       "its pipeline run so that the exit task can delete it")
    for what, uri in (("model_dir", model_dir), ("tokenizer", tokenizer_dir), *(("shards", d) for d in data)):
        if not storage.is_gcs(uri):
            raise BadInput(f"{what} {uri!r}: a TrainJob's nodes cannot reach it; use a gs:// pipeline root")
    run_id = found[0]
    spec = JobSpec(name=trainjob_name(run_id, variant), image=image, runtime=runtime, num_nodes=num_nodes,
                   command=tuple(trainer_command(plan=plan, data=data, model_dir=model_dir,
                                                 tokenizer_dir=tokenizer_dir, options=trainer_options)),
                   gpus_per_node=gpus_per_node, cpu=cpu, memory=memory,
                   labels=run_labels(run_id, variant, backend_of(found)), node_selector=dict(node_selector or {}),
                   tolerations=tuple(tolerations or ()), service_account=service_account)
    result = train_on_trainjob(control, spec, model_dir=model_dir, timeout_s=timeout_s)
    complete = status.read(model_dir).get("complete") or {}
    return {**result, "run_id": run_id, "plan": plan, "architecture": complete.get("architecture"),
            "finished": bool(complete.get("finished")), "stages": complete.get("stages") or []}


def train_step(control: TrainJobControl, *, variant: str, plan: str, shard_dirs: list[str], tokenizer_dir: str,
               training_root: str, fallback_root: str, image: str, architecture: str = "", seq_lengths=None,
               train_steps=None, global_batch_size=None, learning_rate=None, micro_batch_size: int = 8,
               seed: int = 0, workers: int = 2, runtime: str = DEFAULT_RUNTIME, num_nodes: int = 1,
               gpus_per_node: int = 0, cpu: str = "", memory: str = "", node_selector: dict | None = None,
               tolerations: list | None = None, service_account: str = "", timeout_s: float = DEFAULT_TIMEOUT_S,
               environ=None, lease_ttl_s: float = DEFAULT_LEASE_TTL_S) -> dict:
    """The pipeline's PyTorch train step (``components.torch_train.step.train_step``) on a TrainJob:
    the same checks, content-named training dir, lease and result, with ``num_nodes`` x
    ``gpus_per_node`` ranks (the world size is part of the dir's identity: it splits the batch)."""
    from components.torch_train import step

    job = step.prepare(variant=variant, plan=plan, shard_dirs=shard_dirs, tokenizer_dir=tokenizer_dir,
                       training_root=training_root, fallback_root=fallback_root, architecture=architecture,
                       seq_lengths=seq_lengths, train_steps=train_steps, global_batch_size=global_batch_size,
                       learning_rate=learning_rate, micro_batch_size=micro_batch_size, seed=seed,
                       processes=int(num_nodes) * max(int(gpus_per_node), 1))
    options = step.trainer_options(job.stages, architecture=job.architecture, micro_batch_size=micro_batch_size,
                                   seed=seed, workers=workers)
    with job.lease(lease_ttl_s):
        result = train_variant(control, variant=variant, plan=plan, data=shard_dirs, tokenizer_dir=tokenizer_dir,
                               model_dir=job.root, image=image, trainer_options=options, runtime=runtime,
                               num_nodes=num_nodes, gpus_per_node=gpus_per_node, cpu=cpu, memory=memory,
                               node_selector=node_selector, tolerations=tolerations,
                               service_account=service_account, timeout_s=timeout_s, environ=environ)
    return job.outcome(result)


def release_run(control: TrainJobControl, *, run_id: str, variants: list[str]) -> list[dict]:
    """The exit task: deletes every variant's TrainJob of a run, named as the train task names them."""
    from components.run_identity import current_run_id

    run = current_run_id(default=run_id)
    if not run:
        raise BadInput("run_id: empty and the backend gives none; cannot name this run's TrainJobs")
    out = []
    for variant in variants:
        name = trainjob_name(run, variant)
        out.append({"name": name, "namespace": control.namespace, "deleted": control.delete(name)})
    return out


def collect(control: TrainJobControl, *, kfp_endpoint: str, dry_run: bool = False,
            min_age_s: float | None = None, multi_user: bool = False) -> dict:
    """``gc``: deletes our TrainJobs whose KFP run has finished or is gone; decisions as the TPU
    janitor's (``components.tpu.janitor.verdict``: every doubt keeps the job)."""
    from components.tpu import janitor

    min_age_s = janitor.DEFAULT_MIN_AGE_S if min_age_s is None else min_age_s
    if min_age_s < 0:
        raise BadInput(f"--min-age {min_age_s}: must be >= 0 seconds")
    runs = janitor.KfpRuns(kfp_endpoint, multi_user=multi_user)
    summary = {"namespace": control.namespace, "kfp_endpoint": kfp_endpoint, "dry_run": dry_run,
               "min_age_s": min_age_s, "checked": 0, "deleted": [], "would_delete": [], "kept": [], "errors": []}
    try:
        runs.check()
    except janitor.KfpUnsure as e:
        log(f"gc: KFP API not usable, deleting nothing: {e}")
        summary["errors"].append(str(e))
        return summary
    now = datetime.datetime.now(datetime.timezone.utc)
    for raw in control.list_ours():
        meta = raw.get("metadata") or {}
        labels = meta.get("labels") or {}
        name = meta.get("name", "")
        if labels.get(BACKEND_LABEL) != "kfp":
            continue
        summary["checked"] += 1
        created = meta.get("creationTimestamp")
        resource = janitor.Resource(name, labels.get(RUN_LABEL, ""), labels.get(VARIANT_LABEL, ""),
                                    created=datetime.datetime.fromisoformat(created.replace("Z", "+00:00"))
                                    if created else None)
        try:
            delete, why = janitor.verdict(resource, runs, now, min_age_s)
        except janitor.KfpUnsure as e:
            delete, why = False, str(e)
            summary["errors"].append(f"{name}: {e}")
        log(f"gc: {name}: {'delete' if delete else 'keep'}: {why}")
        if not delete:
            summary["kept"].append({"name": name, "why": why})
        elif dry_run:
            summary["would_delete"].append({"name": name, "why": why})
        else:
            try:
                control.delete(name)
                summary["deleted"].append({"name": name, "why": why})
            except TrainJobError as e:
                summary["errors"].append(f"{name}: {e}")
    return summary
