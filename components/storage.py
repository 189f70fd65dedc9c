"""One small I/O layer for local paths, ``file://`` and ``gs://`` URIs.

Every step reads and writes through here so that the same code runs on a laptop
(local paths), in a KFP pod (``gs://`` under the pipeline root) and on a TPU VM.

- Reads stream and decompress by suffix (``.gz``, ``.xz``); corrupt or truncated
  compressed data raises ``BadInput`` naming the URI.
- Writes are atomic: a local file is written under a temporary name in the same
  directory and renamed on success; a GCS object only appears when its upload is
  finalised, which we skip when the block raised. Nothing half-written is left.
  A temporary names its host and process, so the next write of the same file
  removes those whose writer was killed (SIGKILL, OOM) before it could.
- Bad paths are bad input here, for every step alike: a directory where a file
  is expected (or the reverse), an empty compressed file, invalid UTF-8, an
  output that would overwrite one of the step's inputs (``check_outputs``).
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
import posixpath
import re
import shutil
import socket
import stat as _stat
import tempfile
from collections.abc import Iterable, Iterator
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


def dirname(uri: str) -> str:
    """The folder a file or object is in (``.`` for a bare local name)."""
    uri = os.fspath(uri).rstrip("/")
    if "://" in uri:
        return uri.rsplit("/", 1)[0]
    return os.path.dirname(uri) or "."


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
# Checks a step makes before any work
# ---------------------------------------------------------------------------

def _resolved(uri: str) -> str | None:
    """A comparable identity of a path or URI: the real path (links, ``..``, ``file://``
    resolved), ``gs://BUCKET/normalised/key``; None for http(s), which is never written."""
    uri = os.fspath(uri)
    if uri.startswith(("http://", "https://")):
        return None
    if is_gcs(uri):
        bucket, key = split_gcs(uri)
        key = posixpath.normpath("/" + key).lstrip("/")
        return f"gs://{bucket}/{key}".rstrip("/")
    return os.path.realpath(local_path(uri))


def _inside(path: str, directory: str) -> bool:
    sep = "/" if is_gcs(directory) else os.sep
    return path == directory or path.startswith(directory.rstrip(sep) + sep)


def _file_in_the_way(path: str) -> str | None:
    """The first existing ancestor-or-self of a local path if it is not a directory."""
    while path and not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent
    return path if path and not os.path.isdir(path) else None


def check_outputs(inputs: Iterable[str | None], *, files: Iterable[str] = (), dirs: Iterable[str] = ()) -> None:
    """Refuses (BadInput), before any work, outputs that would destroy an input or cannot be written.

    An output file may not be an input (compared resolved: symbolic links,
    ``..`` and ``file://`` followed; the same object for ``gs://``) nor an
    existing directory; an output directory may not be or hold an input, nor be
    (or lie under) a file. Empty or None inputs are skipped.
    """
    ins = [(uri, _resolved(uri)) for uri in (os.fspath(i) for i in inputs if i)]
    ins = [(uri, r) for uri, r in ins if r is not None]
    for out in files:
        r = _resolved(out)
        for uri, rin in ins:
            if r == rin or (not is_gcs(r) and os.path.exists(r) and os.path.exists(rin)
                            and os.path.samefile(r, rin)):
                raise BadInput(f"{out}: output is the input {uri}; writing it would destroy the input")
        if not is_gcs(r):
            if os.path.isdir(r):
                raise BadInput(f"{out}: is a directory, expected a file path")
            blocker = _file_in_the_way(os.path.dirname(r))
            if blocker:
                raise BadInput(f"{out}: {blocker} is a file, expected a directory")
    for out in dirs:
        r = _resolved(out)
        for uri, rin in ins:
            if _inside(rin, r):
                how = "is" if rin == r else "holds"
                raise BadInput(f"{out}: output directory {how} the input {uri}; writing it would destroy the input")
        if not is_gcs(r):
            blocker = _file_in_the_way(r)
            if blocker:
                raise BadInput(f"{out}: {blocker} is a file, expected a directory")


def check_rereadable(uri: str) -> None:
    """A step that reads an input twice needs a file: a pipe (``/dev/stdin``) would be empty the second time."""
    if is_gcs(uri):
        return
    try:
        mode = os.stat(local_path(uri)).st_mode
    except FileNotFoundError:
        return  # the read names it
    if not _stat.S_ISREG(mode) and not _stat.S_ISDIR(mode):
        raise BadInput(f"{uri}: not a regular file (a pipe or device?); this step reads its input twice")


