"""Cloud TPU VM control on the official ``google-cloud-tpu`` client (``tpu_v2``, REST transport).

Everything that talks to the TPU API is here: node and queued-resource creation, waiting for
READY, reading a node's state, deleting and waiting for the deletion. Input is checked before
any request is made, so a typo never leaves a half-created VM behind.

Every API call has a time budget (``call_timeout_s``, and never past the deadline of the wait it
belongs to): transient errors (429, 500, 502, 503, 504, a refused or dropped connection, a request
that got no answer within ``ATTEMPT_TIMEOUT_S``) are retried with exponential backoff inside it, each
retry logged; a spent budget is ``ApiUnavailable`` with one line saying what was tried. Anything else
is raised. A node or queued resource that is already gone is a successful delete.

Credentials: an ``http://`` API endpoint (an emulator, a test server) gets anonymous
credentials, as ``STORAGE_EMULATOR_HOST`` does for GCS; anything else uses Application Default
Credentials (Workload Identity in a pod, the VM's service account, ``gcloud auth
application-default login`` on a laptop). No credential ever appears in code or arguments.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import re
import sys
import time
from importlib import metadata

from components.errors import BadInput

DEFAULT_ACCELERATOR = "v3-8"  # the recipe's TPU
DEFAULT_CALL_TIMEOUT_S = 300.0  # one API call, retries included
ATTEMPT_TIMEOUT_S = 30.0  # one HTTP request; an unanswered one is retried on a new connection
DEFAULT_QUEUE_TIMEOUT_S = 24 * 3600.0  # a queued resource waiting for capacity
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
MANAGED_BY_LABEL = ("managed-by", "bertja")

# Accelerator generation -> runtime versions without a preinstalled ML framework (they have
# Docker). The trainer runs from our pinned training image, so only these match it; the first one
# is the default.
BASE_RUNTIMES: dict[str, tuple[str, ...]] = {
    "v2": ("tpu-ubuntu2204-base", "tpu-vm-base"),
    "v3": ("tpu-ubuntu2204-base", "tpu-vm-base"),
    "v4": ("tpu-ubuntu2204-base", "tpu-vm-v4-base"),
    "v5p": ("v2-alpha-tpuv5",),
    "v5litepod": ("v2-alpha-tpuv5-lite",),
    "v6e": ("v2-alpha-tpuv6e",),
}
# Generations TensorFlow reaches only through libtpu's PJRT C API plugin (NextPluggableDevice): the
# trainer needs the pluggable-device settings there (startup.trainer_env); v2/v3/v4 use TensorFlow's
# built-in TPU runtime and must not get them.
PJRT_PLUGIN_GENERATIONS = ("v5p", "v5litepod", "v6e")
# Generations whose type suffix counts TensorCores (2 per chip); the others count chips.
_CORES_PER_CHIP = {"v2": 2, "v3": 2, "v4": 2, "v5p": 2, "v5litepod": 1, "v6e": 1}
SINGLE_HOST_MAX = 8  # the largest single-VM slice of each generation (v3-8, v4-8, v6e-8, ...)

_ZONE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")
_PROJECT = re.compile(r"^([a-z0-9.-]+:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_ACCELERATOR = re.compile(r"^(v2|v3|v4|v5p|v5litepod|v6e)-([0-9]+)$")
_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
_FRAMEWORK_RUNTIME = re.compile(r"^tpu-vm-(tf|pt)-([0-9][0-9.]*[0-9])")


def log(message: str) -> None:
    """Control-plane log line (stderr: a KFP task's log; stdout stays machine-readable)."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M:%S")
    print(f"[tpu {stamp}] {message}", file=sys.stderr, flush=True)


class TpuError(RuntimeError):
    """The TPU API or a VM did something we cannot continue from (not a user input problem)."""


class NodeLost(TpuError):
    """The node was preempted, terminated or vanished before it became READY (worth a retry)."""


class ApiUnavailable(TpuError):
    """The TPU API did not answer a call within its time budget (unreachable, hung or overloaded)."""


# ---------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------

def check_project(project: str) -> str:
    if not project or not _PROJECT.match(project):
        raise BadInput(f"--project {project!r}: not a Google Cloud project ID "
                       "(6-30 lowercase letters, digits and hyphens, starting with a letter)")
    return project


def check_zone(zone: str) -> str:
    if not zone or not _ZONE.match(zone):
        raise BadInput(f"--zone {zone!r}: not a zone name like us-central1-a or europe-west4-a")
    return zone


def check_node_name(name: str) -> str:
    if not name or not _NAME.match(name):
        raise BadInput(f"--name {name!r}: a TPU node name is 1-63 lowercase letters, digits and "
                       "hyphens, starting with a letter and not ending with a hyphen")
    return name


def parse_accelerator(accelerator_type: str) -> tuple[str, int]:
    """``v3-8`` -> ``("v3", 8)``; only single-host types (the trainer runs ``--tpu local``)."""
    m = _ACCELERATOR.match(accelerator_type or "")
    if not m:
        raise BadInput(f"--accelerator-type {accelerator_type!r}: expected GENERATION-SIZE with "
                       f"GENERATION one of {', '.join(BASE_RUNTIMES)} (e.g. v3-8, v5litepod-8)")
    generation, size = m.group(1), int(m.group(2))
    if size < 1 or size & (size - 1):
        raise BadInput(f"--accelerator-type {accelerator_type!r}: the size must be a power of two")
    if size > SINGLE_HOST_MAX:
        raise BadInput(f"--accelerator-type {accelerator_type!r} is a multi-host pod slice; the "
                       f"trainer runs on one TPU VM host (--tpu local): use {generation}-8 or smaller")
    return generation, size


def chips(accelerator_type: str) -> int:
    generation, size = parse_accelerator(accelerator_type)
    return max(1, size // _CORES_PER_CHIP[generation])


def trainer_tensorflow_version() -> str | None:
    """The TensorFlow version the trainer image pins (the ``train`` extra of this package)."""
    try:
        requires = metadata.requires("bert-japanese-pipelines") or []
    except metadata.PackageNotFoundError:
        return None
    for req in requires:
        m = re.match(r"^tensorflow\s*==\s*([0-9.]+)\s*;.*extra\s*==\s*['\"]train['\"]", req)
        if m:
            return m.group(1)
    return None


def default_runtime_version(accelerator_type: str) -> str:
    return BASE_RUNTIMES[parse_accelerator(accelerator_type)[0]][0]


def check_runtime_version(runtime_version: str, accelerator_type: str) -> str:
    """The runtime must be a framework-free base image for this generation: the trainer (with its
    own pinned TensorFlow and libtpu) runs from our training image on it."""
    generation = parse_accelerator(accelerator_type)[0]
    allowed = BASE_RUNTIMES[generation]
    if runtime_version in allowed:
        return runtime_version
    framework = _FRAMEWORK_RUNTIME.match(runtime_version or "")
    pinned = trainer_tensorflow_version() or "the image's"
    if framework and framework.group(1) == "tf" and framework.group(2) != pinned:
        why = (f"it ships TensorFlow {framework.group(2)}, but the trainer is pinned to "
               f"TensorFlow {pinned}")
    elif framework:
        why = ("it ships its own ML framework; the trainer runs from the pinned training image "
               f"(TensorFlow {pinned}) on a framework-free runtime")
    else:
        why = f"it is not a base runtime for {generation} TPUs"
    raise BadInput(f"--runtime-version {runtime_version!r} does not match the trainer: {why}; "
                   f"use {' or '.join(allowed)}")


def parse_labels(text: str | dict | None) -> dict[str, str]:
    """``"k=v,k2=v2"`` (or a dict) -> dict, checked against GCP's label rules."""
    if not text:
        return {}
    if isinstance(text, dict):
        pairs = [(str(k), str(v)) for k, v in text.items()]
    else:
        pairs = []
        for item in str(text).split(","):
            if not item.strip():
                continue
            if "=" not in item:
                raise BadInput(f"--labels {text!r}: {item!r} is not KEY=VALUE")
            k, v = item.split("=", 1)
            pairs.append((k.strip(), v.strip()))
    for k, v in pairs:
        if not _LABEL_KEY.match(k) or not _LABEL_VALUE.match(v):
            raise BadInput(f"--labels: {k}={v} is not a valid label (keys start with a lowercase "
                           "letter; keys and values are <= 63 lowercase letters, digits, _ and -)")
    return dict(pairs)


def parse_tags(tags: str | list | tuple | None) -> tuple[str, ...]:
    items = [t.strip() for t in (tags.split(",") if isinstance(tags, str) else (tags or [])) if t.strip()]
    for t in items:
        if not _NAME.match(t):
            raise BadInput(f"--tags: {t!r} is not a valid network tag")
    return tuple(items)


def tpu_node_name(run_id: str, suffix: str = "") -> str:
    """A valid, deterministic TPU node name for a KFP run (``bertja-<run id>[-suffix]-<hash>``).

    The same run id always gives the same name, so a task outside the exit handler can compute it
    and the exit task (or a retried train task) finds the node; the hash of the full run id keeps
    names of truncated ids distinct.
    """
    if not run_id or not str(run_id).strip():
        raise BadInput("run_id: empty; cannot derive a TPU node name")
    digest = hashlib.sha256(f"{run_id}\0{suffix}".encode()).hexdigest()[:8]

    def slug(s: str) -> str:
        return re.sub(r"[^a-z0-9]+", "-", str(s).lower()).strip("-")

    tail = "-".join(p for p in (slug(suffix)[:16], digest) if p)
    room = 63 - len("bertja-") - len(tail) - 1
    head = slug(run_id)[:room].rstrip("-")
    return "-".join(p for p in ("bertja", head, tail) if p)


# ---------------------------------------------------------------------------
# What to create
# ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class NodeSpec:
    """A TPU VM's shape and placement; ``checked()`` validates it and fills defaults."""

    accelerator_type: str = DEFAULT_ACCELERATOR
    runtime_version: str | None = None  # None: the base runtime for the generation
    spot: bool = False
    preemptible: bool = False
    network: str | None = None
    subnetwork: str | None = None
    external_ips: bool = True  # image pulls from public registries need them (or Cloud NAT)
    service_account: str | None = None  # None: the project's default compute service account
    labels: dict = dataclasses.field(default_factory=dict)
    tags: tuple = ()
    metadata: dict = dataclasses.field(default_factory=dict)

    def checked(self) -> NodeSpec:
        parse_accelerator(self.accelerator_type)
        runtime = self.runtime_version or default_runtime_version(self.accelerator_type)
        check_runtime_version(runtime, self.accelerator_type)
        if self.spot and self.preemptible:
            raise BadInput("--spot and --preemptible: choose one (spot is the successor of preemptible)")
        if self.service_account is not None and "@" not in self.service_account:
            raise BadInput(f"--service-account {self.service_account!r}: expected an email address")
        labels = {**parse_labels(self.labels), MANAGED_BY_LABEL[0]: MANAGED_BY_LABEL[1]}
        return dataclasses.replace(self, runtime_version=runtime, labels=labels,
                                   tags=parse_tags(self.tags))

    def to_node(self, *, scheduling: bool = True):
        """The ``tpu_v2.Node`` to create (a queued resource carries spot itself: ``scheduling=False``)."""
        from google.cloud import tpu_v2

        node = tpu_v2.Node(accelerator_type=self.accelerator_type,
                           runtime_version=self.runtime_version,
                           labels=dict(self.labels), tags=list(self.tags),
                           metadata=dict(self.metadata))
        if scheduling and (self.spot or self.preemptible):
            node.scheduling_config = tpu_v2.SchedulingConfig(spot=self.spot, preemptible=self.preemptible)
        # Always sent: external IPs are a choice (image pulls need them or Cloud NAT), not whatever
        # the API assumes for a node without a network config. (False travels as the field's proto3
        # default, i.e. an empty networkConfig object.)
        node.network_config = tpu_v2.NetworkConfig(network=self.network or "", subnetwork=self.subnetwork or "",
                                                   enable_external_ips=bool(self.external_ips))
        if self.service_account:
            node.service_account = tpu_v2.ServiceAccount(email=self.service_account,
                                                         scope=[CLOUD_PLATFORM_SCOPE])
        return node


# ---------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------

def make_client(api_endpoint: str | None = None):
    """``tpu_v2.TpuClient`` over REST; anonymous for ``http://`` endpoints, else ADC."""
    from google.api_core.client_options import ClientOptions
    from google.auth import exceptions as auth_exceptions
    from google.cloud import tpu_v2

    kwargs: dict = {"transport": "rest"}
    if api_endpoint:
        kwargs["client_options"] = ClientOptions(api_endpoint=api_endpoint)
        if api_endpoint.startswith("http://"):
            from google.auth.credentials import AnonymousCredentials

            kwargs["credentials"] = AnonymousCredentials()
    try:
        return tpu_v2.TpuClient(**kwargs)
    except auth_exceptions.DefaultCredentialsError as e:
        raise BadInput("no Application Default Credentials for the TPU API: use Workload Identity "
                       "in a pod, or `gcloud auth application-default login` on a workstation "
                       f"({e})") from e


def _transient_errors() -> tuple:
    import requests
    from google.api_core import exceptions as gexc

    return (gexc.TooManyRequests, gexc.ServiceUnavailable, gexc.InternalServerError, gexc.BadGateway,
            gexc.GatewayTimeout, requests.exceptions.ConnectionError, requests.exceptions.Timeout)


def _retry(timeout_s: float, what: str, errors: list | None = None):
    """Backoff retries of transient errors for ``timeout_s`` in all, each one logged."""
    from google.api_core import retry as retries

    attempts = errors if errors is not None else []

    def on_error(e: Exception) -> None:
        attempts.append(e)
        log(f"TPU API {what}: attempt {len(attempts)} failed ({short_error(e)}); retrying within {timeout_s:.1f}s")

    return retries.Retry(predicate=retries.if_exception_type(*_transient_errors()), initial=1.0, maximum=30.0,
                         multiplier=2.0, timeout=timeout_s, on_error=on_error)


def _attempt_timeout(deadline: float):
    """Each HTTP request's timeout: ``ATTEMPT_TIMEOUT_S`` at most, and never past ``deadline``.

    (google-api-core's own deadline timeout gives an attempt the whole remaining budget, and the
    full budget again once less than a second is left.)
    """
    def decorate(func):
        @functools.wraps(func)
        def attempt(*args, **kwargs):
            kwargs["timeout"] = max(0.1, min(ATTEMPT_TIMEOUT_S, deadline - time.monotonic()))
            return func(*args, **kwargs)
        return attempt
    return decorate


def short_error(e: BaseException) -> str:
    """``Type: message`` on one line, cut to a readable length (a socket error: just its errno line)."""
    text = " ".join(str(e).split())
    errno_line = None if isinstance(e, TpuError) else re.search(r"\[Errno -?\d+\] [^'\")]+", text)
    if errno_line:
        text = errno_line.group(0)
    return f"{type(e).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}"


def state_name(node) -> str:
    from google.cloud import tpu_v2

    return tpu_v2.Node.State(node.state).name


def describe(node) -> dict:
    """A small JSON-able view of a node for logs and ``bertja tpu status``."""
    sched = node.scheduling_config
    return {
        "name": node.name,
        "state": state_name(node),
        "health": type(node).Health(node.health).name if node.health else None,
        "accelerator_type": node.accelerator_type,
        "runtime_version": node.runtime_version,
        "spot": bool(sched and sched.spot),
        "preemptible": bool(sched and sched.preemptible),
        "labels": dict(node.labels),
        "create_time": node.create_time.isoformat() if node.create_time else None,
        "queued_resource": node.queued_resource or None,
        "ip_addresses": [e.ip_address for e in node.network_endpoints],
    }


class TpuControl:
    """TPU VMs in one project and zone.

    ``poll_s`` paces operation and state polling; ``call_timeout_s`` bounds one API call, its
    retries of transient errors included.
    """

    def __init__(self, project: str, zone: str, *, api_endpoint: str | None = None,
                 poll_s: float = 5.0, call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S, client=None):
        self.project = check_project(project)
        self.zone = check_zone(zone)
        self.poll_s = poll_s
        if not call_timeout_s > 0:
            raise BadInput(f"--timeout {call_timeout_s!r}: must be a positive number of seconds")
        self.call_timeout_s = float(call_timeout_s)
        self.endpoint = api_endpoint or "tpu.googleapis.com"
        self.client = client if client is not None else make_client(api_endpoint)

    @property
    def retry(self):
        """A retry policy with the full call budget (for client methods ``call`` does not wrap)."""
        return _retry(self.call_timeout_s, "call")

    def call(self, method: str, *, deadline: float | None = None, **request):
        """``self.client.<method>(**request)`` within ``call_timeout_s`` (and before ``deadline``).

        Transient errors are retried and logged; when the budget is spent, ``ApiUnavailable``.
        """
        from google.api_core.exceptions import RetryError

        budget = self.call_timeout_s
        if deadline is not None:
            budget = min(budget, deadline - time.monotonic())
            if budget <= 0:
                raise TpuError(f"timed out before the TPU API call {method}")
        errors: list = []
        try:
            return getattr(self.client, method)(retry=_retry(budget, method, errors),
                                                timeout=_attempt_timeout(time.monotonic() + budget), **request)
        except RetryError as e:
            last = e.cause or (errors[-1] if errors else e)
            raise ApiUnavailable(f"the TPU API at {self.endpoint} did not answer {method} within {budget:.1f}s "
                                 f"({len(errors)} attempt(s); last: {short_error(last)})") from None

    # names -----------------------------------------------------------------
    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.zone}"

    def node_path(self, name: str) -> str:
        return f"{self.parent}/nodes/{check_node_name(name)}"

    def queued_resource_path(self, name: str) -> str:
        return f"{self.parent}/queuedResources/{check_node_name(name)}"

    # reads -----------------------------------------------------------------
    def get_node(self, name: str, *, deadline: float | None = None):
        """The node, or None when it does not exist."""
        from google.api_core.exceptions import NotFound

        try:
            return self.call("get_node", name=self.node_path(name), deadline=deadline)
        except NotFound:
            return None

    def get_queued_resource(self, name: str, *, deadline: float | None = None):
        from google.api_core.exceptions import NotFound

        try:
            return self.call("get_queued_resource", name=self.queued_resource_path(name), deadline=deadline)
        except NotFound:
            return None

    # create ----------------------------------------------------------------
    def create_node(self, name: str, spec: NodeSpec, *, timeout_s: float = 1800.0):
        """Creates the node and waits until it is READY (all within ``timeout_s``); returns the node.

        An already existing node raises ``google.api_core.exceptions.Conflict`` (HTTP 409).
        """
        spec = spec.checked()
        deadline = time.monotonic() + timeout_s
        log(f"creating TPU node {self.node_path(name)} ({spec.accelerator_type}, "
            f"{spec.runtime_version}{', spot' if spec.spot else ''}{', preemptible' if spec.preemptible else ''})")
        op = self.call("create_node", parent=self.parent, node_id=name, node=spec.to_node(), deadline=deadline)
        self._wait_operation(op, f"create node {name}", deadline)
        return self.wait_ready(name, deadline=deadline)

    def create_queued_resource(self, name: str, spec: NodeSpec, *, timeout_s: float = 1800.0,
                               queue_timeout_s: float = DEFAULT_QUEUE_TIMEOUT_S):
        """Queues a node (same id as the queued resource) and waits for it; returns the READY node.

        Waiting in the queue for capacity may take hours: it has its own limit, ``queue_timeout_s``,
        which is also sent as the request's ``valid_until_duration`` (the API drops the request
        then, even if nobody is waiting any more). ``timeout_s`` bounds the rest: the create call,
        and from ACTIVE to READY.
        """
        from google.cloud import tpu_v2
        from google.protobuf import duration_pb2

        if not queue_timeout_s > 0:
            raise BadInput(f"queue timeout {queue_timeout_s!r}: must be a positive number of seconds")
        spec = spec.checked()
        qr = tpu_v2.QueuedResource(
            tpu=tpu_v2.QueuedResource.Tpu(node_spec=[tpu_v2.QueuedResource.Tpu.NodeSpec(
                parent=self.parent, node_id=name, node=spec.to_node(scheduling=False))]),
            queueing_policy=tpu_v2.QueuedResource.QueueingPolicy(
                valid_until_duration=duration_pb2.Duration(seconds=int(queue_timeout_s))))
        if spec.spot or spec.preemptible:
            qr.spot = tpu_v2.QueuedResource.Spot()
        else:
            qr.guaranteed = tpu_v2.QueuedResource.Guaranteed()
        log(f"queueing TPU resource {self.queued_resource_path(name)} ({spec.accelerator_type}, "
            f"{spec.runtime_version}{', spot' if qr.spot else ''}; waiting up to {queue_timeout_s / 3600:.1f} h "
            "for capacity)")
        create_deadline = time.monotonic() + timeout_s
        op = self.call("create_queued_resource", parent=self.parent, queued_resource_id=name,
                       queued_resource=qr, deadline=create_deadline)
        self._wait_operation(op, f"create queued resource {name}", create_deadline)
        queue_deadline = time.monotonic() + queue_timeout_s
        State = tpu_v2.QueuedResourceState.State
        last = None
        while True:
            current = self.get_queued_resource(name)
            state = State(current.state.state).name if current and current.state else "GONE"
            if state != last:
                log(f"queued resource {name}: {state}")
                last = state
            if state == "ACTIVE":
                break
            if state in ("SUSPENDED", "GONE"):
                raise NodeLost(f"queued resource {self.queued_resource_path(name)} is {state}")
            if state == "FAILED":
                raise TpuError(f"queued resource {self.queued_resource_path(name)} FAILED")
            self._sleep_until(queue_deadline, f"queued resource {name} ACTIVE (now {state}; "
                                              f"queue timeout {queue_timeout_s / 3600:.1f} h)")
        return self.wait_ready(name, deadline=time.monotonic() + timeout_s)

    def wait_ready(self, name: str, *, deadline: float):
        last = None
        while True:
            node = self.get_node(name, deadline=deadline)
            state = state_name(node) if node is not None else "GONE"
            if state != last:
                log(f"node {name}: {state}")
                last = state
            if state == "READY":
                return node
            if state in ("PREEMPTED", "TERMINATED", "STOPPED", "GONE"):
                raise NodeLost(f"node {self.node_path(name)} became {state} while waiting for READY")
            self._sleep_until(deadline, f"node {name} READY (now {state})")

    # delete ----------------------------------------------------------------
    def delete_node(self, name: str, *, timeout_s: float = 900.0) -> bool:
        """Deletes the node and waits until it is gone; False when it was already gone."""
        from google.api_core.exceptions import NotFound

        deadline = time.monotonic() + timeout_s
        node = self.get_node(name, deadline=deadline)
        if node is None:
            return False
        if state_name(node) != "DELETING":  # e.g. its queued resource is deleting it already
            try:
                op = self.call("delete_node", name=self.node_path(name), deadline=deadline)
            except NotFound:
                return False
            log(f"deleting TPU node {self.node_path(name)}")
            self._wait_operation(op, f"delete node {name}", deadline, gone_ok=True)
        while self.get_node(name, deadline=deadline) is not None:
            self._sleep_until(deadline, f"node {name} deleted")
        log(f"node {name}: deleted")
        return True

    def delete_queued_resource(self, name: str, *, timeout_s: float = 900.0) -> bool:
        """Deletes the queued resource and its node (``force``); False when already gone."""
        from google.api_core.exceptions import NotFound
        from google.cloud import tpu_v2

        deadline = time.monotonic() + timeout_s
        request = tpu_v2.DeleteQueuedResourceRequest(name=self.queued_resource_path(name), force=True)
        try:
            op = self.call("delete_queued_resource", request=request, deadline=deadline)
        except NotFound:
            return False
        log(f"deleting queued resource {self.queued_resource_path(name)}")
        self._wait_operation(op, f"delete queued resource {name}", deadline, gone_ok=True)
        while self.get_queued_resource(name, deadline=deadline) is not None:
            self._sleep_until(deadline, f"queued resource {name} deleted")
        return True

    def release(self, name: str, *, timeout_s: float = 900.0) -> dict:
        """Deletes the queued resource (if any) and the node, both within ``timeout_s``; gone
        already is success.

        Both deletions are attempted; any failure is raised afterwards, loudly.
        """
        result = {"node": self.node_path(name), "queued_resource": self.queued_resource_path(name),
                  "queued_resource_deleted": False, "node_deleted": False}
        errors = []
        deadline = time.monotonic() + timeout_s
        for key, delete in (("queued_resource_deleted", self.delete_queued_resource),
                            ("node_deleted", self.delete_node)):
            try:
                result[key] = delete(name, timeout_s=max(0.0, deadline - time.monotonic()))
            except Exception as e:  # noqa: BLE001 - collected and re-raised below
                errors.append(f"{key.removesuffix('_deleted').replace('_', ' ')}: {short_error(e)}")
        result["deleted"] = result["queued_resource_deleted"] or result["node_deleted"]
        if errors:
            raise TpuError(f"FAILED to delete TPU resources for {self.node_path(name)} - it may still "
                           f"be running and billing; delete it by hand (`bertja tpu delete`): "
                           + "; ".join(errors))
        return result

    # polling ---------------------------------------------------------------
    def _wait_operation(self, op, what: str, deadline: float, *, gone_ok: bool = False) -> None:
        """Polls the long-running operation (each poll a budgeted ``call``) until it is done."""
        from google.api_core import exceptions as gexc

        current = op.operation
        while not current.done:
            self._sleep_until(deadline, what)
            current = self.call("get_operation", request={"name": current.name}, deadline=deadline)
        if current.HasField("error"):
            error = gexc.from_grpc_status(current.error.code, current.error.message)
            if isinstance(error, gexc.NotFound):
                if gone_ok:
                    return
                raise error
            raise TpuError(f"{what} failed: {error}")

    def _sleep_until(self, deadline: float, what: str) -> None:
        if time.monotonic() >= deadline:
            raise TpuError(f"timed out waiting for {what}")
        time.sleep(max(0.0, min(self.poll_s, deadline - time.monotonic())))
