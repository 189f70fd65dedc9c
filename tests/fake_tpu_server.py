"""A local HTTP server that speaks the Cloud TPU v2 REST protocol, with VMs that do something.

It serves what ``google-cloud-tpu``'s REST transport calls: nodes (create -> long-running
operation, get, list, delete), queued resources (create, get, list, delete with ``force``) and operation
polling, with the real JSON shapes and error bodies (404 NOT_FOUND on a gone node, 409
ALREADY_EXISTS). Tests can inject 429/503 answers (``fail_next``) and preempt a node
(``preempt``, or ``POST /fake/preempt/<node path>`` from inside a VM).

When a node becomes READY the server boots a fake VM: its real startup script (the
``startup-script`` metadata) runs under bash with ``docker`` and ``gcloud`` stubs on PATH
(``tests/fake_tpu_vm.py``), so the simulated trainer is launched exactly with the arguments the
script builds and writes heartbeats, checkpoints and markers to the GCS emulator. Deleting or
preempting the node kills the VM's whole process group.
"""

from __future__ import annotations

import datetime
import itertools
import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import fake_tpu_vm

NODE_TYPE = "type.googleapis.com/google.cloud.tpu.v2.Node"
QR_TYPE = "type.googleapis.com/google.cloud.tpu.v2.QueuedResource"
EMPTY_TYPE = "type.googleapis.com/google.protobuf.Empty"
META_TYPE = "type.googleapis.com/google.cloud.tpu.v2.OperationMetadata"
_STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 409: "ALREADY_EXISTS", 429: "RESOURCE_EXHAUSTED",
           500: "INTERNAL", 503: "UNAVAILABLE"}
_LOC = r"projects/(?P<project>[^/]+)/locations/(?P<zone>[^/]+)"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


