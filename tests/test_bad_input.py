"""Bad input and faults a new user meets on the command line (issue 10): each gives one clear
line and exit 2 (or, for signals, no process or temporary left behind), through the real
``bertja`` in a subprocess wherever the exit status is the point."""

from __future__ import annotations

import gzip
import inspect
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from components import storage
from components.errors import BadInput
from components.tokenizer import files
from pipelines import cli, parameters
from pipelines.check_component import check_parameters

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"
WIKI = DATA / "wiki_parity.json.gz"
SENTENCES = DATA / "ja_sentences.txt"


def bertja(*args, stdin=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *map(str, args)], cwd=ROOT, input=stdin,
                          capture_output=True, timeout=timeout)


def refused(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2, one ``bertja ...: error:`` line naming what is wrong, no traceback."""
    err = result.stderr.decode()
    assert result.returncode == 2, (result.returncode, err[-2000:])
    assert "Traceback" not in err and "error:" in err, err[-2000:]
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


@pytest.fixture(scope="module")
def char_vocab(tmp_path_factory) -> Path:
    """A character tokenizer directory covering the test corpus."""
    chars = sorted({c for c in SENTENCES.read_text(encoding="utf-8") if not c.isspace()})
    out = tmp_path_factory.mktemp("vocab") / "char"
    files.write_tokenizer_dir(str(out), files.reserved_tokens() + chars, subword_tokenizer_type="character")
    return out


# ---------------------------------------------------------------------------
# SIGTERM / SIGKILL with --workers 2: no worker survives, no temporary stays
# ---------------------------------------------------------------------------

def _group(pgid: int) -> list[int]:
    """Running (not zombie) processes of a process group."""
    pids = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.getpgid(int(entry)) == pgid and storage._pid_running(int(entry)):
                pids.append(int(entry))
        except ProcessLookupError:
            continue
    return pids


def _temporaries(directory: Path, name: str) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.startswith(f".{name}.") and n.endswith(".tmp"))


def _wiki_job(tmp_path: Path, _vocab: Path):
    big = tmp_path / "big.json.gz"
    big.write_bytes(gzip.compress(gzip.decompress(WIKI.read_bytes()) * 100, 1))  # ~7,500 pages: tens of seconds
    out = tmp_path / "corpus.txt"
    return (["corpus", "wiki", big, out, "--workers", "2"],
            ["corpus", "wiki", WIKI, out], out)


def _pretraining_job(tmp_path: Path, vocab: Path):
    small = tmp_path / "small.txt"
    small.write_text("".join(SENTENCES.read_text(encoding="utf-8").splitlines(keepends=True)[:300]), encoding="utf-8")
    out = tmp_path / "shard.tfrecord.gz"
    common = ["--vocab-dir", vocab, "--max-seq-length", "128", "--max-predictions", "19"]
    return (["pretraining-data", SENTENCES, out, *common, "--dupe-factor", "200", "--workers", "2"],
            ["pretraining-data", small, out, *common, "--dupe-factor", "1"], out)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
@pytest.mark.parametrize("job", [_wiki_job, _pretraining_job], ids=["corpus-wiki", "pretraining-data"])
def test_a_killed_run_leaves_no_worker_and_no_temporary(tmp_path, char_vocab, job, sig):
    long_run, next_run, out = job(tmp_path, char_vocab)
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", *map(str, long_run)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (len(_group(proc.pid)) >= 3 and _temporaries(tmp_path, out.name)):  # parent + 2 workers, writing
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the workers never started"
            time.sleep(0.05)
        os.kill(proc.pid, sig)
        proc.wait(timeout=10)
        gone_by = time.monotonic() + 5
        while _group(proc.pid) and time.monotonic() < gone_by:
            time.sleep(0.05)
        assert _group(proc.pid) == [], "worker processes outlived their parent"
    finally:
        for pid in _group(proc.pid):
            os.kill(pid, signal.SIGKILL)
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM, proc.stderr.read().decode()[-3000:]
        assert _temporaries(tmp_path, out.name) == [], "SIGTERM left the temporary behind"
    else:
        assert proc.returncode == -signal.SIGKILL
        assert _temporaries(tmp_path, out.name), "a SIGKILLed writer cannot remove its temporary"
    assert not out.exists()
    result = bertja(*next_run)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert out.exists() and _temporaries(tmp_path, out.name) == [], "the next run left a stale temporary"


# ---------------------------------------------------------------------------
# Every pipeline parameter is validated, at compile time and in the first step
# ---------------------------------------------------------------------------

# One bad value (as typed after --param) for every parameter of PipelineParameters.
BAD_VALUES = {
    "wikipedia_dump_date": "20241345",
    "cirrus_index_url": "notaurl",
    "cc100_url": "notaurl",
    "unidic_url": "ftp://example.org/unidic.zip",
    "vibrato_dict_url": "https://example.org/bccwj-suw+unidic-cwj-3_1_1.tar.xz",
    "mecab_dic": "bogus",
    "word_splitter": "sudachi",
    "min_sentence_length": "-1",
    "max_sentence_length": "0",
    "cc100_num_shards": "0",
    "wikipedia_num_shards": "-3",
    "split_seed": "-1",
    "tokenizer_sample_lines": "0",
    "variants": "wordpiece,bpe",
    "vocab_size": "100",
    "limit_alphabet": "-1",
    "num_unused_tokens": "-20",
    "min_frequency": "0",
    "do_lower_case": "maybe",
    "character_vocab_size": "-1",
    "sp_model_type": "wordpiece",
    "sp_character_coverage": "1.5",
    "sp_byte_fallback": "maybe",
    "sp_split_digits": "maybe",
    "sp_control_symbols": "[CLS],[CLS]",
    "sp_user_symbols": "a b",
    "sp_normalization": "nfd",
    "whole_word_masking": "maybe",
    "next_sentence_prediction": "maybe",
    "data_format": "parquet",
    "stage1_corpus": "oscar",
    "trainer": "jax",
    "stage1_max_seq_length": "4",
    "stage1_max_predictions": "0",
    "stage1_dupe_factor": "0",
    "stage2_max_seq_length": "1024",
    "stage2_max_predictions": "600",
    "stage2_dupe_factor": "-1",
    "masked_lm_prob": "1.5",
    "short_seq_prob": "5",
    "data_seed": "-1",
    "model_size": "huge",
    "training_backend": "gpu",
    "stage1_train_steps": "-5",
    "stage2_train_steps": "-1",
    "gcp_project": "Not A Project!",
    "gcp_zone": "nowhere",
    "tpu_accelerator_type": "v3-7",
    "tpu_runtime_version": "tpu-vm-tf-2.1.0",
    "tpu_spot": "maybe",
    "tpu_queued": "maybe",
    "tpu_queue_timeout_hours": "0",
    "tpu_network": "Bad Network",
    "tpu_subnetwork": "bad/subnet",
    "tpu_service_account": "notanemail",
    "tpu_price_per_hour": "-1",
    "torch_plan": "gpt2",
    "torch_architecture": "roberta-huge",
    "torch_seq_lengths": "4",
    "torch_train_steps": "0",
    "torch_global_batch_size": "-1",
    "torch_micro_batch_size": "0",
    "release_uri": "http://example.org/models",
    "jglue_uri": "ftp://example.org/JGLUE",
    "jglue_grid": "huge",
    "jglue_seeds": "0",
}
# What the issue found compile accepting; these also go through a real `bertja` process.
ISSUE_VALUES = ("short_seq_prob", "limit_alphabet", "num_unused_tokens", "stage1_train_steps",
                "tpu_price_per_hour", "mecab_dic", "cc100_url", "wikipedia_dump_date")


def test_every_parameter_has_a_rule_a_bad_value_and_reaches_the_first_step(tmp_path):
    assert set(BAD_VALUES) == parameters.FIELDS
    assert set(parameters.RULES) == parameters.FIELDS
    assert set(inspect.signature(check_parameters.python_func).parameters) == parameters.FIELDS
    out = tmp_path / "p.yaml"
    assert cli.main(["compile", str(out), "--profile", "local"]) == 0
    spec = next(yaml.safe_load_all(out.read_text()))
    pipeline_inputs = set(spec["root"]["inputDefinitions"]["parameters"])
    assert pipeline_inputs == parameters.FIELDS
    tasks = spec["root"]["dag"]["tasks"]["exit-handler-1"]["componentRef"]["name"]
    check = spec["components"][tasks]["dag"]["tasks"]["check-parameters"]["inputs"]["parameters"]
    assert {k: v["componentInputParameter"] for k, v in check.items()} == {k: f"pipelinechannel--{k}" for k in parameters.FIELDS}


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_a_bad_parameter_fails_compile_with_exit_2_naming_it(tmp_path, capsys, name):
    code = cli.main(["compile", str(tmp_path / "p.yaml"), "--profile", "local", "--param",
                     f"{name}={BAD_VALUES[name]}"])
    assert code == 2 and f"{name}=" in capsys.readouterr().err
    assert not (tmp_path / "p.yaml").exists()


@pytest.mark.parametrize("name", ISSUE_VALUES)
def test_the_issues_bad_parameters_fail_a_real_compile(tmp_path, name):
    refused(bertja("compile", tmp_path / "p.yaml", "--profile", "local", "--param", f"{name}={BAD_VALUES[name]}"),
            f"parameter {name}=")


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_a_bad_parameter_fails_the_runs_first_step(name):
    values = parameters.merged({}, base={"training_backend": "cpu"})
    check_parameters.python_func(**values)  # the defaults pass
    try:
        bad = parameters.coerce(name, BAD_VALUES[name])
    except BadInput:
        bad = BAD_VALUES[name]  # what a UI form could still send: the wrong type
    with pytest.raises(BadInput, match=f"parameter {name}="):
        check_parameters.python_func(**{**values, name: bad})


# ---------------------------------------------------------------------------
# An output that is an input is refused before anything is written
# ---------------------------------------------------------------------------

def _tokenizer_dir(path: Path) -> Path:
    files.write_tokenizer_dir(str(path), files.reserved_tokens() + list("あいうえお"),
                              subword_tokenizer_type="wordpiece")
    return path


def test_an_output_equal_to_an_input_is_refused_and_the_input_kept(tmp_path):
    text = tmp_path / "f.txt"
    text.write_text("一行目\n\n二行目\n", encoding="utf-8")
    dump = tmp_path / "d.json.gz"
    dump.write_bytes(WIKI.read_bytes())
    tok = _tokenizer_dir(tmp_path / "D")
    link = tmp_path / "link.txt"
    link.symlink_to(text)
    records_link = tmp_path / "x.tfrecord.gz"
    records_link.symlink_to(text)
    lex = tmp_path / "lex.csv"
    lex.write_text("あ,1,1,100,名詞\n", encoding="utf-8")
    summary_input = tmp_path / "s.summary.json"
    summary_input.write_text("一行目\n", encoding="utf-8")
    before = {p: p.read_bytes() for p in (text, dump, lex, summary_input, tok / "vocab.txt")}

    cases = [
        ("corpus", "sample", text, "--output", text, "--lines", "1"),
        ("corpus", "sample", text, "--output", link, "--lines", "1"),  # the same file through a link
        ("corpus", "wiki", dump, dump),
        ("corpus", "wiki", dump, f"file://{dump}"),
        ("corpus", "split", text, "--output-dir", tmp_path, "--num-files", "2"),  # the directory holds it
        ("tokenizer", "character", tok, tok),
        ("tokenizer", "train", tok / "vocab.txt", "--output-dir", tok, "--workers", "1"),
        ("alphabet", lex, lex),
        ("download", f"file://{text}", text),
        ("pretraining-data", summary_input, tmp_path / "s.tfrecord.gz", "--vocab-dir", tok),  # its summary
        ("pretraining-data", text, records_link, "--vocab-dir", tok),
        ("convert", tmp_path / "ckpt" / "ckpt-1", tmp_path / "ckpt", "--tokenizer-dir", tok),
        ("publish", tok, tok),
        ("evaluate", tok, "--output-dir", tok),
    ]
    for case in cases:
        refused(bertja(*case), "input")
    for path, data in before.items():
        assert path.read_bytes() == data, f"{path} was changed"


def test_the_shared_check_compares_resolved_paths_and_gcs_uris(tmp_path):
    storage.check_outputs([str(tmp_path / "a.txt")], files=[str(tmp_path / "b.txt")], dirs=[str(tmp_path / "out")])
    with pytest.raises(BadInput, match="output is the input"):
        storage.check_outputs([str(tmp_path / "sub" / ".." / "a.txt")], files=[str(tmp_path / "a.txt")])
    with pytest.raises(BadInput, match="output is the input"):
        storage.check_outputs(["gs://b/x/../corpus.txt"], files=["gs://b/corpus.txt"])
    with pytest.raises(BadInput, match="output directory holds the input"):
        storage.check_outputs(["gs://b/run/shards/corpus_01.txt"], dirs=["gs://b/run/shards/"])
    storage.check_outputs(["gs://b/run/shards2/corpus_01.txt"], dirs=["gs://b/run/shards"])  # a sibling, not inside
    storage.check_outputs(["https://example.org/d.json.gz"], files=["gs://b/d.json.gz"])  # http is never written
    (tmp_path / "model").mkdir()
    storage.check_outputs([str(tmp_path / "model")], dirs=[str(tmp_path / "model" / "hf")])  # output under input


# ---------------------------------------------------------------------------
# Pipes, directories, files in the wrong place, empty .gz, bad UTF-8: exit 2 in every step
# ---------------------------------------------------------------------------

def test_sample_refuses_a_pipe_instead_of_sampling_it_empty(tmp_path):
    out = tmp_path / "sample.txt"
    err = refused(bertja("corpus", "sample", "/dev/stdin", "--output", out, "--lines", "2",
                         stdin="一行目\n二行目\n三行目\n".encode()), "/dev/stdin", "not a regular file")
    assert "twice" in err and not out.exists()


def test_directories_and_files_in_the_wrong_place_are_bad_input(tmp_path, char_vocab):
    text = tmp_path / "f.txt"
    text.write_text("一行目\n\n二行目\n", encoding="utf-8")
    folder = tmp_path / "folder"
    folder.mkdir()
    cases = [
        (("corpus", "wiki", folder, tmp_path / "o.txt"), "is a directory"),
        (("corpus", "sample", folder, "--output", tmp_path / "o.txt", "--lines", "1"), "is a directory"),
        (("corpus", "split", folder, "--output-dir", tmp_path / "shards", "--num-files", "2"), "is a directory"),
        (("pretraining-data", folder, tmp_path / "o.tfrecord.gz", "--vocab-dir", char_vocab), "is a directory"),
        (("corpus", "wiki", WIKI, folder), "is a directory"),
        (("corpus", "sample", text, "--output", folder, "--lines", "1"), "is a directory"),
        (("corpus", "split", text, "--output-dir", tmp_path / "f.txt" / "shards", "--num-files", "2"),
         "is a file, expected a directory"),
        (("corpus", "split", WIKI, "--output-dir", text, "--num-files", "2"), "is a file, expected a directory"),
        (("tokenizer", "character", text, tmp_path / "char"), "is a file, expected a directory"),
        (("tokenizer", "character", char_vocab, text), "is a file, expected a directory"),
        (("pretraining-data", text, tmp_path / "o.tfrecord.gz", "--vocab-dir", text), "is a file"),
        (("alphabet", folder, tmp_path / "a.txt"), "is a directory"),
    ]
    for args, fragment in cases:
        refused(bertja(*args), fragment)
    assert sorted(os.listdir(folder)) == [] and text.read_text(encoding="utf-8") == "一行目\n\n二行目\n"


def test_an_empty_compressed_file_is_not_an_empty_corpus(tmp_path, char_vocab):
    for name in ("empty.json.gz", "empty.txt.gz", "empty.txt.xz"):
        (tmp_path / name).write_bytes(b"")
    refused(bertja("corpus", "wiki", tmp_path / "empty.json.gz", tmp_path / "o.txt"), "empty.json.gz: empty file")
    refused(bertja("corpus", "split", tmp_path / "empty.txt.gz", "--output-dir", tmp_path / "s", "--num-files", "1"),
            "empty.txt.gz: empty file")
    refused(bertja("corpus", "sample", tmp_path / "empty.txt.xz", "--output", tmp_path / "o.txt", "--lines", "1"),
            "empty.txt.xz: empty file")
    refused(bertja("pretraining-data", tmp_path / "empty.txt.gz", tmp_path / "o.tfrecord.gz", "--vocab-dir",
                   char_vocab), "empty.txt.gz: empty file")
    assert not (tmp_path / "o.txt").exists() and storage.list_files(str(tmp_path / "s")) == []
    # A real gzip of nothing is still an empty, valid file.
    (tmp_path / "valid.txt.gz").write_bytes(gzip.compress(b""))
    assert list(storage.iter_lines(str(tmp_path / "valid.txt.gz"))) == []


def test_invalid_utf8_is_refused_by_every_step_alike(tmp_path, char_vocab):
    bad = tmp_path / "bad.txt"
    bad.write_bytes("一行目です。\n\n".encode() + b"\xff\xfe broken\n" + "二行目です。\n".encode())
    for args in (("pretraining-data", bad, tmp_path / "o.tfrecord.gz", "--vocab-dir", char_vocab, "--workers", "2"),
                 ("pretraining-data", bad, tmp_path / "o.tfrecord.gz", "--vocab-dir", char_vocab),
                 ("corpus", "sample", bad, "--output", tmp_path / "o.txt", "--lines", "1"),
                 ("corpus", "split", bad, "--output-dir", tmp_path / "s", "--num-files", "1")):
        refused(bertja(*args), f"{bad}:3: invalid UTF-8")
    assert not (tmp_path / "o.tfrecord.gz").exists() and not (tmp_path / "o.txt").exists()
