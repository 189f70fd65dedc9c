"""Runtime Dockerfiles: hadolint-clean, pinned, non-root, labelled with the package version, each
installing this package with only the extras it runs, from a build context with nothing secret.
(No Docker here: what a build would do is read from the Dockerfiles themselves.)"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import sysconfig
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from components import images

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
CONSTRAINTS = ROOT / "images" / "constraints.txt"
GPU_CONSTRAINTS = ROOT / "images" / "constraints-gpu.txt"
# What each image runs, hence the extras it installs (besides the core dependencies). The train
# image also controls TPU VMs: the pipeline's train step runs the CPU trainer or the TPU controller.
# train-tpu is the same trainer with TensorFlow's TPU build, so the same extras.
# train-gpu is the PyTorch trainer for GPU pods; on CPU that trainer runs in convert (same packages).
# tpu is the control image: TPU VMs and Kubeflow Trainer TrainJobs (no torch: the nodes run train-gpu).
EXTRAS = {"data": {"pipeline"}, "train": {"pipeline", "train", "tpu"}, "train-tpu": {"pipeline", "train", "tpu"},
          "convert": {"pipeline", "convert"}, "tpu": {"pipeline", "tpu", "trainjob"},
          "train-gpu": {"pipeline", "train-torch"}}
# The file each image's pip --constraint reads.
CONSTRAINTS_OF = dict.fromkeys(EXTRAS, "constraints.txt") | {"train-gpu": "constraints-gpu.txt"}
HADOLINT = Path(sysconfig.get_path("scripts")) / "hadolint"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in dockerfile.read_text(encoding="utf-8").splitlines():
        if not current and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        current += raw.rstrip("\\").strip() + " "
        if not raw.endswith("\\"):
            lines.append(current.strip())
            current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def stages(dockerfile: Path) -> list[list[tuple[str, str]]]:
    """Instructions per stage (the global ARGs before the first FROM are in ``global_args``)."""
    result: list[list[tuple[str, str]]] = []
    for instruction in instructions(dockerfile):
        if instruction[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def global_args(dockerfile: Path) -> dict[str, str]:
    """``ARG NAME=default`` lines before the first FROM (what FROM lines may use)."""
    args = {}
    for instruction, value in instructions(dockerfile):
        if instruction == "FROM":
            break
        assert instruction == "ARG", f"{instruction} before the first FROM"
        name, _, default = value.partition("=")
        args[name] = default
    return args


def dockerfile_of(key: str) -> Path:
    return ROOT / images.dockerfile(key)


def constraint_pins(path: Path = CONSTRAINTS) -> dict[str, str]:
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version and " " not in line, f"not an exact pin: {line!r}"
            pins[canonicalize_name(name)] = version
    return pins


def test_every_image_has_its_dockerfile():
    listed = subprocess.run([sys.executable, "-m", "components.images"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.split("\n")
    rows = [line.split() for line in listed if line]
    assert [row[0] for row in rows] == list(images.IMAGES) == list(EXTRAS)
    for key, ref, dockerfile in rows:
        assert ref == images.image(key) and (ROOT / dockerfile).is_file()
        assert (ROOT / f"{dockerfile}.dockerignore").is_file()


@pytest.mark.parametrize("key", list(images.IMAGES))
def test_hadolint_passes(key):
    result = subprocess.run(
        [str(HADOLINT), "--no-color", "--failure-threshold", "style", "--disable-ignore-pragma",
         "--require-label", "org.opencontainers.image.version:text", str(dockerfile_of(key))],
        capture_output=True, text=True)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_only_the_tpu_trainer_swaps_tensorflow_for_its_pinned_tpu_build():
    """tensorflow-tpu ships the same ``tensorflow`` module as the CPU wheel: the TPU image removes the
    one the extras' requirements pulled in before installing it (never both), pinned to the version
    pyproject pins, with a pinned libtpu, and the package itself, installed last, brings no
    dependency back; every other image keeps the CPU wheel."""
    (tensorflow,) = [r for r in PYPROJECT["project"]["optional-dependencies"]["train"] if r.startswith("tensorflow==")]
    for key in images.IMAGES:
        build, _final = stages(dockerfile_of(key))
        runs = " ".join(a for i, a in build if i == "RUN")
        if key != "train-tpu":
            assert "tensorflow-tpu" not in runs and "libtpu" not in runs
            continue
        steps = [step.strip() for i, a in build if i == "RUN" for step in a.split("&&")]
        requirements_step = next(i for i, s in enumerate(steps) if "--requirement requirements.txt" in s)
        uninstall = next(i for i, s in enumerate(steps) if " uninstall " in s)
        (tpu_step,) = [i for i, s in enumerate(steps) if "tensorflow-tpu" in s]
        (package_step,) = [i for i, s in enumerate(steps) if '".[' in s]
        assert requirements_step < uninstall < tpu_step < package_step
        assert "--no-deps" in shlex.split(steps[package_step])
        assert shlex.split(steps[uninstall])[-1] == "tensorflow"
        tpu_install = shlex.split(steps[tpu_step])
        assert f"tensorflow-tpu=={tensorflow.split('==')[1]}" in tpu_install
        assert [a for a in tpu_install if re.fullmatch(r"libtpu==\d+(\.\d+)+", a)]
        assert "--constraint" in tpu_install


def test_hadolint_can_fail(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    assert subprocess.run([str(HADOLINT), "--no-color", str(bad)], capture_output=True).returncode != 0


@pytest.mark.parametrize("key", list(images.IMAGES))
def test_two_pinned_stages_and_a_clean_non_root_final_stage(key):
    build, final = stages(dockerfile_of(key))
    # The real bases are pinned defaults of build arguments; a machine without a registry passes
    # stand-ins (deploy/images_offline.py), the build stage's apart from the final one's.
    bases = global_args(dockerfile_of(key))
    base = bases["BASE_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+", base), f"unpinned base {base}"
    assert bases == {"BASE_IMAGE": base, "BUILD_IMAGE": base}
    assert build[0][1] == "${BUILD_IMAGE} AS build" and final[0][1] == "${BASE_IMAGE}"
    final_args = dict(final)
    # Non-root by number (so runAsNonRoot can verify it), and no later switch back.
    user = final_args["USER"].split(":")
    assert all(part.isdigit() and int(part) > 0 for part in user)
    # Only the built environment is copied in: no pip, compilers or caches in the final layer.
    copies = [a for i, a in final if i == "COPY"]
    assert copies and all(c.startswith("--from=build ") for c in copies)
    # Nothing is installed there; the base's own pip (python:slim ships it) is uninstalled.
    final_runs = " ".join(a for i, a in final if i == "RUN")
    assert not re.search(r"\b(pip[^&;]* install|apt-get|apk|gcc|make)\b", final_runs)
    assert "python -m pip uninstall --yes --no-cache-dir pip setuptools wheel" in final_runs
    # The version LABEL comes from a build argument that must be set.
    assert "ARG" in final_args and final_args["ARG"].split("=")[0] == "BERTJA_VERSION"
    labels = dict(kv.split("=", 1) for kv in shlex.split(" ".join(a for i, a in final if i == "LABEL")))
    assert labels["org.opencontainers.image.version"] == "${BERTJA_VERSION}"
    assert labels["org.opencontainers.image.title"] == images.IMAGES[key][0]
    assert any('test -n "${BERTJA_VERSION}"' in a for i, a in final if i == "RUN")
    env = " ".join(a for i, a in final if i == "ENV")
    assert "HOME=/tmp" in env, "a read-only root filesystem needs HOME on the /tmp volume"


@pytest.mark.parametrize("key", list(images.IMAGES))
def test_each_image_installs_this_package_with_only_its_extras_and_the_pins(key):
    build, _final = stages(dockerfile_of(key))
    runs = " ".join(a for i, a in build if i == "RUN")
    (extras,) = re.findall(r'"\.\[([a-z,-]+)\]"', runs)
    assert set(extras.split(",")) == EXTRAS[key]
    assert set(extras.split(",")) <= set(PYPROJECT["project"]["optional-dependencies"])
    for install in re.findall(r"pip [^&]*install[^&]*", runs):
        assert "--no-cache-dir" in install
    assert f'--constraint {CONSTRAINTS_OF[key]} ".[' in runs
    copied = " ".join(a for i, a in build if i == "COPY")
    assert f"images/{CONSTRAINTS_OF[key]}" in copied and "components" in copied and "pipelines" in copied
    torch = [r for r in PYPROJECT["project"]["optional-dependencies"]["convert"] if r.startswith("torch")]
    if key == "train-gpu":
        # PyPI's torch (the CUDA build), through the extras and pinned by constraints-gpu.txt: no CPU index.
        assert "--index-url" not in runs and "+cpu" not in runs and "TORCH_INDEX_URL" not in runs
    elif key == "convert":
        # CPU wheels from the PyTorch index by default (a build argument names another index
        # serving the same wheel), the same version pyproject pins.
        assert ("ARG", "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu") in build
        (pinned,) = re.findall(r'--no-deps --index-url "\$\{TORCH_INDEX_URL\}" "torch==([^"+]+)\+cpu"', runs)
        assert torch == [f"torch=={pinned}"]
    else:
        assert "torch" not in runs


REQUIREMENTS_RUN = re.compile(r'python -c "([^"]+)" ([a-z,-]+) > requirements.txt')


@pytest.mark.parametrize("key", list(images.IMAGES))
def test_dependencies_are_installed_before_the_source_is_copied(key):
    """The layer cache: the dependencies' install (GBs of wheels) reads only pyproject.toml and the
    pins, so a change to the source rebuilds only the package's own layer, installed --no-deps. The
    requirements that layer installs are those pip reads from the package's metadata for its extras."""
    build, _final = stages(dockerfile_of(key))
    steps = [(i, a) for i, a in build if i in ("COPY", "RUN")]
    (deps,) = [n for n, (i, a) in enumerate(steps) if i == "RUN" and "--requirement requirements.txt" in a]
    (package,) = [n for n, (i, a) in enumerate(steps) if i == "RUN" and '".[' in a]
    copied_before = {s for i, a in steps[:deps] if i == "COPY" for s in a.split()[:-1]}
    assert copied_before == {f"images/{CONSTRAINTS_OF[key]}", "pyproject.toml"}
    copied_after = {s for i, a in steps[deps:package] if i == "COPY" for s in a.split()[:-1]}
    assert {"components", "pipelines", "README.md"} <= copied_after
    assert "--no-deps" in shlex.split(steps[package][1]) and package == len(steps) - 1
    # The final stage copies the environment, then the package's prefix over it (its own small layer).
    prefix = shlex.split(steps[package][1])[shlex.split(steps[package][1]).index("--prefix") + 1]
    assert [a for i, a in _final if i == "COPY"] == ["--from=build /opt/bertja /opt/bertja",
                                                     f"--from=build {prefix} /opt/bertja"]
    (extras,) = re.findall(r'"\.\[([a-z,-]+)\]"', steps[package][1])
    (code, listed_extras), = REQUIREMENTS_RUN.findall(steps[deps][1])
    assert listed_extras == extras
    assert f"--constraint {CONSTRAINTS_OF[key]} --requirement requirements.txt" in steps[deps][1]
    printed = subprocess.run([sys.executable, "-c", code, extras], cwd=ROOT, check=True, capture_output=True,
                             text=True).stdout.splitlines()
    wanted = set(extras.split(","))
    expected = set()
    for spec in metadata.requires("bert-japanese-pipelines"):
        req = Requirement(spec)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in wanted):
            expected.add((canonicalize_name(req.name), str(req.specifier), frozenset(req.extras)))
    got = {(canonicalize_name(r.name), str(r.specifier), frozenset(r.extras)) for r in map(Requirement, printed)}
    assert got == expected


