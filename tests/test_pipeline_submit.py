"""`bertja submit` and `bertja schedule` against a local server speaking the KFP v2beta1 REST API.

The real `kfp.Client` talks to it, so what reaches a cluster is what is asserted:
the compiled pipeline spec, the run's parameters, the 6-field cron, and the
replacement (not duplication) of a recurring run of the same name, without deleting the
runs it started, and the multi-user service-account token.
"""

import pytest
from fake_kfp_api import FakeKfpApi

from components.errors import BadInput
from pipelines.cli import main as bertja


@pytest.fixture
def kfp_server():
    api = FakeKfpApi()
    yield api.endpoint, api
    api.stop()


def test_submit_sends_the_compiled_pipeline_and_parameters(kfp_server, capsys):
    endpoint, api = kfp_server
    rc = bertja(["submit", "--endpoint", endpoint, "--experiment", "bertja", "--profile", "kind",
                 "--param", "wikipedia_dump_date=20240101", "--run-name", "try-1"])
    assert rc == 0, capsys.readouterr().err
    (run,) = api.runs.values()
    assert run["display_name"] == "try-1"
    assert run["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "bert-japanese-pretraining"
    assert run["runtime_config"]["parameters"]["wikipedia_dump_date"] == "20240101"
    assert "\"run_id\": \"run-" in capsys.readouterr().out
    assert all(r["authorization"] is None for r in api.requests), "single-user: no credentials sent"


SCHEDULE = ["schedule", "--experiment", "retrains", "--profile", "kind", "--cron", "0 0 3 1 * *", "--name", "monthly"]


def test_schedule_replaces_a_recurring_run_of_the_same_name(kfp_server, capsys):
    endpoint, api = kfp_server
    args = SCHEDULE + ["--endpoint", endpoint]
    assert bertja(args) == 0, capsys.readouterr().err
    assert bertja(args + ["--param", "model_size=tiny"]) == 0, capsys.readouterr().err
    assert len(api.recurring_runs) == 1, "a second schedule must replace, not duplicate"
    (rr,) = api.recurring_runs.values()
    assert rr["display_name"] == "monthly" and rr["status"] == "ENABLED"
    assert rr["trigger"]["cron_schedule"]["cron"] == "0 0 3 1 * *"
    assert rr["max_concurrency"] in ("1", 1)
    assert rr["runtime_config"]["parameters"]["model_size"] == "tiny"
    assert rr["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "bert-japanese-pretraining"


def test_replacing_a_schedule_orphans_its_runs_instead_of_deleting_them(kfp_server, capsys):
    """Backend >= 2.16: the old schedule is disabled, then deleted with propagation_policy=ORPHAN;
    the retrain it started (and its finished runs) survive."""
    endpoint, api = kfp_server
    args = SCHEDULE + ["--endpoint", endpoint]
    assert bertja(args) == 0, capsys.readouterr().err
    (old,) = api.recurring_runs
    api.add_run("retrain-running", "RUNNING", recurring_run_id=old)
    api.add_run("retrain-last-month", "SUCCEEDED", recurring_run_id=old)
    api.requests.clear()
    assert bertja(args) == 0, capsys.readouterr().err
    assert not api.cascaded and {"retrain-running", "retrain-last-month"} <= set(api.runs)
    (new,) = api.recurring_runs
    assert new != old
    changes = [(r["method"], r["path"], r["query"]) for r in api.requests if r["method"] != "GET"]
    assert changes == [  # the experiment exists: found with a GET
        ("POST", f"/apis/v2beta1/recurringruns/{old}:disable", {}),  # before the new one exists
        ("POST", "/apis/v2beta1/recurringruns", {}),
        ("DELETE", f"/apis/v2beta1/recurringruns/{old}", {"propagation_policy": ["ORPHAN"]}),
    ]
    out = capsys.readouterr().out
    assert f'"replaced": [\n    "{old}"\n  ]' in out


@pytest.mark.parametrize("tag", ["2.15.0", "unknown"])
def test_on_a_backend_that_would_cascade_the_old_schedule_is_disabled_not_deleted(capsys, tag):
    """A backend < 2.16 (or one that does not say) ignores propagation_policy: deleting there
    would kill the running retrain, so the old schedule is only disabled, and reported."""
    api = FakeKfpApi(tag_name=tag)
    try:
        args = SCHEDULE + ["--endpoint", api.endpoint]
        assert bertja(args) == 0, capsys.readouterr().err
        (old,) = api.recurring_runs
        api.add_run("retrain-running", "RUNNING", recurring_run_id=old)
        assert bertja(args) == 0
        captured = capsys.readouterr()
        assert not api.calls("DELETE") and not api.cascaded and "retrain-running" in api.runs
        assert api.recurring_runs[old]["status"] == "DISABLED"
        assert [r["status"] for r in api.recurring_runs.values()] == ["DISABLED", "ENABLED"]
        assert f"{old} disabled, not deleted" in captured.err and "delete them by hand" in captured.err
        assert f'"disabled_not_deleted": [\n    "{old}"\n  ]' in captured.out
    finally:
        api.stop()


def test_a_failed_replacement_keeps_the_running_schedule(kfp_server, capsys):
    endpoint, api = kfp_server
    args = SCHEDULE + ["--endpoint", endpoint]
    assert bertja(args) == 0, capsys.readouterr().err
    api.refuse_create = True
    assert bertja(args) == 1
    err = capsys.readouterr().err
    assert "400" in err and "pipeline spec rejected" in err and "Traceback" not in err
    (rr,) = api.recurring_runs.values()
    assert rr["status"] == "ENABLED", "disabled for the replacement, enabled again when it failed"
    assert not api.calls("DELETE")


@pytest.mark.parametrize("command", ["submit", "schedule"])
@pytest.mark.parametrize("how", ["flag", "env"])
def test_multi_user_requests_carry_the_projected_service_account_token(tmp_path, monkeypatch, capsys, command, how):
    token = "eyJhbGciOiJSUzI1NiJ9.projected.token"
    (tmp_path / "token").write_text(token + "\n")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "token"))
    api = FakeKfpApi(multi_user=True, token=token)
    try:
        args = [command, "--endpoint", api.endpoint, "--experiment", "retrains", "--profile", "kind",
                "--namespace", "team-a"]
        if command == "schedule":
            args += ["--cron", "0 0 3 1 * *"]
        if how == "flag":
            args.append("--multi-user")
        else:
            monkeypatch.setenv("BERTJA_KFP_MULTI_USER", "true")
        assert bertja(args) == 0, capsys.readouterr().err
        assert api.requests and {r["authorization"] for r in api.requests} == {f"Bearer {token}"}
        assert api.runs or api.recurring_runs
    finally:
        api.stop()


