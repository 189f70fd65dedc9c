"""Resumable, verified downloads and zip member extraction.

The recipe's inputs are large (CC-100 ``ja.txt.xz`` is ~15 GB) and come from
hosts that drop long connections, so an HTTP(S) transfer keeps what it already
has in a partial file and asks for the rest with a ``Range`` request, guarded by
``If-Range`` so that a file changed on the server is fetched afresh rather than
spliced. Size and checksum are verified before the output appears; a mismatch
leaves nothing behind. ``gs://``, ``file://`` and local sources stream through
``components.storage`` (whose GCS reader retries on its own).
"""

from __future__ import annotations

import base64
import contextlib
import difflib
import hashlib
import json
import os
import re
import tempfile
import time
import zipfile
from collections.abc import Iterator

import requests
import urllib3

from components import storage
from components.errors import BadInput
from components.progress import Progress

DEFAULT_CHUNK_SIZE = 1 << 20
USER_AGENT = "bert-japanese-pipelines/0.1 (python-requests)"
# Statuses worth another try: the server is busy or broken for now, not the request.
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_RETRY_WAIT_S = 60.0


class TransferFailed(OSError):
    """The transfer kept failing (network, 5xx) after every retry."""


def is_http(url: str) -> bool:
    return str(url).startswith(("http://", "https://"))


