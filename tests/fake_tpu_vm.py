"""What runs "inside" a fake TPU VM: ``docker`` and ``gcloud`` stubs and a simulated trainer.

The fake TPU server runs a node's real startup script with these stubs on PATH:

- ``gcloud storage ls URI`` / ``gcloud storage cp SRC DST`` go to ``components.storage`` (the GCS
  emulator, or local paths); ``gcloud auth configure-docker`` does nothing.
- ``docker pull`` succeeds (or fails with ``FAKE_DOCKER_PULL_FAIL=1``); ``docker run ... IMAGE
  ARGS`` parses docker's options like docker does and, for ``--entrypoint bertja IMAGE train ...``,
  runs the simulated trainer with exactly those arguments.

The simulated trainer honours the trainer's CLI contract (``bertja train --config --stage --data
--model-dir --tokenizer-dir [--init-checkpoint] [--override K=V ...] --strategy tpu --tpu local
[--train-steps]``):
it resumes from the latest ``ckpt-N`` in the model dir, writes heartbeats, ``ckpt-N`` files and a
``checkpoint`` state file every few steps and ``complete.json`` at the end. Knobs (env):
``FAKE_TRAIN_STEP_S``, ``FAKE_TRAIN_CKPT_EVERY``, ``FAKE_TRAIN_FAIL=STAGE:STEP`` (exit 1 with a
traceback on stdout), ``FAKE_TRAIN_PREEMPT=STAGE:STEP`` (ask the fake server to preempt this VM,
once), ``FAKE_TRAIN_HANG=STAGE:STEP`` (stop heartbeating, once). Every trainer start is appended
to ``FAKE_TPU_JOURNAL`` (JSON lines) for the tests to check.

With ``FAKE_TPU_DOCKER_IMAGE=REF`` the ``docker`` stub drives the real engine instead (see
``real_docker``): ``docker pull`` finds REF locally (no registry here) and ``docker run`` starts
REF, the CPU ``train`` image standing in for ``train-tpu`` (which needs a TPU), with the script's
own options (less ``--privileged``) plus ``FAKE_TPU_DOCKER_ARGS`` (a JSON list: the emulator's
environment, mounts) and ``--strategy one_device`` for ``--strategy tpu --tpu local``. The
container dies with its VM.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request

from components import storage
from components.train import status, trainer

DOCKER_VALUE_OPTIONS = {"-e", "--env", "-v", "--volume", "--entrypoint", "--name", "--shm-size",
                        "-w", "--workdir", "-u", "--user", "--network", "--net"}


def write_stubs(bin_dir: str) -> str:
    """``docker`` and ``gcloud`` executables in ``bin_dir`` that run this module; returns bin_dir."""
    os.makedirs(bin_dir, exist_ok=True)
    for tool in ("docker", "gcloud"):
        path = os.path.join(bin_dir, tool)
        with open(path, "w") as f:
            f.write(f'#!/bin/bash\nexec "{sys.executable}" "{os.path.abspath(__file__)}" {tool} "$@"\n')
        os.chmod(path, 0o755)
    return bin_dir


def _journal(entry: dict) -> None:
    path = os.environ.get("FAKE_TPU_JOURNAL")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(entry) + "\n")


def _once(trigger: str, stage: int, step: int) -> bool:
    """True the first time (across VMs) a STAGE:STEP trigger from the env fires."""
    spec = os.environ.get(trigger)
    if not spec or spec != f"{stage}:{step}":
        return False
    marker = os.path.join(os.environ.get("FAKE_TPU_STATE", "/tmp"), f"{trigger}-{stage}-{step}")
    if os.path.exists(marker):
        return False
    open(marker, "w").close()
    return True


def latest_step(model_dir: str) -> int:
    return trainer.checkpoint_step(trainer.latest_checkpoint(model_dir))


def fake_train(argv: list[str], docker_argv: list[str], image: str, env: dict) -> int:
    parser = argparse.ArgumentParser(prog="bertja train")
    for flag in ("--config", "--stage", "--data", "--model-dir", "--tokenizer-dir", "--strategy", "--tpu"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--init-checkpoint")
    parser.add_argument("--override", action="append", default=[])
    parser.add_argument("--train-steps", type=int, default=40)
    args = parser.parse_args(argv)
    if (args.strategy, args.tpu) != ("tpu", "local"):
        print(f"fake trainer: expected --strategy tpu --tpu local, got {args.strategy} {args.tpu}")
        return 2
    stage, model_dir = int(args.stage), args.model_dir
    start = latest_step(model_dir)
    _journal({"node": os.environ.get("FAKE_TPU_NODE"), "image": image, "argv": argv,
              "docker_argv": docker_argv, "env": env, "stage": stage, "start_step": start})
    if not all(storage.glob(part) for part in args.data.split(",")):
        print(f"fake trainer: --data {args.data} matches nothing")
        return 1
    step_s = float(os.environ.get("FAKE_TRAIN_STEP_S", "0.05"))
    ckpt_every = int(os.environ.get("FAKE_TRAIN_CKPT_EVERY", "10"))
    t0, loss = time.monotonic(), None
    print(f"fake trainer: stage {stage} resuming at step {start} of {args.train_steps}", flush=True)
    for step in range(start + 1, args.train_steps + 1):
        time.sleep(step_s)
        loss = 10.0 / (1.0 + 0.1 * step)
        rate = (step - start) / max(time.monotonic() - t0, 1e-6)
        if os.environ.get("FAKE_TRAIN_FAIL") == f"{stage}:{step}":
            print("Traceback (most recent call last):\n  File \"train.py\", line 1, in <module>\n"
                  "tensorflow.python.framework.errors_impl.ResourceExhaustedError: fake TPU HBM OOM",
                  flush=True)
            return 1
        if _once("FAKE_TRAIN_PREEMPT", stage, step):
            urllib.request.urlopen(urllib.request.Request(
                f"{os.environ['FAKE_TPU_ADMIN']}/fake/preempt/{os.environ['FAKE_TPU_NODE']}", method="POST"))
            time.sleep(3600)  # killed with the VM
        if _once("FAKE_TRAIN_HANG", stage, step):
            print("fake trainer: hanging", flush=True)
            time.sleep(3600)
        if step % ckpt_every == 0 or step == args.train_steps:
            for suffix in ("index", "data-00000-of-00001"):
                storage.write_bytes(storage.join(model_dir, f"ckpt-{step}.{suffix}"), f"step {step}".encode())
            storage.write_text(storage.join(model_dir, "checkpoint"),
                               f'model_checkpoint_path: "ckpt-{step}"\nall_model_checkpoint_paths: "ckpt-{step}"\n')
        if step % 2 == 0 or step == args.train_steps:
            status.write_heartbeat(model_dir, stage=stage, step=step, train_steps=args.train_steps,
                                   loss=loss, steps_per_sec=rate, examples_per_sec=rate * 256)
            print(f"step {step} loss {loss:.4f}", flush=True)
    status.write_complete(model_dir, {"stage": stage, "step": args.train_steps, "loss": loss,
                                      "train_steps": args.train_steps, "resumed_from": start})
    return 0


def real_docker(argv: list[str], standin: str) -> int:
    """The startup script's ``docker pull`` / ``docker run`` on the real engine (see the docstring)."""
    import shlex
    import subprocess
    import uuid

    # The engine's client: the first ``docker`` on PATH that is not this stub.
    docker_cli = next(path for d in os.environ["PATH"].split(os.pathsep)
                      if os.access(path := os.path.join(d, "docker"), os.X_OK)
                      and b"fake_tpu_vm" not in open(path, "rb").read(4096))
    if argv[:1] == ["pull"]:
        found = subprocess.run([docker_cli, "image", "inspect", standin], capture_output=True).returncode == 0
        print(f"docker stub: no registry here; {argv[1]} stands in as {standin}: {'found' if found else 'MISSING'}")
        return 0 if found else 1
    if argv[:1] != ["run"]:
        print(f"docker stub: unsupported {argv}")
        return 2
    opts, i = argv[1:], 0
    while i < len(opts) and opts[i].startswith("-"):
        i += 2 if opts[i] in DOCKER_VALUE_OPTIONS else 1
    image, command = opts[i], opts[i + 1:]
    if "--tpu" in command:  # no TPU here: the same trainer on the CPU
        k = command.index("--tpu")
        del command[k:k + 2]
    command = ["one_device" if a == "tpu" and command[j - 1] == "--strategy" else a for j, a in enumerate(command)]
    # --privileged opens the TPU devices on a real VM; there are none here, and this machine's engine
    # may not grant it (runc: "unable to apply caps").
    options = [o for o in opts[:i] if o != "--privileged"]
    name = f"fake-tpu-vm-{uuid.uuid4().hex[:10]}"
    docker_argv = [docker_cli, "run", "--name", name, *options, *json.loads(os.environ.get("FAKE_TPU_DOCKER_ARGS", "[]")),
                   standin, *command]
    _journal({"node": os.environ.get("FAKE_TPU_NODE"), "image": image, "standin": standin, "argv": command,
              "docker_argv": docker_argv})
    # A preempted VM is SIGKILLed with its whole process group, docker's client included; the
    # container would live on, so a watcher outside the group removes it when the VM is gone.
    vm = os.getpgid(0)
    subprocess.Popen(["sh", "-c", f"while kill -0 {vm} 2>/dev/null; do sleep 0.5; done; "
                      f"{shlex.quote(docker_cli)} rm -f {shlex.quote(name)} >/dev/null 2>&1"], start_new_session=True)
    return subprocess.run(docker_argv).returncode


