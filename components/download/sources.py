"""Source resolution: turn "latest" and default URLs into concrete inputs.

A pipeline run that says ``wikipedia_dump_date="latest"`` would hit KFP's cache
forever, or never. Resolving it first to a dated URL plus the host's content
identity (size, ETag / Last-Modified, or GCS generation and MD5) gives the
download steps inputs that change exactly when new data appears.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import sys
import time
from html.parser import HTMLParser
from urllib.parse import urljoin

import requests

from components import storage
from components.download.core import (
    RETRYABLE_STATUS,
    TransferFailed,
    http_session,
    is_http,
    md5_hex_from_headers,
    raise_for_http_status,
)
from components.errors import BadInput

CIRRUS_INDEX_URL = "https://dumps.wikimedia.org/other/cirrussearch/"
CC100_URL_TEMPLATE = "https://data.statmt.org/cc-100/{lang}.txt.xz"
UNIDIC_URL = "https://ccd.ninjal.ac.jp/unidic_archive/cwj/2.1.2/unidic-mecab-2.1.2_src.zip"
LATEST = "latest"
HTTP_TRIES = 4
TIMEOUT_S = 60.0
LOCAL_MD5_MAX_BYTES = 64 << 20


def cirrus_file_name(lang: str, date: str) -> str:
    """The CirrusSearch content dump's file name for one wiki and date."""
    return f"{lang}wiki-{date}-cirrussearch-content.json.gz"


def resolve_sources(*, wikipedia_dump_date: str = LATEST, cirrus_index_url: str = CIRRUS_INDEX_URL,
                    cc100_url: str | None = None, unidic_url: str = UNIDIC_URL, vibrato_dict_url: str = "",
                    lang: str = "ja") -> dict:
    """Concrete URLs and content identity for the Wikipedia, CC-100, UniDic and vibrato dictionary sources.

    ``cc100_url`` defaults to the public CC-100 file for ``lang``. Each source
    ``S`` in (wikipedia, cc100, unidic) gets ``S_url``, ``S_size``, ``S_etag``,
    ``S_last_modified`` and ``S_md5`` ('' where the host gives none, size -1 when
    an HTTP host gives no length). GCS objects give their ETag, update time and
    MD5; local files up to 64 MiB their MD5, larger ones their mtime. An empty
    ``vibrato_dict_url`` (the run splits words with MeCab) is not looked up:
    ``vibrato_dict_url`` stays '' and its download step fetches nothing.
    """
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", lang or ""):
        raise BadInput(f"lang={lang!r}: expected a wiki language code such as 'ja'")
    cc100_url = cc100_url or CC100_URL_TEMPLATE.format(lang=lang)
    date = _checked_date(wikipedia_dump_date)
    optional = [("vibrato_dict", vibrato_dict_url, "vibrato_dict_url")] if vibrato_dict_url else []
    with http_session() as session:
        date, wiki_url = _pick_dump(session, cirrus_index_url, date, lang)
        result = {"wikipedia_dump_date": date, "lang": lang, "cirrus_index_url": cirrus_index_url,
                  "vibrato_dict_url": vibrato_dict_url}
        for name, url, param in (("wikipedia", wiki_url, "wikipedia_dump_date"),
                                 ("cc100", cc100_url, "cc100_url"),
                                 ("unidic", unidic_url, "unidic_url"), *optional):
            result[f"{name}_url"] = url
            for key, value in content_identity(url, param=param, session=session).items():
                result[f"{name}_{key}"] = value
    return result


def _checked_date(value: str) -> str | None:
    """``None`` for "latest", else the validated YYYYMMDD string."""
    value = (value or "").strip()
    if value.lower() == LATEST:
        return None
    if not re.fullmatch(r"\d{8}", value):
        raise BadInput(f"wikipedia_dump_date={value!r}: expected 'latest' or a date as YYYYMMDD")
    try:
        datetime.datetime.strptime(value, "%Y%m%d")
    except ValueError as e:
        raise BadInput(f"wikipedia_dump_date={value!r}: not a real date ({e})") from e
    return value


def _is_date(name: str) -> bool:
    try:
        return _checked_date(name) is not None
    except BadInput:
        return False


# ---------------------------------------------------------------------------
# The CirrusSearch index
# ---------------------------------------------------------------------------

class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.hrefs += [v for k, v in attrs if k == "href" and v]


