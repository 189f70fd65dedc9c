import gzip
import lzma
import os

import pytest

from components import storage
from components.errors import BadInput


def test_local_roundtrip_gzip_and_atomic(tmp_path):
    out = tmp_path / "sub" / "a.txt.gz"
    with storage.open_write(str(out), text=True) as f:
        f.write("一行目\n二行目\n")
    assert gzip.decompress(out.read_bytes()).decode() == "一行目\n二行目\n"
    assert list(storage.iter_lines(str(out))) == [(1, "一行目"), (2, "二行目")]

    with pytest.raises(RuntimeError):
        with storage.open_write(str(tmp_path / "b.txt"), text=True) as f:
            f.write("partial")
            raise RuntimeError("boom")
    assert sorted(os.listdir(tmp_path)) == ["sub"], "failed write left a file behind"


def test_truncated_xz_and_bad_utf8_name_the_file_and_line(tmp_path):
    xz = tmp_path / "c.txt.xz"
    xz.write_bytes(lzma.compress(("あ\n" * 10000).encode())[:50])
    with pytest.raises(BadInput, match="c.txt.xz: truncated"):
        list(storage.iter_lines(str(xz)))
    bad = tmp_path / "d.txt"
    bad.write_bytes("ok\n".encode() + b"\xff\xfe\n")
    with pytest.raises(BadInput, match=r"d.txt:2: invalid UTF-8"):
        list(storage.iter_lines(str(bad)))


def test_gcs_roundtrip_glob_and_failed_write(gcs):
    uri = f"{gcs}/dir/x.txt.gz"
    with storage.open_write(uri, text=True) as f:
        f.write("こんにちは\n")
    assert storage.exists(uri)
    assert storage.read_text(uri) == "こんにちは\n"
    storage.write_text(f"{gcs}/dir/y.txt", "y")
    assert storage.glob(f"{gcs}/dir/*.txt") == [f"{gcs}/dir/y.txt"]
    assert storage.list_files(f"{gcs}/dir") == [uri, f"{gcs}/dir/y.txt"]
    with pytest.raises(RuntimeError):
        with storage.open_write(f"{gcs}/dir/z.txt") as f:
            f.write(b"half")
            raise RuntimeError("boom")
    assert not storage.exists(f"{gcs}/dir/z.txt")
    with pytest.raises(BadInput, match="malformed"):
        storage.exists("gs:///nobucket")


def test_gcs_missing_object_and_glob_parts(gcs):
    for uri in (f"{gcs}/missing.txt", f"{gcs}/missing.txt.gz"):
        with pytest.raises(BadInput, match=f"{uri}: no such object"):
            storage.read_text(uri)
    storage.write_text(f"{gcs}/g/a.txt", "a")
    storage.write_text(f"{gcs}/g/sub/b.txt", "b")
    # As a local glob (and tf.io.gfile.glob): * does not reach into sub-folders.
    assert storage.glob(f"{gcs}/g/*.txt") == [f"{gcs}/g/a.txt"]
    assert storage.glob(f"{gcs}/g/*/*.txt") == [f"{gcs}/g/sub/b.txt"]
