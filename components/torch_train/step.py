"""The pipeline's PyTorch training step: a plan's stages in a content-named, resumable directory.

Like the Model Garden step (``components.train.stages``), training survives its pod: on a gs://
pipeline root the training directory is named by the content of the inputs (token shards,
tokenizer files, plan, architecture, the run's overrides, batch split, process count), so a
retried task, a re-submitted run or the next scheduled run with the same inputs resumes from the
last checkpoint; a lease keeps two runs from training it at once. Elsewhere (kfp.local, kind's
MinIO) it trains inside the task's own output.

One process trains in-process; ``processes`` > 1 (a multi-GPU pod) starts ``torchrun
--nproc-per-node N`` on ``bertja train --engine torch`` (an argument list, no shell) and reads the
result the trainer leaves in storage.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys

from components import run_identity, storage
from components.errors import BadInput
from components.torch_train import configs
from components.train import stages as mg_stages
from components.train import status

TRAINING_DIR_VERSION = 1  # part of the key: bump when what a torch training dir holds changes meaning
TINY = "tiny"  # the plan's model family at its tiny shape (the local and kind profiles)


def resolve_architecture(plan_name: str, architecture: str = "") -> str:
    """``""``: the plan's own; ``"tiny"``: the plan's family at its tiny shape; else a name of ``ARCHITECTURES``."""
    plan = configs.plan(plan_name)
    if not architecture:
        return plan.architecture
    if architecture == TINY:
        return f"{configs.ARCHITECTURES[plan.architecture].family}-tiny"
    return configs.architecture(architecture).name


def per_stage(values):
    """A KFP list parameter as ``plan_stages`` takes it: empty = the plan's, one value = every stage's."""
    values = list(values or [])
    return None if not values else values[0] if len(values) == 1 else values


def _files_identity(directory: str, what: str) -> list[dict]:
    prefix = directory.rstrip("/") + "/"
    found = [{"name": uri[len(prefix):], **mg_stages.file_identity(uri)} for uri in sorted(storage.list_files(directory))]
    if not found:
        raise BadInput(f"{what} {directory}: holds no files")
    return found


def training_identity(*, variant: str, plan: str, architecture: str, shard_dirs: list[str], tokenizer_dir: str,
                      stages: tuple[configs.Stage, ...], seed: int, micro_batch_size: int, processes: int) -> dict:
    """Everything the trained weights depend on, as data (no URIs: they change per execution).
    Shards are sorted by content: their order carries no meaning to the loader's seeded shuffles."""
    data = sorted((_files_identity(d, "token shards") for d in shard_dirs),
                  key=lambda files: json.dumps(files, sort_keys=True))
    return {"version": TRAINING_DIR_VERSION, "trainer": "torch", "variant": variant, "plan": plan,
            "model_size": architecture,  # the readable part of the directory name (training_dir)
            "tokenizer": _files_identity(tokenizer_dir, "tokenizer"), "data": data,
            "stages": [dataclasses.asdict(s) for s in stages], "seed": int(seed),
            "micro_batch_size": int(micro_batch_size), "processes": int(processes)}


def trainer_options(stages: tuple[configs.Stage, ...], *, architecture: str, micro_batch_size: int, seed: int,
                    workers: int) -> dict:
    """``bertja train --engine torch`` options with the stages spelled out (so every rank, in this pod or
    on a TrainJob's nodes, trains exactly what the identity names)."""
    def per_stage(name):
        return ",".join(str(getattr(s, name)) for s in stages)

    return {"architecture": architecture, "seq-length": per_stage("seq_length"),
            "train-steps": per_stage("train_steps"), "global-batch-size": per_stage("global_batch_size"),
            "learning-rate": per_stage("learning_rate"), "warmup-steps": per_stage("warmup_steps"),
            "micro-batch-size": str(int(micro_batch_size)), "seed": str(int(seed)), "workers": str(int(workers))}


