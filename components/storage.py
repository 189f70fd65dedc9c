"""One small I/O layer for local paths, ``file://`` and ``gs://`` URIs.

Every step reads and writes through here so that the same code runs on a laptop
(local paths), in a KFP pod (``gs://`` under the pipeline root) and on a TPU VM.

- Reads stream and decompress by suffix (``.gz``, ``.xz``); corrupt or truncated
  compressed data raises ``BadInput`` naming the URI.
- Writes are atomic: a local file is written under a temporary name in the same
  directory and renamed on success; a GCS object only appears when its upload is
  finalised, which we skip when the block raised. Nothing half-written is left.
- ``gs://`` goes through ``google-cloud-storage``, whose blob readers and writers
  stream; ``STORAGE_EMULATOR_HOST`` points it at an emulator (tests).
"""

from __future__ import annotations

import contextlib
import fnmatch
import gzip
import io
import json
import lzma
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import IO
from urllib.parse import unquote, urlparse

from components.errors import BadInput

GCS_CHUNK = 8 * 1024 * 1024
_UMASK = os.umask(0)
os.umask(_UMASK)


# ---------------------------------------------------------------------------
# URIs
# ---------------------------------------------------------------------------

def is_gcs(uri: str) -> bool:
    return str(uri).startswith("gs://")


def local_path(uri: str | os.PathLike) -> str:
    """The filesystem path of a local path, ``file://`` or ``package://`` URI.

    ``package://PKG/REL/PATH`` names a file shipped inside an installed Python
    package (the bundled sample corpus), wherever the package is installed: on a
    laptop, in a kfp.local run and in a pod alike.
    """
    uri = os.fspath(uri)
    if uri.startswith("file://"):
        return unquote(urlparse(uri).path)
    if uri.startswith("package://"):
        import importlib.util

        package, _, rel = uri[len("package://"):].partition("/")
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise BadInput(f"{uri}: no installed package {package!r}")
        return os.path.join(list(spec.submodule_search_locations)[0], *rel.split("/"))
    if "://" in uri:
        raise BadInput(f"{uri}: not a local path or file:// URI")
    return uri


def split_gcs(uri: str) -> tuple[str, str]:
    """``gs://bucket/key`` -> ``(bucket, key)``; a malformed URI is bad input."""
    parsed = urlparse(uri)
    if parsed.scheme != "gs" or not parsed.netloc:
        raise BadInput(f"{uri}: malformed gs:// URI (expected gs://BUCKET/PATH)")
    return parsed.netloc, parsed.path.lstrip("/")


def join(base: str, *parts: str) -> str:
    """Joins path parts with ``/`` for URIs and ``os.path.join`` for paths."""
    base = os.fspath(base)
    if "://" in base:
        out = base.rstrip("/")
        for p in parts:
            out = f"{out}/{str(p).strip('/')}"
        return out
    return os.path.join(base, *parts)


def basename(uri: str) -> str:
    return os.fspath(uri).rstrip("/").rsplit("/", 1)[-1]


def _client():
    from google.cloud import storage  # deferred: only gs:// users pay the import

    global _CLIENT
    if _CLIENT is None:
        _CLIENT = storage.Client()
    return _CLIENT


_CLIENT = None


def reset_client() -> None:
    """Forgets the cached GCS client (tests switch emulators between runs)."""
    global _CLIENT
    _CLIENT = None


def _blob(uri: str):
    bucket, key = split_gcs(uri)
    if not key:
        raise BadInput(f"{uri}: gs:// URI names a bucket, not an object")
    return _client().bucket(bucket).blob(key)


def _existing_blob(uri: str):
    """The blob with its metadata loaded; a missing object is bad input naming it."""
    blob = _blob(uri)
    try:
        blob.reload()
    except Exception as e:  # NotFound and friends
        if type(e).__name__ == "NotFound":
            raise BadInput(f"{uri}: no such object") from e
        raise
    return blob


# ---------------------------------------------------------------------------
# Queries
# ---------------------------------------------------------------------------

def exists(uri: str) -> bool:
    if is_gcs(uri):
        return _blob(uri).exists()
    return os.path.exists(local_path(uri))


def size(uri: str) -> int:
    if is_gcs(uri):
        return int(_existing_blob(uri).size)
    return os.path.getsize(local_path(uri))


def stat(uri: str) -> dict:
    """Content identity without reading the data: ``size``, ``mtime`` (ISO 8601 UTC),
    and for GCS objects ``generation``, ``etag`` and ``md5`` (hex); '' where unknown."""
    import base64
    import datetime

    if is_gcs(uri):
        blob = _existing_blob(uri)
        md5 = base64.b64decode(blob.md5_hash).hex() if blob.md5_hash else ""
        updated = blob.updated.astimezone(datetime.timezone.utc).isoformat() if blob.updated else ""
        return {"size": int(blob.size), "mtime": updated, "generation": str(blob.generation or ""),
                "etag": blob.etag or "", "md5": md5}
    try:
        st = os.stat(local_path(uri))
    except FileNotFoundError as e:
        raise BadInput(f"{uri}: no such file") from e
    mtime = datetime.datetime.fromtimestamp(st.st_mtime, datetime.timezone.utc).isoformat()
    return {"size": st.st_size, "mtime": mtime, "generation": "", "etag": "", "md5": ""}


