"""`bertja tpu gc`: the real google-cloud-tpu client against the fake TPU server, run states from a
fake KFP API; only resources of finished or vanished runs go, and only when the API is sure."""

from __future__ import annotations

import json
import uuid

import pytest
from fake_kfp_api import FakeKfpApi
from fake_tpu_server import FakeTpuServer
from http_fixtures import FileServer, running

from components.tpu import janitor
from components.tpu.control import NodeSpec, TpuControl
from pipelines.cli import main as bertja

PROJECT, ZONE = "test-project", "europe-west4-a"
OLD = 2 * 3600  # seconds: older than the default minimum age


@pytest.fixture
def tpu():
    server = FakeTpuServer(create_s=0.05, delete_s=0.05).start()
    yield server
    server.stop()


@pytest.fixture
def kfp():
    api = FakeKfpApi()
    yield api
    api.stop()


def _path(name: str, kind: str = "nodes") -> str:
    return f"projects/{PROJECT}/locations/{ZONE}/{kind}/{name}"


def make(tpu, name: str, run_id: str | None, *, age: float = OLD, queued: bool = False, labels=None) -> str:
    """A node (or queued resource + node) as the train task creates it, ``age`` seconds old."""
    control = TpuControl(PROJECT, ZONE, api_endpoint=tpu.endpoint, poll_s=0.02)
    labels = dict(labels or {})
    if run_id is not None:
        labels.update({"bertja-run": run_id, "bertja-variant": "wordpiece", "bertja-backend": "kfp"})
    spec = NodeSpec(labels=labels)
    (control.create_queued_resource if queued else control.create_node)(name, spec, timeout_s=30)
    tpu.backdate(_path(name), age)
    if queued:
        tpu.backdate(_path(name, "queuedResources"), age)
    return name


def gc(tpu, kfp, *extra) -> tuple[int, dict, str]:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = bertja(["tpu", "gc", "--project", PROJECT, "--zone", ZONE, "--api-endpoint", tpu.endpoint,
                     "--kfp-endpoint", kfp.endpoint, "--poll", "0.02", *extra])
    return rc, json.loads(out.getvalue()), err.getvalue()


def run_id() -> str:
    return str(uuid.uuid4())


def test_gc_deletes_what_finished_or_vanished_runs_left_and_keeps_the_rest(tpu, kfp):
    runs = {state: run_id() for state in ("SUCCEEDED", "FAILED", "CANCELED", "RUNNING", "PENDING", "PAUSED",
                                          "CANCELING", "RUNTIME_STATE_UNSPECIFIED")}
    for state, rid in runs.items():
        kfp.add_run(rid, state)
        make(tpu, f"node-{state.lower().replace('_', '-')}", rid)
    gone_run = run_id()  # deleted from KFP: 404 NOT_FOUND
    make(tpu, "node-gone", gone_run)
    make(tpu, "qr-succeeded", runs["SUCCEEDED"], queued=True)
    young = make(tpu, "node-young", runs["SUCCEEDED"], age=60)
    foreign = make(tpu, "node-foreign", None, labels={"team": "nlp"})  # not ours: never looked at
    # A Vertex run's VM: its run id means nothing to KFP (a 404 there), so it is never looked at.
    vertex = make(tpu, "node-vertex", None, labels={"bertja-run": "8717761889699889152", "bertja-variant": "wordpiece",
                                                    "bertja-backend": "vertex"})
    kfp.requests.clear()

    rc, summary, log = gc(tpu, kfp)

    assert rc == 0, log
    deleted = {"node-succeeded", "node-failed", "node-canceled", "node-gone", "qr-succeeded"}
    assert {e["name"] for e in summary["deleted"]} == deleted
    kept = {"node-running", "node-pending", "node-paused", "node-canceling", "node-runtime-state-unspecified", young}
    assert {e["name"] for e in summary["kept"]} == kept
    assert summary["checked"] == len(deleted | kept) and not summary["errors"] and not summary["would_delete"]
    for name in deleted:
        assert tpu.node_state(_path(name)) is None, name
    assert _path("qr-succeeded", "queuedResources") not in tpu.queued
    for name in kept | {foreign, vertex}:
        assert tpu.node_state(_path(name)) == "READY", name
    reasons = {e["name"]: e["reason"] for e in summary["kept"] + summary["deleted"]}
    assert reasons["node-gone"] == f"run {gone_run} not found in KFP (deleted)"
    assert reasons["node-failed"] == f"run {runs['FAILED']} is FAILED"
    assert reasons["node-running"] == f"run {runs['RUNNING']} is RUNNING"
    assert "younger than the minimum age 3600s" in reasons[young]
    qr = next(e for e in summary["deleted"] if e["name"] == "qr-succeeded")
    assert qr["resources"] == ["node", "queued_resource"] and qr["variant"] == "wordpiece"
    # One log line per resource: what, why, and what was done.
    lines = [line for line in log.splitlines() if line.startswith("[tpu gc") and ("node-" in line or "qr-" in line)]
    assert len(lines) == len(deleted | kept)
    assert any("node-failed (node READY; run" in line and f"deleted: run {runs['FAILED']} is FAILED" in line
               for line in lines)
    assert any(line.endswith(f"kept: run {runs['RUNNING']} is RUNNING") for line in lines)
    # The young resource's run is never asked about; the others are, by run id.
    asked = {r["path"] for r in kfp.calls("GET", "/apis/v2beta1/runs/")}
    assert asked == {f"/apis/v2beta1/runs/{rid}" for rid in [*runs.values(), gone_run]}


