"""``bertja tpu create|status|delete|train|name|gc``: Cloud TPU VMs by hand or from a script.

Every subcommand prints one JSON object on stdout; progress goes to stderr.
``status`` exits 1 when the node does not exist; ``delete`` of a node that is gone succeeds.
"""

from __future__ import annotations

import argparse
import json
import sys

from components.errors import BadInput
from components.tpu import control, janitor, orchestrate


def _add_target(p: argparse.ArgumentParser, name_required: bool = True) -> None:
    p.add_argument("--project", required=True, help="Google Cloud project ID")
    p.add_argument("--zone", required=True, help="TPU zone, e.g. us-central1-a")
    p.add_argument("--name", required=name_required, help="TPU node name (also the queued resource's)")
    p.add_argument("--api-endpoint", default=None,
                   help="TPU API endpoint (private endpoint, or http://HOST:PORT for an emulator: "
                        "anonymous credentials); default: Google's, with Application Default Credentials")


def _add_node_shape(p: argparse.ArgumentParser) -> None:
    p.add_argument("--accelerator-type", default=control.DEFAULT_ACCELERATOR, help="e.g. v3-8, v4-8, v5litepod-8")
    p.add_argument("--runtime-version", default=None,
                   help="TPU VM runtime (default: the base runtime for the accelerator generation)")
    p.add_argument("--spot", action="store_true", help="spot VM (cheaper, can be preempted)")
    p.add_argument("--preemptible", action="store_true", help="legacy preemptible VM")
    p.add_argument("--queued", action="store_true", help="create through a queued resource")
    p.add_argument("--queue-timeout-hours", type=float, default=control.DEFAULT_QUEUE_TIMEOUT_S / 3600,
                   help="with --queued: how long to wait in the queue for capacity (hours)")
    p.add_argument("--network", default=None)
    p.add_argument("--subnetwork", default=None)
    p.add_argument("--no-external-ips", dest="external_ips", action="store_false",
                   help="no external IP (needs Cloud NAT or Private Google Access for image pulls)")
    p.add_argument("--service-account", default=None, help="service account email for the VM")
    p.add_argument("--labels", default=None, help="k=v,k2=v2")
    p.add_argument("--tags", default=None, help="network tags, comma-separated")


def _spec(args) -> control.NodeSpec:
    if not args.queue_timeout_hours > 0:
        raise BadInput(f"--queue-timeout-hours {args.queue_timeout_hours!r}: must be a positive number of hours")
    return control.NodeSpec(accelerator_type=args.accelerator_type, runtime_version=args.runtime_version,
                            spot=args.spot, preemptible=args.preemptible, network=args.network,
                            subnetwork=args.subnetwork, external_ips=args.external_ips,
                            service_account=args.service_account, labels=control.parse_labels(args.labels),
                            tags=control.parse_tags(args.tags)).checked()


def _stages(text: str) -> list[dict]:
    if text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise BadInput(f"--stages {text}: cannot read ({e.strerror})") from e
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadInput(f"--stages: not JSON ({e})") from e
    if not isinstance(value, list):
        raise BadInput("--stages: expected a JSON list of stage objects")
    return value