def http_session() -> requests.Session:
    """A session that asks for the bytes as stored (no transfer compression).

    ``Accept-Encoding: identity`` keeps ``Range`` offsets and checksums about
    the file itself, not a gzip of it; Wikimedia also wants a User-Agent.
    """
    session = requests.Session()
    session.headers.update({"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
    return session


def raise_for_http_status(response: requests.Response, url: str, what: str = "") -> None:
    """A client error (404, 403, ...) is bad input naming the URL."""
    if response.status_code >= 400 and response.status_code not in RETRYABLE_STATUS:
        label = f"{what}: " if what else ""
        raise BadInput(f"{label}{url}: HTTP {response.status_code} {response.reason or ''}".rstrip())


def md5_hex_from_headers(headers) -> str:
    """The MD5 a host publishes in ``Content-MD5`` or ``x-goog-hash``, as hex ('' if none)."""
    candidates = [headers.get("Content-MD5", "")]
    candidates += [part.strip()[4:] for part in headers.get("x-goog-hash", "").split(",")
                   if part.strip().startswith("md5=")]
    for value in candidates:
        with contextlib.suppress(ValueError):
            raw = base64.b64decode(value, validate=True)
            if len(raw) == 16:
                return raw.hex()
    return ""


# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------

def _checked_hex(value: str | None, name: str, length: int) -> str | None:
    if value is None or value == "":
        return None
    value = value.strip().lower()
    if not re.fullmatch(f"[0-9a-f]{{{length}}}", value):
        raise BadInput(f"{name}={value!r}: expected {length} hexadecimal digits")
    return value


class _Digests:
    """sha256 and md5 of everything written so far (both: hosts publish either)."""

    def __init__(self):
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.count = 0

    def update(self, data: bytes) -> None:
        self.sha256.update(data)
        self.md5.update(data)
        self.count += len(data)

    def update_from_file(self, path: str, chunk_size: int) -> None:
        with open(path, "rb") as f:
            while block := f.read(chunk_size):
                self.update(block)


def _verify(url: str, digests: _Digests, *, sha256: str | None, md5: str | None,
            expected_size: int | None) -> None:
    if expected_size is not None and digests.count != expected_size:
        raise BadInput(f"{url}: size mismatch: expected {expected_size} bytes, got {digests.count}")
    for name, expected, actual in (("sha256", sha256, digests.sha256.hexdigest()),
                                   ("md5", md5, digests.md5.hexdigest())):
        if expected is not None and actual != expected:
            raise BadInput(f"{url}: {name} mismatch: expected {expected}, got {actual}")


# ---------------------------------------------------------------------------
# download
# ---------------------------------------------------------------------------

def download(url: str, output: str, *, sha256: str | None = None, md5: str | None = None,
             expected_size: int | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE,
             max_retries: int = 5, retry_wait_s: float = 1.0, timeout_s: float = 60.0,
             part_dir: str | None = None) -> dict:
    """Copies ``url`` (https, http, gs, file, local path) to ``output`` (local or gs://).

    The output appears only once it is complete and verified. For http(s) the
    partial data lives in ``OUTPUT.part`` (local output) or in ``part_dir``
    (default: the system temp dir; gs:// output), so a re-run resumes.
    Returns ``uri``, ``url``, ``size``, ``sha256``, ``md5``, ``resumed_bytes``
    (bytes kept from before the last ``Range`` resume, 0 if none), ``seconds``,
    ``etag``, ``last_modified``.
    """
    sha256 = _checked_hex(sha256, "sha256", 64)
    md5 = _checked_hex(md5, "md5", 32)
    if expected_size is not None and expected_size < 0:
        raise BadInput(f"expected_size={expected_size}: must be >= 0")
    if chunk_size <= 0:
        raise BadInput(f"chunk_size={chunk_size}: must be > 0")
    if max_retries < 0:
        raise BadInput(f"max_retries={max_retries}: must be >= 0")
    url, output = os.fspath(url), os.fspath(output)
    storage.check_outputs([url], files=[output])
    start = time.monotonic()
    if is_http(url):
        stats = _HttpDownload(url, output, sha256=sha256, md5=md5, expected_size=expected_size,
                              chunk_size=chunk_size, max_retries=max_retries,
                              retry_wait_s=retry_wait_s, timeout_s=timeout_s,
                              part_dir=part_dir).run()
    else:
        stats = _copy_verified(url, output, sha256=sha256, md5=md5,
                               expected_size=expected_size, chunk_size=chunk_size)
    stats["seconds"] = round(time.monotonic() - start, 3)
    return stats


def _copy_verified(url: str, output: str, *, sha256, md5, expected_size, chunk_size) -> dict:
    """gs://, file:// and local sources: one streaming pass, verified before commit."""
    if not storage.exists(url):
        raise BadInput(f"{url}: no such file or object")
    total = storage.size(url)
    if expected_size is not None and total != expected_size:
        raise BadInput(f"{url}: size mismatch: expected {expected_size} bytes, got {total}")
    digests = _Digests()
    progress = Progress(f"download {storage.basename(url)}", "bytes", total=total)
    with storage.open_read(url, decompress=False) as src, \
            storage.open_write(output, compress=False) as dst:
        while block := src.read(chunk_size):
            dst.write(block)
            digests.update(block)
            progress.add(len(block))
        # Raising here aborts the write: a mismatch leaves no output.
        _verify(url, digests, sha256=sha256, md5=md5, expected_size=expected_size)
    progress.done()
    return {"uri": output, "url": url, "size": digests.count, "sha256": digests.sha256.hexdigest(),
            "md5": digests.md5.hexdigest(), "resumed_bytes": 0, "etag": "", "last_modified": ""}


class _Retry(Exception):
    """One attempt ended early for a reason worth another try."""


class _HttpDownload:
    """One http(s) transfer into a partial file, resumed across attempts and runs.

    Beside the partial file, ``<part>.json`` records the URL and the server's
    validators (ETag, Last-Modified) so a later run resumes only the same file.
    """

    def __init__(self, url, output, *, sha256, md5, expected_size, chunk_size, max_retries,
                 retry_wait_s, timeout_s, part_dir):
        self.url, self.output = url, output
        self.sha256, self.md5, self.expected_size = sha256, md5, expected_size
        self.chunk_size, self.max_retries = chunk_size, max_retries
        self.retry_wait_s, self.timeout_s = retry_wait_s, timeout_s
        self.part = self._part_path(part_dir)
        self.meta_path = self.part + ".json"
        self.validators: dict[str, str] = {}
        self.total: int | None = None
        self.digests = _Digests()
        self.resumed_bytes = 0
        self.progress = Progress(f"download {storage.basename(url.split('?')[0])}", "bytes",
                                 total=expected_size)

    def _part_path(self, part_dir: str | None) -> str:
        if not storage.is_gcs(self.output) and part_dir is None:
            return storage.local_path(self.output) + ".part"
        key = hashlib.sha256(f"{self.url}\n{self.output}".encode()).hexdigest()[:16]
        directory = part_dir or os.path.join(tempfile.gettempdir(), "bertja-download")
        return os.path.join(directory, f"{key}-{storage.basename(self.output)}.part")

    # -- partial file ------------------------------------------------------

    def _load_part(self) -> None:
        """Keeps a partial file left by an earlier run for this URL; discards anything else."""
        try:
            with open(self.meta_path, encoding="utf-8") as f:
                meta = json.load(f)
            os.path.getsize(self.part)
        except (OSError, ValueError):
            self._discard_part()
            return
        if meta.get("url") != self.url:
            self._discard_part()
            return
        self.validators = {k: v for k, v in meta.get("validators", {}).items() if v}
        self.total = meta.get("total")

    def _save_meta(self) -> None:
        meta = {"url": self.url, "validators": self.validators, "total": self.total}
        tmp = self.meta_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(meta, f)
        os.replace(tmp, self.meta_path)

    def _discard_part(self) -> None:
        for path in (self.part, self.meta_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self.digests = _Digests()
        self.validators = {}
        self.total = None

    # -- transfer ----------------------------------------------------------

    def run(self) -> dict:
        os.makedirs(os.path.dirname(os.path.abspath(self.part)), exist_ok=True)
        self._load_part()
        failures = 0
        with http_session() as session:
            while True:
                before = os.path.getsize(self.part) if os.path.exists(self.part) else 0
                try:
                    if self._attempt(session):
                        break
                    failures = 0  # restarted cleanly (200 for a range, 416): not a failure
                except _Retry as e:
                    after = os.path.getsize(self.part) if os.path.exists(self.part) else 0
                    failures = 0 if after > before else failures + 1
                    if failures > self.max_retries:
                        raise TransferFailed(f"{self.url}: gave up after {self.max_retries} retries "
                                             f"without progress: {e}") from None
                    wait = min(self.retry_wait_s * 2 ** max(failures - 1, 0), MAX_RETRY_WAIT_S)
                    print(f"download {self.url}: {e}; retrying in {wait:.1f}s "
                          f"(have {after:,} bytes)", file=self.progress.stream, flush=True)
                    time.sleep(wait)
        self.progress.done()
        try:
            if self.digests.count != os.path.getsize(self.part):
                self.digests = _Digests()
                self.digests.update_from_file(self.part, self.chunk_size)
            _verify(self.url, self.digests, sha256=self.sha256, md5=self.md5,
                    expected_size=self.expected_size)
        except BadInput:
            self._discard_part()  # the complete file is wrong: fetching more will not help
            raise
        self._commit()
        return {"uri": self.output, "url": self.url, "size": self.digests.count,
                "sha256": self.digests.sha256.hexdigest(), "md5": self.digests.md5.hexdigest(),
                "resumed_bytes": self.resumed_bytes,
                "etag": self.validators.get("etag", ""),
                "last_modified": self.validators.get("last_modified", "")}

    def _commit(self) -> None:
        if storage.is_gcs(self.output) or self.part != storage.local_path(self.output) + ".part":
            storage.copy(self.part, self.output)
            self._discard_part()
        else:
            os.replace(self.part, storage.local_path(self.output))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.meta_path)

    def _request_headers(self, offset: int) -> dict[str, str]:
        if offset <= 0:
            return {}
        headers = {"Range": f"bytes={offset}-"}
        etag = self.validators.get("etag", "")
        # If-Range takes a strong ETag or a date; a weak ETag cannot validate bytes.
        if etag and not etag.startswith("W/"):
            headers["If-Range"] = etag
        elif self.validators.get("last_modified"):
            headers["If-Range"] = self.validators["last_modified"]
        return headers

    def _attempt(self, session: requests.Session) -> bool:
        """One request; True when the partial file holds the whole body."""
        offset = os.path.getsize(self.part) if os.path.exists(self.part) else 0
        if offset and self.total is not None and offset == self.total:
            return True
        try:
            response = session.get(self.url, headers=self._request_headers(offset), stream=True,
                                   timeout=self.timeout_s, allow_redirects=True)
        except requests.RequestException as e:
            raise _Retry(f"request failed ({type(e).__name__}: {e})") from e
        with response:
            if response.status_code in RETRYABLE_STATUS:
                raise _Retry(f"HTTP {response.status_code} {response.reason}")
            if response.status_code == 416:
                return self._range_not_satisfiable(response, offset)
            raise_for_http_status(response, self.url)
            if response.status_code == 206 and offset:
                if not self._continues_part(response, offset):
                    self._discard_part()  # another file, or another offset: fetch afresh
                    return False
            elif response.status_code == 200:
                self._start_over(response, offset)
                offset = 0
            else:
                raise BadInput(f"{self.url}: unexpected HTTP {response.status_code} {response.reason}")
            self._save_meta()
            self._stream_body(response, offset)
        size = os.path.getsize(self.part)
        if self.total is not None and size < self.total:
            raise _Retry(f"connection closed at byte {size:,} of {self.total:,}")
        return True

    def _range_not_satisfiable(self, response: requests.Response, offset: int) -> bool:
        total = _content_range_total(response.headers.get("Content-Range", ""))
        if total is not None and total == offset:
            self.total = total
            return True
        self._discard_part()  # our partial file is longer than the file: start over
        return False

    def _continues_part(self, response: requests.Response, offset: int) -> bool:
        """Whether a 206 continues our partial file (same start, same file)."""
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)",
                             response.headers.get("Content-Range", "").strip())
        if not match or int(match.group(1)) != offset:
            return False
        for header, key in (("ETag", "etag"), ("Last-Modified", "last_modified")):
            now, then = response.headers.get(header, ""), self.validators.get(key, "")
            if now and then and now != then:
                return False
        if match.group(3) != "*":
            self._set_total(int(match.group(3)))
        if self.digests.count != offset:
            self.digests = _Digests()
            self.digests.update_from_file(self.part, self.chunk_size)
        self.resumed_bytes = offset
        return True

    def _start_over(self, response: requests.Response, offset: int) -> None:
        if offset:
            print(f"download {self.url}: server sent the whole file (range ignored or file "
                  f"changed); discarding {offset:,} partial bytes", file=self.progress.stream,
                  flush=True)
        self._discard_part()
        self.resumed_bytes = 0
        self.validators = {"etag": response.headers.get("ETag", ""),
                           "last_modified": response.headers.get("Last-Modified", "")}
        length = response.headers.get("Content-Length")
        if length is not None and length.isdigit():
            self._set_total(int(length))
        with open(self.part, "wb"):
            pass

    def _set_total(self, total: int) -> None:
        if self.expected_size is not None and total != self.expected_size:
            self._discard_part()
            raise BadInput(f"{self.url}: size mismatch: expected {self.expected_size} bytes, "
                           f"server has {total}")
        self.total = total
        self.progress.total = total

    def _stream_body(self, response: requests.Response, offset: int) -> None:
        with open(self.part, "ab") as f:
            try:
                # raw: bytes exactly as stored, never transfer-decoded.
                for block in response.raw.stream(self.chunk_size, decode_content=False):
                    f.write(block)
                    self.digests.update(block)
                    self.progress.add(len(block))
            except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as e:
                raise _Retry(f"connection lost ({type(e).__name__})") from e
            finally:
                f.flush()
                os.fsync(f.fileno())


