"""`bertja submit` and `bertja schedule` against a local server speaking the KFP v2beta1 REST API.

The real `kfp.Client` talks to it, so what reaches a cluster is what is asserted:
the compiled pipeline spec, the run's parameters, the 6-field cron, and the
replacement (not duplication) of a recurring run of the same name.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from components.errors import BadInput
from pipelines.cli import main as bertja


class FakeKfp:
    def __init__(self):
        self.experiments = {}
        self.recurring = {}
        self.runs = []
        self.deleted = []
        self.counter = 0
        self.refuse_create = False

    def next_id(self, prefix):
        self.counter += 1
        return f"{prefix}-{self.counter}"


def make_handler(state: FakeKfp):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def reply(self, body, code=200):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def body(self):
            n = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(n) or b"{}")

        def do_GET(self):
            url = urlparse(self.path)
            q = parse_qs(url.query)
            if url.path == "/apis/v2beta1/experiments":
                flt = json.loads(q.get("filter", ["{}"])[0] or "{}")
                wanted = [p.get("string_value") or p.get("stringValue") for p in flt.get("predicates", [])]
                exps = [e for e in state.experiments.values() if not wanted or e["display_name"] in wanted]
                return self.reply({"experiments": exps, "total_size": len(exps)})
            if url.path == "/apis/v2beta1/recurringruns":
                exp = q.get("experiment_id", [None])[0]
                rrs = [r for r in state.recurring.values() if exp in (None, r["experiment_id"])]
                return self.reply({"recurringRuns": rrs, "total_size": len(rrs)})
            if url.path == "/apis/v2beta1/healthz":
                return self.reply({"multi_user": False})
            self.reply({"error": f"unexpected GET {self.path}"}, 404)

        def do_POST(self):
            url = urlparse(self.path)
            body = self.body()
            if url.path == "/apis/v2beta1/experiments":
                eid = state.next_id("exp")
                exp = {"experiment_id": eid, "display_name": body["display_name"]}
                state.experiments[eid] = exp
                return self.reply(exp)
            if url.path == "/apis/v2beta1/recurringruns":
                if state.refuse_create:
                    return self.reply({"error": "pipeline spec rejected"}, 400)
                rid = state.next_id("rr")
                rr = {**body, "recurring_run_id": rid, "experiment_id": body.get("experiment_id")}
                state.recurring[rid] = rr
                return self.reply(rr)
            if url.path == "/apis/v2beta1/runs":
                rid = state.next_id("run")
                state.runs.append(body)
                return self.reply({**body, "run_id": rid})
            self.reply({"error": f"unexpected POST {self.path}"}, 404)

        def do_DELETE(self):
            url = urlparse(self.path)
            rid = url.path.rsplit("/", 1)[-1]
            state.deleted.append(rid)
            state.recurring.pop(rid, None)
            self.reply({})

    return Handler


@pytest.fixture
def kfp_server():
    state = FakeKfp()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", state
    server.shutdown()


def test_submit_sends_the_compiled_pipeline_and_parameters(kfp_server, capsys):
    endpoint, state = kfp_server
    rc = bertja(["submit", "--endpoint", endpoint, "--experiment", "bertja", "--profile", "kind",
                 "--param", "wikipedia_dump_date=20240101", "--run-name", "try-1"])
    assert rc == 0, capsys.readouterr().err
    (run,) = state.runs
    assert run["display_name"] == "try-1"
    assert run["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "bert-japanese-pretraining"
    assert run["runtime_config"]["parameters"]["wikipedia_dump_date"] == "20240101"
    assert "\"run_id\": \"run-" in capsys.readouterr().out


def test_schedule_replaces_a_recurring_run_of_the_same_name(kfp_server, capsys):
    endpoint, state = kfp_server
    args = ["schedule", "--endpoint", endpoint, "--experiment", "retrains", "--profile", "kind",
            "--cron", "0 0 3 1 * *", "--name", "monthly"]
    assert bertja(args) == 0, capsys.readouterr().err
    assert bertja(args + ["--param", "model_size=tiny"]) == 0, capsys.readouterr().err
    assert len(state.recurring) == 1, "a second schedule must replace, not duplicate"
    (rr,) = state.recurring.values()
    assert len(state.deleted) == 1
    assert rr["display_name"] == "monthly"
    assert rr["trigger"]["cron_schedule"]["cron"] == "0 0 3 1 * *"
    assert rr["max_concurrency"] in ("1", 1)
    assert rr["runtime_config"]["parameters"]["model_size"] == "tiny"
    assert rr["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "bert-japanese-pretraining"


def test_a_failed_replacement_keeps_the_running_schedule(kfp_server, capsys):
    endpoint, state = kfp_server
    args = ["schedule", "--endpoint", endpoint, "--experiment", "retrains", "--profile", "kind",
            "--cron", "0 0 3 1 * *", "--name", "monthly"]
    assert bertja(args) == 0, capsys.readouterr().err
    state.refuse_create = True
    assert bertja(args) == 1
    err = capsys.readouterr().err
    assert "400" in err and "pipeline spec rejected" in err and "Traceback" not in err
    assert len(state.recurring) == 1 and not state.deleted


@pytest.mark.parametrize("cron", ["0 3 1 * *", "0 0 3 1 * * *", ""])
def test_schedule_rejects_a_cron_without_six_fields(kfp_server, capsys, cron):
    endpoint, state = kfp_server
    rc = bertja(["schedule", "--endpoint", endpoint, "--experiment", "x", "--profile", "kind", "--cron", cron])
    assert rc == 2
    assert "6 fields" in capsys.readouterr().err
    assert not state.recurring


def test_submit_rejects_bad_parameters_before_contacting_the_server(kfp_server, capsys):
    endpoint, state = kfp_server
    rc = bertja(["submit", "--endpoint", endpoint, "--experiment", "x", "--profile", "kind",
                 "--param", "variants=wordpiece,sentencepiece"])
    assert rc == 2 and "variants" in capsys.readouterr().err
    assert not state.runs and not state.experiments


def test_parse_params_types():
    from pipelines.commands import parse_params

    assert parse_params(["cc100_num_shards=4", "tpu_spot=true", "variants=wordpiece, character",
                         "masked_lm_prob=0.2"]) == {"cc100_num_shards": 4, "tpu_spot": True,
                                                   "variants": ["wordpiece", "character"], "masked_lm_prob": 0.2}
    with pytest.raises(BadInput, match="cc100_num_shards"):
        parse_params(["cc100_num_shards=many"])
