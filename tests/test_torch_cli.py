"""``bertja train --engine torch`` on real token shards: fill-mask on its output, a shard of another
tokenizer refused, and DDP for real: two CPU processes under torchrun (gloo) train exactly as one."""

import json
import os
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from components.errors import BadInput  # noqa: E402
from components.pretraining_data.shards import write_token_shards  # noqa: E402
from components.tokenizer.byte import write_byte_tokenizer  # noqa: E402
from components.train import synthetic  # noqa: E402
from components.train.cli import main as train_cli  # noqa: E402

SENTENCES = os.path.join(os.path.dirname(__file__), "data", "ja_sentences.txt")
BIN = os.path.dirname(sys.executable)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """A byte tokenizer (MeCab words) and two token-shard directories of real Japanese prose."""
    root = tmp_path_factory.mktemp("shards")
    tokenizer = str(root / "tokenizer")
    write_byte_tokenizer(tokenizer)
    with open(SENTENCES, encoding="utf-8") as f:
        text = f.read().split("\n\n")
    dirs = []
    for i, docs in enumerate((text[:6], text[6:12])):
        corpus = root / f"corpus-{i}.txt"
        corpus.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
        out = str(root / f"shard-{i}")
        write_token_shards(str(corpus), out, tokenizer)
        dirs.append(out)
    return tokenizer, dirs


def _args(model_dir, tokenizer, data, *extra):
    return ["--engine", "torch", "--data", data, "--model-dir", str(model_dir), "--tokenizer-dir", tokenizer,
            "--device", "cpu", "--log-every", "2", *extra]


def test_roberta_trains_from_shards_and_answers_the_plain_fill_mask_pipeline(tmp_path, shards, capsys):
    tokenizer, dirs = shards
    root = os.path.dirname(dirs[0])
    code = train_cli(_args(tmp_path / "m", tokenizer, os.path.join(root, "shard-*"), "--plan", "rinna-roberta",
                           "--architecture", "roberta-tiny", "--seq-length", "128", "--train-steps", "4",
                           "--global-batch-size", "4", "--micro-batch-size", "2", "--workers", "1"))
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["finished"] and "history" not in result["stages"][0]
    fill = transformers.pipeline("fill-mask", model=result["hf_dir"], device="cpu")
    answers = fill("今日は[MASK]です。")
    assert len(answers) == 5 and all(0 <= a["score"] <= 1 for a in answers)
    # RoBERTa's own position numbering (from pad + 1) is what training used: same logits with explicit ids
    import torch

    model = transformers.AutoModelForMaskedLM.from_pretrained(result["hf_dir"]).eval()
    ids = fill.tokenizer("今日は[MASK]です。", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        auto = model(input_ids=ids).logits
        explicit = model(input_ids=ids, position_ids=torch.arange(ids.shape[1])[None] + 1).logits
    torch.testing.assert_close(auto, explicit)


def test_shard_of_another_tokenizer_is_refused_before_training(tmp_path, shards):
    _tokenizer, dirs = shards
    wordpiece = synthetic.write_tokenizer_dir(str(tmp_path / "wp"), vocab_size=512, subword_tokenizer_type="wordpiece")
    with pytest.raises(BadInput, match="shard made with a byte tokenizer of 261 tokens"):
        train_cli(_args(tmp_path / "m", wordpiece, dirs[0], "--plan", "bert", "--architecture", "bert-tiny",
                        "--seq-length", "128", "--train-steps", "2"))
    assert not (tmp_path / "m" / "stage1").exists()
    with pytest.raises(BadInput, match="no token-shards directory"):
        train_cli(_args(tmp_path / "m", wordpiece, str(tmp_path / "nothing"), "--plan", "bert"))


def test_ddp_two_cpu_processes_equal_one_process(tmp_path, shards):
    """torchrun, 2 processes, gloo: each rank takes half of every global batch; the losses and the
    weights equal a one-process run with the same global batch (2 micro-batches accumulated)."""
    if not shutil.which("torchrun", path=BIN):
        pytest.skip("torchrun not installed")
    tokenizer, dirs = shards
    common = ["train", *_args("MODEL", tokenizer, ",".join(dirs), "--plan", "bybert", "--architecture",
                                "eurobert-tiny", "--seq-length", "128", "--train-steps", "3", "--global-batch-size",
                                "4", "--micro-batch-size", "2", "--workers", "0", "--learning-rate", "1e-3")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {}
    for name, launcher in (("one", [os.path.join(BIN, "bertja")]),
                           ("ddp", [os.path.join(BIN, "torchrun"), "--standalone", "--nproc-per-node", "2",
                                    "--no-python", os.path.join(BIN, "bertja")])):
        model_dir = str(tmp_path / name)
        argv = [a if a != "MODEL" else model_dir for a in common]
        done = subprocess.run([*launcher, *argv], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[name] = json.loads(open(os.path.join(model_dir, "stage1", "result.json")).read())
    if "2 rank(s)" not in done.stderr:
        pytest.fail("torchrun did not run two ranks:\n" + done.stderr[-2000:])
    one, ddp = runs["one"]["history"], runs["ddp"]["history"]
    assert [s for s, _ in one] == [s for s, _ in ddp] == [1, 2, 3]
    assert [loss for _, loss in one] == pytest.approx([loss for _, loss in ddp], rel=1e-4)
    from safetensors.torch import load_file
    import torch

    w1, w2 = (load_file(os.path.join(tmp_path / n, "hf", "model.safetensors")) for n in ("one", "ddp"))
    assert all(torch.allclose(w1[k], w2[k], atol=1e-5) for k in w1)


def test_bench_compares_with_a_plain_transformers_trainer(capsys):
    pytest.importorskip("accelerate")
    from components.torch_train.bench import main as bench

    assert bench(["--config", "tiny", "--seq-length", "64", "--steps", "3", "--device", "cpu"]) == 0
    report = {k.strip(): v for k, v in (line.split(" : ", 1) for line in capsys.readouterr().out.splitlines()
                                         if " : " in line)}
    assert float(report["tokens/s (after first step)"].strip()) > 0
    assert float(report["s/step (transformers.Trainer, same batches)"].strip()) > 0
    assert float(report["ours / Trainer"].strip()) > 0
