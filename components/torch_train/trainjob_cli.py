"""``bertja trainjob name|manifest|validate|create|follow|delete|train|gc``: the PyTorch trainer on
many machines through Kubeflow Trainer TrainJobs, by hand or from a script.

Every subcommand prints one JSON object on stdout; progress goes to stderr. ``delete`` of a job
that is gone succeeds; a failed job exits 1 with its condition's message.
"""

from __future__ import annotations

import argparse
import json
import sys

from components.errors import BadInput
from components.torch_train import trainjob


def _pairs(flag: str):
    def parse(text: str) -> tuple[str, str]:
        if "=" not in text:
            raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
        key, value = text.split("=", 1)
        return key.strip(), value.strip()
    parse.__name__ = flag
    return parse


def _toleration(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: not JSON ({e})") from e
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a JSON object like "
                                         '{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}')
    return value


def _add_cluster(p: argparse.ArgumentParser) -> None:
    p.add_argument("--namespace", default=None, help="default: the pod's namespace, or the kubeconfig context's")
    p.add_argument("--api-server", default=None,
                   help="http://HOST:PORT without credentials (kubectl proxy, a test stand-in); default: the "
                        "in-cluster config in a pod, else the kubeconfig")
    p.add_argument("--kubeconfig", default=None)
    p.add_argument("--context", default=None)
    p.add_argument("--poll", type=float, default=trainjob.DEFAULT_POLL_S, help="seconds between checks")


