"""Build every runtime image on a machine with a Docker engine but no container registry.

``make images-offline`` (and CI) run this. The Dockerfiles keep their real, pinned bases; here
they get, through build arguments, stand-ins made from Debian packages:

* ``bertja-standin-runtime:<recipe hash>``: debootstrap's minbase with Python, imported with
  ``docker import`` (what the final stages start from: Debian packages only);
* ``bertja-standin-build:<recipe hash>``: the same plus venv and pip, for the build stages;
* ``bertja-standin-build-host:<hash>``: that plus THIS machine's certificate bundle and a pip
  ``cert`` setting, because package downloads here go through a route that presents its own
  certificate authority. Only build stages start from it, so nothing of this machine reaches a
  final image.

The torch CPU wheel comes from the PyTorch CPU index; where that cannot be reached, the wheel from
pip's configured find-links is served on 127.0.0.1 as a one-package index (builds use the host
network), on the same port every time: the index URL is a build argument, hence part of the layer
cache's key. Image names and tags come from ``components.images``.

Each image's build stage is kept, tagged ``bertja-build-stage-<key>:latest``: the legacy builder's
layer cache is its images, and an untagged build stage is removed after the build (see
``remove_images``), which would make every build reinstall every dependency.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from components import images  # noqa: E402

# The stand-in for python:3.11.14-slim-bookworm: what debootstrap installs and, for the runtime
# base, what is removed again (pip and venv belong to build stages only). Changing any of it
# changes the content tag, hence a rebuild.
RECIPE = {
    "suite": "bookworm",
    "mirror": "http://deb.debian.org/debian",
    "include": ["python3", "python3-venv", "python3-pip", "python-is-python3", "ca-certificates"],
    "runtime_purge": ["python3-pip", "python3-venv", "python3.11-venv", "python3-setuptools",
                      "python3-wheel", "python3-pip-whl", "python3-setuptools-whl"],
    "revision": 1,
}
RUNTIME_BASE = "bertja-standin-runtime"
BUILD_BASE = "bertja-standin-build"
HOST_BUILD_BASE = "bertja-standin-build-host"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
# The local torch index's port: a fixed one keeps the convert image's dependency layers cached.
WHEEL_INDEX_PORT = 47_311
BUILD_STAGE = "bertja-build-stage"
ENGINE_LOG = Path("/var/log/bertja-dockerd.log")


class StepFailed(RuntimeError):
    """A step failed; the message names it (CI prints it as the failure)."""


def log(message: str) -> None:
    print(f"[images-offline] {message}", file=sys.stderr, flush=True)


def docker(*args: str, capture: bool = False, check: bool = True, env: dict | None = None,
           stdin=None) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", *args], capture_output=capture, text=True, env=env, stdin=stdin)
    if check and result.returncode != 0:
        detail = (result.stderr or "").strip() if capture else "see its output above"
        raise StepFailed(f"docker {args[0]} failed (exit {result.returncode}): {detail}")
    return result


def engine_running() -> bool:
    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "info"], capture_output=True).returncode == 0


def ensure_engine(timeout: float = 60.0, install: bool = True) -> None:
    """Start dockerd (as root) when no engine answers, installing Debian's docker.io first if
    ``install`` (the tests only start one)."""
    if engine_running():
        return
    if os.geteuid() != 0:
        raise StepFailed("no Docker engine answers and starting one needs root (run as root, or start dockerd)")
    if shutil.which("dockerd") is None and not install:
        raise StepFailed("no Docker engine answers and dockerd is not installed (make images-offline installs it)")
    if shutil.which("dockerd") is None:
        log("installing docker.io (Debian)")
        for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "docker.io"]):
            if subprocess.run(command, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}).returncode:
                raise StepFailed(f"{' '.join(command)} failed")
    log(f"starting dockerd (log: {ENGINE_LOG})")
    # No iptables and no default bridge: these machines allow neither; builds use the host network.
    with open(ENGINE_LOG, "ab") as out:
        subprocess.Popen(["dockerd", "--iptables=false", "--bridge=none"], stdout=out, stderr=out,
                         start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if engine_running():
            return
        time.sleep(1)
    raise StepFailed(f"dockerd did not answer within {timeout:.0f} s; see {ENGINE_LOG}")


def image_exists(ref: str) -> bool:
    return docker("image", "inspect", ref, capture=True, check=False).returncode == 0


def content_tag(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:12]


def import_rootfs(rootfs: Path, ref: str) -> None:
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
    docker("import", "--change", 'CMD ["python3"]', "-", ref, stdin=tar.stdout, capture=True)
    if tar.wait():
        raise StepFailed(f"tar of {rootfs} failed")


def standin_bases() -> tuple[str, str]:
    """(runtime base, build base) references, made once per recipe with debootstrap."""
    tag = content_tag(json.dumps(RECIPE, sort_keys=True).encode())
    runtime, build = f"{RUNTIME_BASE}:{tag}", f"{BUILD_BASE}:{tag}"
    if image_exists(runtime) and image_exists(build):
        log(f"stand-in bases {runtime}, {build}: cached")
        return runtime, build
    if shutil.which("debootstrap") is None:
        raise StepFailed("debootstrap is needed to make the stand-in base (apt-get install debootstrap)")
    with tempfile.TemporaryDirectory(prefix="bertja-rootfs-", dir="/var/tmp") as tmp:
        rootfs = Path(tmp) / "rootfs"
        log(f"debootstrap {RECIPE['suite']} (minbase + {', '.join(RECIPE['include'])})")
        started = time.monotonic()
        command = ["debootstrap", "--variant=minbase", f"--include={','.join(RECIPE['include'])}",
                   RECIPE["suite"], str(rootfs), RECIPE["mirror"]]
        if subprocess.run(command, stdout=subprocess.DEVNULL).returncode:
            raise StepFailed(f"debootstrap failed: {' '.join(command)} (see {rootfs}/debootstrap/debootstrap.log)")
        # The engine provides these per container; leave none of this machine's in the image.
        for name in ("etc/resolv.conf", "etc/hostname", "etc/hosts"):
            (rootfs / name).unlink(missing_ok=True)
        shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
        (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True)
        for lists in (rootfs / "var/lib/apt/lists").glob("*_*"):
            lists.unlink()
        import_rootfs(rootfs, build)
        chroot = ["chroot", str(rootfs), "dpkg", "--purge", *RECIPE["runtime_purge"]]
        if subprocess.run(chroot, stdout=subprocess.DEVNULL).returncode:
            raise StepFailed(f"{' '.join(chroot)} failed")
        import_rootfs(rootfs, runtime)
        log(f"stand-in bases made in {time.monotonic() - started:.0f} s")
    return runtime, build


def host_build_base(build: str, ca_bundle: Path = HOST_CA) -> str:
    """``build`` plus this machine's CA bundle and pip's ``cert`` setting (build stages only)."""
    ca = ca_bundle.read_bytes()
    ref = f"{HOST_BUILD_BASE}:{content_tag(build.encode(), ca)}"
    if image_exists(ref):
        return ref
    with tempfile.TemporaryDirectory(prefix="bertja-hostca-") as tmp:
        (Path(tmp) / "host-ca.crt").write_bytes(ca)
        (Path(tmp) / "Dockerfile").write_text(
            f"FROM {build}\n"
            "COPY host-ca.crt /etc/ssl/certs/bertja-host-ca.crt\n"
            "ENV PIP_CERT=/etc/ssl/certs/bertja-host-ca.crt\n", encoding="utf-8")
        docker("build", "--quiet", "--tag", ref, tmp, capture=True,
               env={**os.environ, "DOCKER_BUILDKIT": "0"})
    return ref


def pytorch_index_reachable(timeout: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(f"{TORCH_INDEX}/torch/", timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def find_links() -> list[Path]:
    """Directories pip is configured to find wheels in (``pip config list`` and PIP_FIND_LINKS)."""
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    values = [os.environ.get("PIP_FIND_LINKS", "")]
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        if key.endswith("find-links"):
            values.append(value.strip().strip("'\""))
    dirs = []
    for value in values:
        for item in value.split():
            path = Path(item.removeprefix("file://"))
            if path.is_dir() and path not in dirs:
                dirs.append(path)
    return dirs


def torch_pin() -> str:
    """The torch version images/constraints.txt pins (e.g. ``2.13.0+cpu``)."""
    for line in (ROOT / "images/constraints.txt").read_text(encoding="utf-8").splitlines():
        if line.lower().startswith("torch=="):
            return line.split("==", 1)[1].strip()
    raise StepFailed("images/constraints.txt pins no torch")


def local_torch_wheel(dirs: list[Path]) -> Path:
    pin = torch_pin()
    for directory in dirs:
        found = sorted(directory.glob(f"torch-{pin}-cp311-*.whl"))
        if found:
            return found[0]
    raise StepFailed(f"the PyTorch index is unreachable and no torch-{pin} cp311 wheel lies in pip's "
                     f"find-links ({', '.join(map(str, dirs)) or 'none configured'})")


@contextmanager
def wheel_index(wheel: Path, port: int = 0):
    """Serve ``wheel`` as a one-package simple index (PEP 503) on 127.0.0.1, on ``port`` where it is
    free (else any); yields the index URL."""
    project = wheel.name.split("-", 1)[0].lower().replace("_", "-")
    with tempfile.TemporaryDirectory(prefix="bertja-wheelhouse-") as tmp:
        (Path(tmp) / project).mkdir()
        (Path(tmp) / project / wheel.name).symlink_to(wheel.resolve())
        class Quiet(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=tmp, **kwargs)

            def log_message(self, *args):
                pass

        try:
            server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Quiet)
        except OSError:  # taken: any port serves, at the price of the layers that read the URL
            log(f"port {port} is taken: serving on another, so the layers that read the index URL rebuild")
            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/"
        finally:
            server.shutdown()


def build_commands(key: str, ref: str, build_args: dict[str, str]) -> list[list[str]]:
    """The two ``docker build`` commands for ``key``: its build stage, tagged so that it stays (the
    layer cache of the next build), then the image, whose build stage the first one has cached."""
    common = ["build", "--network", "host", "--file", images.dockerfile(key)]
    for name, value in build_args.items():
        common += ["--build-arg", f"{name}={value}"]
    return [["docker", *common, "--target", "build", "--tag", build_stage(key), str(ROOT)],
            ["docker", *common, "--tag", ref, str(ROOT)]]


def build_stage(key: str) -> str:
    return f"{BUILD_STAGE}-{key}:latest"


def build_image(key: str, ref: str, build_args: dict[str, str]) -> float:
    """``docker build`` with the legacy builder (no BuildKit here); seconds taken."""
    log(f"building {ref} from {images.dockerfile(key)}")
    started = time.monotonic()
    dangling_before = dangling_images()
    for command in build_commands(key, ref, build_args):
        result = subprocess.run(command, env={**os.environ, "DOCKER_BUILDKIT": "0"})
        if result.returncode:
            break
    remove_images(dangling_images() - dangling_before)
    if result.returncode:
        raise StepFailed(f"building image {key!r} ({images.dockerfile(key)}) failed (exit {result.returncode}); "
                         "the build's own error is above")
    return time.monotonic() - started


def dangling_images() -> set[str]:
    return set(docker("images", "--quiet", "--filter", "dangling=true", "--no-trunc",
                      capture=True).stdout.split())


def remove_images(ids: set[str]) -> None:
    """Removes what a build left untagged: the previous image of the same tag and the previous build
    stage (each 0.7-4 GB; left behind, a few rebuilds fill the disk: CI's install once failed for
    that). The current build stage is tagged (``build_stage``) and stays; so does an image in use."""
    if ids:
        freed = docker("rmi", *sorted(ids), capture=True, check=False)
        log(f"removed {freed.stdout.count('Deleted:')} layer(s) of {len(ids)} untagged image(s) left by the build")


def image_size(ref: str) -> int:
    return int(docker("image", "inspect", "--format", "{{.Size}}", ref, capture=True).stdout.strip())


def table(rows: list[tuple[str, int, float]]) -> str:
    width = max([len("image"), *(len(ref) for ref, _, _ in rows)])
    lines = [f"{'image':<{width}} {'size':>9} {'build':>8}"]
    for ref, size, seconds in rows:
        lines.append(f"{ref:<{width}} {size / 1e6:>7.0f}MB {seconds:>7.0f}s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deploy/images_offline.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("keys", nargs="*", choices=[[], *images.IMAGES], metavar="KEY",
                        help=f"images to build (default: {', '.join(images.default_builds())}; "
                             f"{', '.join(sorted(images.GPU_ONLY))} only when named: make image-gpu)")
    parser.add_argument("--tag", help="image tag (default: $BERTJA_IMAGE_TAG or the package version)")
    args = parser.parse_args(argv)
    keys = keys_to_build(args.keys)
    try:
        ensure_engine()
        runtime, build = standin_bases()
        build_args = {"BERTJA_VERSION": images.version(), "BASE_IMAGE": runtime,
                      "BUILD_IMAGE": host_build_base(build)}
        rows = []
        with _torch_source(needed="convert" in keys) as torch_index:
            if torch_index:
                build_args["TORCH_INDEX_URL"] = torch_index
            for key in keys:
                ref = images.image(key, tag=args.tag)
                seconds = build_image(key, ref, build_args)
                rows.append((ref, image_size(ref), seconds))
    except StepFailed as error:
        print(f"images-offline: {error}", file=sys.stderr)
        return 1
    print(table(rows))
    return 0


def keys_to_build(named: list[str]) -> list[str]:
    """The images named, or every image but the GPU ones: their CUDA wheels are about 2.9 GB to
    download (``make image-gpu-cost``) and more on disk, for a machine that cannot run them."""
    return list(named) or images.default_builds()


@contextmanager
def _torch_source(needed: bool):
    """None (the Dockerfile's default, the PyTorch CPU index) or a local index serving the wheel."""
    if not needed or pytorch_index_reachable():
        yield None
        return
    wheel = local_torch_wheel(find_links())
    log(f"PyTorch index unreachable: serving {wheel} on 127.0.0.1")
    with wheel_index(wheel, port=WHEEL_INDEX_PORT) as url:
        yield url


if __name__ == "__main__":
    raise SystemExit(main())
