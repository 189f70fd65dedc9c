"""``bertja compile | run | submit | schedule``: the pipeline's own commands.

compile: profile defaults (+ ``--param``) -> validated -> pipeline YAML.
run --local: the whole DAG under ``kfp.local`` (SubprocessRunner or DockerRunner, caching on),
  ending with where the Hugging Face model is and a fill-mask answer from it.
submit / schedule: thin conveniences over ``kfp.Client`` (the same as
  ``kfp run create`` / ``kfp recurring-run create``); schedule replaces a recurring
  run of the same name, never its runs, so re-applying it (a Helm upgrade) is idempotent.
"""

from __future__ import annotations

import argparse
import builtins
import dataclasses
import json
import os
import re
import sys
import tempfile
import time

from components.errors import BadInput
from pipelines import parameters, profiles, recipes

MULTI_COMMAND = True
DEFAULT_LOCAL_OUTPUT = "runs/local"
FILL_MASK_QUERY = "日本の首都は[MASK]です。"


# ---------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------

def parse_params(pairs: list[str]) -> dict:
    """``key=value`` strings -> typed values (names and types from parameters.py)."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise BadInput(f"--param {pair!r}: expected key=value")
        out[key.strip()] = parameters.coerce(key.strip(), value)
    return out


def pipeline_values(profile_name: str, overrides: dict, for_run: bool = True,
                    recipe: str = recipes.DEFAULT) -> dict:
    """Parameter defaults <- recipe <- profile <- overrides (``recipes.combine``), validated."""
    profile = profiles.get(profile_name)
    combined = recipes.combine(recipe, profile.parameters, overrides)
    return parameters.validate(parameters.merged(combined), for_run=for_run)


def compile_pipeline(output: str, profile_name: str = "gcp", overrides: dict | None = None,
                     pipeline_root: str | None = None, recipe: str = recipes.DEFAULT) -> dict:
    """Compiles the DAG for a profile and recipe; their values become the YAML's defaults."""
    from kfp import compiler

    from pipelines.pretraining import build

    profile = profiles.get(profile_name)
    values = pipeline_values(profile_name, overrides or {}, for_run=False, recipe=recipe)
    root = pipeline_root or profile.pipeline_root
    if profile.needs_gcs_root and not (root or "").startswith("gs://"):
        raise BadInput(f"profile {profile_name!r} needs --pipeline-root gs://BUCKET/PATH (artifacts and "
                       "TFRecords live there; the TPU VM reads them in place)")
    if root:
        parameters.check_pipeline_root(root)
        profile = dataclasses.replace(profile, pipeline_root=root)
    changed = {k: v for k, v in values.items() if v != getattr(parameters.PipelineParameters(), k)}
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    tmp = f"{output}.tmp.yaml"
    compiler.Compiler().compile(build(profile), tmp, pipeline_parameters=changed)
    os.replace(tmp, output)
    return {"output": output, "profile": profile_name, "recipe": recipe, "pipeline_root": root,
            "parameters": values}


def recipes_text() -> str:
    """``bertja recipes``: name, trainer, seed, one-line description and departures of each recipe."""
    lines = []
    for row in recipes.table():
        default = " (default)" if row["name"] == recipes.DEFAULT else ""
        lines += [f"{row['name']}{default}  [trainer: {row['trainer']}]", f"  {row['description']}",
                  f"  seed: {row['seed']}", *(f"  differs: {d}" for d in row["departures"]), ""]
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------
# Local run (kfp.local)
# ---------------------------------------------------------------------------

class PipelineFailed(RuntimeError):
    """A task of the local run failed; its log tail has been shown and the full logs are in a file."""


