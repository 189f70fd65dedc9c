"""Where a KFP artifact's data lives, without importing KFP.

An artifact's own content (``artifact.path``) is a directory holding a small
``manifest.json`` (file names, sizes, counts, statistics). The data itself:
- when ``artifact.uri`` is ``gs://...``: under the sibling prefix ``{uri}_data/``,
  written and read directly through the GCS API. The KFP launcher then moves only
  the manifest through the pod's disk, and the TPU VM reads the data in place.
- otherwise (``kfp.local``, or a MinIO root on a kind cluster): inside the
  artifact directory, which the launcher uploads and downloads with it. That is
  fine for the small data those setups run.
Manifests name files relative to the data root, so a consumer resolves them from
its own view of the artifact (``uri``/``path``), never the producer's.
"""

from __future__ import annotations

import json
import os

from components import storage

MANIFEST = "manifest.json"


def data_root(uri: str, path: str) -> str:
    """The directory/prefix that holds an artifact's data files."""
    if storage.is_gcs(uri):
        return uri.rstrip("/") + "_data"
    return path


def resolve(uri: str, path: str, name: str) -> str:
    """The URI of file ``name`` (relative, ``/``-separated) of an artifact; a gs:// name
    (data the artifact points at outside itself, e.g. a training dir) is returned as is."""
    if storage.is_gcs(name):
        return name
    return storage.join(data_root(uri, path), *name.split("/"))


def reference(root: str, uri: str) -> str:
    """How a manifest names ``uri``: relative when under the artifact's data ``root``, else
    the URI itself (only gs://: every pod sees it the same way)."""
    under = uri.startswith(root.rstrip("/") + "/")
    if not under and not storage.is_gcs(uri):
        raise ValueError(f"{uri} is neither under {root} nor a gs:// URI")
    return relative_names(root, [uri])[0] if under else uri


def write_manifest(path: str, manifest: dict) -> dict:
    """Writes ``manifest.json`` into the artifact directory (atomically)."""
    os.makedirs(path, exist_ok=True)
    storage.write_text(os.path.join(path, MANIFEST), json.dumps(manifest, ensure_ascii=False, indent=2,
                                                                sort_keys=True) + "\n")
    return manifest


def read_manifest(path: str) -> dict:
    return json.loads(storage.read_text(os.path.join(path, MANIFEST)))


def data_files(uri: str, path: str, key: str = "files") -> list[str]:
    """URIs of the files an artifact's manifest lists under ``key``."""
    return [resolve(uri, path, name) for name in read_manifest(path)[key]]


def relative_names(root: str, uris: list[str]) -> list[str]:
    """``uris`` under ``root`` as relative ``/``-separated names (for a manifest)."""
    prefix = root.rstrip("/") + "/"
    out = []
    for u in uris:
        u = os.fspath(u)
        if not u.startswith(prefix):
            raise ValueError(f"{u} is not under {root}")
        out.append(u[len(prefix):].replace(os.sep, "/"))
    return out
