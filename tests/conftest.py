"""Shared fixtures: a real GCS emulator on loopback and small helpers."""

from __future__ import annotations

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
