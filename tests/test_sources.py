import hashlib
import json
import os

import pytest
from http_fixtures import FileServer, directory_listing, running

from components import storage
from components.download.sources import resolve_sources
from components.errors import BadInput
from pipelines.cli import main as bertja

WIKI = b'{"index":{}}\n{"title":"x","text":"y"}\n'


def _content(date: str) -> str:
    return f"jawiki-{date}-cirrussearch-content.json.gz"


@pytest.fixture
def dumps():
    """An HTML index like dumps.wikimedia.org/other/cirrussearch/ on 127.0.0.1.

    20230102 and 20230109 hold the content dump; 20230116 is still being
    written (only the general dump is there).
    """
    with running(FileServer()) as s:
        s.add_page("/other/cirrussearch/", directory_listing(
            ["20230102/", "20230109/", "20230116/", "current/", "README.txt"]))
        for date in ("20230102", "20230109"):
            s.add(f"/other/cirrussearch/{date}/{_content(date)}", WIKI + date.encode())
        s.add("/other/cirrussearch/20230116/jawiki-20230116-cirrussearch-general.json.gz", b"g")
        s.add("/cc-100/ja.txt.xz", b"cc100 bytes")
        s.add("/unidic/unidic-mecab-2.1.2_src.zip", b"PK zip bytes", etag=False)
        yield s


def _resolve(server: FileServer, **kwargs) -> dict:
    urls = {"cirrus_index_url": server.url("/other/cirrussearch/"),
            "cc100_url": server.url("/cc-100/ja.txt.xz"),
            "unidic_url": server.url("/unidic/unidic-mecab-2.1.2_src.zip")}
    return resolve_sources(**{**urls, **kwargs})


def test_latest_is_the_newest_folder_that_holds_the_content_dump(dumps):
    got = _resolve(dumps)
    assert got["wikipedia_dump_date"] == "20230109"
    assert got["wikipedia_url"] == dumps.url(f"/other/cirrussearch/20230109/{_content('20230109')}")
    assert got["wikipedia_size"] == len(WIKI) + 8
    assert got["wikipedia_etag"] == dumps.files[f"/other/cirrussearch/20230109/{_content('20230109')}"].etag
    assert got["cc100_url"] == dumps.url("/cc-100/ja.txt.xz") and got["cc100_size"] == 11
    assert got["unidic_size"] == 12 and got["unidic_etag"] == ""
    assert got["unidic_last_modified"] == dumps.files["/unidic/unidic-mecab-2.1.2_src.zip"].last_modified
    json.dumps(got)  # a KFP output: must serialise


def test_result_changes_exactly_when_new_data_appears(dumps):
    before = _resolve(dumps)
    assert _resolve(dumps) == before
    dumps.add("/other/cirrussearch/20230116/jawiki-20230116-cirrussearch-content.json.gz", WIKI)
    after = _resolve(dumps)
    assert after["wikipedia_dump_date"] == "20230116"
    assert after["wikipedia_url"] != before["wikipedia_url"]
    assert {k: v for k, v in after.items() if not k.startswith("wikipedia")} == \
        {k: v for k, v in before.items() if not k.startswith("wikipedia")}
    dumps.add("/cc-100/ja.txt.xz", b"a new cc100 release")
    assert _resolve(dumps)["cc100_etag"] != after["cc100_etag"]


def test_explicit_unknown_and_incomplete_dates(dumps):
    got = _resolve(dumps, wikipedia_dump_date="20230102")
    assert got["wikipedia_url"].endswith(f"/20230102/{_content('20230102')}")
    with pytest.raises(BadInput, match=r"wikipedia_dump_date='20230103'.*available: 20230102, 20230109, 20230116"):
        _resolve(dumps, wikipedia_dump_date="20230103")
    with pytest.raises(BadInput, match=r"wikipedia_dump_date='20230116'.*no jawiki-20230116-cirrussearch-content"):
        _resolve(dumps, wikipedia_dump_date="20230116")


@pytest.mark.parametrize("bad", ["2023-01-02", "2023010", "20231301", "20230230", "yesterday"])
def test_malformed_dates_name_the_parameter(dumps, bad):
    with pytest.raises(BadInput, match=f"wikipedia_dump_date='{bad}'"):
        _resolve(dumps, wikipedia_dump_date=bad)
    assert dumps.requests == [], "a malformed date must fail before any request"


