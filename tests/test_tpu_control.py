"""TPU control: the real google-cloud-tpu REST client against the fake TPU server; the CLI;
node names and input checks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid

import pytest

from components.errors import BadInput
from components.tpu import control
from components.tpu.control import NodeSpec, TpuControl
from fake_tpu_server import FakeTpuServer

PROJECT, ZONE = "test-project", "europe-west4-a"


@pytest.fixture
def tpu():
    server = FakeTpuServer().start()
    yield server
    server.stop()


def _control(tpu) -> TpuControl:
    return TpuControl(PROJECT, ZONE, api_endpoint=tpu.endpoint, poll_s=0.05)


def _statuses(tpu, method, suffix):
    return [code for m, path, code in tpu.requests if m == method and path.endswith(suffix)]


def test_create_get_delete_with_every_node_setting(tpu):
    spec = NodeSpec(accelerator_type="v4-8", spot=True, network="vpc", subnetwork="sub",
                    service_account="trainer@test-project.iam.gserviceaccount.com",
                    labels={"team": "nlp"}, tags=("tpu", "train"))
    node = _control(tpu).create_node("node-a", spec)

    assert control.state_name(node) == "READY"
    (body,) = tpu.created
    assert body["acceleratorType"] == "v4-8" and body["runtimeVersion"] == "tpu-ubuntu2204-base"
    assert body["schedulingConfig"] == {"spot": True}
    assert body["networkConfig"] == {"network": "vpc", "subnetwork": "sub", "enableExternalIps": True}
    assert body["serviceAccount"]["email"] == "trainer@test-project.iam.gserviceaccount.com"
    assert body["labels"] == {"team": "nlp", "managed-by": "bertja"} and body["tags"] == ["tpu", "train"]
    # create = POST ...nodes?nodeId=..., then operation polling until done
    assert _statuses(tpu, "POST", f"/locations/{ZONE}/nodes") == [200]
    assert any(m == "GET" and "/operations/" in p and c == 200 for m, p, c in tpu.requests)

    view = control.describe(_control(tpu).get_node("node-a"))
    assert view["state"] == "READY" and view["spot"] is True and view["accelerator_type"] == "v4-8"
    assert _control(tpu).delete_node("node-a") is True
    assert _control(tpu).get_node("node-a") is None
    assert _statuses(tpu, "GET", "/nodes/node-a")[-1] == 404


def test_transient_429_and_503_are_retried(tpu):
    tpu.fail_next(429, 2)
    tpu.fail_next(503, 1)
    node = _control(tpu).create_node("node-b", NodeSpec())
    assert control.state_name(node) == "READY"
    assert _statuses(tpu, "POST", "/nodes") == [429, 429, 503, 200]
    assert len(tpu.created) == 1


def test_delete_of_a_gone_node_succeeds(tpu):
    tpu_control = _control(tpu)
    assert tpu_control.delete_node("never-created") is False
    result = tpu_control.release("never-created")
    assert result["deleted"] is False
    assert result["node"] == f"projects/{PROJECT}/locations/{ZONE}/nodes/never-created"


def test_creating_an_existing_node_is_refused(tpu):
    from google.api_core.exceptions import Conflict

    _control(tpu).create_node("node-c", NodeSpec())
    with pytest.raises(Conflict, match="already exists"):
        _control(tpu).create_node("node-c", NodeSpec())


def test_queued_resource_create_and_release(tpu):
    tpu_control = _control(tpu)
    node = tpu_control.create_queued_resource("node-q", NodeSpec(spot=True))
    assert control.state_name(node) == "READY"
    assert node.queued_resource.endswith("/queuedResources/node-q")
    qr = tpu_control.get_queued_resource("node-q")
    assert qr.spot is not None and qr.tpu.node_spec[0].node_id == "node-q"
    result = tpu_control.release("node-q")
    assert result["queued_resource_deleted"] is True
    assert tpu_control.get_node("node-q") is None and tpu_control.get_queued_resource("node-q") is None
    assert any(m == "DELETE" and "queuedResources" in p for m, p, _c in tpu.requests)


def test_preempted_node_is_reported(tpu):
    tpu_control = _control(tpu)
    tpu_control.create_node("node-p", NodeSpec(preemptible=True))
    tpu.preempt(tpu_control.node_path("node-p"))
    assert control.state_name(tpu_control.get_node("node-p")) == "PREEMPTED"
    assert tpu_control.delete_node("node-p") is True


def _bertja(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "tpu", *args], capture_output=True,
                          text=True, env={**os.environ}, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_cli_create_status_delete(tpu):
    target = ["--project", PROJECT, "--zone", ZONE, "--name", "cli-node", "--api-endpoint", tpu.endpoint]
    created = json.loads(_bertja("create", *target, "--accelerator-type", "v5litepod-8", "--spot",
                                 "--labels", "team=nlp,cost-center=ml").stdout)
    assert created["state"] == "READY" and created["runtime_version"] == "v2-alpha-tpuv5-lite"
    assert created["labels"] == {"team": "nlp", "cost-center": "ml", "managed-by": "bertja"}
    assert json.loads(_bertja("status", *target).stdout)["state"] == "READY"

    assert json.loads(_bertja("delete", *target).stdout)["node_deleted"] is True
    assert json.loads(_bertja("delete", *target).stdout)["deleted"] is False  # already gone: success
    missing = _bertja("status", *target, check=False)
    assert missing.returncode == 1 and json.loads(missing.stdout)["state"] == "NOT_FOUND"


@pytest.mark.parametrize("args, message", [
    (["--zone", "europe-west4"], "--zone"),
    (["--accelerator-type", "tpu-v3"], "--accelerator-type"),
    (["--runtime-version", "tpu-vm-tf-2.18.0-pjrt"], "TensorFlow 2.18.0"),
    (["--labels", "novalue"], "KEY=VALUE"),
    (["--service-account", "not-an-email"], "--service-account"),
])
def test_cli_bad_input_is_a_clear_error_and_creates_nothing(tpu, args, message):
    base = {"--project": PROJECT, "--zone": ZONE, "--name": "cli-bad", "--api-endpoint": tpu.endpoint}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    proc = _bertja("create", *[x for kv in base.items() for x in kv], check=False)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert tpu.requests == []


def test_node_names_are_valid_deterministic_and_distinct():
    run_id = str(uuid.UUID(int=42))
    name = control.tpu_node_name(run_id, "wordpiece")
    assert name == control.tpu_node_name(run_id, "wordpiece")
    assert name != control.tpu_node_name(run_id, "character")
    assert name != control.tpu_node_name(str(uuid.UUID(int=43)), "wordpiece")
    long_a, long_b = "Run_" + "x" * 200 + "A", "Run_" + "x" * 200 + "B"
    names = [name, control.tpu_node_name(long_a), control.tpu_node_name(long_b),
             control.tpu_node_name("  Weird/ID:with spaces  ", "Big_Suffix!"), control.tpu_node_name("9")]
    assert control.tpu_node_name(long_a) != control.tpu_node_name(long_b)
    for n in names:
        assert re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", n), n
        assert control.check_node_name(n) == n
    with pytest.raises(BadInput):
        control.tpu_node_name("")


def test_runtime_versions_follow_the_accelerator_generation():
    assert control.default_runtime_version("v3-8") == "tpu-ubuntu2204-base"
    assert control.default_runtime_version("v6e-4") == "v2-alpha-tpuv6e"
    assert control.chips("v3-8") == 4 and control.chips("v5litepod-8") == 8
    with pytest.raises(BadInput, match="pinned to TensorFlow 2.20.0"):
        control.check_runtime_version("tpu-vm-tf-2.18.0-pjrt", "v3-8")
    with pytest.raises(BadInput, match="its own ML framework"):
        control.check_runtime_version("tpu-vm-pt-2.0", "v3-8")
    with pytest.raises(BadInput, match="not a base runtime for v6e"):
        control.check_runtime_version("tpu-ubuntu2204-base", "v6e-8")


def test_without_an_endpoint_application_default_credentials_are_required(tmp_path):
    env = {**os.environ, "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "missing.json")}
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "tpu", "status", "--project", PROJECT,
                           "--zone", ZONE, "--name", "any"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "Application Default Credentials" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("external_ips, sent", [(True, {"enableExternalIps": True}), (False, {})])
def test_the_network_config_is_always_sent(tpu, external_ips, sent):
    """External IPs are our choice, never the API's default for a node without a network config.
    (``False`` is proto3's default value: it travels as a present, empty ``networkConfig``.)"""
    tpu_control = _control(tpu)
    tpu_control.create_node("node-n", NodeSpec(external_ips=external_ips))
    tpu_control.create_queued_resource("node-qn", NodeSpec(external_ips=external_ips))
    assert [body["networkConfig"] for body in tpu.created] == [sent, sent]


def test_a_queued_resource_waits_in_the_queue_for_its_own_time():
    """Capacity may take hours: the queue wait has its own limit, not the READY timeout, and the
    request itself expires then (valid_until_duration)."""
    server = FakeTpuServer(queue_s=2.0, create_s=0.1).start()
    try:
        tpu_control = _control(server)
        node = tpu_control.create_queued_resource("node-long", NodeSpec(), timeout_s=1.0, queue_timeout_s=7200)
        assert control.state_name(node) == "READY"
        policy = tpu_control.get_queued_resource("node-long").queueing_policy
        assert policy.valid_until_duration.total_seconds() == 7200
        with pytest.raises(control.TpuError, match="queued resource node-short ACTIVE"):
            tpu_control.create_queued_resource("node-short", NodeSpec(), timeout_s=60, queue_timeout_s=0.5)
    finally:
        server.stop()


@pytest.fixture
def silent_endpoint():
    """A server on 127.0.0.1 that accepts connections and never answers."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held, stop = [], threading.Event()

    def accept():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


@pytest.fixture
def refused_endpoint():
    """A port on 127.0.0.1 where nothing listens."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("endpoint", ["refused_endpoint", "silent_endpoint"])
@pytest.mark.parametrize("action", ["create", "status", "delete"])
def test_an_unreachable_api_ends_within_timeout_with_one_line_and_exit_1(request, endpoint, action):
    """Before: nothing printed for 300 s, --timeout ignored, then a long traceback."""
    import time

    url = request.getfixturevalue(endpoint)
    timeout = 3
    start = time.monotonic()
    proc = _bertja(action, "--project", PROJECT, "--zone", ZONE, "--name", "gone-node", "--api-endpoint", url,
                   "--timeout", str(timeout), check=False)
    elapsed = time.monotonic() - start
    assert proc.returncode == 1, proc.stderr
    assert elapsed < timeout + 15, elapsed  # interpreter start-up and imports included
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert re.search(r"TPU API \w+: attempt 1 failed \((ConnectionError|ReadTimeout|ConnectTimeout)", proc.stderr)
    assert lines[-1].startswith("bertja tpu: error: ") and f"TPU API at {url} did not answer" in lines[-1], lines
    assert all(line.startswith("[tpu ") for line in lines[:-1]), lines  # retries and progress, then the error


def test_cli_queue_timeout_reaches_the_queued_resource(tpu):
    target = ["--project", PROJECT, "--zone", ZONE, "--name", "cli-queued", "--api-endpoint", tpu.endpoint]
    created = json.loads(_bertja("create", *target, "--queued", "--queue-timeout-hours", "2.5").stdout)
    assert created["state"] == "READY" and created["queued_resource"].endswith("/queuedResources/cli-queued")
    (qr,) = tpu.queued.values()
    assert qr["queueingPolicy"] == {"validUntilDuration": "9000s"}
    bad = _bertja("create", *target, "--queued", "--queue-timeout-hours", "0", check=False)
    assert bad.returncode == 2 and "--queue-timeout-hours" in bad.stderr and "Traceback" not in bad.stderr
