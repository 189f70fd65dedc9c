"""JGLUE for the pipeline: a content identity for the data behind ``jglue_uri`` and a checked copy
of just the task files, so the fetch step is served from the cache until the data changes.

``jglue_uri`` is JGLUE's repository (or its ``datasets/`` folder) as a local or ``gs://``
directory, or an archive of it (``.zip``, ``.tar.gz``) at an ``https://``, ``gs://`` or local
address, e.g. GitHub's ``https://github.com/yahoojapan/JGLUE/archive/refs/tags/<tag>.tar.gz``.
The identity is the download step's (size, ETag, Last-Modified, MD5) for the archive, or for each
task file of a directory; the copy is verified against it.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
import tempfile
import zipfile

from components import storage
from components.download.core import download, is_http
from components.download.identity import verification_of
from components.download.sources import content_identity
from components.errors import BadInput
from components.evaluate import tasks

ARCHIVES = (".zip", ".tar.gz", ".tgz")
_MEMBER = re.compile(r"(?:^|/)datasets/(?P<folder>(?P<task>[a-z_]+)-v(?P<v>\d+(?:\.\d+)*))/"
                     r"(?P<file>(?:train|valid)-v(?P=v)\.json)$")


def _is_archive(uri: str) -> bool:
    return uri.lower().split("?")[0].endswith(ARCHIVES)


def directory_files(root: str) -> dict[str, str]:
    """``{"datasets/<task>-v<version>/<split>-v<version>.json": uri}`` for every task found."""
    found = {}
    for name in tasks.JGLUE_TASKS:
        try:
            train, valid, version = tasks.find_task_files(root, name)
        except BadInput:
            continue
        for uri in (train, valid):
            found[f"datasets/{name}-v{version}/{storage.basename(uri)}"] = uri
    if not found:
        raise BadInput(f"jglue_uri={root!r}: no JGLUE task folder (<task>-v<version>/train-v<version>.json) in it "
                       "or in its datasets/ folder")
    return found


def identity(uri: str) -> str:
    """The content identity of ``jglue_uri`` as canonical JSON ("" for an empty URI: no JGLUE)."""
    if not uri:
        return ""
    if _is_archive(uri):
        return json.dumps({"archive": content_identity(uri, param="jglue_uri")}, sort_keys=True)
    if is_http(uri):
        raise BadInput(f"jglue_uri={uri!r}: an http(s) source must be an archive ({', '.join(ARCHIVES)}) of "
                       "JGLUE's repository")
    return json.dumps({rel: content_identity(u, param="jglue_uri") for rel, u in directory_files(uri).items()},
                      sort_keys=True)


def fetch(uri: str, ident: str, output_dir: str) -> dict:
    """Copies the task files to ``output_dir/datasets/...``, verified against ``ident``, then reads
    every task (bad lines fail here, before any fine-tuning). Returns ``{"tasks", "files"}``."""
    expected = json.loads(ident) if ident else {}
    written = []
    if _is_archive(uri):
        with tempfile.TemporaryDirectory(prefix="bertja-jglue-") as tmp:
            archive = os.path.join(tmp, "jglue" + next(s for s in ARCHIVES if uri.lower().split("?")[0].endswith(s)))
            download(uri, archive, **verification_of(json.dumps(expected.get("archive", {}))))
            written = _extract(archive, output_dir, uri)
    else:
        now = identity(uri)
        if ident and now != ident:
            raise BadInput(f"jglue_uri={uri!r}: the files changed since their identity was taken; run again")
        for rel, src in directory_files(uri).items():
            storage.copy(src, storage.join(output_dir, rel))
            written.append(rel)
    present = [name for name in tasks.TASK_ORDER
               if any(rel.startswith(f"datasets/{name}-v") for rel in written)]
    for name in present:  # the messages name the user's files (an archive's: our copy, with the archive)
        try:
            tasks.read_jglue_task(output_dir if _is_archive(uri) else uri, name)
        except BadInput as e:
            raise BadInput(f"{e} (in {uri})" if _is_archive(uri) else str(e)) from e
    return {"tasks": present, "files": sorted(written)}


def _extract(archive: str, output_dir: str, uri: str) -> list[str]:
    """The JGLUE task files of a .zip or .tar.gz, written under our own names (never the archive's
    paths, so nothing lands outside ``output_dir``)."""
    written = []

    def keep(name: str, read) -> None:
        match = _MEMBER.search(name)
        if match and match.group("task") in tasks.JGLUE_TASKS:
            rel = f"datasets/{match.group('folder')}/{match.group('file')}"
            storage.write_bytes(storage.join(output_dir, rel), read())
            written.append(rel)

    try:
        if archive.endswith(".zip"):
            with zipfile.ZipFile(archive) as z:
                for info in z.infolist():
                    if not info.is_dir():
                        keep(info.filename, lambda info=info: z.read(info))
        else:
            with tarfile.open(archive, "r:gz") as t:
                for member in t:
                    if member.isfile():
                        keep(member.name, lambda member=member: t.extractfile(member).read())
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
        raise BadInput(f"jglue_uri={uri!r}: not a readable archive ({e})") from e
    if not written:
        raise BadInput(f"jglue_uri={uri!r}: the archive holds no datasets/<task>-v<version>/*.json")
    return written
