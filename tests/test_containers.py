"""The built images, run for real (``make images-offline`` first; .ci/run does both).

Every container runs as a pod would: ``--read-only --tmpfs /tmp --network none`` and the image's
own user. Marked ``docker``: README's ``pytest -q`` deselects them; without an engine they are
skipped with the reason (``-rs`` prints it), and a missing image fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from components import images

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"
POD = ["--read-only", "--tmpfs", "/tmp", "--network", "none"]
# What each image must import: its step's libraries (the data image must import neither TF nor torch).
IMPORTS = {"data": ["fugashi", "unidic_lite", "tokenizers", "kfp"],
           "train": ["tensorflow", "official.nlp", "tensorflow_text", "google.cloud.tpu_v2"],
           "train-tpu": ["tensorflow", "official.nlp", "tensorflow_text"],
           "convert": ["torch", "transformers", "safetensors"],
           "tpu": ["google.cloud.tpu_v2", "google.cloud.storage"],
           "train-gpu": ["torch", "transformers", "safetensors", "triton", "nvidia.cu13", "nvidia.cudnn", "nvidia.nccl"]}
ABSENT = {"data": ["tensorflow", "torch", "transformers"], "train": ["torch"], "train-tpu": ["torch"],
          "convert": ["tensorflow"], "tpu": ["tensorflow", "torch"], "train-gpu": ["tensorflow"]}
# The step command each image's pods run (its --help loads the step's module and libraries).
STEP = {"data": "corpus", "train": "train", "train-tpu": "train", "convert": "convert", "tpu": "tpu",
        "train-gpu": "train"}

pytestmark = pytest.mark.docker


def _engine_problem() -> str | None:
    """None when a Docker engine answers (starting one as root where it is installed)."""
    sys.path.insert(0, str(ROOT / "deploy"))
    import images_offline

    try:
        images_offline.ensure_engine(timeout=30, install=False)
    except images_offline.StepFailed as e:
        return str(e)
    return None


@pytest.fixture(scope="session")
def engine():
    problem = _engine_problem()
    if problem:
        pytest.skip(f"no Docker engine: {problem}")


@pytest.fixture(scope="session")
def built(engine):
    """``image(key)`` -> its reference, failing (not skipping) when it was never built; the GPU
    images, which ``make images-offline`` builds only when asked, are skipped with the reason."""
    def get(key: str) -> str:
        ref = images.image(key)
        if subprocess.run(["docker", "image", "inspect", ref], capture_output=True).returncode:
            if key in images.GPU_ONLY:
                pytest.skip(f"{ref} is not built: opt-in, `make image-gpu` (CUDA wheels, about 2.9 GB)")
            pytest.fail(f"{ref} is not built: run `make images-offline`")
        return ref
    return get


def run(ref: str, *command: str, options: list[str] = POD, check: bool = True, timeout: float = 300):
    result = subprocess.run(["docker", "run", "--rm", *options, ref, *command], capture_output=True,
                            text=True, timeout=timeout)
    if check and result.returncode:
        raise AssertionError(f"docker run {ref} {' '.join(command)} exited {result.returncode}:\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def inspect(ref: str) -> dict:
    return json.loads(subprocess.run(["docker", "image", "inspect", ref], check=True,
                                     capture_output=True, text=True).stdout)[0]


@pytest.mark.parametrize("key", list(images.IMAGES))
def test_runs_as_uid_10001_with_the_release_label(built, key):
    ref = built(key)
    config = inspect(ref)["Config"]
    assert config["User"] == "10001:10001"
    assert config["Labels"]["org.opencontainers.image.version"] == images.version()
    assert config["Labels"]["org.opencontainers.image.title"] == images.IMAGES[key][0]
    assert run(ref, "id", "-u").stdout.strip() == "10001"


@pytest.mark.parametrize("key", list(images.IMAGES))
def test_help_and_its_step_load_read_only_without_network(built, key):
    ref = built(key)
    assert "commands:" in run(ref, "bertja", "--help").stdout
    assert "usage: bertja " + STEP[key] in run(ref, "bertja", STEP[key], "--help").stdout
    probe = ("import importlib.util, json, sys; "
             "print(json.dumps({m: importlib.util.find_spec(m) is not None for m in sys.argv[1:]}))")
    found = json.loads(run(ref, "python", "-c", probe, *IMPORTS[key], *ABSENT[key]).stdout)
    assert {m: found[m] for m in IMPORTS[key]} == dict.fromkeys(IMPORTS[key], True), found
    assert {m: found[m] for m in ABSENT[key]} == dict.fromkeys(ABSENT[key], False), found
    # Importing them for real (TF, torch and transformers write caches under HOME=/tmp at import).
    tpu_env = ["-e", "TPU_SKIP_MDS_QUERY=1"] if key == "train-tpu" else []  # see the train-tpu test
    run(ref, "timeout", "240", "python", "-c", "; ".join(f"import {m}" for m in IMPORTS[key]), options=POD + tpu_env)


@pytest.mark.parametrize("key", list(images.IMAGES))
def test_no_pip_compilers_or_caches_in_the_final_stage(built, key):
    ref = built(key)
    # As root, so nothing is hidden by permissions.
    script = r"""