def main(argv: list[str], prog: str = "bertja tpu") -> int:
    """Runs a subcommand; a TPU API that fails or does not answer in time ends in one line, exit 1."""
    from google.api_core.exceptions import GoogleAPICallError

    try:
        return _main(argv, prog)
    except (control.TpuError, GoogleAPICallError) as e:
        print(f"{prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1


def _main(argv: list[str], prog: str) -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Create, inspect and delete Cloud TPU VMs; "
                                     "train on one with preemption handling.")
    sub = parser.add_subparsers(dest="action", required=True)

    p = sub.add_parser("create", help="create a TPU VM (or queued resource) and wait until READY")
    _add_target(p)
    _add_node_shape(p)
    p.add_argument("--timeout", type=float, default=orchestrate.DEFAULT_READY_TIMEOUT_S,
                   help="seconds for the create call and READY (API retries included; the queue has its own)")

    p = sub.add_parser("status", help="print a node's state")
    _add_target(p)
    p.add_argument("--timeout", type=float, default=control.DEFAULT_CALL_TIMEOUT_S,
                   help="seconds, API retries included")

    p = sub.add_parser("delete", help="delete a node and its queued resource; gone already is success")
    _add_target(p)
    p.add_argument("--timeout", type=float, default=900.0, help="seconds, API retries included")

    p = sub.add_parser("train", help="train stages on a TPU VM, surviving preemption; deletes the VM at the end")
    _add_target(p)
    _add_node_shape(p)
    p.add_argument("--stages", required=True,
                   help="JSON list (or @FILE) of {stage, config, data, model_dir[, init_checkpoint, "
                        "train_steps, overrides]}")
    p.add_argument("--tokenizer-dir", required=True, help="gs:// tokenizer directory")
    p.add_argument("--trainer-image", default=None, help="pinned trainer image (default: this release's)")
    p.add_argument("--train-steps", type=int, default=None)
    p.add_argument("--max-recreations", type=int, default=3)
    p.add_argument("--heartbeat-timeout", type=float, default=orchestrate.DEFAULT_HEARTBEAT_TIMEOUT_S)
    p.add_argument("--startup-timeout", type=float, default=orchestrate.DEFAULT_STARTUP_TIMEOUT_S)
    p.add_argument("--poll", type=float, default=orchestrate.DEFAULT_POLL_S, help="seconds between checks")
    p.add_argument("--price-per-hour", type=float, default=orchestrate.DEFAULT_PRICE_PER_HOUR,
                   help="USD per node-hour for the cost estimate")

    p = sub.add_parser("name", help="print the deterministic node name for a pipeline run id")
    p.add_argument("--run-id", required=True)
    p.add_argument("--suffix", default="")

    p = sub.add_parser("gc", help="delete TPU VMs and queued resources whose KFP run has finished or is gone")
    _add_target(p, name_required=False)
    p.add_argument("--kfp-endpoint", required=True, help="KFP API, e.g. http://ml-pipeline.kubeflow:8888")
    p.add_argument("--multi-user", action="store_true",
                   help="multi-user KFP: send the pod's projected service-account token")
    p.add_argument("--min-age", type=float, default=janitor.DEFAULT_MIN_AGE_S,
                   help="seconds; younger resources are kept (their run may be starting)")
    p.add_argument("--dry-run", action="store_true", help="decide and log, delete nothing")
    p.add_argument("--poll", type=float, default=5.0, help="seconds between checks while deleting")

    args = parser.parse_args(argv)
    if args.action == "gc":
        if args.name:
            raise BadInput("gc: --name is not used (gc looks at every labelled node in the zone)")
        summary = janitor.collect(project=args.project, zone=args.zone, kfp_endpoint=args.kfp_endpoint,
                                  dry_run=args.dry_run, min_age_s=args.min_age, multi_user=args.multi_user,
                                  api_endpoint=args.api_endpoint, poll_s=args.poll)
        print(json.dumps(summary, indent=2, sort_keys=True))
        return 1 if summary["errors"] else 0
    if args.action == "name":
        out = {"node_name": control.tpu_node_name(args.run_id, args.suffix)}
    elif args.action == "train":
        out = orchestrate.train_on_tpu(
            project=args.project, zone=args.zone, node_name=args.name, stages=_stages(args.stages),
            tokenizer_dir=args.tokenizer_dir, accelerator_type=args.accelerator_type,
            runtime_version=args.runtime_version, spot=args.spot, preemptible=args.preemptible,
            queued=args.queued, network=args.network, subnetwork=args.subnetwork, external_ips=args.external_ips,
            service_account=args.service_account, labels=args.labels, tags=args.tags,
            trainer_image=args.trainer_image, train_steps=args.train_steps,
            max_recreations=args.max_recreations, heartbeat_timeout_s=args.heartbeat_timeout,
            startup_timeout_s=args.startup_timeout, poll_s=args.poll,
            price_per_hour=args.price_per_hour, api_endpoint=args.api_endpoint,
            queue_timeout_s=args.queue_timeout_hours * 3600)
    elif args.action == "delete":
        out = orchestrate.release_tpu(project=args.project, zone=args.zone, node_name=args.name,
                                      api_endpoint=args.api_endpoint, timeout_s=args.timeout)
    else:
        control.check_node_name(args.name)
        spec = _spec(args) if args.action == "create" else None
        tpu = control.TpuControl(args.project, args.zone, api_endpoint=args.api_endpoint,
                                 call_timeout_s=args.timeout)
        if args.action == "create" and args.queued:
            node = tpu.create_queued_resource(args.name, spec, timeout_s=args.timeout,
                                              queue_timeout_s=args.queue_timeout_hours * 3600)
        elif args.action == "create":
            node = tpu.create_node(args.name, spec, timeout_s=args.timeout)
        else:
            node = tpu.get_node(args.name)
            if node is None:
                print(json.dumps({"name": tpu.node_path(args.name), "state": "NOT_FOUND"}))
                return 1
        out = control.describe(node)
    print(json.dumps(out, indent=2, sort_keys=True))
    return 0