def dump_dates(index_url: str, *, session: requests.Session | None = None) -> list[str]:
    """The dated folders (YYYYMMDD) an index lists, oldest first.

    An http(s) index is an HTML directory listing (links like ``20230102/``);
    a local, ``file://`` or ``gs://`` index is a directory of dated folders.
    """
    if is_http(index_url):
        response = _http(session or http_session(), "GET", _dir_url(index_url), "cirrus_index_url")
        parser = _Links()
        parser.feed(response.text)
        names = {href.split("?")[0].rstrip("/").rsplit("/", 1)[-1] for href in parser.hrefs}
    elif storage.is_gcs(index_url):
        prefix = index_url.rstrip("/") + "/"
        names = {f[len(prefix):].split("/", 1)[0] for f in storage.list_files(prefix)}
    else:
        root = storage.local_path(index_url)
        if not os.path.isdir(root):
            raise BadInput(f"cirrus_index_url={index_url!r}: no such directory")
        names = {n for n in os.listdir(root) if os.path.isdir(os.path.join(root, n))}
    return sorted(n for n in names if _is_date(n))


def _dir_url(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def _pick_dump(session: requests.Session, index_url: str, date: str | None,
               lang: str) -> tuple[str, str]:
    """The requested (or newest complete) dump date and its content file URL."""
    dates = dump_dates(index_url, session=session)
    if not dates:
        raise BadInput(f"cirrus_index_url={index_url!r}: lists no dated (YYYYMMDD) folders")
    if date is not None and date not in dates:
        raise BadInput(f"wikipedia_dump_date={date!r}: not in {index_url}; available: "
                       f"{', '.join(dates)}")
    for candidate in ([date] if date else reversed(dates)):
        url = _dump_file_url(index_url, candidate, lang)
        if _exists(session, url):
            return candidate, url
        print(f"resolve-sources: {url} not there (dump in progress?)", file=sys.stderr,
              flush=True)
    if date:
        raise BadInput(f"wikipedia_dump_date={date!r}: {index_url} has the folder but no "
                       f"{cirrus_file_name(lang, date)}")
    raise BadInput(f"cirrus_index_url={index_url!r}: no dated folder holds a "
                   f"{lang}wiki-*-cirrussearch-content.json.gz (checked {', '.join(dates)})")


def _dump_file_url(index_url: str, date: str, lang: str) -> str:
    if is_http(index_url):
        return urljoin(_dir_url(index_url), f"{date}/{cirrus_file_name(lang, date)}")
    return storage.join(index_url, date, cirrus_file_name(lang, date))


def _exists(session: requests.Session, url: str) -> bool:
    if not is_http(url):
        return storage.exists(url)
    response = _http(session, "HEAD", url, "wikipedia_dump_date", missing_ok=True)
    return response is not None


# ---------------------------------------------------------------------------
# Content identity
# ---------------------------------------------------------------------------

def content_identity(url: str, *, param: str = "url",
                     session: requests.Session | None = None) -> dict:
    """``size``, ``etag``, ``last_modified``, ``md5`` of a URL without fetching its body.

    ``param`` names the parameter that gave the URL, for the error message.
    """
    if is_http(url):
        response = _http(session or http_session(), "HEAD", url, param)
        length = response.headers.get("Content-Length", "")
        return {"size": int(length) if length.isdigit() else -1,
                "etag": response.headers.get("ETag", ""),
                "last_modified": response.headers.get("Last-Modified", ""),
                "md5": md5_hex_from_headers(response.headers)}
    if not storage.exists(url):
        raise BadInput(f"{param}={url!r}: no such file or object")
    info = storage.stat(url)
    if not storage.is_gcs(url) and info["size"] <= LOCAL_MD5_MAX_BYTES:
        # A small local file (the bundled corpus) is named by its content, so a
        # fresh checkout with new mtimes still hits the cache.
        return {"size": info["size"], "etag": "", "last_modified": "", "md5": _md5_of(url)}
    return {"size": info["size"], "etag": info["etag"], "last_modified": info["mtime"],
            "md5": info["md5"]}


def _md5_of(uri: str) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with storage.open_read(uri, decompress=False) as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _http(session: requests.Session, method: str, url: str, param: str, *,
          missing_ok: bool = False) -> requests.Response | None:
    """One small request with retries; 404 is ``None`` when ``missing_ok``.

    A host that refuses HEAD (405/501) is asked with a GET whose body is not read.
    """
    error = ""
    for attempt in range(HTTP_TRIES):
        if attempt:
            time.sleep(min(2 ** attempt, 30))
        try:
            response = session.request(method, url, timeout=TIMEOUT_S, allow_redirects=True,
                                       stream=method == "GET")
            if method == "HEAD" and response.status_code in (405, 501):
                response = session.get(url, timeout=TIMEOUT_S, stream=True)
                response.close()
        except requests.RequestException as e:
            error = f"{type(e).__name__}: {e}"
            continue
        if response.status_code in RETRYABLE_STATUS:
            error = f"HTTP {response.status_code} {response.reason}"
            continue
        if missing_ok and response.status_code in (404, 410):
            return None
        raise_for_http_status(response, url, what=param)
        return response
    raise TransferFailed(f"{param}: {url}: gave up after {HTTP_TRIES} tries: {error}")