def _add_name(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", default=None, help="TrainJob name (default: derived from --run-id and --variant)")
    p.add_argument("--run-id", default=None, help="pipeline run id the name and labels are derived from")
    p.add_argument("--variant", default="", help="model variant (part of the name and a label)")


def _add_spec(p: argparse.ArgumentParser) -> None:
    _add_name(p)
    p.add_argument("--image", required=True, help="trainer image with torch and bertja (the GPU image)")
    p.add_argument("--runtime", default=trainjob.DEFAULT_RUNTIME, help="TrainingRuntime or ClusterTrainingRuntime")
    p.add_argument("--num-nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=0, help=f"{trainjob.GPU_RESOURCE} per node")
    p.add_argument("--cpu", default="", help="CPU per node (quantity)")
    p.add_argument("--memory", default="", help="memory per node (quantity, e.g. 64Gi)")
    p.add_argument("--label", type=_pairs("--label"), action="append", default=[], help="KEY=VALUE (repeat)")
    p.add_argument("--env", type=_pairs("--env"), action="append", default=[], help="NAME=VALUE (repeat)")
    p.add_argument("--node-selector", type=_pairs("--node-selector"), action="append", default=[],
                   help="KEY=VALUE (repeat)")
    p.add_argument("--toleration", type=_toleration, action="append", default=[], help="JSON object (repeat)")
    p.add_argument("--service-account", default="")
    p.add_argument("--active-deadline", type=int, default=0, help="seconds the job may run (0: no limit)")
    p.add_argument("--backend-label", default="local", help="kfp | vertex | local: where the run id comes from")
    p.add_argument("--plan", required=True, help="the trainer's plan (bertja train --engine torch --plan)")
    p.add_argument("--data", required=True, help="token-shards directories, comma-separated (gs://)")
    p.add_argument("--model-dir", required=True, help="shared output directory (gs://): checkpoints, status/, hf/")
    p.add_argument("--tokenizer-dir", required=True)
    p.add_argument("--trainer-option", type=_pairs("--trainer-option"), action="append", default=[],
                   help="another trainer flag as NAME=VALUE, e.g. seq-length=1024 (repeat)")


def _name(args) -> str:
    if args.name:
        return trainjob.check_name(args.name)
    if not args.run_id:
        raise BadInput("--name or --run-id is required")
    return trainjob.trainjob_name(args.run_id, args.variant)


def _spec(args) -> trainjob.JobSpec:
    labels = dict(args.label)
    if args.run_id:
        labels.update(trainjob.run_labels(args.run_id, args.variant, args.backend_label))
    command = trainjob.trainer_command(plan=args.plan, data=[d for d in args.data.split(",") if d.strip()],
                                       model_dir=args.model_dir, tokenizer_dir=args.tokenizer_dir,
                                       options=dict(args.trainer_option))
    return trainjob.JobSpec(name=_name(args), image=args.image, command=tuple(command), runtime=args.runtime,
                            num_nodes=args.num_nodes, gpus_per_node=args.gpus_per_node, cpu=args.cpu,
                            memory=args.memory, labels=labels, env=dict(args.env),
                            node_selector=dict(args.node_selector), tolerations=tuple(args.toleration),
                            service_account=args.service_account, active_deadline_s=args.active_deadline).checked()


def _control(args) -> trainjob.TrainJobControl:
    return trainjob.TrainJobControl(args.namespace, api_server=args.api_server, kubeconfig=args.kubeconfig,
                                    context=args.context, poll_s=args.poll)


def main(argv: list[str], prog: str = "bertja trainjob") -> int:
    """Runs a subcommand; a cluster or job failure ends in one line and exit 1."""
    try:
        return _main(argv, prog)
    except trainjob.TrainJobError as e:
        print(f"{prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1


def _main(argv: list[str], prog: str) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("name", help="print the deterministic TrainJob name for a run id and variant")
    p.add_argument("--run-id", required=True)
    p.add_argument("--variant", default="")
    p = sub.add_parser("manifest", help="print the checked TrainJob manifest (nothing is sent)")
    _add_spec(p)
    p = sub.add_parser("validate", help="check a TrainJob manifest file (JSON or YAML) against the models")
    p.add_argument("file")
    for action, what in (("create", "create the TrainJob (adopts a running one of that name)"),
                         ("train", "create, follow to the end, and delete the TrainJob whatever happens")):
        p = sub.add_parser(action, help=what)
        _add_cluster(p)
        _add_spec(p)
        if action == "train":
            p.add_argument("--timeout", type=float, default=trainjob.DEFAULT_TIMEOUT_S, help="seconds")
    p = sub.add_parser("follow", help="follow a TrainJob until Complete (exit 0) or Failed (exit 1)")
    _add_cluster(p)
    _add_name(p)
    p.add_argument("--model-dir", default=None, help="read the trainer's heartbeat there for progress lines")
    p.add_argument("--timeout", type=float, default=trainjob.DEFAULT_TIMEOUT_S, help="seconds")
    p = sub.add_parser("delete", help="delete a TrainJob and wait until it is gone; gone already is success")
    _add_cluster(p)
    _add_name(p)
    p.add_argument("--timeout", type=float, default=trainjob.DEFAULT_DELETE_TIMEOUT_S, help="seconds")
    p = sub.add_parser("gc", help="delete our TrainJobs whose KFP run has finished or is gone")
    _add_cluster(p)
    p.add_argument("--kfp-endpoint", required=True, help="KFP API, e.g. http://ml-pipeline.kubeflow:8888")
    p.add_argument("--multi-user", action="store_true", help="send the pod's projected service-account token")
    p.add_argument("--min-age", type=float, default=None, help="seconds; younger jobs are kept (default 3600)")
    p.add_argument("--dry-run", action="store_true", help="decide and log, delete nothing")
    args = parser.parse_args(argv)

    if args.action == "name":
        out = {"name": trainjob.trainjob_name(args.run_id, args.variant)}
    elif args.action == "manifest":
        out = trainjob.validate_manifest(trainjob.build_manifest(_spec(args)))
    elif args.action == "validate":
        out = {"file": args.file, "valid": bool(trainjob.validate_manifest(_read_manifest(args.file), args.file))}
    elif args.action == "create":
        control = _control(args)
        spec = _spec(args)
        control.create(spec)
        out = {"name": spec.name, "namespace": control.namespace}
    elif args.action == "train":
        out = trainjob.train_on_trainjob(_control(args), _spec(args), model_dir=args.model_dir,
                                         timeout_s=args.timeout)
    elif args.action == "follow":
        out = _control(args).follow(_name(args), timeout_s=args.timeout, model_dir=args.model_dir)
    elif args.action == "delete":
        control = _control(args)
        name = _name(args)
        out = {"name": name, "namespace": control.namespace, "deleted": control.delete(name, timeout_s=args.timeout)}
    else:
        out = trainjob.collect(_control(args), kfp_endpoint=args.kfp_endpoint, dry_run=args.dry_run,
                               min_age_s=args.min_age, multi_user=args.multi_user)
        print(json.dumps(out, indent=2, sort_keys=True))
        return 1 if out["errors"] else 0
    print(json.dumps(out, indent=2, sort_keys=True))
    return 0


def _read_manifest(path: str) -> dict:
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            value = yaml.safe_load(f)
    except OSError as e:
        raise BadInput(f"{path}: cannot read ({e.strerror})") from e
    except yaml.YAMLError as e:
        raise BadInput(f"{path}: not JSON or YAML ({' '.join(str(e).split())})") from e
    if not isinstance(value, dict):
        raise BadInput(f"{path}: expected one TrainJob object")
    return value