def torchrun_argv(processes: int, *, plan: str, architecture: str, model_dir: str, tokenizer_dir: str,
                  shard_dirs: list[str], stages: tuple[configs.Stage, ...], micro_batch_size: int, seed: int,
                  workers: int) -> list[str]:
    """``torchrun --standalone --nproc-per-node N`` on ``bertja train --engine torch``."""
    options = trainer_options(stages, architecture=architecture, micro_batch_size=micro_batch_size, seed=seed,
                              workers=workers)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(int(processes)),
            "-m", "pipelines.cli", "train", "--engine", "torch", "--plan", plan, "--data", ",".join(shard_dirs),
            "--model-dir", model_dir, "--tokenizer-dir", tokenizer_dir,
            *(arg for key, value in options.items() for arg in (f"--{key}", value))]


def _run_torchrun(argv: list[str], model_dir: str) -> dict:
    print("starting: " + " ".join(argv), file=sys.stderr, flush=True)
    done = subprocess.run(argv, stdout=sys.stderr, check=False)  # the ranks' logs go to the task's log
    state = status.read(model_dir)
    if done.returncode != 0 or not state["complete"]:
        why = (state["failed"] or {}).get("error") or f"exit status {done.returncode}"
        raise RuntimeError(f"torchrun ({argv[argv.index('--nproc-per-node') + 1]} processes) failed: {why}")
    return state["complete"]


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A checked training request: the resolved architecture and stages, and the directory it trains in."""

    plan: str
    architecture: str
    stages: tuple[configs.Stage, ...]
    root: str
    identity: dict | None

    def lease(self, ttl_s: float = mg_stages.DEFAULT_LEASE_TTL_S) -> mg_stages.DirLease:
        """The training dir's lease, owned by this run (a retried task of the same run takes it over)."""
        found = run_identity.find_run_id()
        return mg_stages.DirLease(self.root, found[0] if found else f"{socket.gethostname()}:{os.getpid()}",
                                  ttl_s=ttl_s)

    def outcome(self, result: dict) -> dict:
        """The trainer's result plus where it trained and the last stage's length and masking rate."""
        if not result.get("finished") or not result.get("hf_dir"):
            raise RuntimeError(f"training in {self.root} stopped before its last step")
        return {**result, "architecture": self.architecture, "training_dir": self.root,
                "training_key": mg_stages.training_key(self.identity) if self.identity else None,
                "seq_length": self.stages[-1].seq_length, "mask_rate": self.stages[-1].mask_rate}


def prepare(*, variant: str, plan: str, shard_dirs: list[str], tokenizer_dir: str, training_root: str,
            fallback_root: str, architecture: str = "", seq_lengths=None, train_steps=None, global_batch_size=None,
            learning_rate=None, micro_batch_size: int = 8, seed: int = 0, processes: int = 1) -> Prepared:
    """Checks the request and names its training dir: content-named under ``training_root`` (its
    identity written there), else ``fallback_root`` (the task's own output). ``processes``: the
    trainer's world size (it splits the batch)."""
    from components.tokenizer.files import read_tokenizer_info

    if isinstance(seq_lengths, int) or isinstance(train_steps, int):
        raise TypeError("seq_lengths and train_steps are lists (one value for all stages, or one per stage)")
    if int(processes) < 1:
        raise BadInput(f"processes={processes}: must be at least 1")
    if not shard_dirs:
        raise BadInput("train_torch: no token shards given")
    arch = resolve_architecture(plan, architecture)
    stages = configs.plan_stages(plan, seq_lengths=per_stage(seq_lengths), train_steps=per_stage(train_steps),
                                 global_batch_size=global_batch_size, learning_rate=learning_rate)
    for i, st in enumerate(stages, 1):
        configs.check_length(configs.architecture(arch), st.seq_length, f"plan {plan} stage {i}")
    read_tokenizer_info(tokenizer_dir)  # a missing or foreign tokenizer fails here, before any identity work
    root, identity = fallback_root, None
    if training_root:
        identity = training_identity(variant=variant, plan=plan, architecture=arch, shard_dirs=shard_dirs,
                                     tokenizer_dir=tokenizer_dir, stages=stages, seed=seed,
                                     micro_batch_size=micro_batch_size, processes=processes)
        root = mg_stages.training_dir(training_root, identity)
        storage.write_text(storage.join(root, mg_stages.INPUTS_FILE), json.dumps(identity, indent=2, sort_keys=True)
                           + "\n")
    print(f"training dir {root}" + (f" (key {mg_stages.training_key(identity)})" if identity else ""),
          file=sys.stderr, flush=True)
    return Prepared(plan=plan, architecture=arch, stages=stages, root=root, identity=identity)


