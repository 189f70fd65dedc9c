"""A local HTTP stand-in for the slice of the Kubernetes API that the ``kubeflow`` client uses.

It serves what ``kubeflow.trainer`` 0.5's Kubernetes backend really calls (read from its code):
the trainer's public ConfigMap (``kubeflow-system/kubeflow-trainer-public``, read when the client
starts), TrainingRuntimes (namespaced first, 404 here) and ClusterTrainingRuntimes, TrainJob
create/get/list/delete in the custom-objects API, the TrainJob's pods (label selector on the
JobSet name) and a pod's log. Answers have the real JSON shapes: ``Status`` bodies with
``reason``/``code`` for 404 and 409, ``creationTimestamp`` and ``uid`` on created objects.

Jobs move on their own, as a controller would: Created (no status) -> Running (pods Running,
``jobsStatus`` active) -> Complete or Failed (a condition with reason and message), each phase
``phase_s`` seconds. ``outcomes[name]`` picks the end ("Complete" by default, or "Failed");
``on_complete`` runs when a job completes (a test writes what the trainer would write);
``delete_lag`` GETs still see a deleted job (a finalizer).
"""

from __future__ import annotations

import datetime
import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

GROUP_VERSION = "trainer.kubeflow.org/v1alpha1"
_NS = r"/namespaces/(?P<ns>[a-z0-9-]+)"
_CUSTOM = f"/apis/{GROUP_VERSION}"
_REASONS = {400: "BadRequest", 404: "NotFound", 409: "AlreadyExists", 422: "Invalid", 500: "InternalError"}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def torch_runtime(name: str = "torch-distributed", image: str = "pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime",
                  framework: str = "torch") -> dict:
    """A ClusterTrainingRuntime shaped like Kubeflow Trainer's torch runtime: one ``node``
    replicated job whose container ``node`` is the trainer (the ancestor label marks it)."""
    return {
        "apiVersion": GROUP_VERSION, "kind": "ClusterTrainingRuntime",
        "metadata": {"name": name, "labels": {"trainer.kubeflow.org/framework": framework},
                     "creationTimestamp": _now(), "uid": str(uuid.uuid4())},
        "spec": {
            "mlPolicy": {"numNodes": 1, "torch": {"numProcPerNode": "auto"}},
            "template": {"spec": {"replicatedJobs": [{
                "name": "node", "replicas": 1,
                "template": {"metadata": {"labels": {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}},
                             "spec": {"template": {"spec": {"containers": [{"name": "node", "image": image}]}}}}}]}},
        },
    }