def _content_range_total(value: str) -> int | None:
    match = re.fullmatch(r"bytes (?:\*|\d+-\d+)/(\d+)", value.strip())
    return int(match.group(1)) if match else None


# ---------------------------------------------------------------------------
# zip members
# ---------------------------------------------------------------------------

def _find_member(names: list[str], member: str, archive_uri: str) -> str:
    """The one archive entry whose path ends with ``member`` (at a ``/`` boundary)."""
    wanted = member.strip("/")
    matches = [n for n in names if not n.endswith("/") and (n == wanted or n.endswith("/" + wanted))]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise BadInput(f"{archive_uri}: member {member!r} is ambiguous: {', '.join(matches[:10])}")
    by_base = {n.rstrip("/").rsplit("/", 1)[-1]: n for n in names if not n.endswith("/")}
    close = [by_base[b] for b in difflib.get_close_matches(wanted.rsplit("/", 1)[-1], by_base, n=8, cutoff=0.5)]
    hint = f"; close names: {', '.join(close)}" if close else f"; it holds {len(names)} entries"
    raise BadInput(f"{archive_uri}: no member {member!r}{hint}")


@contextlib.contextmanager
def _open_zip(archive_uri: str) -> Iterator[zipfile.ZipFile]:
    # zipfile needs to seek; local files and GCS blob readers both can.
    with storage.open_read(archive_uri, decompress=False) as raw:
        try:
            archive = zipfile.ZipFile(raw)
        except zipfile.BadZipFile as e:
            raise BadInput(f"{archive_uri}: not a zip archive ({e})") from e
        with archive:
            yield archive


