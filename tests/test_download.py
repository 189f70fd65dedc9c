import hashlib
import io
import json
import os
import random
import zipfile

import pytest
from http_fixtures import Drop, FileServer, running

from components import storage
from components.download.core import TransferFailed, download, download_member, extract_member
from components.errors import BadInput
from pipelines.cli import main as bertja

DATA = random.Random(7).randbytes(300_000)
DATA_SHA256 = hashlib.sha256(DATA).hexdigest()
DATA_MD5 = hashlib.md5(DATA).hexdigest()
FAST = {"retry_wait_s": 0.0, "chunk_size": 16_384}


@pytest.fixture
def server():
    with running(FileServer()) as s:
        yield s


def test_dropped_connection_resumes_with_range_and_verifies(server, tmp_path):
    url = server.add("/ja.txt.xz", DATA)
    server.script["/ja.txt.xz"] = [Drop(123_457)]
    out = tmp_path / "ja.txt.xz"

    stats = download(url, str(out), sha256=DATA_SHA256, **FAST)

    first, second = server.gets("/ja.txt.xz")
    assert "Range" not in first["headers"]
    assert second["headers"]["Range"] == "bytes=123457-"
    assert second["headers"]["If-Range"] == server.files["/ja.txt.xz"].etag
    assert out.read_bytes() == DATA
    assert stats["sha256"] == DATA_SHA256 and stats["md5"] == DATA_MD5
    assert stats["size"] == len(DATA) and stats["resumed_bytes"] == 123_457
    assert sorted(os.listdir(tmp_path)) == ["ja.txt.xz"], "partial files left behind"


def test_interrupted_run_leaves_no_output_and_the_next_run_resumes(server, tmp_path):
    url = server.add("/dump.json.gz", DATA, etag=False)  # validated by Last-Modified only
    server.script["/dump.json.gz"] = [Drop(50_000), 503, 503]
    out = tmp_path / "dump.json.gz"

    with pytest.raises(TransferFailed, match="dump.json.gz"):
        download(url, str(out), max_retries=1, **FAST)
    assert not out.exists()
    assert (tmp_path / "dump.json.gz.part").stat().st_size == 50_000

    stats = download(url, str(out), md5=DATA_MD5, **FAST)
    last = server.gets("/dump.json.gz")[-1]
    assert last["headers"]["Range"] == "bytes=50000-"
    assert last["headers"]["If-Range"] == server.files["/dump.json.gz"].last_modified
    assert out.read_bytes() == DATA and stats["resumed_bytes"] == 50_000


def test_file_changed_on_server_is_fetched_afresh_not_spliced(server, tmp_path):
    url = server.add("/f.bin", DATA)
    server.script["/f.bin"] = [Drop(100_000), 500]
    out = tmp_path / "f.bin"
    with pytest.raises(TransferFailed):
        download(url, str(out), max_retries=0, **FAST)

    new = DATA[::-1]
    server.add("/f.bin", new)  # new ETag: If-Range with the old one must not match
    stats = download(url, str(out), sha256=hashlib.sha256(new).hexdigest(), **FAST)
    assert out.read_bytes() == new and stats["resumed_bytes"] == 0


def test_server_that_ignores_range_restarts_cleanly(server, tmp_path):
    url = server.add("/cc.xz", DATA)
    server.ignore_range = True
    server.script["/cc.xz"] = [Drop(100_000)]
    out = tmp_path / "cc.xz"

    stats = download(url, str(out), sha256=DATA_SHA256, expected_size=len(DATA), **FAST)

    assert server.gets("/cc.xz")[1]["headers"]["Range"] == "bytes=100000-"
    assert out.read_bytes() == DATA
    assert stats["resumed_bytes"] == 0


def test_transient_5xx_is_retried_and_persistent_5xx_gives_up(server, tmp_path):
    url = server.add("/a", DATA)
    server.script["/a"] = [503, 502]
    assert download(url, str(tmp_path / "a"), **FAST)["sha256"] == DATA_SHA256
    assert len(server.gets("/a")) == 3

    server.script["/a"] = [503] * 10
    with pytest.raises(TransferFailed, match=r"/a: gave up after 2 retries.*503"):
        download(url, str(tmp_path / "b"), max_retries=2, **FAST)
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("check, message", [
    ({"sha256": "0" * 64}, f"sha256 mismatch: expected {'0' * 64}, got {DATA_SHA256}"),
    ({"md5": "f" * 32}, f"md5 mismatch: expected {'f' * 32}, got {DATA_MD5}"),
    ({"expected_size": 299_999}, "size mismatch: expected 299999 bytes, server has 300000"),
])
def test_mismatch_names_url_and_both_values_and_leaves_nothing(server, tmp_path, check, message):
    url = server.add("/x.gz", DATA)
    with pytest.raises(BadInput) as err:
        download(url, str(tmp_path / "x.gz"), **check, **FAST)
    assert url in str(err.value) and message in str(err.value)
    assert os.listdir(tmp_path) == []