class _ApiError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class FakeVm:
    """A "TPU VM": its startup script under bash, with docker/gcloud stubs, in its own session."""

    def __init__(self, node: dict, env: dict, root: str):
        self.dir = tempfile.mkdtemp(prefix=f"vm-{node['name'].rsplit('/', 1)[-1]}-", dir=root)
        script = os.path.join(self.dir, "startup.sh")
        with open(script, "w") as f:
            f.write(node.get("metadata", {}).get("startup-script", "#!/bin/bash\n"))
        bin_dir = os.path.join(root, "bin")
        full_env = {**os.environ, **env, "PATH": f"{bin_dir}:{os.environ['PATH']}",
                    "BERTJA_WORKDIR": self.dir, "FAKE_TPU_NODE": node["name"]}
        self.console = open(os.path.join(self.dir, "console.log"), "wb")
        self.proc = subprocess.Popen(["bash", script], env=full_env, cwd=self.dir, stdout=self.console,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        self.console.close()

    @property
    def log(self) -> str:
        path = os.path.join(self.dir, "train.log")
        return open(path, encoding="utf-8", errors="replace").read() if os.path.exists(path) else ""


class FakeTpuServer:
    """The fake TPU API. ``create_s``/``delete_s``: how long operations take; ``queue_s``: how long a
    queued resource waits for capacity (default ``create_s``)."""

    def __init__(self, *, vm_env: dict | None = None, create_s: float = 0.3, delete_s: float = 0.2,
                 queue_s: float | None = None):
        self.vm_env = dict(vm_env or {})
        self.create_s = create_s
        self.delete_s = delete_s
        self.queue_s = create_s if queue_s is None else queue_s  # a queued resource's wait for capacity
        self.nodes: dict[str, dict] = {}
        self.queued: dict[str, dict] = {}
        self.operations: dict[str, dict] = {}
        self.vms: dict[str, FakeVm] = {}
        self.all_vms: list[FakeVm] = []
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        self.created: list[dict] = []  # every node create request body, in order
        self.queued_created: list[dict] = []  # every queued-resource create request body, in order
        self._faults: list[int] = []
        self.preempt_boots = 0  # the next N nodes are preempted instead of becoming READY
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._timers: list[tuple[float, callable]] = []
        self._root = tempfile.mkdtemp(prefix="fake-tpu-")
        fake_tpu_vm.write_stubs(os.path.join(self._root, "bin"))
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True),
                         threading.Thread(target=self._tick, daemon=True)]

    # lifecycle -----------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> FakeTpuServer:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            for vm in self.all_vms:
                vm.kill()

    # test controls ---------------------------------------------------------------
    def fail_next(self, code: int, count: int = 1) -> None:
        """The next ``count`` API requests get HTTP ``code`` (429, 503, ...)."""
        with self._lock:
            self._faults.extend([code] * count)

    def preempt(self, node_path: str) -> None:
        with self._lock:
            node = self.nodes.get(node_path)
            if node is None:
                return
            node["state"] = "PREEMPTED"
            self._kill_vm(node_path)
            qr = node.get("queuedResource")
            if qr and qr in self.queued:
                self.queued[qr]["state"] = {"state": "SUSPENDED"}

    def backdate(self, path: str, seconds: float) -> None:
        """Makes a node or queued resource look created ``seconds`` earlier (janitor minimum age)."""
        with self._lock:
            item = self.nodes.get(path) or self.queued.get(path)
            when = datetime.datetime.fromisoformat(item["createTime"].replace("Z", "+00:00"))
            when -= datetime.timedelta(seconds=seconds)
            item["createTime"] = when.isoformat().replace("+00:00", "Z")

    def node_state(self, node_path: str) -> str | None:
        with self._lock:
            node = self.nodes.get(node_path)
            return node["state"] if node else None

    def vm_alive(self, node_path: str) -> bool:
        with self._lock:
            vm = self.vms.get(node_path)
            return vm is not None and vm.proc.poll() is None

    # simulation ------------------------------------------------------------------
    def _later(self, delay: float, fn) -> None:
        self._timers.append((time.monotonic() + delay, fn))

    def _tick(self) -> None:
        while not self._stop.wait(0.05):
            with self._lock:
                now = time.monotonic()
                due = [fn for t, fn in self._timers if t <= now]
                self._timers = [(t, fn) for t, fn in self._timers if t > now]
                for fn in due:
                    fn()

    def _boot(self, path: str) -> None:
        node = self.nodes.get(path)
        if node is None or node["state"] != "CREATING":
            return
        if self.preempt_boots > 0:
            self.preempt_boots -= 1
            node["state"] = "PREEMPTED"
            return
        node["state"] = "READY"
        vm = FakeVm(node, {**self.vm_env, "FAKE_TPU_ADMIN": self.endpoint}, self._root)
        self.vms[path] = vm
        self.all_vms.append(vm)

    def _kill_vm(self, path: str) -> None:
        vm = self.vms.pop(path, None)
        if vm is not None:
            vm.kill()

    def _new_operation(self, project: str, zone: str, target: str, verb: str) -> dict:
        name = f"projects/{project}/locations/{zone}/operations/operation-{next(self._ids)}"
        op = {"name": name, "done": False,
              "metadata": {"@type": META_TYPE, "createTime": _now(), "target": target, "verb": verb,
                           "apiVersion": "v2"}}
        self.operations[name] = op
        return op

    def _finish(self, op: dict, response: dict | None = None, type_url: str = EMPTY_TYPE) -> None:
        op["done"] = True
        op["response"] = {"@type": type_url, **(response or {})}

    def _create_node(self, project: str, zone: str, node_id: str, body: dict, qr: str | None = None) -> dict:
        path = f"projects/{project}/locations/{zone}/nodes/{node_id}"
        if path in self.nodes:
            raise _ApiError(409, f"Resource '{path}' already exists")
        node = {**body, "name": path, "state": "CREATING", "createTime": _now(), "health": "HEALTHY",
                "id": str(next(self._ids)), "apiVersion": "V2",
                "networkEndpoints": [{"ipAddress": "10.0.0.2", "port": 8470}]}
        if qr:
            node["queuedResource"] = qr
        self.nodes[path] = node
        self.created.append({"path": path, **body})
        op = self._new_operation(project, zone, path, "create")

        def ready():
            self._boot(path)
            if path in self.nodes:
                self._finish(op, self.nodes[path], NODE_TYPE)
        self._later(self.create_s, ready)
        return op

    def _delete_node(self, project: str, zone: str, path: str) -> dict:
        node = self.nodes.get(path)
        if node is None:
            raise _ApiError(404, f"Resource '{path}' was not found")
        node["state"] = "DELETING"
        self._kill_vm(path)
        op = self._new_operation(project, zone, path, "delete")

        def gone():
            self.nodes.pop(path, None)
            self._finish(op)
        self._later(self.delete_s, gone)
        return op

    # HTTP --------------------------------------------------------------------------
    def _route(self, method: str, path: str, query: dict, body: dict):
        with self._lock:
            if self._faults and not path.startswith("/fake/"):
                code = self._faults.pop(0)
                raise _ApiError(code, "injected fault")
            m = re.fullmatch(r"/fake/preempt/(.+)", path)
            if m and method == "POST":  # after answering: preempting kills the caller
                self._later(0.0, lambda: self.preempt(m.group(1)))
                return {}
            m = re.fullmatch(rf"/v2/{_LOC}/(?P<kind>nodes|queuedResources|operations)(/(?P<id>[^/]+))?", path)
            if not m:
                raise _ApiError(404, f"no route for {method} {path}")
            project, zone, kind, rid = m.group("project"), m.group("zone"), m.group("kind"), m.group("id")
            full = path[len("/v2/"):]
            if kind == "operations":
                return self._get(self.operations, full) if method == "GET" and rid else self._unsupported(method, path)
            store, id_param, create, delete = {
                "nodes": (self.nodes, "nodeId", self._create_node,
                          lambda: self._delete_node(project, zone, full)),
                "queuedResources": (self.queued, "queuedResourceId", self._create_queued,
                                    lambda: self._delete_queued(project, zone, full,
                                                                query.get("force", ["false"])[0] == "true")),
            }[kind]
            if method == "POST" and not rid:
                return create(project, zone, query[id_param][0], body)
            if method == "GET" and rid:
                return self._get(store, full)
            if method == "GET" and kind != "operations":
                return self._list(store, kind, full, query)
            if method == "DELETE" and rid:
                return delete()
            return self._unsupported(method, path)

    @staticmethod
    def _get(store: dict, full: str) -> dict:
        if full not in store:
            raise _ApiError(404, f"Resource '{full}' was not found")
        return store[full]

    @staticmethod
    def _list(store: dict, kind: str, parent: str, query: dict) -> dict:
        """A list page as the API serves it: ``pageSize`` items, then ``nextPageToken``."""
        items = [v for k, v in sorted(store.items()) if k.startswith(parent + "/")]
        start = int(query.get("pageToken", ["0"])[0] or 0)
        size = int(query.get("pageSize", ["0"])[0] or 0) or len(items) or 1
        page = {kind: items[start:start + size]}
        if start + size < len(items):
            page["nextPageToken"] = str(start + size)
        return page

    @staticmethod
    def _unsupported(method: str, path: str):
        raise _ApiError(400, f"unsupported {method} {path}")

    def _create_queued(self, project: str, zone: str, qr_id: str, body: dict) -> dict:
        path = f"projects/{project}/locations/{zone}/queuedResources/{qr_id}"
        if path in self.queued:
            raise _ApiError(409, f"Resource '{path}' already exists")
        specs = body.get("tpu", {}).get("nodeSpec", [])
        if len(specs) != 1:
            raise _ApiError(400, "exactly one nodeSpec is supported here")
        qr = {**body, "name": path, "createTime": _now(), "state": {"state": "ACCEPTED"}}
        self.queued_created.append({"path": path, **body})
        self.queued[path] = qr
        op = self._new_operation(project, zone, path, "create")
        self._finish(op, qr, QR_TYPE)

        def provision():
            if path in self.queued:
                spec = specs[0]
                self._create_node(project, zone, spec["nodeId"], spec.get("node", {}), qr=path)
                qr["state"] = {"state": "ACTIVE"}
        self._later(self.queue_s, provision)
        return op

    def _delete_queued(self, project: str, zone: str, path: str, force: bool) -> dict:
        qr = self.queued.get(path)
        if qr is None:
            raise _ApiError(404, f"Resource '{path}' was not found")
        nodes = [p for p, n in self.nodes.items() if n.get("queuedResource") == path]
        if nodes and not force:
            raise _ApiError(400, f"queued resource {path} has nodes; use force")
        for p in nodes:
            self._delete_node(project, zone, p)
        qr["state"] = {"state": "DELETING"}
        op = self._new_operation(project, zone, path, "delete")

        def gone():
            self.queued.pop(path, None)
            self._finish(op)
        self._later(self.delete_s, gone)
        return op

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _serve(self, method: str):
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else {}
                    payload, code = server._route(method, url.path, parse_qs(url.query), body), 200
                except _ApiError as e:
                    code = e.code
                    payload = {"error": {"code": code, "message": str(e), "status": _STATUS.get(code, "UNKNOWN")}}
                with server._lock:
                    server.requests.append((method, url.path, code))
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._serve("GET")

            def do_POST(self):
                self._serve("POST")

            def do_DELETE(self):
                self._serve("DELETE")

        return Handler
