"""The built images, run for real (``make images-offline`` first; .ci/run does both).

Every container runs as a pod would: ``--read-only --tmpfs /tmp --network none`` and the image's
own user. Marked ``docker``: README's ``pytest -q`` deselects them; without an engine they are
skipped with the reason (``-rs`` prints it), and a missing image fails."""

from __future__ import annotations

import json
import subprocess
import sys
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
           "tpu": ["google.cloud.tpu_v2", "google.cloud.storage"]}
ABSENT = {"data": ["tensorflow", "torch", "transformers"], "train": ["torch"], "train-tpu": ["torch"],
          "convert": ["tensorflow"], "tpu": ["tensorflow", "torch"]}
# The step command each image's pods run (its --help loads the step's module and libraries).
STEP = {"data": "corpus", "train": "train", "train-tpu": "train", "convert": "convert", "tpu": "tpu"}

pytestmark = pytest.mark.docker


def _engine_problem() -> str | None:
    """None when a Docker engine answers (starting one as root where it is installed)."""
    sys.path.insert(0, str(ROOT / "deploy"))
    import images_offline

    try:
        images_offline.ensure_engine(timeout=30)
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
    """``image(key)`` -> its reference, failing (not skipping) when it was never built."""
    def get(key: str) -> str:
        ref = images.image(key)
        if subprocess.run(["docker", "image", "inspect", ref], capture_output=True).returncode:
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
    run(ref, "python", "-c", "; ".join(f"import {m}" for m in IMPORTS[key]))


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
    """train-tpu carries tensorflow-tpu (not the CPU wheel) and imports it without a TPU."""
    ref = built("train-tpu")
    probe = ("import importlib.metadata as m, tensorflow as tf; "
             "print(tf.__version__, m.version('tensorflow-tpu'), m.version('libtpu')); "
             "import sys; sys.exit(0 if not [d for d in m.distributions() if d.metadata['Name'] == 'tensorflow'] else 3)")
    result = run(ref, "python", "-c", probe)
    version, tpu_version, libtpu = result.stdout.split()[-3:]
    assert version == tpu_version == "2.20.0" and libtpu == "0.0.14"


def test_image_sizes(built):
    """Reported (``-rP`` or the images-offline table); the data image stays small: no TF or torch."""
    sizes = {key: inspect(built(key))["Size"] for key in images.IMAGES}
    print("\n".join(f"{images.image(k)}: {s / 1e6:.0f} MB" for k, s in sizes.items()))
    assert sizes["data"] < sizes["train"] / 2 and sizes["data"] < sizes["convert"] / 2