def _closure(requirement: str, extras: set[str], seen: dict[str, str]) -> None:
    """Installed distributions that ``requirement`` pulls in (markers evaluated for its extras)."""
    name = canonicalize_name(Requirement(requirement).name)
    if name in seen:
        return
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return
    seen[name] = dist.version
    for spec in dist.requires or []:
        req = Requirement(spec)
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in extras | {""}):
            continue
        _closure(str(req), set(req.extras), seen)


def test_constraints_pin_everything_the_images_install():
    pins = constraint_pins()
    needed: dict[str, str] = {}
    _closure("bert-japanese-pipelines", set(PYPROJECT["project"]["optional-dependencies"]) - {"dev", "all"}, needed)
    needed.pop("bert-japanese-pipelines")
    assert len(needed) > 50
    missing = sorted(set(needed) - set(pins))
    assert not missing, f"not pinned in images/constraints.txt (run `make constraints`): {missing}"
    # Where pyproject pins exactly, the images agree (dev tools are no image's business).
    for name, extra in PYPROJECT["project"]["optional-dependencies"].items():
        for spec in extra if name not in ("dev", "all") else ():
            req = Requirement(spec)
            exact = [s.version for s in req.specifier if s.operator == "=="]
            if exact:
                assert pins[canonicalize_name(req.name)].split("+")[0] == exact[0], spec