def test_multi_user_kfp_refuses_a_client_without_the_token(capsys):
    """What the chart's hook met before: multi-user KFP answers 401 to a request without identity."""
    api = FakeKfpApi(multi_user=True, token="t")
    try:
        rc = bertja(["submit", "--endpoint", api.endpoint, "--experiment", "x", "--profile", "kind",
                     "--namespace", "team-a"])
        assert rc == 1 and "401" in capsys.readouterr().err
        assert not api.runs
    finally:
        api.stop()


def test_multi_user_without_a_token_file_is_bad_input(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "missing"))
    rc = bertja(["submit", "--endpoint", "http://127.0.0.1:9", "--experiment", "x", "--profile", "kind",
                 "--multi-user"])
    err = capsys.readouterr().err
    assert rc == 2 and str(tmp_path / "missing") in err and "pipelines.kubeflow.org" in err


def test_a_bad_multi_user_environment_value_is_bad_input(monkeypatch, capsys):
    monkeypatch.setenv("BERTJA_KFP_MULTI_USER", "maybe")
    rc = bertja(["submit", "--endpoint", "http://127.0.0.1:9", "--experiment", "x", "--profile", "kind"])
    assert rc == 2 and "BERTJA_KFP_MULTI_USER" in capsys.readouterr().err


@pytest.mark.parametrize("cron", ["0 3 1 * *", "0 0 3 1 * * *", ""])
def test_schedule_rejects_a_cron_without_six_fields(kfp_server, capsys, cron):
    endpoint, state = kfp_server
    rc = bertja(["schedule", "--endpoint", endpoint, "--experiment", "x", "--profile", "kind", "--cron", cron])
    assert rc == 2
    assert "6 fields" in capsys.readouterr().err
    assert not state.recurring_runs


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