def list_files(prefix: str) -> list[str]:
    """All files under a directory/prefix, recursively, sorted."""
    if is_gcs(prefix):
        bucket, key = split_gcs(prefix)
        if key and not key.endswith("/"):
            key += "/"
        return sorted(f"gs://{bucket}/{b.name}" for b in _client().list_blobs(bucket, prefix=key)
                      if not b.name.endswith("/"))
    root = local_path(prefix)
    out = []
    for dirpath, _dirs, files in os.walk(root):
        out.extend(os.path.join(dirpath, f) for f in files)
    return sorted(out)


def glob(pattern: str) -> list[str]:
    """Files matching a shell glob (``*``, ``?``, ``[..]`` in the last parts)."""
    if not is_gcs(pattern):
        import glob as _glob

        return sorted(p for p in _glob.glob(local_path(pattern)) if os.path.isfile(p))
    bucket, key = split_gcs(pattern)
    fixed = key
    for i, ch in enumerate(key):
        if ch in "*?[":
            fixed = key[:i]
            break
    names = (b.name for b in _client().list_blobs(bucket, prefix=fixed))
    return sorted(f"gs://{bucket}/{n}" for n in names if _glob_match(n, key))


def _glob_match(name: str, pattern: str) -> bool:
    """Shell-glob matching part by part: ``*`` and ``?`` never cross a ``/`` (as locally)."""
    names, patterns = name.split("/"), pattern.split("/")
    return len(names) == len(patterns) and all(map(fnmatch.fnmatchcase, names, patterns))


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------

def _compression(uri: str) -> str | None:
    name = os.fspath(uri).lower()
    if name.endswith(".gz"):
        return "gz"
    if name.endswith(".xz"):
        return "xz"
    return None


class _CheckedReader(io.RawIOBase):
    """Wraps a decompressing stream so corrupt/truncated data names the file."""

    def __init__(self, raw: IO[bytes], uri: str):
        self._raw = raw
        self._uri = uri

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        try:
            data = self._raw.read(len(buf))
        except EOFError as e:
            raise BadInput(f"{self._uri}: truncated compressed data ({e})") from e
        except (OSError, lzma.LZMAError, gzip.BadGzipFile) as e:
            raise BadInput(f"{self._uri}: corrupt compressed data ({e})") from e
        n = len(data)
        buf[:n] = data
        return n

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


@contextlib.contextmanager
def open_read(uri: str, *, text: bool = False, decompress: bool = True,
              encoding: str = "utf-8", errors: str = "strict") -> Iterator[IO]:
    """Opens a file or object for streaming reads, decompressing by suffix."""
    uri = os.fspath(uri)
    with contextlib.ExitStack() as stack:
        if is_gcs(uri):
            # The reader fetches nothing until its first read: the metadata is
            # asked for now, so that a missing object is named here.
            blob = _existing_blob(uri)
            raw = stack.enter_context(blob.open("rb", chunk_size=GCS_CHUNK))
        else:
            path = local_path(uri)
            try:
                raw = stack.enter_context(open(path, "rb"))
            except FileNotFoundError as e:
                raise BadInput(f"{uri}: no such file") from e
        kind = _compression(uri) if decompress else None
        stream: IO[bytes] = raw
        if kind == "gz":
            stream = io.BufferedReader(_CheckedReader(gzip.GzipFile(fileobj=raw, mode="rb"), uri),
                                       buffer_size=1 << 20)
        elif kind == "xz":
            stream = io.BufferedReader(_CheckedReader(lzma.LZMAFile(raw, "rb"), uri),
                                       buffer_size=1 << 20)
        if text:
            yield io.TextIOWrapper(stream, encoding=encoding, errors=errors, newline="\n")
        else:
            yield stream


def read_text(uri: str) -> str:
    with open_read(uri, text=True) as f:
        return f.read()


def read_bytes(uri: str) -> bytes:
    with open_read(uri, decompress=False) as f:
        return f.read()