def extract_member(archive_uri: str, member: str, output: str, *,
                   chunk_size: int = DEFAULT_CHUNK_SIZE) -> dict:
    """Streams one member (matched by path suffix, e.g. ``lex.csv``) of a zip to ``output``.

    The member's bytes are written as they are (no compression by suffix).
    Returns ``uri``, ``archive``, ``member``, ``size``, ``sha256``.
    """
    if is_http(archive_uri):
        raise BadInput(f"{archive_uri}: extract_member reads local, file:// or gs:// archives; "
                       "download it first (download_member does both)")
    if not storage.exists(archive_uri):
        raise BadInput(f"{archive_uri}: no such file or object")
    storage.check_outputs([archive_uri], files=[output])
    digest = hashlib.sha256()
    with _open_zip(archive_uri) as archive:
        name = _find_member(archive.namelist(), member, archive_uri)
        info = archive.getinfo(name)
        progress = Progress(f"extract {name}", "bytes", total=info.file_size)
        with archive.open(info) as src, storage.open_write(output, compress=False) as dst:
            try:
                while block := src.read(chunk_size):
                    dst.write(block)
                    digest.update(block)
                    progress.add(len(block))
            except (zipfile.BadZipFile, EOFError, OSError) as e:
                raise BadInput(f"{archive_uri}: corrupt member {name!r} ({e})") from e
        progress.done()
    return {"uri": output, "archive": archive_uri, "member": name, "size": info.file_size,
            "sha256": digest.hexdigest()}


def download_member(url: str, member: str, output: str, *, work_dir: str | None = None,
                    **download_kwargs) -> dict:
    """Downloads a zip (resumably, verified by ``download_kwargs``) and extracts one member.

    The archive is kept under ``work_dir`` (default: the system temp dir) only
    until the member is out, so an interrupted run resumes the archive.
    Returns the ``extract_member`` summary plus ``archive_download`` (``download``'s).
    """
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    directory = os.path.join(work_dir or os.path.join(tempfile.gettempdir(), "bertja-download"), key)
    archive = os.path.join(directory, storage.basename(url.split("?")[0]) or "archive.zip")
    try:
        fetched = download(url, archive, **download_kwargs)
        stats = extract_member(archive, member, output)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(archive)
    with contextlib.suppress(OSError):
        os.rmdir(directory)
    stats["archive"] = url
    stats["archive_download"] = fetched
    return stats