def test_build_context_admits_only_what_the_images_copy():
    union: set[str] = set()
    for key in images.IMAGES:
        dockerfile = dockerfile_of(key)
        ignore = Path(f"{dockerfile}.dockerignore").read_text(encoding="utf-8").splitlines()
        rules = [r for r in ignore if r and not r.startswith("#")]
        assert rules[0] == "*", "deny everything, then admit"
        admitted = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
        build, _ = stages(dockerfile)
        sources = set()
        for instruction, args in build:
            if instruction == "COPY":
                sources.update(args.split()[:-1])
        assert sources == admitted
        assert {"**/*.pem", "**/*.key", "**/.env", "**/*credentials*.json"} <= set(rules)
        # The legacy builder (DOCKER_BUILDKIT=0) reads only the root .dockerignore: its rules are
        # each image's, with the other images' admissions (the GPU constraints file) besides.
        root_rules = [r for r in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
                      if r and not r.startswith("#")]
        assert [r for r in root_rules if r in rules or not r.startswith("!")] == rules, \
            f"{key}: .dockerignore's denials or order differ from {dockerfile.name}.dockerignore"
        union.update(r for r in rules if r.startswith("!"))
    assert {r for r in root_rules if r.startswith("!")} == union, "the root .dockerignore admits what no image copies"