def read_json_object(uri: str) -> dict:
    """A JSON file that must hold one object; anything else is bad input naming the file."""
    try:
        data = json.loads(read_text(uri))
    except json.JSONDecodeError as e:
        raise BadInput(f"{uri}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise BadInput(f"{uri}: expected a JSON object")
    return data


def iter_lines(uri: str) -> Iterator[tuple[int, str]]:
    """Yields ``(line_number, line_without_newline)``; bad UTF-8 names the line.

    Decoding is done per line so the error can say where the bad bytes are.
    """
    with open_read(uri) as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise BadInput(f"{uri}:{lineno}: invalid UTF-8 ({e.reason} at byte {e.start})") from e
            yield lineno, line.rstrip("\n").rstrip("\r")


# ---------------------------------------------------------------------------
# Writing (atomic)
# ---------------------------------------------------------------------------

class _GcsAtomicWriter(io.RawIOBase):
    """Streams to a GCS resumable upload; finalises only on a clean close."""

    def __init__(self, uri: str, content_type: str | None):
        self._uri = uri
        blob = _blob(uri)
        kwargs = {"chunk_size": GCS_CHUNK}
        if content_type:
            kwargs["content_type"] = content_type
        self._writer = blob.open("wb", ignore_flush=True, **kwargs)

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        if self._writer is None:
            raise OSError(f"{self._uri}: write after abort")
        return self._writer.write(bytes(b))

    def commit(self) -> None:
        self._writer.close()

    def abort(self) -> None:
        # An unfinalised resumable upload never becomes an object. The writer
        # would finalise itself when garbage-collected (IOBase.__del__ calls
        # close()), so its close is disarmed before it is dropped.
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close = lambda: None


@contextlib.contextmanager
def open_write(uri: str, *, text: bool = False, compress: bool | None = None,
               encoding: str = "utf-8", content_type: str | None = None) -> Iterator[IO]:
    """Opens ``uri`` for writing; the file appears only if the block succeeds.

    ``compress`` defaults to the suffix (``.gz`` -> gzip, ``.xz`` -> xz).
    Parent directories of local paths are created.
    """
    uri = os.fspath(uri)
    kind = _compression(uri) if compress is None else ("gz" if compress else None)
    if is_gcs(uri):
        sink = _GcsAtomicWriter(uri, content_type)
        raw: IO[bytes] = io.BufferedWriter(sink, buffer_size=GCS_CHUNK)
        commit, abort = sink.commit, sink.abort
    else:
        path = local_path(uri)
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; the file gets what open() would give
        raw = os.fdopen(fd, "wb", buffering=1 << 20)

        def commit():
            os.replace(tmp, path)

        def abort():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    ok = False
    try:
        stream: IO[bytes] = raw
        if kind == "gz":
            # mtime=0 and no name: the same content gives the same bytes.
            stream = gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0, compresslevel=6)
        elif kind == "xz":
            stream = lzma.LZMAFile(raw, "wb")
        if text:
            wrapper = io.TextIOWrapper(stream, encoding=encoding, newline="\n")
            yield wrapper
            wrapper.flush()
            wrapper.detach()
        else:
            yield stream
        if stream is not raw:
            stream.close()
        raw.flush()
        if not is_gcs(uri):
            os.fsync(raw.fileno())
        raw.close()
        commit()
        ok = True
    finally:
        if not ok:
            if not is_gcs(uri):
                with contextlib.suppress(Exception):
                    raw.close()
            abort()


def write_text(uri: str, text: str) -> None:
    with open_write(uri, text=True, compress=False) as f:
        f.write(text)


def write_bytes(uri: str, data: bytes) -> None:
    with open_write(uri, compress=False) as f:
        f.write(data)


def copy(src: str, dst: str) -> None:
    """Copies one file/object byte for byte (no decompression), atomically.

    gs:// to gs:// is a server-side rewrite: no bytes pass through this machine.
    """
    if is_gcs(src) and is_gcs(dst):
        _rewrite(src, dst)
        return
    with open_read(src, decompress=False) as fin, open_write(dst, compress=False) as fout:
        shutil.copyfileobj(fin, fout, GCS_CHUNK)


def _rewrite(src: str, dst: str) -> None:
    from google.api_core.exceptions import NotFound

    source, target = _blob(src), _blob(dst)
    token = None
    try:
        while True:  # large or cross-location objects take several rewrite calls
            token, _done, _total = target.rewrite(source, token=token)
            if token is None:
                return
    except NotFound as e:
        raise BadInput(f"{src}: no such object") from e


def copy_tree(src_dir: str, dst_dir: str) -> list[str]:
    """Copies every file under ``src_dir`` to the same relative path under ``dst_dir``."""
    src_dir = os.fspath(src_dir)
    out = []
    for f in list_files(src_dir):
        rel = f[len(src_dir.rstrip("/")) + 1:] if is_gcs(src_dir) else os.path.relpath(f, local_path(src_dir))
        dst = join(dst_dir, *rel.split(os.sep if not is_gcs(src_dir) else "/"))
        copy(f, dst)
        out.append(dst)
    return out


def remove(uri: str) -> None:
    """Deletes a file/object; a missing one is fine."""
    if is_gcs(uri):
        from google.api_core.exceptions import NotFound

        with contextlib.suppress(NotFound):
            _blob(uri).delete()
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(local_path(uri))