class _ApiError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class FakeKubernetesApi:
    """Start with ``start()``; ``endpoint`` is ``http://127.0.0.1:PORT``."""

    def __init__(self, *, phase_s: float = 0.3, trainer_version: str | None = "v2.1.0"):
        self.phase_s = phase_s
        self.lock = threading.Lock()
        self.runtimes = {"torch-distributed": torch_runtime()}
        self.configmaps = {}
        if trainer_version:
            self.configmaps[("kubeflow-system", "kubeflow-trainer-public")] = {
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "kubeflow-trainer-public", "namespace": "kubeflow-system"},
                "data": {"kubeflow_trainer_version": trainer_version}}
        self.jobs: dict[tuple[str, str], dict] = {}
        self.created_at: dict[tuple[str, str], float] = {}
        self.deleting: dict[tuple[str, str], int] = {}
        self.outcomes: dict[str, tuple[str, str, str]] = {}  # name -> (state, reason, message)
        self.logs: dict[str, str] = {}  # job name -> node-0's log text
        self.on_complete = None  # callable(job dict), once per job
        self.delete_lag = 0
        self.fail_next: list[tuple[str, str, int]] = []  # (method, path regex, status), used once
        self.created_bodies: list[dict] = []
        self.requests: list[tuple[str, str, int]] = []
        self._completed: set = set()
        self._server = None

    # -- control --
    def start(self) -> FakeKubernetesApi:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _body(self) -> dict | None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                return json.loads(raw) if raw.strip() else None

            def _reply(self, code: int, payload, content_type="application/json"):
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str):
                url = urlparse(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                body = self._body() if method in ("POST", "DELETE") else None
                try:
                    injected = api._injected(method, url.path)
                    if injected:
                        raise _ApiError(injected, f"injected {injected}")
                    code, payload, ctype = api.dispatch(method, url.path, query, body)
                except _ApiError as e:
                    code, payload, ctype = e.code, api.status_body(e.code, str(e)), "application/json"
                with api.lock:
                    api.requests.append((method, url.path, code))
                self._reply(code, payload, ctype)

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def do_DELETE(self):
                self._handle("DELETE")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def paths(self, method: str, pattern: str) -> list[int]:
        """Statuses of the requests whose method and path match (``re.search``)."""
        with self.lock:
            return [c for m, p, c in self.requests if m == method and re.search(pattern, p)]

    # -- serving --
    @staticmethod
    def status_body(code: int, message: str) -> dict:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
                "reason": _REASONS.get(code, "Unknown"), "code": code}

    def _injected(self, method: str, path: str) -> int | None:
        with self.lock:
            for i, (m, pattern, code) in enumerate(self.fail_next):
                if m == method and re.search(pattern, path):
                    del self.fail_next[i]
                    return code
        return None

    def dispatch(self, method: str, path: str, query: dict, body):
        m = re.fullmatch(f"/api/v1{_NS}/configmaps/(?P<name>[^/]+)", path)
        if m and method == "GET":
            cm = self.configmaps.get((m["ns"], m["name"]))
            if cm is None:
                raise _ApiError(404, f'configmaps "{m["name"]}" not found')
            return 200, cm, "application/json"
        m = re.fullmatch(f"{_CUSTOM}{_NS}/trainingruntimes/(?P<name>[^/]+)", path)
        if m and method == "GET":
            raise _ApiError(404, f'trainingruntimes.trainer.kubeflow.org "{m["name"]}" not found')
        m = re.fullmatch(f"{_CUSTOM}/clustertrainingruntimes(/(?P<name>[^/]+))?", path)
        if m and method == "GET":
            if m["name"] is None:
                return 200, {"apiVersion": GROUP_VERSION, "kind": "ClusterTrainingRuntimeList",
                             "metadata": {}, "items": list(self.runtimes.values())}, "application/json"
            if m["name"] not in self.runtimes:
                raise _ApiError(404, f'clustertrainingruntimes.trainer.kubeflow.org "{m["name"]}" not found')
            return 200, self.runtimes[m["name"]], "application/json"
        m = re.fullmatch(f"{_CUSTOM}{_NS}/trainjobs(/(?P<name>[^/]+))?", path)
        if m:
            return self._trainjobs(method, m["ns"], m["name"], query, body)
        m = re.fullmatch(f"/api/v1{_NS}/pods", path)
        if m and method == "GET":
            return 200, {"apiVersion": "v1", "kind": "PodList", "metadata": {},
                         "items": self._pods(m["ns"], query.get("labelSelector", ""))}, "application/json"
        m = re.fullmatch(f"/api/v1{_NS}/pods/(?P<pod>[^/]+)/log", path)
        if m and method == "GET":
            job = re.sub(r"-node-\d+-\d+-[a-z0-9]+$", "", m["pod"])
            if (m["ns"], job) not in self.jobs:
                raise _ApiError(404, f'pods "{m["pod"]}" not found')
            return 200, self.logs.get(job, "").encode(), "text/plain"
        raise _ApiError(404, f"the server could not find the requested resource ({method} {path})")

    def _trainjobs(self, method: str, ns: str, name: str | None, query: dict, body):
        with self.lock:
            if method == "POST" and name is None:
                self.created_bodies.append(json.loads(json.dumps(body)))
                meta = body.get("metadata") or {}
                key = (ns, meta.get("name", ""))
                if not key[1]:
                    raise _ApiError(422, "TrainJob.trainer.kubeflow.org is invalid: metadata.name: Required value")
                if key in self.jobs:
                    raise _ApiError(409, f'trainjobs.trainer.kubeflow.org "{key[1]}" already exists')
                job = json.loads(json.dumps(body))
                job["metadata"].update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=_now(),
                                       resourceVersion="1", generation=1)
                self.jobs[key] = job
                self.created_at[key] = time.monotonic()
                return 201, job, "application/json"
            if method == "GET" and name is None:
                items = [self._advance(k) for k in sorted(self.jobs) if k[0] == ns]
                selector = query.get("labelSelector", "")
                items = [j for j in items if _matches(j["metadata"].get("labels") or {}, selector)]
                return 200, {"apiVersion": GROUP_VERSION, "kind": "TrainJobList", "metadata": {},
                             "items": items}, "application/json"
            key = (ns, name)
            if key not in self.jobs:
                raise _ApiError(404, f'trainjobs.trainer.kubeflow.org "{name}" not found')
            if method == "GET":
                job = self._advance(key)
                if key in self.deleting:
                    self.deleting[key] -= 1
                    if self.deleting[key] < 0:
                        self._forget(key)
                        raise _ApiError(404, f'trainjobs.trainer.kubeflow.org "{name}" not found')
                return 200, job, "application/json"
            if method == "DELETE":
                if key in self.deleting:
                    return 200, self.jobs[key], "application/json"
                self.jobs[key]["metadata"]["deletionTimestamp"] = _now()
                if self.delete_lag:
                    self.deleting[key] = self.delete_lag
                    return 200, self.jobs[key], "application/json"
                self._forget(key)
                return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                             "details": {"name": name, "group": "trainer.kubeflow.org", "kind": "trainjobs",
                                         "uid": "x"}}, "application/json"
        raise _ApiError(405, f"{method} not allowed")

    def _forget(self, key) -> None:
        self.jobs.pop(key, None)
        self.created_at.pop(key, None)
        self.deleting.pop(key, None)

    def phase(self, key) -> str:
        """Created, Running, or the outcome's state, from the time since creation."""
        if key not in self.created_at:
            return "Gone"
        age = time.monotonic() - self.created_at[key]
        if age < self.phase_s:
            return "Created"
        if age < 2 * self.phase_s:
            return "Running"
        return self.outcomes.get(key[1], ("Complete",))[0]

    def _advance(self, key) -> dict:
        """The job with the status its phase gives (called with the lock held)."""
        job = self.jobs[key]
        phase = self.phase(key)
        nodes = int(job["spec"].get("trainer", {}).get("numNodes") or 1)
        if phase == "Created":
            job.pop("status", None)
        elif phase == "Running":
            job["status"] = {"jobsStatus": [{"name": "node", "active": nodes, "ready": nodes, "succeeded": 0,
                                             "failed": 0, "suspended": 0}]}
        else:
            state, reason, message = self.outcomes.get(key[1], ("Complete", "JobSetCompleted",
                                                                "jobset completed successfully"))
            job["status"] = {"conditions": [{"type": state, "status": "True", "reason": reason, "message": message,
                                             "lastTransitionTime": _now()}],
                             "jobsStatus": [{"name": "node", "active": 0, "ready": 0, "suspended": 0,
                                             "succeeded": nodes if state == "Complete" else 0,
                                             "failed": 0 if state == "Complete" else 1}]}
            if state == "Complete" and key not in self._completed:
                self._completed.add(key)
                if self.on_complete:
                    self.on_complete(job)
        return job

    def _pods(self, ns: str, selector: str) -> list[dict]:
        m = re.search(r"jobset\.sigs\.k8s\.io/jobset-name=([a-z0-9-]+)", selector)
        with self.lock:
            if not m or (ns, m[1]) not in self.jobs:
                return []
            key = (ns, m[1])
            job = self._advance(key)
            phase = {"Created": "Pending", "Running": "Running", "Complete": "Succeeded"}.get(self.phase(key), "Failed")
        trainer = job["spec"].get("trainer") or {}
        resources = trainer.get("resourcesPerNode") or {}
        gpus = (resources.get("limits") or {}).get("nvidia.com/gpu")
        pods = []
        for i in range(int(trainer.get("numNodes") or 1)):
            env = [{"name": "PET_NNODES", "value": str(trainer.get("numNodes") or 1)},
                   {"name": "PET_NODE_RANK", "value": str(i)}]
            if gpus:
                env.append({"name": "PET_NPROC_PER_NODE", "value": str(gpus)})
            pods.append({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": f"{m[1]}-node-0-{i}-{uuid.uuid4().hex[:5]}", "namespace": ns,
                             "creationTimestamp": job["metadata"]["creationTimestamp"],
                             "labels": {"jobset.sigs.k8s.io/jobset-name": m[1],
                                        "jobset.sigs.k8s.io/replicatedjob-name": "node",
                                        "batch.kubernetes.io/job-completion-index": str(i)}},
                "spec": {"containers": [{"name": "node", "image": trainer.get("image", ""),
                                         "command": trainer.get("command"), "env": env,
                                         "resources": resources}]},
                "status": {"phase": phase}})
        return pods


def _matches(labels: dict, selector: str) -> bool:
    """Equality and existence terms of a label selector (``a=b,c``): what our code sends."""
    for term in (t.strip() for t in selector.split(",") if t.strip()):
        if "=" in term:
            k, v = term.split("=", 1)
            if labels.get(k.strip()) != v.strip():
                return False
        elif term not in labels:
            return False
    return True