def test_dry_run_deletes_nothing_and_says_what_it_would_delete(tpu, kfp):
    rid = run_id()
    kfp.add_run(rid, "SUCCEEDED")
    make(tpu, "node-a", rid)
    rc, summary, log = gc(tpu, kfp, "--dry-run")
    assert rc == 0 and summary["dry_run"] is True
    assert [e["name"] for e in summary["would_delete"]] == ["node-a"] and not summary["deleted"]
    assert tpu.node_state(_path("node-a")) == "READY"
    assert not [m for m, _path_, _c in tpu.requests if m == "DELETE"]
    assert f"node-a (node READY; run {rid}, variant wordpiece): would delete (dry run): run {rid} is SUCCEEDED" in log


@pytest.mark.parametrize("code", [503, 403, 401])
def test_an_api_error_keeps_the_vm_and_is_reported(tpu, kfp, code):
    doubtful, finished = run_id(), run_id()
    kfp.add_run(doubtful, "SUCCEEDED")
    kfp.add_run(finished, "SUCCEEDED")
    make(tpu, "node-a", doubtful)
    make(tpu, "node-b", finished)
    kfp.fail_next(code)  # the first run lookup (node-a: names are visited in order)
    rc, summary, log = gc(tpu, kfp)
    assert rc == 1
    assert tpu.node_state(_path("node-a")) == "READY"
    assert [e["name"] for e in summary["kept"]] == ["node-a"] and [e["name"] for e in summary["deleted"]] == ["node-b"]
    assert f"KFP API answered {code} for run {doubtful}" in summary["errors"][0]
    assert f"node-a (node READY; run {doubtful}, variant wordpiece): kept: KFP API answered {code}" in log


def test_an_endpoint_that_is_not_a_kfp_api_deletes_nothing(tpu):
    """A wrong --kfp-endpoint answers 404 for every run; without a KFP healthz none is believed."""
    make(tpu, "node-a", run_id())
    with running(FileServer()) as other:
        rc, summary, log = gc(tpu, type("Api", (), {"endpoint": other.url("")})())
    assert rc == 1 and summary["checked"] == 0 and not summary["deleted"]
    assert "not a KFP API healthz" in summary["errors"][0] and "deleting nothing" in log
    assert tpu.node_state(_path("node-a")) == "READY"


def test_a_run_label_that_may_be_truncated_is_kept(tpu, kfp):
    long_id = "x" * 63
    make(tpu, "node-a", long_id)
    rc, summary, _log = gc(tpu, kfp)
    assert rc == 0 and "truncated" in summary["kept"][0]["reason"]
    assert not kfp.calls("GET", "/apis/v2beta1/runs/")


def test_a_failed_delete_is_reported_and_the_rest_go_on(tpu, kfp, monkeypatch):
    first, second = run_id(), run_id()
    for rid, name in ((first, "node-a"), (second, "node-b")):
        kfp.add_run(rid, "FAILED")
        make(tpu, name, rid)
    real_release = TpuControl.release

    def release(self, name, **kwargs):
        if name == "node-a":  # permission denied on both of this one's requests (queued resource, node)
            tpu.fail_next(403, 2)
        return real_release(self, name, **kwargs)

    monkeypatch.setattr(TpuControl, "release", release)
    rc, summary, log = gc(tpu, kfp)
    assert rc == 1
    assert [e["name"] for e in summary["deleted"]] == ["node-b"]
    assert "node-a" in summary["errors"][0] and "FAILED to delete" in summary["errors"][0]
    assert "node-a (node READY" in log and "delete FAILED" in log


def test_multi_user_gc_sends_the_projected_token(tpu, tmp_path, monkeypatch):
    token = "projected-sa-token"
    (tmp_path / "token").write_text(token)
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "token"))
    api = FakeKfpApi(multi_user=True, token=token)
    try:
        rid = run_id()
        api.add_run(rid, "CANCELED")
        make(tpu, "node-a", rid)
        rc, summary, log = gc(tpu, api, "--multi-user")
        assert rc == 0, log
        assert [e["name"] for e in summary["deleted"]] == ["node-a"]
        assert {r["authorization"] for r in api.requests} == {f"Bearer {token}"}
        # Without the flag the multi-user API refuses, and nothing is deleted.
        make(tpu, "node-b", rid)
        rc, summary, _log = gc(tpu, api)
        assert rc == 1 and not summary["deleted"] and tpu.node_state(_path("node-b")) == "READY"
    finally:
        api.stop()


def test_token_path_is_the_one_kfp_reads():
    from kfp import client

    assert janitor.TOKEN_PATH == client.KF_PIPELINES_SA_TOKEN_PATH
    assert janitor.TOKEN_PATH_ENV == client.KF_PIPELINES_SA_TOKEN_ENV


def test_gc_lists_every_page(tpu, kfp, monkeypatch):
    """The TPU API pages its lists; a page size of 1 makes every labelled node its own page."""
    from google.cloud import tpu_v2

    real = tpu_v2.TpuClient.list_nodes
    monkeypatch.setattr(tpu_v2.TpuClient, "list_nodes",
                        lambda self, parent, **kw: real(self, request={"parent": parent, "page_size": 1}, **kw))
    rids = [run_id() for _ in range(3)]
    for i, rid in enumerate(rids):
        kfp.add_run(rid, "SUCCEEDED")
        make(tpu, f"node-{i}", rid)
    rc, summary, _log = gc(tpu, kfp, "--dry-run")
    assert rc == 0 and len(summary["would_delete"]) == 3
    assert sum(1 for m, p, _c in tpu.requests if m == "GET" and p.endswith("/nodes")) == 3