for tool in pip pip3 gcc cc g++ c++ make; do command -v "$tool" && echo "found $tool"; done
python -m pip --version >/dev/null 2>&1 && echo "found python -m pip"
find / -xdev -name .cache -print 2>/dev/null | sed 's/^/found cache /'
for dir in /tmp /var/cache/apt/archives /var/lib/apt/lists; do
  ls -A "$dir" 2>/dev/null | grep -v -x -e partial -e lock | sed "s|^|found in $dir: |"
done
true
"""
    result = run(ref, "sh", "-c", script, options=["--user", "0", "--network", "none"])
    assert "found" not in result.stdout, result.stdout


def test_data_image_runs_its_step_byte_identical_to_the_recipe(built, tmp_path):
    """``bertja corpus wiki`` in the data image, read-only root, no network, input mounted read-only."""
    ref = built("data")
    options = POD + ["--volume", f"{DATA}:/in:ro"]
    out = run(ref, "sh", "-c", "bertja corpus wiki /in/wiki_parity.json.gz /tmp/corpus.txt --workers 2 >&2 "
              "&& cat /tmp/corpus.txt", options=options).stdout
    assert out.encode() == (DATA / "wiki_parity.expected.txt").read_bytes()


def test_train_tpu_image_imports_tensorflow_tpu(built):
    """train-tpu carries tensorflow-tpu (not the CPU wheel). Without a TPU, ``import tensorflow``
    blocks in libtpu's start-up, which asks the VM's metadata server for the TPU's shape; with
    ``TPU_SKIP_MDS_QUERY=1`` it imports (a TPU VM answers those queries, so the image sets nothing)."""
    ref = built("train-tpu")
    probe = ("import importlib.metadata as m, tensorflow as tf; "
             "print(tf.__version__, m.version('tensorflow-tpu'), m.version('libtpu'), "
             "[d.metadata['Name'] for d in m.distributions() if d.metadata['Name'] == 'tensorflow'])")
    result = run(ref, "timeout", "120", "python", "-c", probe, options=POD + ["-e", "TPU_SKIP_MDS_QUERY=1"])
    assert result.stdout.split()[-4:] == ["2.20.0", "2.20.0", "0.0.14", "[]"], result.stdout
    # Without that setting (and no metadata server: no network), the import does not come back.
    blocked = run(ref, "timeout", "30", "python", "-c", "import tensorflow", check=False)
    assert blocked.returncode == 124, blocked.stderr[-2000:]
    assert "Failed to get TPU metadata" in blocked.stderr


def test_image_sizes(built):
    """Reported (``-rP`` or the images-offline table); the data image stays small: no TF or torch."""
    sizes = {key: inspect(built(key))["Size"] for key in images.default_builds()}
    print("\n".join(f"{images.image(k)}: {s / 1e6:.0f} MB" for k, s in sizes.items()))
    assert sizes["data"] < sizes["train"] / 2 and sizes["data"] < sizes["convert"] / 2


# Even smaller than the local profile (as tests/test_pipeline_local.py), so CI stays quick; same DAG.
TINY = {"stage1_train_steps": 12, "stage2_train_steps": 8, "stage2_max_seq_length": 128,
        "stage2_max_predictions": 19, "stage1_dupe_factor": 1, "stage2_dupe_factor": 1}


def _run_local_in_docker(out: Path) -> tuple[float, str]:
    params = [a for k, v in TINY.items() for a in ("--param", f"{k}={v}")]
    result = subprocess.run([str(Path(sys.executable).parent / "bertja"), "run", "--local", "--runner", "docker",
                             "--output", str(out), *params], capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    (seconds,) = [float(line.split()[-1].rstrip("s")) for line in result.stdout.splitlines()
                  if line.startswith("pipeline finished in")]
    # kfp.local's own lines ("Found image ...") are in the executor log file the run names first
    (log,) = [line.split(": ", 1)[1] for line in result.stdout.splitlines() if line.startswith("executor logs: ")]
    return seconds, result.stdout + Path(log).read_text(encoding="utf-8")


def test_the_local_pipeline_runs_in_the_images_and_the_rerun_is_cached(built, tmp_path):
    """``bertja run --local --runner docker``: every step in its image as a pod runs it; the model it
    publishes loads with transformers on the host and answers fill-mask; the rerun is a cache hit."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from pipelines import commands

    refs = [built(key) for key in images.cluster_images()]
    out = tmp_path / "run"
    first_s, first = _run_local_in_docker(out)
    # Each step ran in a container of the image the compiled pipeline names (kfp.local says which).
    used = {ref for ref in refs if f"Found image {ref!r}" in first}
    assert used >= {images.image("data"), images.image("train"), images.image("convert")}, used
    (model_dir,) = [line.split(": ", 1)[1] for line in first.splitlines() if line.startswith("Hugging Face model")]
    assert model_dir.startswith(str(out / "models"))
    # Written by uid 10001 inside the containers, read here.
    assert os.stat(os.path.join(model_dir, "config.json")).st_uid == 10001
    assert type(AutoTokenizer.from_pretrained(model_dir)).__name__ == "BertJapaneseTokenizer"
    AutoModelForMaskedLM.from_pretrained(model_dir)
    answers = commands.fill_mask(model_dir, top_k=3)
    assert len(answers) == 3 and all(a["token"] for a in answers)

    second_s, second = _run_local_in_docker(out)
    assert "Hugging Face model" in second and model_dir in second
    print(f"docker runner: first run {first_s:.1f} s, cached rerun {second_s:.1f} s")
    assert second_s < 0.2 * first_s, (first_s, second_s)