SECRET = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----|\"private_key\"\s*:|\"type\"\s*:\s*\"service_account\"")
SECRET_NAME = re.compile(r"(SECRET|TOKEN|PASSWORD|PASSWD|API_KEY|ACCESS_KEY|CREDENTIALS)", re.I)


def build_context() -> list[Path]:
    """The files the .dockerignore files admit (tested above to be what the Dockerfiles copy)."""
    admitted = [ROOT / "pyproject.toml", ROOT / "README.md", CONSTRAINTS, GPU_CONSTRAINTS]
    for package in ("components", "pipelines"):
        admitted += [p for p in (ROOT / package).rglob("*")
                     if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]
    return admitted


def test_the_installed_package_carries_the_data_the_pods_read(tmp_path):
    """Images install a wheel, not the source tree: every file of the packages (the sample corpus
    the kind profile reads as package://..., the trainer's experiment configs) must be inside it."""
    import shutil
    import zipfile

    from pipelines import profiles

    context = tmp_path / "context"
    for path in build_context():
        target = context / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", "-w", str(tmp_path / "wheel"), str(context)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    referenced = {value.removeprefix("package://") for value in profiles.PROFILES["kind"].parameters.values()
                  if isinstance(value, str) and value.startswith("package://")}
    assert referenced
    for path in referenced:
        assert any(name == path or name.startswith(path + "/") for name in names), f"{path} not in the wheel"
    packaged = {str(p.relative_to(ROOT)) for p in build_context() if p.parts[len(ROOT.parts)] in ("components", "pipelines")}
    assert not packaged - set(names), "files the pods would miss (pyproject package-data?)"