def prune(directory: str, pattern: str, keep: Iterable[str]) -> list[str]:
    """Removes the files directly in ``directory`` whose names fully match ``pattern`` (a regex)
    and are not in ``keep``: what an earlier run of a step left that this run did not write.

    Only names matching the step's own pattern are touched, never other files. Returns the URIs removed.
    """
    keep_names = {basename(k) for k in keep}
    name_re = re.compile(pattern)
    if is_gcs(directory):
        prefix = directory.rstrip("/") + "/"
        candidates = [f for f in list_files(directory) if "/" not in f[len(prefix):]]
    else:
        root = local_path(directory)
        try:
            candidates = [os.path.join(root, n) for n in os.listdir(root) if os.path.isfile(os.path.join(root, n))]
        except FileNotFoundError:
            return []
    removed = []
    for uri in sorted(candidates):
        name = basename(uri)
        if name_re.fullmatch(name) and name not in keep_names:
            remove(uri)
            removed.append(uri)
    return removed


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
            except IsADirectoryError as e:
                raise BadInput(f"{uri}: is a directory, expected a file") from e
            except NotADirectoryError as e:
                raise BadInput(f"{uri}: {_file_in_the_way(os.path.dirname(path))} is a file, "
                               "expected a directory") from e
            except PermissionError as e:
                raise BadInput(f"{uri}: permission denied") from e
        kind = _compression(uri) if decompress else None
        if kind and _stored_size(blob if is_gcs(uri) else raw) == 0:
            # Not even a header: GzipFile/LZMAFile would read it as empty text.
            raise BadInput(f"{uri}: empty file (0 bytes), not {'gzip' if kind == 'gz' else 'xz'} data")
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


def _stored_size(source) -> int | None:
    """Bytes stored: a GCS blob's size, a regular local file's size; None for a pipe."""
    if hasattr(source, "fileno"):
        st = os.fstat(source.fileno())
        return st.st_size if _stat.S_ISREG(st.st_mode) else None
    return int(source.size) if source.size is not None else None


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
            yield lineno, decode_line(uri, lineno, raw).rstrip("\n").rstrip("\r")


def read_lines(uri: str) -> list[str]:
    """``[line for _n, line in iter_lines(uri)]`` with one decode for the whole file (a vocabulary
    is read by every process of a data step); bad UTF-8 still names its line."""
    with open_read(uri) as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        for _ in iter_lines(uri):
            pass
        raise
    lines = text.split("\n")
    if lines[-1] == "":  # the text ended with a newline (or was empty): no line after it
        lines.pop()
    return [line.rstrip("\r") for line in lines] if "\r" in text else lines


def decode_line(uri: str, lineno: int, raw: bytes) -> str:
    """One line's UTF-8 text; bad bytes are bad input naming the file and line (every step refuses them)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadInput(f"{uri}:{lineno}: invalid UTF-8 ({e.reason} at byte {e.start})") from e


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
        if os.path.isdir(path):
            raise BadInput(f"{uri}: is a directory, expected a file path")
        directory = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(directory, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as e:
            raise BadInput(f"{uri}: {_file_in_the_way(directory)} is a file, expected a directory") from e
        _sweep_stale_temporaries(path)
        fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(path, os.getpid()), suffix=".tmp", dir=directory)
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


_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40] or "host"  # short: NAME_MAX is 255


def _temporary_prefix(path: str, pid: int) -> str:
    """``.NAME.HOST.PID.``: mkstemp adds random letters and ``.tmp`` (no dots in either)."""
    return f".{os.path.basename(path)}.{_HOST}.{pid}."


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    try:  # a zombie (killed, not yet reaped) writes nothing more
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _sweep_stale_temporaries(path: str) -> list[str]:
    """Removes temporaries of ``path`` whose writer, on this host, is no longer running.

    A writer killed with SIGKILL (or by the OOM killer) cannot remove its own.
    Another host's temporaries (a shared file system) are left alone: whether
    their writer runs cannot be told from here.
    """
    directory, name = os.path.split(os.path.abspath(path))
    head = f".{name}."
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for entry in names:
        if not (entry.startswith(head) and entry.endswith(".tmp")):
            continue
        parts = entry[len(head):-len(".tmp")].split(".")
        if len(parts) != 3 or parts[0] != _HOST or not parts[1].isdigit() or _pid_running(int(parts[1])):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(directory, entry))
            removed.append(entry)
    return removed


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