def test_tpu_vms_run_the_trainer_image_two_stages_preempted_and_resumed(built, gcs, tmp_path):
    """The TPU path with real containers: the fake TPU server's VMs run the real startup script,
    whose ``docker run`` starts the CPU ``train`` image (standing in for ``train-tpu``, which needs a
    TPU) against the GCS emulator (TensorFlow reaches it through tests/googleapis_front.py). Stage 2
    is preempted after its first checkpoint; the new VM skips stage 1 and resumes stage 2."""
    import threading
    import uuid

    from components import storage
    from components.tpu import orchestrate
    from components.train import synthetic, trainer
    from fake_tpu_server import FakeTpuServer
    from googleapis_front import GoogleApisFront

    standin = built("train")
    local = tmp_path / "local"
    (local / "s1").mkdir(parents=True), (local / "s2").mkdir()
    synthetic.write_tokenizer_dir(str(local / "tok"), vocab_size=120, subword_tokenizer_type="character")
    synthetic.write_records(str(local / "s1" / "data_0.tfrecord.gz"), count=32, seq_length=128,
                            max_predictions=19, vocab_size=120)
    synthetic.write_records(str(local / "s2" / "data_0.tfrecord.gz"), count=8, seq_length=512,
                            max_predictions=76, vocab_size=120, seed=7)
    root = f"{gcs}/tpu-{uuid.uuid4().hex[:8]}"
    for path in local.rglob("*"):
        if path.is_file():
            storage.write_bytes(f"{root}/{path.relative_to(local)}", path.read_bytes())
    stage1, stage2 = f"{root}/model/stage1", f"{root}/model/stage2"
    stages = [{"stage": 1, "config": "tiny", "data": f"{root}/s1/*.tfrecord.gz", "model_dir": stage1, "train_steps": 10},
              {"stage": 2, "config": "tiny", "data": f"{root}/s2/*.tfrecord.gz", "model_dir": stage2,
               "init_checkpoint": stage1, "train_steps": 120,
               "overrides": ["trainer.checkpoint_interval=10", "trainer.steps_per_loop=10"]}]
    node = "bertja-containers"
    node_path = f"projects/test-project/locations/us-central1-a/nodes/{node}"
    journal = tmp_path / "journal.jsonl"
    with GoogleApisFront(os.environ["STORAGE_EMULATOR_HOST"]) as front:
        container_env = {**front.env(ca_path="/googleapis-front/ca.pem"),
                         "STORAGE_EMULATOR_HOST": os.environ["STORAGE_EMULATOR_HOST"],
                         "GOOGLE_CLOUD_PROJECT": "test-project"}
        docker_args = ["-v", f"{front.dir}:/googleapis-front:ro"]
        for k, v in container_env.items():
            docker_args += ["-e", f"{k}={v}"]
        server = FakeTpuServer(vm_env={"FAKE_TPU_DOCKER_IMAGE": standin, "FAKE_TPU_JOURNAL": str(journal),
                                       "FAKE_TPU_DOCKER_ARGS": json.dumps(docker_args)}).start()
        outcome: dict = {}

        def train():
            try:
                outcome["result"] = orchestrate.train_on_tpu(
                    project="test-project", zone="us-central1-a", node_name=node, stages=stages,
                    tokenizer_dir=f"{root}/tok", trainer_image=images.image("train-tpu"), spot=True,
                    poll_s=0.5, heartbeat_timeout_s=600, startup_timeout_s=600, price_per_hour=1.0,
                    api_endpoint=server.endpoint)
            except BaseException as e:  # re-raised below, in the test's thread
                outcome["error"] = e

        thread = threading.Thread(target=train)
        thread.start()
        try:
            preempted_at = None
            while thread.is_alive() and preempted_at is None:
                # Once a checkpoint is committed (TensorFlow's ``checkpoint`` state file names it).
                step = trainer.checkpoint_step(trainer.latest_checkpoint(stage2))
                if step:
                    preempted_at = step
                    server.preempt(node_path)
                time.sleep(0.2)
            thread.join(timeout=1800)
        finally:
            server.stop()
    if "error" in outcome:
        raise outcome["error"]
    result = outcome["result"]
    starts = [json.loads(line) for line in journal.read_text().splitlines()]
    assert preempted_at, "stage 2 finished before it could be preempted"
    assert [s["argv"][s["argv"].index("--stage") + 1] for s in starts] == ["1", "2", "2"]
    assert all(s["image"] == images.image("train-tpu") and s["standin"] == standin for s in starts)
    assert all(s["argv"][s["argv"].index("--strategy") + 1] == "one_device" for s in starts)
    assert result["recreations"] == 1 and result["vm_count"] == 2
    (interruption,) = result["interruptions"]
    assert interruption["stage"] == 2 and interruption["reason"] == "node PREEMPTED"
    # The trainer in the new VM's container resumed from the checkpoint the preempted one committed.
    resumed = result["stages"][1]["resumed_from"]
    assert resumed == f"{stage2}/ckpt-{preempted_at}"
    assert trainer.checkpoint_step(resumed) == interruption["resume_from_step"] == preempted_at
    assert [s["step"] for s in result["stages"]] == [10, 120]
    assert storage.exists(f"{stage2}/ckpt-120.index")
    assert server.node_state(node_path) is None
    # The real trainer ran: a Model Garden checkpoint TensorFlow reads back from the emulator.
    assert storage.exists(f"{stage2}/status/complete.json")


def test_docker_runner_names_the_images_it_lacks(engine, tmp_path, monkeypatch):
    from components.errors import BadInput
    from pipelines import commands

    monkeypatch.setenv("BERTJA_IMAGE_TAG", "0.0.0-never-built")
    with pytest.raises(BadInput, match=r"images not built here: .*bertja-data:0\.0\.0-never-built.*make images-offline"):
        commands.docker_runner(str(tmp_path))