def run_local(output_dir: str = DEFAULT_LOCAL_OUTPUT, profile_name: str = "local", overrides: dict | None = None,
              enable_caching: bool = True, runner: str = "subprocess", recipe: str = recipes.DEFAULT,
              out=None) -> dict:
    """Runs the whole DAG with kfp.local: ``subprocess`` in this environment, or ``docker``, each
    step in the image the compiled pipeline names, confined as a pod is (see ``docker_runner``).

    ``out`` (default stdout) gets the log file's path and one line per task as it finishes;
    kfp.local's own output goes to ``OUTPUT/logs/run-*.log`` (``pipelines.local_run``).
    Models are published to ``OUTPUT/models/`` (unless ``release_uri`` is given),
    so a run served entirely from the cache still points at them.
    """
    from kfp import local

    from pipelines import local_run
    from pipelines.pretraining import build

    out = out if out is not None else sys.stdout
    output_dir = os.path.abspath(output_dir)
    overrides = dict(overrides or {})
    overrides.setdefault("release_uri", os.path.join(output_dir, "models"))
    values = pipeline_values(profile_name, overrides, recipe=recipe)
    # A container sees only the pipeline root (kfp.local mounts nothing else), so under docker the
    # root is OUTPUT itself: the published models land in OUTPUT/models/ either way.
    root = output_dir if runner == "docker" else os.path.join(output_dir, "pipeline-root")
    os.makedirs(root, exist_ok=True)
    task_runner = docker_runner(root) if runner == "docker" else local.SubprocessRunner(use_venv=False)
    local.init(runner=task_runner, pipeline_root=root,
               enable_caching=enable_caching, cache_root=os.path.join(output_dir, "cache"))
    log_path = os.path.join(output_dir, "logs", f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log")
    print(f"executor logs: {log_path}", file=out, flush=True)
    start = time.monotonic()
    saved_print = builtins.print
    records: list = []
    try:
        with local_run.capture(log_path, records,
                               on_task=lambda r: print(local_run.task_line(r), file=out, flush=True)):
            build(profiles.get(profile_name))(**values)
    except Exception as e:
        failed = [r for r in records if not r.ok]
        if not failed:  # not a task's failure (bad input, a bug): its own message or traceback
            print(f"the run stopped before a task failed; executor logs: {log_path}", file=out, flush=True)
            raise
        for r in failed:
            print(f"\n--- {r.name}: last {local_run.TAIL_LINES} log lines ---", file=out)
            print("\n".join(r.tail()), file=out)
        raise PipelineFailed(f"task {', '.join(r.name for r in failed)} failed; full executor logs: {log_path}") from e
    finally:
        # kfp.local indents task logs by swapping builtins.print; with tasks in threads it can leave
        # the swap behind, which would indent everything printed after the run.
        builtins.print = saved_print
    seconds = time.monotonic() - start
    return {"seconds": seconds, "models": published_models(values), "output_dir": output_dir, "log": log_path,
            "tasks": records}


POD_UID = 10001  # the images' USER, which the chart's pods run as (runAsNonRoot)


def docker_runner(pipeline_root: str):
    """``kfp.local.DockerRunner`` running each step as a pod would: uid 10001, read-only root,
    a writable /tmp, no network; the pipeline root (the one mount) writable by that uid."""
    from kfp import local

    from components import images

    try:
        import docker
    except ImportError as e:
        raise BadInput("--runner docker needs the docker package: pip install 'bert-japanese-pipelines[docker]'") from e
    try:
        client = docker.from_env()
        present = {tag for image in client.images.list() for tag in image.tags}
    except docker.errors.DockerException as e:
        raise BadInput(f"--runner docker: no Docker engine answers ({e})") from e
    needed = {images.image(key) for key in images.cluster_images()}
    missing = sorted(needed - present)
    if missing:
        raise BadInput(f"--runner docker: images not built here: {', '.join(missing)} (make images-offline)")
    for directory, subdirs, _files in os.walk(pipeline_root):
        for path in [directory] + [os.path.join(directory, d) for d in subdirs]:
            if os.geteuid() == 0:
                os.chown(path, POD_UID, POD_UID)
            elif os.stat(path).st_uid != POD_UID:
                os.chmod(path, 0o777)
    return local.DockerRunner(user=f"{POD_UID}:{POD_UID}", read_only=True, tmpfs={"/tmp": ""},
                              network_mode="none")


def published_models(values: dict) -> list[dict]:
    """The model directories this run's parameters publish to (see ``publish_model``), whichever
    trainer made them."""
    from components import storage
    from components.publish.naming import releases_of

    root = storage.local_path(values["release_uri"])
    names = os.listdir(root) if os.path.isdir(root) else []
    found = []
    date = values["wikipedia_dump_date"]
    for variant in values["variants"]:
        releases = releases_of(names, values["model_size"], variant)
        if date != "latest":  # an explicit dump; "latest" is the newest one published
            releases = [r for r in releases if r.endswith(f"-{date}")]
        if not releases:
            raise BadInput(f"no published {variant} model under {root} "
                           "(deleted while the cache was kept? run again with --no-cache)")
        found.append({"variant": variant, "model_dir": os.path.join(root, releases[-1])})
    return found


def fill_mask(model_dir: str, text: str = FILL_MASK_QUERY, top_k: int = 5) -> list[dict]:
    """Asks the converted model to fill ``[MASK]`` (what a user tries first)."""
    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    # The pretraining checkpoint's NSP head is unused by a masked-LM model; that is expected, not news.
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    fill = pipeline("fill-mask", model=model_dir, tokenizer=model_dir, device="cpu")
    return [{"token": r["token_str"], "score": round(float(r["score"]), 4)} for r in fill(text, top_k=top_k)]


def cached_fill_mask(model_dir: str, cache_dir: str, text: str = FILL_MASK_QUERY, top_k: int = 5) -> tuple[list, bool]:
    """``fill_mask``, answered from ``cache_dir`` when the model's files are the ones it was asked
    of (names, sizes, modification times; a release is written once and renamed into place), so a
    run served from the cache does not pay ~3 s of torch and transformers to repeat the answer.
    Returns (answers, whether they came from the cache)."""
    import hashlib
    from importlib.metadata import version

    transformers_version = version("transformers")  # from the installed metadata: importing it costs 0.7 s

    files = sorted((name, os.stat(os.path.join(model_dir, name))) for name in os.listdir(model_dir))
    key = hashlib.sha256(json.dumps([os.path.abspath(model_dir), text, top_k, transformers_version,
                                     [(n, st.st_size, st.st_mtime_ns) for n, st in files]]).encode()).hexdigest()
    path = os.path.join(cache_dir, f"{key}.json")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f), True
    answers = fill_mask(model_dir, text, top_k)
    os.makedirs(cache_dir, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(answers, f, ensure_ascii=False)
    os.replace(tmp, path)
    return answers, False


def run_summary(result: dict, fill_mask_cache: str) -> str:
    """The end of ``bertja run --local``: time, tasks ran/cached, each model with a fill-mask
    answer, the run's metrics table."""
    from pipelines import local_run

    tasks = result["tasks"]
    ran = sum(r.ran for r in tasks)
    lines = [f"\npipeline finished in {result['seconds']:.1f}s",
             f"{len(tasks)} tasks: {ran} ran, {len(tasks) - ran} cached; full logs in {result['log']}"]
    for m in result["models"]:
        lines.append(f"Hugging Face model ({m['variant']}): {m['model_dir']}")
        answers, cached = cached_fill_mask(m["model_dir"], fill_mask_cache)
        lines.append(f"fill-mask {FILL_MASK_QUERY!r}: " + ", ".join(f"{r['token']} ({r['score']:.3f})" for r in answers)
                     + (" (cached: same model files)" if cached else ""))
    table = local_run.metrics_table(tasks)
    if table:
        lines += ["", table]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# KFP API (submit, schedule)
# ---------------------------------------------------------------------------

MULTI_USER_ENV = "BERTJA_KFP_MULTI_USER"
# The first KFP backend release whose DeleteRecurringRun honours ``propagation_policy``
# (kubeflow/pipelines#12574); older ones ignore the query parameter and cascade.
ORPHAN_DELETE_SINCE = (2, 16)


def _client(endpoint: str, namespace: str | None = None, multi_user: bool = False):
    """``kfp.Client``; multi-user KFP gets the pod's projected service-account token.

    The token (audience ``pipelines.kubeflow.org``) is read from ``$KF_PIPELINES_SA_TOKEN_PATH`` or
    KFP's default path on every request, so the kubelet's rotation is picked up.
    """
    import kfp
    from kfp import client as kfp_client

    credentials = None
    if multi_user:
        path = os.environ.get(kfp_client.KF_PIPELINES_SA_TOKEN_ENV) or kfp_client.KF_PIPELINES_SA_TOKEN_PATH
        if not os.path.isfile(path):
            raise BadInput(f"--multi-user: no service-account token at {path} (project one with audience "
                           f"pipelines.kubeflow.org there, or set {kfp_client.KF_PIPELINES_SA_TOKEN_ENV})")
        credentials = kfp_client.ServiceAccountTokenVolumeCredentials(path)
    return kfp.Client(host=endpoint, namespace=namespace, credentials=credentials)


def _env_flag(name: str) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if value not in ("", "0", "false", "no", "1", "true", "yes"):
        raise BadInput(f"${name}={value!r}: expected true or false")
    return value in ("1", "true", "yes")


def backend_release(client) -> tuple[int, int] | None:
    """The KFP backend's (major, minor) from healthz ``tag_name``; None when it does not say
    (a custom build reports ``unknown``). kfp-server-api's healthz model drops ``tag_name``."""
    response = client._healthz_api.healthz_service_get_healthz(_preload_content=False)
    try:
        tag = json.loads(response.data or b"{}").get("tag_name") or ""
    except ValueError:
        return None
    m = re.match(r"^v?(\d+)\.(\d+)", tag)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _package(args) -> tuple[str, dict]:
    """The pipeline file to send and the run's arguments (validated against the profile).

    Overrides travel as run arguments, so the UI shows them on the run.
    """
    overrides = parse_params(args.param)
    values = pipeline_values(args.profile, overrides, recipe=args.recipe or recipes.DEFAULT)
    if args.pipeline_file:
        if not os.path.isfile(args.pipeline_file):
            raise BadInput(f"--pipeline-file {args.pipeline_file}: no such file")
        if not args.recipe:
            return args.pipeline_file, overrides
        # The file's defaults may be another recipe's: send this one's values (and the profile's) as arguments.
        combined = recipes.combine(args.recipe, profiles.get(args.profile).parameters, overrides)
        return args.pipeline_file, {k: values[k] for k in combined}
    path = os.path.join(tempfile.mkdtemp(prefix="bertja-"), "pipeline.yaml")
    compile_pipeline(path, args.profile, pipeline_root=args.pipeline_root, recipe=args.recipe or recipes.DEFAULT)
    return path, overrides


def check_cron(cron: str) -> str:
    """KFP cron expressions have six fields (seconds first): ``0 0 3 1 * *``."""
    fields = cron.split()
    if len(fields) != 6:
        raise BadInput(f"--cron {cron!r}: KFP cron expressions have 6 fields (sec min hour day month weekday), "
                       f"got {len(fields)}")
    return cron


def submit(args) -> dict:
    package, arguments = _package(args)
    client = _client(args.endpoint, args.namespace, args.multi_user)
    run = client.create_run_from_pipeline_package(
        package, arguments=arguments, run_name=args.run_name or f"bert-japanese-{time.strftime('%Y%m%d-%H%M%S')}",
        experiment_name=args.experiment, enable_caching=True, service_account=args.service_account)
    return {"run_id": run.run_id, "experiment": args.experiment}


def _recurring_runs(client, experiment_id: str, name: str) -> list:
    found, token = [], ""
    while True:
        page = client.list_recurring_runs(experiment_id=experiment_id, page_size=100, page_token=token)
        found += [r for r in page.recurring_runs or [] if r.display_name == name]
        token = page.next_page_token
        if not token:
            return found


def schedule(args) -> dict:
    """Creates the recurring run and retires older ones of the same name without touching their runs.

    KFP has no update for recurring runs, and deleting one deletes its ScheduledWorkflow, whose
    Workflows (running ones too: their exit handler never runs) Kubernetes then garbage-collects.
    So: older schedules are disabled first (old and new never both start a run; a failed create
    enables them again), then deleted with ``propagation_policy=ORPHAN``, which backends >= 2.16
    honour. An older (or unnamed) backend would ignore it and cascade: there they stay disabled,
    and are reported, for deletion by hand once their runs are done.
    """
    check_cron(args.cron)
    package, arguments = _package(args)
    client = _client(args.endpoint, args.namespace, args.multi_user)
    release = backend_release(client)
    experiment_id = client.create_experiment(args.experiment, namespace=args.namespace).experiment_id
    older = _recurring_runs(client, experiment_id, args.name)
    disabled = []
    try:
        for r in older:
            if r.status != "DISABLED":
                client.disable_recurring_run(r.recurring_run_id)
                disabled.append(r.recurring_run_id)
        rr = client.create_recurring_run(
            experiment_id=experiment_id, job_name=args.name, cron_expression=args.cron,
            max_concurrency=args.max_concurrency, params=arguments, pipeline_package_path=package,
            enable_caching=True, no_catchup=True, service_account=args.service_account)
    except Exception:
        for rid in disabled:
            client.enable_recurring_run(rid)
        raise
    replaced, kept = [], []
    for r in older:
        if release is not None and release >= ORPHAN_DELETE_SINCE:
            # kfp.Client.delete_recurring_run has no propagation policy; its generated API does.
            client._recurring_run_api.recurring_run_service_delete_recurring_run(
                r.recurring_run_id, propagation_policy="ORPHAN")
            replaced.append(r.recurring_run_id)
        else:
            kept.append(r.recurring_run_id)
    if kept:
        version = ".".join(map(str, release)) if release else "unknown"
        print(f"{args.name}: older recurring run(s) {', '.join(kept)} disabled, not deleted: the KFP backend "
              f"(release {version}) may not honour propagation_policy=ORPHAN (2.16+), and deleting would "
              "delete their runs; delete them by hand when those runs are done", file=sys.stderr)
    return {"recurring_run_id": rr.recurring_run_id, "name": args.name, "cron": args.cron,
            "replaced": replaced, "disabled_not_deleted": kept}


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------

def _add_recipe(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", help=f"which seed system to build (default {recipes.DEFAULT}; 'bertja recipes' "
                                    "lists them); its values become the pipeline's defaults")


def _add_pipeline_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="gcp", choices=list(profiles.PROFILES))
    _add_recipe(p)
    p.add_argument("--pipeline-file", help="a compiled pipeline YAML (default: compile the profile now)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="pipeline parameter")
    p.add_argument("--pipeline-root", help="override the profile's pipeline root (gs://BUCKET/PATH)")
    p.add_argument("--endpoint", required=True, help="KFP API endpoint, e.g. http://localhost:8080")
    p.add_argument("--namespace", help="KFP namespace (multi-user installs)")
    p.add_argument("--experiment", required=True)
    p.add_argument("--service-account", help="Kubernetes service account the run's pods use (Workload Identity)")
    p.add_argument("--multi-user", action="store_true", default=_env_flag(MULTI_USER_ENV),
                   help="multi-user KFP: authenticate with the pod's projected service-account token "
                        f"(${MULTI_USER_ENV}=true does the same)")


def main(argv: list[str], prog: str, command: str) -> int:
    p = argparse.ArgumentParser(prog=prog)
    if command == "recipes":
        p.description = "The seed systems this pipeline reproduces (pipelines/recipes.py)."
        p.parse_args(argv)
        print(recipes_text())
        return 0
    if command == "compile":
        p.add_argument("output", help="pipeline YAML to write")
        p.add_argument("--profile", default="gcp", choices=list(profiles.PROFILES))
        _add_recipe(p)
        p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
        p.add_argument("--pipeline-root", help="override the profile's pipeline root")
        a = p.parse_args(argv)
        result = compile_pipeline(a.output, a.profile, parse_params(a.param), pipeline_root=a.pipeline_root,
                                  recipe=a.recipe or recipes.DEFAULT)
        print(f"compiled {result['output']} (profile {a.profile}, recipe {result['recipe']}, "
              f"pipeline root {result['pipeline_root'] or 'default'})")
        return 0
    if command == "run":
        p.add_argument("--local", action="store_true", required=True,
                       help="run with kfp.local on this machine (to run on a cluster use 'bertja submit')")
        p.add_argument("--output", default=DEFAULT_LOCAL_OUTPUT, help="where runs, artifacts and the cache go")
        p.add_argument("--profile", default="local", choices=list(profiles.PROFILES))
        _add_recipe(p)
        p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
        p.add_argument("--no-cache", action="store_true")
        p.add_argument("--runner", choices=["subprocess", "docker"], default="subprocess",
                       help="docker: each step in its image as a pod runs it (build them first: make images-offline)")
        a = p.parse_args(argv)
        try:
            result = run_local(a.output, a.profile, parse_params(a.param), enable_caching=not a.no_cache,
                               runner=a.runner, recipe=a.recipe or recipes.DEFAULT)
        except PipelineFailed as e:
            print(f"{prog}: {e}", file=sys.stderr)
            return 1
        print(run_summary(result, os.path.join(result["output_dir"], "cache", "fill-mask")))
        return 0
    _add_pipeline_source(p)
    try:
        return _api_command(p, argv, command)
    except Exception as e:  # the KFP API's errors: say what the server said, without a traceback
        if type(e).__name__ != "ApiException":
            raise
        print(f"{prog}: the KFP API at the endpoint answered {e.status} {e.reason}: {(e.body or '').strip()[:500]}",
              file=sys.stderr)
        return 1


def _api_command(p: argparse.ArgumentParser, argv: list[str], command: str) -> int:
    if command == "submit":
        p.add_argument("--run-name")
        a = p.parse_args(argv)
        print(json.dumps(submit(a), indent=2))
        return 0
    if command == "schedule":
        p.add_argument("--cron", required=True, help='6-field cron, e.g. "0 0 3 1 * *" (03:00 on the 1st)')
        p.add_argument("--name", default="bert-japanese-retrain", help="recurring run name (replaced if it exists)")
        p.add_argument("--max-concurrency", type=int, default=1)
        a = p.parse_args(argv)
        print(json.dumps(schedule(a), indent=2))
        return 0
    print(f"unknown command {command}", file=sys.stderr)
    return 2