def docker(argv: list[str]) -> int:
    if os.environ.get("FAKE_TPU_DOCKER_IMAGE"):
        return real_docker(argv, os.environ["FAKE_TPU_DOCKER_IMAGE"])
    if argv[:1] == ["pull"]:
        if os.environ.get("FAKE_DOCKER_PULL_FAIL") == "1":
            print(f"Error response from daemon: manifest for {argv[1]} not found")
            return 1
        return 0
    if argv[:1] != ["run"]:
        print(f"docker stub: unsupported {argv}")
        return 2
    opts, i, env, entrypoint = argv[1:], 0, {}, None
    while i < len(opts) and opts[i].startswith("-"):
        opt = opts[i]
        if opt in DOCKER_VALUE_OPTIONS:
            value, i = opts[i + 1], i + 2
        elif "=" in opt:
            opt, value = opt.split("=", 1)
            i += 1
        else:
            value, i = None, i + 1
        if opt in ("-e", "--env"):
            k, _, v = value.partition("=")
            env[k] = v
        if opt == "--entrypoint":
            entrypoint = value
    image, command = opts[i], opts[i + 1:]
    if entrypoint != "bertja" or command[:1] != ["train"]:
        print(f"docker stub: expected --entrypoint bertja IMAGE train ..., got {entrypoint} {command}")
        return 2
    return fake_train(command[1:], argv, image, env)


def gcloud(argv: list[str]) -> int:
    if argv[:2] == ["storage", "ls"]:
        return 0 if storage.exists(argv[2]) else 1
    if argv[:2] == ["storage", "cp"]:
        storage.copy(argv[2], argv[3])
        return 0
    if argv[:2] == ["auth", "configure-docker"]:
        return 0
    print(f"gcloud stub: unsupported {argv}")
    return 2


if __name__ == "__main__":
    tool, rest = sys.argv[1], sys.argv[2:]
    sys.exit({"docker": docker, "gcloud": gcloud}[tool](rest))