def test_nothing_secret_goes_into_an_image():
    for key in images.IMAGES:
        for instruction, args in instructions(dockerfile_of(key)):
            if instruction in ("ENV", "ARG"):
                assert not SECRET_NAME.search(args), f"{key}: {instruction} {args}"
    # Everything the build context admits (see the .dockerignore files) is free of key material.
    admitted = build_context()
    assert len(admitted) > 10
    for path in admitted:
        text = path.read_bytes().decode("utf-8", errors="ignore")
        assert not SECRET.search(text), f"key material in the build context: {path}"


# deploy/images_offline.py: what `make images-offline` does without an engine -------------------

sys.path.insert(0, str(ROOT / "deploy"))
import images_offline  # noqa: E402


def test_offline_wheel_index_serves_a_wheel_pip_installs(tmp_path):
    """The torch CPU wheel's stand-in index: pip resolves ``NAME==VERSION`` from it (a small wheel here)."""
    project = tmp_path / "proj"
    (project / "tiny_pkg").mkdir(parents=True)
    (project / "tiny_pkg" / "__init__.py").write_text("")
    (project / "pyproject.toml").write_text('[project]\nname = "tiny-pkg"\nversion = "1.2.3+cpu"\n'
                                            '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n')
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(tmp_path / "house"), str(project)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "house").glob("*.whl")
    with images_offline.wheel_index(wheel) as url:
        assert url.startswith("http://127.0.0.1:")
        got = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--isolated", "-q",
                              "--index-url", url, "-d", str(tmp_path / "got"), "tiny-pkg==1.2.3+cpu"],
                             capture_output=True, text=True)
    assert got.returncode == 0, got.stderr
    assert [p.name for p in (tmp_path / "got").iterdir()] == [wheel.name]


def test_offline_wheel_index_keeps_its_port_while_it_is_free(tmp_path):
    """The index URL is a build argument of the convert image, hence part of its layers' cache key:
    the same port every build, another only when that one is taken."""
    wheel = tmp_path / "tiny_pkg-1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    with images_offline.wheel_index(wheel) as any_port:
        port = int(any_port.rsplit(":", 1)[1].rstrip("/"))
    with images_offline.wheel_index(wheel, port=port) as url:
        assert url == f"http://127.0.0.1:{port}/"
        with images_offline.wheel_index(wheel, port=port) as other:
            assert other.startswith("http://127.0.0.1:") and other != url
    assert 1024 < images_offline.WHEEL_INDEX_PORT < 65536


def test_offline_build_keeps_each_build_stage_tagged_as_the_next_builds_cache():
    """The legacy builder caches layers as images; the untagged ones a build leaves are removed, so the
    build stage is built first under its own tag (it stays), then the image with the same arguments."""
    stage, image = images_offline.build_commands("convert", "registry/bertja-convert:1.0", {"A": "1", "B": "2"})
    assert stage[stage.index("--target") + 1] == "build"
    assert stage[stage.index("--tag") + 1] == images_offline.build_stage("convert")
    assert image[image.index("--tag") + 1] == "registry/bertja-convert:1.0" and "--target" not in image
    def without_target_and_tag(command):
        return [a for i, a in enumerate(command)
                if a not in ("--target", "--tag") and command[i - 1] not in ("--target", "--tag")]
    assert without_target_and_tag(stage) == without_target_and_tag(image)
    assert ["--build-arg", "A=1"] == image[image.index("A=1") - 1:image.index("A=1") + 1]
    assert image[-1] == str(ROOT) and images.dockerfile("convert") in image
    assert len({images_offline.build_stage(key) for key in images.IMAGES}) == len(images.IMAGES)