def test_missing_sources_name_their_parameter(dumps):
    with pytest.raises(BadInput, match=r"cc100_url: .*/cc-100/ko.txt.xz: HTTP 404"):
        _resolve(dumps, cc100_url=dumps.url("/cc-100/ko.txt.xz"))
    with pytest.raises(BadInput, match=r"cirrus_index_url: .*/nowhere/: HTTP 404"):
        resolve_sources(cirrus_index_url=dumps.url("/nowhere/"))


def _local_index(root) -> None:
    for date, files in {"20221201": [_content("20221201")], "20230102": [_content("20230102")],
                        "20230109": ["jawiki-20230109-cirrussearch-general.json.gz"],
                        "notadate": [_content("notadate")]}.items():
        os.makedirs(root / date)
        for name in files:
            (root / date / name).write_bytes(WIKI)


def test_local_directory_index_with_file_uris(tmp_path):
    index = tmp_path / "cirrussearch"
    _local_index(index)
    (tmp_path / "ja.txt.xz").write_bytes(b"cc")
    (tmp_path / "unidic.zip").write_bytes(b"zip")
    got = resolve_sources(cirrus_index_url=f"file://{index}", cc100_url=f"file://{tmp_path}/ja.txt.xz",
                          unidic_url=str(tmp_path / "unidic.zip"))
    assert got["wikipedia_dump_date"] == "20230102"
    assert got["wikipedia_url"] == f"file://{index}/20230102/{_content('20230102')}"
    assert got["wikipedia_size"] == len(WIKI) and got["wikipedia_md5"] == hashlib.md5(WIKI).hexdigest()
    assert got["cc100_size"] == 2 and got["unidic_size"] == 3
    os.utime(tmp_path / "ja.txt.xz", (0, 0))  # a fresh checkout: new mtime, same bytes
    again = {"cirrus_index_url": f"file://{index}", "cc100_url": f"file://{tmp_path}/ja.txt.xz",
             "unidic_url": str(tmp_path / "unidic.zip")}
    assert resolve_sources(**again) == got
    (tmp_path / "ja.txt.xz").write_bytes(b"CC")
    assert resolve_sources(**again)["cc100_md5"] != got["cc100_md5"]

    with pytest.raises(BadInput, match=r"'20230110'.*available: 20221201, 20230102, 20230109$"):
        resolve_sources(wikipedia_dump_date="20230110", cirrus_index_url=str(index),
                        cc100_url=str(tmp_path / "ja.txt.xz"), unidic_url=str(tmp_path / "unidic.zip"))
    with pytest.raises(BadInput, match=r"unidic_url='.*/nope.zip': no such file"):
        resolve_sources(cirrus_index_url=str(index), cc100_url=str(tmp_path / "ja.txt.xz"),
                        unidic_url=str(tmp_path / "nope.zip"))


def test_gcs_index_reports_generation_md5(gcs, tmp_path):
    index = tmp_path / "idx"
    _local_index(index)
    storage.copy_tree(str(index), f"{gcs}/cirrussearch")
    storage.write_bytes(f"{gcs}/cc-100/ja.txt.xz", b"cc")
    storage.write_bytes(f"{gcs}/unidic.zip", b"zip")
    got = resolve_sources(cirrus_index_url=f"{gcs}/cirrussearch", cc100_url=f"{gcs}/cc-100/ja.txt.xz",
                          unidic_url=f"{gcs}/unidic.zip")
    assert got["wikipedia_dump_date"] == "20230102"
    assert got["wikipedia_url"] == f"{gcs}/cirrussearch/20230102/{_content('20230102')}"
    assert got["wikipedia_md5"] == hashlib.md5(WIKI).hexdigest()
    assert got["cc100_size"] == 2


def test_cli_prints_and_writes_the_json(dumps, tmp_path, capsys):
    out = tmp_path / "sources.json"
    rc = bertja(["resolve-sources", "--cirrus-index-url", dumps.url("/other/cirrussearch/"),
                 "--cc100-url", dumps.url("/cc-100/ja.txt.xz"),
                 "--unidic-url", dumps.url("/unidic/unidic-mecab-2.1.2_src.zip"),
                 "--wikipedia-dump-date", "20230102", "--output", str(out)])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert printed["wikipedia_dump_date"] == "20230102"

    rc = bertja(["resolve-sources", "--cirrus-index-url", dumps.url("/other/cirrussearch/"),
                 "--wikipedia-dump-date", "2023-01-02"])
    assert rc == 2 and "wikipedia_dump_date='2023-01-02'" in capsys.readouterr().err
