"""A local HTTP server speaking the slice of the KFP v2beta1 REST API that bertja uses.

The real ``kfp.Client`` (``bertja submit|schedule``) and ``bertja tpu gc`` talk to it on
127.0.0.1. It behaves like the backend where it matters:

- ``/apis/v2beta1/healthz`` answers ``tag_name`` (the backend release) and ``multi_user``;
- deleting a recurring run cascades to the runs it started (their Argo workflows are deleted,
  recorded in ``cascaded``) unless the backend is >= 2.16 *and* the request says
  ``propagation_policy=ORPHAN``: older backends ignore the parameter, as grpc-gateway ignores
  unknown query fields;
- a missing run is a 404 with a google.rpc.Status body (``code`` 5, NOT_FOUND);
- ``token``: every request must carry ``Authorization: Bearer <token>`` (multi-user), else 401.

Every request is logged (method, path, query, Authorization header) for exact assertions.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

API = "/apis/v2beta1"


def _release(tag: str) -> tuple[int, int]:
    m = re.match(r"^v?(\d+)\.(\d+)", tag)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


class FakeKfpApi:
    def __init__(self, *, tag_name: str = "2.17.0", multi_user: bool = False, token: str | None = None):
        self.tag_name = tag_name
        self.multi_user = multi_user
        self.token = token
        self.experiments: dict[str, dict] = {}
        self.recurring_runs: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self.cascaded: list[str] = []  # runs whose workflows a recurring-run delete took with it
        self.requests: list[dict] = []
        self.refuse_create = False
        self._faults: list[int] = []
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # test controls -------------------------------------------------------------
    def add_run(self, run_id: str, state: str, recurring_run_id: str | None = None) -> dict:
        with self._lock:
            run = {"run_id": run_id, "display_name": run_id, "state": state}
            if recurring_run_id:
                run["recurring_run_id"] = recurring_run_id
            self.runs[run_id] = run
            return run

    def fail_next(self, code: int, count: int = 1) -> None:
        """The next ``count`` API requests (healthz excluded) get HTTP ``code``."""
        with self._lock:
            self._faults.extend([code] * count)

    def calls(self, method: str, prefix: str = API) -> list[dict]:
        return [r for r in self.requests if r["method"] == method and r["path"].startswith(prefix)]

    # routes --------------------------------------------------------------------
    def _next_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"

    def _route(self, method: str, path: str, query: dict, body: dict) -> tuple[int, dict]:
        if path == f"{API}/healthz" and method == "GET":
            return 200, {"commit_sha": "fake", "tag_name": self.tag_name, "multi_user": self.multi_user}
        if self._faults:
            return self._faults.pop(0), {"code": 14, "message": "injected fault"}
        m = re.fullmatch(rf"{API}/(experiments|recurringruns|runs)(?:/([^/:]+))?(?::(\w+))?", path)
        if not m:
            return 404, {"code": 5, "message": f"no route for {method} {path}"}
        kind, rid, verb = m.groups()
        if kind == "experiments":
            return self._experiments(method, query, body)
        if kind == "runs":
            return self._runs(method, rid, body)
        return self._recurring(method, rid, verb, query, body)

    def _experiments(self, method: str, query: dict, body: dict) -> tuple[int, dict]:
        if method == "POST":
            exp = {**body, "experiment_id": self._next_id("exp")}
            self.experiments[exp["experiment_id"]] = exp
            return 200, exp
        flt = json.loads(query.get("filter", ["{}"])[0] or "{}")
        wanted = [p.get("string_value") or p.get("stringValue") for p in flt.get("predicates", [])]
        found = [e for e in self.experiments.values() if not wanted or e["display_name"] in wanted]
        return 200, {"experiments": found, "total_size": len(found)}

    def _runs(self, method: str, rid: str | None, body: dict) -> tuple[int, dict]:
        if method == "POST" and not rid:
            run = {**body, "run_id": self._next_id("run"), "state": "PENDING"}
            self.runs[run["run_id"]] = run
            return 200, run
        if method == "GET" and rid:
            if rid not in self.runs:
                return 404, {"code": 5, "message": f"Failed to get run: ResourceNotFoundError: Run {rid} not found",
                             "details": []}
            return 200, self.runs[rid]
        return 400, {"code": 3, "message": f"unsupported {method} runs"}

    def _recurring(self, method: str, rid: str | None, verb: str | None, query: dict, body: dict):
        if method == "POST" and not rid:
            if self.refuse_create:
                return 400, {"code": 3, "message": "pipeline spec rejected"}
            rr = {**body, "recurring_run_id": self._next_id("rr"), "status": "ENABLED"}
            self.recurring_runs[rr["recurring_run_id"]] = rr
            return 200, rr
        if method == "GET" and not rid:
            exp = query.get("experiment_id", [None])[0]
            found = [r for r in self.recurring_runs.values() if exp in (None, r.get("experiment_id"))]
            return 200, {"recurringRuns": found, "total_size": len(found), "next_page_token": ""}
        if rid not in self.recurring_runs:
            return 404, {"code": 5, "message": f"recurring run {rid} not found"}
        if method == "POST" and verb in ("disable", "enable"):
            self.recurring_runs[rid]["status"] = "DISABLED" if verb == "disable" else "ENABLED"
            return 200, {}
        if method == "DELETE" and not verb:
            self.recurring_runs.pop(rid)
            orphan = query.get("propagation_policy", [""])[0] == "ORPHAN" and _release(self.tag_name) >= (2, 16)
            if not orphan:
                for run_id, run in list(self.runs.items()):
                    if run.get("recurring_run_id") == rid:
                        self.cascaded.append(run_id)
                        self.runs.pop(run_id)
            return 200, {}
        return 400, {"code": 3, "message": f"unsupported {method} {rid}:{verb}"}

    def _handler_class(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _serve(self):
                url = urlparse(self.path)
                query = parse_qs(url.query)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                auth = self.headers.get("Authorization")
                with api._lock:
                    api.requests.append({"method": self.command, "path": url.path, "query": query,
                                         "authorization": auth})
                    if api.token is not None and auth != f"Bearer {api.token}":
                        code, payload = 401, {"code": 16, "message": "Request header error: there is no user identity header."}
                    else:
                        code, payload = api._route(self.command, url.path, query, json.loads(raw or b"{}"))
                data = json.dumps(payload).encode()
                self.send_response(code)
                for header, value in (("Content-Type", "application/json"), ("Content-Length", str(len(data)))):
                    self.send_header(header, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _serve

        return Handler