def test_offline_torch_wheel_comes_from_pip_find_links(tmp_path, monkeypatch):
    configured, from_env = tmp_path / "configured", tmp_path / "env"
    configured.mkdir(), from_env.mkdir()
    config = tmp_path / "pip.conf"
    config.write_text(f"[global]\nfind-links = {configured}\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    monkeypatch.setenv("PIP_FIND_LINKS", str(from_env))
    dirs = images_offline.find_links()
    assert configured in dirs and from_env in dirs
    with pytest.raises(images_offline.StepFailed, match=f"no torch-{re.escape(images_offline.torch_pin())} cp311 wheel.*{configured}"):
        images_offline.local_torch_wheel(dirs)
    wheel = configured / f"torch-{images_offline.torch_pin()}-cp311-cp311-manylinux_2_28_x86_64.whl"
    wheel.write_bytes(b"")
    assert images_offline.local_torch_wheel(dirs) == wheel
    assert images_offline.torch_pin() == constraint_pins()["torch"]


def test_offline_standin_base_is_tagged_by_its_recipe():
    """The stand-in base is made once per recipe: another recipe (or CA bundle) gets another tag."""
    import json as json_

    recipe = json_.dumps(images_offline.RECIPE, sort_keys=True).encode()
    changed = json_.dumps({**images_offline.RECIPE, "revision": -1}, sort_keys=True).encode()
    assert images_offline.content_tag(recipe) == images_offline.content_tag(recipe)
    assert images_offline.content_tag(recipe) != images_offline.content_tag(changed)
    assert images_offline.content_tag(b"base", b"ca1") != images_offline.content_tag(b"base", b"ca2")
    # The final stages start from Debian packages only: no pip or venv (those are the build base's).
    assert {"python3-pip", "python3-venv"} <= set(images_offline.RECIPE["runtime_purge"])
    assert not set(images_offline.RECIPE["runtime_purge"]) & {"python3", "ca-certificates", "python-is-python3"}


def test_offline_table_lines_up_whatever_the_image_names():
    rows = [("ghcr.io/bert-japanese-pipelines/bertja-tpu-control:0.1.0", 701_000_000, 98.4), ("a:1", 5_000_000, 3)]
    header, *lines = images_offline.table(rows).splitlines()
    assert [line.split() for line in lines] == [[rows[0][0], "701MB", "98s"], ["a:1", "5MB", "3s"]]
    assert len({len(header), *map(len, lines)}) == 1


# The GPU trainer image: pins resolved from constraints.txt's, opt-in builds ---------------------

sys.path.insert(0, str(ROOT / "deploy"))
import gpu_constraints  # noqa: E402


def test_the_cpu_trainer_runs_in_the_convert_image():
    """No CPU trainer image of its own: the train-torch extra is the convert extra's packages."""
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert set(extras["train-torch"]) <= set(extras["convert"])
    assert "train-torch" not in images.IMAGES and "train-gpu" in images.IMAGES


def test_gpu_pins_are_the_cpu_pins_but_torch_and_the_cuda_wheels():
    cpu, gpu = constraint_pins(CONSTRAINTS), constraint_pins(GPU_CONSTRAINTS)
    (torch,) = [r for r in PYPROJECT["project"]["optional-dependencies"]["train-torch"] if r.startswith("torch==")]
    assert gpu["torch"] == torch.split("==")[1] and cpu["torch"] == f"{gpu['torch']}+cpu"
    shared = (set(cpu) & set(gpu)) - {"torch"}
    assert len(shared) > 50 and {n: gpu[n] for n in shared} == {n: cpu[n] for n in shared}
    cuda = {n for n in set(gpu) - set(cpu) if n.startswith(("nvidia-", "cuda-"))}
    assert {"nvidia-cublas", "nvidia-nccl-cu13", "nvidia-cudnn-cu13"} <= cuda and "triton" in gpu
    # Only CUDA's packages are new: anything else would be a dependency the CPU images never tested.
    assert set(gpu) - set(cpu) - cuda == {"triton"}


def _pypi_reachable() -> str | None:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{gpu_constraints.INDEX}/torch/", timeout=10):
            return None
    except OSError as e:
        return f"PyPI unreachable from here ({e}): the GPU pins cannot be resolved"


class CountingProxy:
    """An HTTPS CONNECT proxy on 127.0.0.1 that counts the bytes it relays (what pip downloads)."""

    def __init__(self):
        import socket
        import threading

        self.received = 0
        self.hosts: set[str] = set()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import threading

        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    def _tunnel(self, client):
        import select
        import socket

        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                return client.close()
            head += chunk
        method, target = head.split(b" ", 2)[:2]
        if method != b"CONNECT":
            return client.close()
        host, port = target.decode().rsplit(":", 1)
        self.hosts.add(host)
        upstream = socket.create_connection((host, int(port)), timeout=60)
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        with client, upstream:
            while True:
                ready, _, _ = select.select([client, upstream], [], [], 60)
                if not ready:
                    return
                for sock in ready:
                    data = sock.recv(1 << 16)
                    if not data:
                        return
                    if sock is upstream:
                        self.received += len(data)
                    (client if sock is upstream else upstream).sendall(data)

    def close(self):
        self.server.close()


def test_gpu_pins_resolve_with_pip_against_pypi_downloading_metadata_only(monkeypatch, tmp_path):
    """``pip install --dry-run --report`` with images/constraints-gpu.txt installs exactly its pins
    (nothing unpinned, no other version), for the image's interpreter; a stale file fails. The bytes
    pip fetches (counted by a local proxy) are index pages and wheel metadata, not the 2.9 GB of wheels."""
    reason = _pypi_reachable()
    if reason:
        pytest.skip(reason)
    proxy = CountingProxy()
    run = subprocess.run
    monkeypatch.setattr(gpu_constraints.subprocess, "run",
                        lambda command, **kw: run([*command[:5], "--proxy", proxy.url, *command[5:]], **kw))
    try:
        installed = gpu_constraints.check()
        fetched = proxy.received
        # A pin missing from the file fails the check, naming the package.
        stale = tmp_path / "constraints-gpu.txt"
        stale.write_text(GPU_CONSTRAINTS.read_text(encoding="utf-8").replace("\ntriton==", "\n# triton=="))
        monkeypatch.setattr(gpu_constraints, "GPU_CONSTRAINTS", stale)
        with pytest.raises(gpu_constraints.ResolveError, match=r"unpinned \['triton'\]"):
            gpu_constraints.check()
    finally:
        proxy.close()
    names = {gpu_constraints.normalise(i["metadata"]["name"]) for i in installed}
    assert {"torch", "transformers", "kfp", "nvidia-cublas", "triton"} <= names
    print(f"\nresolved {len(installed)} packages, {fetched / 1e6:.1f} MB fetched from {sorted(proxy.hosts)}")
    assert "pypi.org" in proxy.hosts
    # About 100 MB: index pages, range reads of the wheels' metadata (pip's fast-deps), and the sdists
    # that must be fetched whole (unidic-lite 47 MB, ipadic 13 MB, kfp-server-api). Without fast-deps
    # this index (no PEP 658 metadata files) made --dry-run download every wheel: 2.9 GB.
    assert fetched < 250e6, f"{fetched / 1e6:.0f} MB fetched: whole wheels, not their metadata?"


def test_the_gpu_image_is_built_only_when_asked():
    """CUDA wheels are GBs: kind, the local Docker runner and a plain `make images-offline` leave the
    GPU image out; `make image-gpu` builds it (the same offline path: stand-in bases)."""
    assert "train-gpu" not in images.cluster_images() and "train-gpu" not in images.default_builds()
    assert set(images.IMAGES) - set(images.default_builds()) == images.GPU_ONLY
    planned = subprocess.run(["make", "-n", "image-gpu", "constraints-gpu", "image-gpu-cost"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    assert "deploy/images_offline.py train-gpu" in planned
    assert "deploy/gpu_constraints.py write" in planned and "deploy/gpu_constraints.py cost" in planned
    assert images_offline.keys_to_build([]) == images.default_builds()
    assert images_offline.keys_to_build(["train-gpu"]) == ["train-gpu"]