def test_404_and_bad_parameters_are_bad_input(server, tmp_path):
    url = server.url("/missing.xz")
    with pytest.raises(BadInput, match=f"{url}: HTTP 404"):
        download(url, str(tmp_path / "m"), **FAST)
    with pytest.raises(BadInput, match="sha256='abc'"):
        download(url, str(tmp_path / "m"), sha256="abc")
    assert os.listdir(tmp_path) == []


def test_file_uri_and_local_path_sources(tmp_path):
    src = tmp_path / "src" / "lex.csv"
    src.parent.mkdir()
    src.write_bytes(DATA)
    a = download(f"file://{src}", str(tmp_path / "a"), sha256=DATA_SHA256)
    b = download(str(src), f"file://{tmp_path}/b", md5=DATA_MD5, expected_size=len(DATA))
    assert (tmp_path / "a").read_bytes() == DATA == (tmp_path / "b").read_bytes()
    assert a["size"] == b["size"] == len(DATA)
    with pytest.raises(BadInput, match="sha256 mismatch"):
        download(str(src), str(tmp_path / "c"), sha256="1" * 64)
    assert not (tmp_path / "c").exists()


def test_gcs_source_and_gcs_output(gcs, server, tmp_path):
    storage.write_bytes(f"{gcs}/raw/ja.txt.xz", DATA)
    local = download(f"{gcs}/raw/ja.txt.xz", str(tmp_path / "ja.txt.xz"), md5=DATA_MD5)
    assert (tmp_path / "ja.txt.xz").read_bytes() == DATA and local["sha256"] == DATA_SHA256

    url = server.add("/ja.txt.xz", DATA)
    server.script["/ja.txt.xz"] = [Drop(70_000)]
    part_dir = tmp_path / "parts"
    stats = download(url, f"{gcs}/data/ja.txt.xz", sha256=DATA_SHA256, part_dir=str(part_dir), **FAST)
    assert storage.read_bytes(f"{gcs}/data/ja.txt.xz") == DATA
    assert stats["resumed_bytes"] == 70_000 and os.listdir(part_dir) == []

    with pytest.raises(BadInput, match="sha256 mismatch"):
        download(url, f"{gcs}/data/bad.xz", sha256="2" * 64, part_dir=str(part_dir), **FAST)
    assert not storage.exists(f"{gcs}/data/bad.xz")


def _unidic_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("unidic-mecab-2.1.2_src/", "")
        z.writestr("unidic-mecab-2.1.2_src/lex.csv", "は,1,1,1,助詞\n" * 5000)
        z.writestr("unidic-mecab-2.1.2_src/matrix.def", "1 1\n0 0 0\n")
        z.writestr("unidic-mecab-2.1.2_src/README", "unidic")
    return buf.getvalue()


def test_extract_member_by_suffix_local_and_gcs(gcs, tmp_path):
    archive = tmp_path / "unidic.zip"
    archive.write_bytes(_unidic_zip())
    lex = ("は,1,1,1,助詞\n" * 5000).encode()

    stats = extract_member(str(archive), "lex.csv", str(tmp_path / "lex.csv"))
    assert (tmp_path / "lex.csv").read_bytes() == lex
    assert stats["member"] == "unidic-mecab-2.1.2_src/lex.csv" and stats["size"] == len(lex)

    storage.write_bytes(f"{gcs}/src/unidic.zip", archive.read_bytes())
    extract_member(f"{gcs}/src/unidic.zip", "unidic-mecab-2.1.2_src/lex.csv", f"{gcs}/out/lex.csv")
    assert storage.read_bytes(f"{gcs}/out/lex.csv") == lex

    with pytest.raises(BadInput, match=r"no member 'lex.cvs'; close names: unidic-mecab-2.1.2_src/lex.csv"):
        extract_member(str(archive), "lex.cvs", str(tmp_path / "nope.csv"))
    not_zip = tmp_path / "not.zip"
    not_zip.write_bytes(b"plain text")
    with pytest.raises(BadInput, match="not.zip: not a zip archive"):
        extract_member(str(not_zip), "lex.csv", str(tmp_path / "nope.csv"))
    assert not (tmp_path / "nope.csv").exists()


def test_cli_downloads_a_zip_member_and_reports_json(server, tmp_path, capsys):
    payload = _unidic_zip()
    url = server.add("/unidic-mecab-2.1.2_src.zip", payload)
    out = tmp_path / "lex.csv"
    rc = bertja(["download", url, str(out), "--extract-member", "lex.csv",
                 "--sha256", hashlib.sha256(payload).hexdigest()])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["member"] == "unidic-mecab-2.1.2_src/lex.csv"
    assert summary["archive_download"]["size"] == len(payload)
    assert out.read_bytes().startswith("は,1,1,1,助詞\n".encode())

    rc = bertja(["download", server.url("/gone.zip"), str(tmp_path / "g")])
    assert rc == 2 and "HTTP 404" in capsys.readouterr().err


def test_download_member_keeps_nothing_but_the_member(server, tmp_path):
    url = server.add("/u.zip", _unidic_zip())
    work = tmp_path / "work"
    download_member(url, "README", str(tmp_path / "README"), work_dir=str(work), **FAST)
    assert (tmp_path / "README").read_text() == "unidic"
    assert os.listdir(work) == []
