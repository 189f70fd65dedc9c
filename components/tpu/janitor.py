"""``bertja tpu gc``: delete the TPU VMs and queued resources that a finished KFP run left behind.

The train task deletes its VM when it ends or gets SIGTERM, and the exit handler deletes it
again; but a terminated Argo workflow can skip its exit handler, and a pod killed with SIGKILL
runs nothing. The train task labels what it creates with ``bertja-run`` (the KFP run id,
lowercased, its last 63 characters), ``bertja-variant`` and ``bertja-backend`` (where the run
id came from: ``kfp``, ``vertex``, ``local``); this janitor lists the nodes and queued
resources in one project and zone labelled as made by a KFP run, asks the KFP API for each run's state and
deletes those whose run has finished or no longer exists.

It deletes only on certainty: a run that is RUNNING, PENDING, PAUSED or CANCELING, in a state it
does not know, or that the API did not answer for (an error, 401/403, a 404 that is not KFP's
NOT_FOUND), keeps its VM, and so does a resource younger than ``min_age_s`` (its run may be
starting or retrying while the API still reports an older state). Nothing is deleted when the
KFP API's healthz does not answer. Talks to the KFP REST API directly (no KFP SDK in a core
module); on multi-user KFP with the pod's projected service-account token.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import sys

from components.errors import BadInput
from components.tpu import control

RUN_LABEL = "bertja-run"
VARIANT_LABEL = "bertja-variant"
# Only VMs of KFP runs: a Vertex or local run id means nothing to the KFP API (a 404 there
# would read as "run vanished" and delete a live VM).
BACKEND_LABEL = ("bertja-backend", "kfp")
LABEL_MAX = 63  # a GCP label value's limit: the train task keeps the run id's last 63 characters
LIVE_STATES = frozenset({"PENDING", "RUNNING", "PAUSED", "CANCELING"})
DONE_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"})
DEFAULT_MIN_AGE_S = 3600.0
# Where kfp.client.ServiceAccountTokenVolumeCredentials reads the token (audience
# pipelines.kubeflow.org), and the variable that moves it; the chart projects it there.
TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"
TOKEN_PATH_ENV = "KF_PIPELINES_SA_TOKEN_PATH"
_GRPC_NOT_FOUND = 5


def log(message: str) -> None:
    """One line per decision on stderr (the CronJob's log); stdout carries the JSON summary."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    print(f"[tpu gc {stamp}] {message}", file=sys.stderr, flush=True)


class KfpUnsure(RuntimeError):
    """The KFP API gave no usable answer: nothing may be deleted on its account."""


class RunGone(Exception):
    """KFP answered NOT_FOUND for the run: it was deleted (or never belonged to this KFP)."""


class KfpRuns:
    """Run states from the KFP v2beta1 REST API (``GET /apis/v2beta1/runs/{id}``)."""

    def __init__(self, endpoint: str, *, multi_user: bool = False, timeout_s: float = 30.0):
        if not endpoint.startswith(("http://", "https://")):
            raise BadInput(f"--kfp-endpoint {endpoint!r}: expected http://HOST[:PORT] or https://...")
        self.endpoint = endpoint.rstrip("/")
        self.timeout_s = timeout_s
        self.token_path = None
        if multi_user:
            self.token_path = os.environ.get(TOKEN_PATH_ENV) or TOKEN_PATH
            if not os.path.isfile(self.token_path):
                raise BadInput(f"--multi-user: no service-account token at {self.token_path} (project one "
                               f"with audience pipelines.kubeflow.org there, or set {TOKEN_PATH_ENV})")

    def _get(self, path: str):
        import requests

        headers = {"Accept": "application/json"}
        if self.token_path:  # read each time: the kubelet rotates the projected token
            with open(self.token_path, encoding="utf-8") as f:
                headers["Authorization"] = f"Bearer {f.read().strip()}"
        try:
            return requests.get(f"{self.endpoint}{path}", headers=headers, timeout=self.timeout_s)
        except requests.RequestException as e:
            raise KfpUnsure(f"KFP API {self.endpoint} unreachable: {type(e).__name__}: {e}") from e

    def check(self) -> dict:
        """The API's healthz: proof that the endpoint is a KFP API before any 404 is believed."""
        response = self._get("/apis/v2beta1/healthz")
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200 or not isinstance(body, dict) or "multi_user" not in body:
            raise KfpUnsure(f"{self.endpoint}/apis/v2beta1/healthz answered {response.status_code}, "
                            "not a KFP API healthz")
        return body

    def state(self, run_id: str) -> str:
        """The run's state (``RUNNING``, ``SUCCEEDED``, ...); ``RunGone`` on KFP's NOT_FOUND."""
        response = self._get(f"/apis/v2beta1/runs/{run_id}")
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code == 200 and isinstance(body, dict):
            return str(body.get("state") or "RUNTIME_STATE_UNSPECIFIED")
        if response.status_code == 404 and isinstance(body, dict) and body.get("code") == _GRPC_NOT_FOUND:
            raise RunGone(run_id)
        detail = (body.get("message") if isinstance(body, dict) else None) or response.text[:200]
        raise KfpUnsure(f"KFP API answered {response.status_code} for run {run_id}: {detail}")


@dataclasses.dataclass
class Resource:
    """One node name and what carries it: the node, its queued resource, or both."""

    name: str
    run_label: str
    variant: str
    kinds: list = dataclasses.field(default_factory=list)
    created: datetime.datetime | None = None
    states: list = dataclasses.field(default_factory=list)

    def add(self, kind: str, created, state: str) -> None:
        self.kinds.append(kind)
        self.states.append(f"{kind} {state}")
        if created and (self.created is None or created < self.created):
            self.created = created


def _labelled(labels) -> bool:
    labels = dict(labels or {})
    return (bool(labels.get(RUN_LABEL)) and labels.get(BACKEND_LABEL[0]) == BACKEND_LABEL[1]
            and labels.get(control.MANAGED_BY_LABEL[0]) == control.MANAGED_BY_LABEL[1])


def find_ours(tpu: control.TpuControl) -> list[Resource]:
    """Nodes and queued resources in the zone that carry our run label (queued resources carry
    it on their node spec), grouped by name: the train task gives both the same name."""
    from google.cloud import tpu_v2

    found: dict[str, Resource] = {}

    def add(name, labels, kind, created, state):
        labels = dict(labels)
        entry = found.setdefault(name, Resource(name, labels[RUN_LABEL], labels.get(VARIANT_LABEL, "")))
        entry.add(kind, created, state)

    for node in tpu.call("list_nodes", parent=tpu.parent):
        if _labelled(node.labels):
            add(node.name.rsplit("/", 1)[-1], node.labels, "node", node.create_time, control.state_name(node))
    for qr in tpu.call("list_queued_resources", parent=tpu.parent):
        specs = list(qr.tpu.node_spec) if qr.tpu else []
        labels = specs[0].node.labels if specs else {}
        if _labelled(labels):
            state = tpu_v2.QueuedResourceState.State(qr.state.state).name if qr.state else "UNKNOWN"
            add(qr.name.rsplit("/", 1)[-1], labels, "queued_resource", qr.create_time, state)
    return sorted(found.values(), key=lambda r: r.name)


def verdict(resource: Resource, runs: KfpRuns, now: datetime.datetime, min_age_s: float) -> tuple[bool, str]:
    """(delete?, why) for one resource; every doubt answers False."""
    run_id = resource.run_label
    if len(run_id) >= LABEL_MAX:
        return False, f"run label {run_id!r} may be a truncated run id; cannot ask KFP about it"
    if resource.created is None:
        return False, "no creation time reported"
    age = (now - resource.created).total_seconds()
    if age < min_age_s:
        return False, f"created {age:.0f}s ago, younger than the minimum age {min_age_s:.0f}s"
    try:
        state = runs.state(run_id)
    except RunGone:
        return True, f"run {run_id} not found in KFP (deleted)"
    if state in DONE_STATES:
        return True, f"run {run_id} is {state}"
    if state in LIVE_STATES:
        return False, f"run {run_id} is {state}"
    return False, f"run {run_id} is in state {state!r}, which is not known to be final"


def collect(*, project: str, zone: str, kfp_endpoint: str, dry_run: bool = False,
            min_age_s: float = DEFAULT_MIN_AGE_S, multi_user: bool = False, api_endpoint: str | None = None,
            delete_timeout_s: float = 900.0, poll_s: float = 5.0, now: datetime.datetime | None = None) -> dict:
    """Lists our TPU resources, decides each, deletes (or, ``dry_run``, only reports) the finished.

    Returns the JSON summary; ``errors`` lists every API failure (those resources were kept or
    may still exist).
    """
    if min_age_s < 0:
        raise BadInput(f"--min-age {min_age_s}: must be >= 0 seconds")
    runs = KfpRuns(kfp_endpoint, multi_user=multi_user)
    tpu = control.TpuControl(project, zone, api_endpoint=api_endpoint, poll_s=poll_s)
    summary = {"project": project, "zone": zone, "kfp_endpoint": kfp_endpoint, "dry_run": dry_run,
               "min_age_s": min_age_s, "checked": 0, "deleted": [], "would_delete": [], "kept": [], "errors": []}
    try:
        runs.check()
    except KfpUnsure as e:
        log(f"KFP API not usable, deleting nothing: {e}")
        summary["errors"].append(str(e))
        return summary
    now = now or datetime.datetime.now(datetime.timezone.utc)
    try:
        resources = find_ours(tpu)
    except Exception as e:  # noqa: BLE001 - the TPU API's errors (permission, retries exhausted): one line
        if not type(e).__module__.startswith(("google.", "requests")):
            raise
        log(f"cannot list TPU resources in {tpu.parent}: {type(e).__name__}: {e}")
        summary["errors"].append(f"list {tpu.parent}: {type(e).__name__}: {e}")
        return summary
    summary["checked"] = len(resources)
    log(f"{len(resources)} labelled TPU resource(s) in {tpu.parent}")
    for resource in resources:
        what = (f"{resource.name} ({', '.join(resource.states)}; run {resource.run_label}, "
                f"variant {resource.variant or '?'})")
        entry = {"name": resource.name, "run_id": resource.run_label, "variant": resource.variant,
                 "resources": resource.kinds}
        try:
            delete, why = verdict(resource, runs, now, min_age_s)
        except KfpUnsure as e:
            log(f"{what}: kept: {e}")
            summary["kept"].append({**entry, "reason": str(e)})
            summary["errors"].append(f"{resource.name}: {e}")
            continue
        entry["reason"] = why
        if not delete:
            log(f"{what}: kept: {why}")
            summary["kept"].append(entry)
        elif dry_run:
            log(f"{what}: would delete (dry run): {why}")
            summary["would_delete"].append(entry)
        else:
            try:
                tpu.release(resource.name, timeout_s=delete_timeout_s)
            except control.TpuError as e:
                log(f"{what}: delete FAILED: {e}")
                summary["errors"].append(f"{resource.name}: {e}")
                continue
            log(f"{what}: deleted: {why}")
            summary["deleted"].append(entry)
    return summary