def train_step(*, variant: str, plan: str, shard_dirs: list[str], tokenizer_dir: str, training_root: str,
               fallback_root: str, architecture: str = "", seq_lengths=None, train_steps=None,
               global_batch_size=None, learning_rate=None, micro_batch_size: int = 8, seed: int = 0,
               workers: int = 2, processes: int = 1,
               lease_ttl_s: float = mg_stages.DEFAULT_LEASE_TTL_S) -> dict:
    """Trains (or resumes, or finds done) the plan in its training directory; returns the trainer's
    result (``hf_dir``, per-stage metrics) plus ``training_dir``, ``training_key`` and ``architecture``.

    ``training_root`` '' trains under ``fallback_root`` (the task's own output)."""
    job = prepare(variant=variant, plan=plan, shard_dirs=shard_dirs, tokenizer_dir=tokenizer_dir,
                  training_root=training_root, fallback_root=fallback_root, architecture=architecture,
                  seq_lengths=seq_lengths, train_steps=train_steps, global_batch_size=global_batch_size,
                  learning_rate=learning_rate, micro_batch_size=micro_batch_size, seed=seed, processes=processes)
    common = dict(plan=plan, architecture=job.architecture, model_dir=job.root, tokenizer_dir=tokenizer_dir,
                  seed=seed, micro_batch_size=micro_batch_size, workers=workers)
    stages = job.stages
    with job.lease(lease_ttl_s):
        if int(processes) > 1:
            result = _run_torchrun(torchrun_argv(int(processes), shard_dirs=shard_dirs, stages=stages, **common),
                                   job.root)
        else:
            from components.torch_train.trainer import train

            result = train(data_uris=shard_dirs, seq_lengths=[s.seq_length for s in stages],
                           train_steps=[s.train_steps for s in stages],
                           global_batch_size=[s.global_batch_size for s in stages],
                           learning_rate=[s.learning_rate for s in stages],
                           warmup_steps=[s.warmup_steps for s in stages], **common)
    return job.outcome(result)


def record(result: dict, *, variant: str, plan: str, model, hf_model, metrics, loss_curve, fallback_root: str,
           extra: dict | None = None) -> None:
    """A train step's outputs, the same whichever way it trained: ``hf_model`` gets the trained Hugging
    Face directory (with its tokenizer), ``model`` the training record, ``metrics`` per-stage throughput
    and loss, ``loss_curve`` a series per stage. Arguments are KFP artifacts (uri, path, metadata)."""
    from components import artifacts, reports

    storage.copy_tree(result["hf_dir"], artifacts.data_root(hf_model.uri, hf_model.path))
    stages = [{k: v for k, v in s.items() if k != "history"} for s in result["stages"]]
    info = {"variant": variant, "plan": plan, "architecture": result["architecture"],
            "training_dir": result["training_dir"], **(extra or {})}
    artifacts.write_manifest(model.path, {**info, "final_model_dir": artifacts.reference(fallback_root,
                                                                                         result["hf_dir"]),
                                          "stages": stages})
    artifacts.write_manifest(hf_model.path, {"variant": variant, "plan": plan, "architecture": result["architecture"]})
    model.metadata.update({**info, "model_dir": result["hf_dir"]})
    hf_model.metadata.update(info)
    reports.log_metrics(metrics, {**({"trainjob_elapsed_s": result["elapsed_s"]} if "elapsed_s" in result else {}),
                                  **{f"stage{s['stage']}_{k}": s[k] for s in stages
                                     for k in ("loss", "steps_per_sec", "tokens_per_sec", "samples_per_sec", "tokens")
                                     if s.get(k) is not None}})
    with open(loss_curve.path, "w") as f:
        f.write(reports.loss_curve_html(f"Training loss ({variant}, {plan})",
                                        reports.stage_loss_series(result["stages"])))
