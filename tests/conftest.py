"""Shared fixtures: a real GCS emulator on loopback and small helpers."""

from __future__ import annotations

import copy
import os
import socket

import pytest

from components import storage


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def gcs_emulator():
    """gcp-storage-emulator serving the GCS JSON API on 127.0.0.1 (in memory).

    Yields the endpoint (``http://127.0.0.1:PORT``); the test bucket is ``test-bucket``.
    """
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="test-bucket")
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def gcs(gcs_emulator, monkeypatch):
    """Points google-cloud-storage at the emulator for one test; yields ``gs://test-bucket``."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "test-project")
    storage.reset_client()
    yield "gs://test-bucket"
    storage.reset_client()


@pytest.fixture(scope="session", autouse=True)
def compile_once_per_input(tmp_path_factory):
    """Compiling the whole DAG takes seconds and the suite asks for the same YAML dozens of times
    (each submit/schedule test compiles): the same call with the same profile (as it is now, so a
    profile a test adds or changes is a new key), recipe, overrides, root and BERTJA_/KFP_ variables gets a
    copy of the first result.
    Failures are not kept: they are raised again each time."""
    from pipelines import commands, profiles

    compile_pipeline = commands.compile_pipeline
    kept: dict[tuple, tuple[str, dict]] = {}
    directory = tmp_path_factory.mktemp("compiled")

    def compile_or_copy(output, profile_name="gcp", overrides=None, pipeline_root=None, recipe=commands.recipes.DEFAULT):
        # What compiling reads from the environment: ours (image registry and tag) and kfp's settings.
        environment = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(("BERTJA_", "KFP_"))))
        key = (profile_name, repr(profiles.PROFILES.get(profile_name)), repr(sorted((overrides or {}).items())),
               pipeline_root, recipe, environment)
        if key not in kept:
            result = compile_pipeline(output, profile_name, overrides, pipeline_root=pipeline_root, recipe=recipe)
            path = str(directory / f"{len(kept)}.yaml")
            storage.copy(output, path)
            kept[key] = (path, copy.deepcopy(result))
            return result
        path, result = kept[key]
        storage.copy(path, output)  # atomic, as compile_pipeline writes
        return {**copy.deepcopy(result), "output": output}

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(commands, "compile_pipeline", compile_or_copy)
        yield
