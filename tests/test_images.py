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
# What each image runs, hence the extras it installs (besides the core dependencies). The train
# image also controls TPU VMs: the pipeline's train step runs the CPU trainer or the TPU controller.
# train-tpu is the same trainer with TensorFlow's TPU build, so the same extras.
EXTRAS = {"data": {"pipeline"}, "train": {"pipeline", "train", "tpu"}, "train-tpu": {"pipeline", "train", "tpu"},
          "convert": {"pipeline", "convert"}, "tpu": {"pipeline", "tpu"}}
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


def constraint_pins() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
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
    one the extras pulled in before installing it (never both), pinned to the version pyproject pins,
    with a pinned libtpu; every other image keeps the CPU wheel."""
    (tensorflow,) = [r for r in PYPROJECT["project"]["optional-dependencies"]["train"] if r.startswith("tensorflow==")]
    for key in images.IMAGES:
        build, _final = stages(dockerfile_of(key))
        runs = " ".join(a for i, a in build if i == "RUN")
        if key != "train-tpu":
            assert "tensorflow-tpu" not in runs and "libtpu" not in runs
            continue
        steps = [step.strip() for step in runs.split("&&")]
        extras_step = next(i for i, s in enumerate(steps) if '".[' in s)
        uninstall = next(i for i, s in enumerate(steps) if " uninstall " in s)
        (tpu_step,) = [i for i, s in enumerate(steps) if "tensorflow-tpu" in s]
        assert extras_step < uninstall < tpu_step
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
    (extras,) = re.findall(r'"\.\[([a-z,]+)\]"', runs)
    assert set(extras.split(",")) == EXTRAS[key]
    assert set(extras.split(",")) <= set(PYPROJECT["project"]["optional-dependencies"])
    for install in re.findall(r"pip [^&]*install[^&]*", runs):
        assert "--no-cache-dir" in install
    assert '--constraint constraints.txt ".[' in runs
    copied = " ".join(a for i, a in build if i == "COPY")
    assert "images/constraints.txt" in copied and "components" in copied and "pipelines" in copied
    torch = [r for r in PYPROJECT["project"]["optional-dependencies"]["convert"] if r.startswith("torch")]
    if key == "convert":
        # CPU wheels from the PyTorch index by default (a build argument names another index
        # serving the same wheel), the same version pyproject pins.
        assert ("ARG", "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu") in build
        (pinned,) = re.findall(r'--no-deps --index-url "\$\{TORCH_INDEX_URL\}" "torch==([^"+]+)\+cpu"', runs)
        assert torch == [f"torch=={pinned}"]
    else:
        assert "torch" not in runs


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
        # The legacy builder (DOCKER_BUILDKIT=0) reads only the root .dockerignore: the same rules.
        root_rules = [r for r in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
                      if r and not r.startswith("#")]
        assert root_rules == rules, f"{key}: .dockerignore differs from {dockerfile.name}.dockerignore"


SECRET = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----|\"private_key\"\s*:|\"type\"\s*:\s*\"service_account\"")
SECRET_NAME = re.compile(r"(SECRET|TOKEN|PASSWORD|PASSWD|API_KEY|ACCESS_KEY|CREDENTIALS)", re.I)


def build_context() -> list[Path]:
    """The files the .dockerignore files admit (tested above to be what the Dockerfiles copy)."""
    admitted = [ROOT / "pyproject.toml", ROOT / "README.md", CONSTRAINTS]
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
