import gzip
import lzma
import os
import subprocess
import sys

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


@pytest.mark.parametrize("content", [b"", b"\n", b"a\nb", "語彙\r\n##彙\r\r\n\n[UNK]\n".encode(), b"x\ry\n\n\n"])
def test_read_lines_gives_what_iter_lines_gives(tmp_path, content):
    for name, data in (("v.txt", content), ("v.txt.gz", gzip.compress(content))):
        (tmp_path / name).write_bytes(data)
        uri = str(tmp_path / name)
        assert storage.read_lines(uri) == [line for _n, line in storage.iter_lines(uri)]


def test_read_lines_names_the_bad_line(tmp_path):
    bad = tmp_path / "vocab.txt"
    bad.write_bytes(b"[PAD]\n[UNK]\n\xff\n")
    with pytest.raises(BadInput, match=r"vocab.txt:3: invalid UTF-8"):
        storage.read_lines(str(bad))


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


def test_a_temporary_whose_writer_died_is_swept_by_the_next_write(tmp_path):
    """A SIGKILLed writer leaves ``.NAME.HOST.PID.xxxx.tmp``; the next write of NAME removes it
    when PID no longer runs here, and leaves live writers', other hosts' and other files' alone."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = storage._HOST
    stale = tmp_path / f".out.txt.{host}.{dead.pid}.abcdefgh.tmp"
    live = tmp_path / f".out.txt.{host}.{os.getpid()}.abcdefgh.tmp"
    foreign = tmp_path / f".out.txt.otherhost.{dead.pid}.abcdefgh.tmp"
    other_output = tmp_path / f".other.txt.{host}.{dead.pid}.abcdefgh.tmp"
    for path in (stale, live, foreign, other_output):
        path.write_text("half")
    storage.write_text(str(tmp_path / "out.txt"), "done")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out.txt", live.name, foreign.name, other_output.name])


def test_prune_removes_only_the_pattern_and_not_what_is_kept(tmp_path):
    for name in ("corpus_01.txt", "corpus_02.txt", "corpus_03.txt", "corpus_x.txt", "notes.txt"):
        (tmp_path / name).write_text(name)
    (tmp_path / "corpus_04.txt").mkdir()
    removed = storage.prune(str(tmp_path), r"corpus_\d{2,}\.txt", keep=[str(tmp_path / "corpus_01.txt")])
    assert removed == [str(tmp_path / "corpus_02.txt"), str(tmp_path / "corpus_03.txt")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus_01.txt", "corpus_04.txt", "corpus_x.txt", "notes.txt"]
    assert storage.prune(str(tmp_path / "missing"), r".*", keep=[]) == []


def test_reading_a_directory_a_pipe_or_an_empty_compressed_object(tmp_path, gcs):
    with pytest.raises(BadInput, match="is a directory, expected a file"):
        storage.read_text(str(tmp_path))
    with pytest.raises(BadInput, match="is a directory, expected a file path"):
        storage.write_text(str(tmp_path), "x")
    (tmp_path / "f").write_text("x")
    with pytest.raises(BadInput, match="f is a file, expected a directory"):
        storage.write_text(str(tmp_path / "f" / "g.txt"), "x")
    with pytest.raises(BadInput, match="f is a file, expected a directory"):
        storage.read_text(str(tmp_path / "f" / "g.txt"))
    read_end, write_end = os.pipe()
    os.close(write_end)
    with pytest.raises(BadInput, match="not a regular file"):
        storage.check_rereadable(f"/proc/self/fd/{read_end}")
    os.close(read_end)
    storage.check_rereadable(str(tmp_path / "f"))
    storage.write_bytes(f"{gcs}/empty.txt.gz", b"")
    with pytest.raises(BadInput, match="empty.txt.gz: empty file"):
        storage.read_text(f"{gcs}/empty.txt.gz")
    storage.write_bytes(f"{gcs}/empty.txt", b"")
    assert storage.read_text(f"{gcs}/empty.txt") == ""  # an empty plain file is just empty
