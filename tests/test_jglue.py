"""JGLUE and livedoor fine-tuning: readers of the distributed layouts, metrics against hand-computed
values, token-to-character alignment for slow tokenizers, every head on a tiny model, the CLI."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import pytest

from components.errors import BadInput
from components.evaluate import finetune, jglue, metrics, tasks
from components.tokenizer import files as tokenizer_files
from tiny_bert import make_tiny_bert

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "tests", "data", "jglue")
DATASETS = os.path.join(DATA, "datasets")
SENTENCES = os.path.join(REPO, "tests", "data", "ja_sentences.txt")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """Characters of the sample sentences only: the JGLUE files' other characters are [UNK]."""
    with open(SENTENCES, encoding="utf-8") as f:
        return make_tiny_bert(str(tmp_path_factory.mktemp("model")), f.readlines(), max_chars=300,
                              max_position_embeddings=128)


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


# --- metrics, by hand -------------------------------------------------------------------------

def test_correlations_by_hand_with_ties():
    x, y = [1, 2, 3, 4], [2, 4, 5, 4]
    # means 2.5, 3.75; sxy = 3.5, sxx = 5, syy = 4.75
    assert metrics.pearson(x, y) == pytest.approx(3.5 / math.sqrt(5 * 4.75))
    # y's ranks: 2 -> 1, the two 4s share (2 + 3) / 2, 5 -> 4
    assert metrics.ranks(y) == [1, 2.5, 4, 2.5]
    # Pearson of [1,2,3,4] and [1,2.5,4,2.5]: sxy = 3, sxx = 5, syy = 4.5
    assert metrics.spearman(x, y) == pytest.approx(3 / math.sqrt(5 * 4.5))
    assert metrics.spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert metrics.pearson([1, 2, 3], [3, 3, 3]) == 0.0  # a constant prediction shows no relation


def test_accuracy_and_japanese_answers_by_hand():
    assert metrics.accuracy([0, 1, 2, 1], [0, 1, 1, 1]) == 0.75
    # 東京 vs 東京都: 2 shared characters, precision 1, recall 2/3 -> F1 0.8
    assert metrics.char_f1(["東京都"], "東京") == pytest.approx(0.8)
    assert metrics.exact_match(["東京都"], "東京") == 0.0
    assert metrics.exact_match(["東京都"], "東京都。") == 1.0  # JGLUE strips a trailing 。
    assert metrics.exact_match(["Tokyo Tower"], " tokyo  tower ") == 1.0  # lower case, whitespace runs
    # The best gold answer counts: vs 酢飯 P=2/3 R=1 (0.8); vs 酢飯に魚 P=1 R=3/4 (6/7)
    assert metrics.char_f1(["酢飯", "酢飯に魚"], "酢飯に") == pytest.approx(6 / 7)
    # characters are a bag: ああい vs あい shares 2 (one あ, one い)
    assert metrics.char_f1(["ああい"], "あい") == pytest.approx(0.8)
    assert metrics.char_f1(["東京"], "") == 0.0
    assert metrics.score(("exact_match", "f1"), [["東京都"], ["大阪"]], ["東京", "大阪"]) == {
        "exact_match": 0.5, "f1": pytest.approx(0.9)}
    assert metrics.score(("accuracy", "macro_f1"), [0, 1, 1, 2], [0, 0, 1, 2], num_labels=3) == {
        "accuracy": 0.75, "macro_f1": pytest.approx((2 / 3 + 2 / 3 + 1) / 3)}


# --- alignment --------------------------------------------------------------------------------

def test_slow_tokenizer_gives_no_offsets_so_tokens_are_aligned_by_hand(tokenizer):
    text = "東京タワー [SEP] 東京タワーは港区にある。ＡＢＣ㌔"
    assert not tokenizer.is_fast
    assert "offset_mapping" not in tokenizer(text, return_offsets_mapping=True)  # silently none
    spans = finetune.token_spans(tokenizer, text)
    assert [t for t, _s, _e in spans] == tokenizer.tokenize(text)
    sep = [(s, e) for t, s, e in spans if t == "[SEP]"]
    assert sep == [(6, 11)]
    for token, s, e in spans:
        assert 0 <= s <= e <= len(text)
        if token != tokenizer.unk_token and token != "[SEP]":
            import unicodedata
            assert token in unicodedata.normalize("NFKC", text[s:e]).lower(), (token, text[s:e])
    # ㌔ normalises to キロ: both tokens come from that one character
    assert [(s, e) for t, s, e in spans[-2:]] == [(len(text) - 1, len(text))] * 2
    # spans never go backwards
    assert all(a[1] <= b[1] for a, b in zip(spans, spans[1:]))


def test_alignment_with_wordpiece_unknown_words(tmp_path):
    from transformers import AutoTokenizer

    words = ["東京", "は", "日本", "の", "首都", "です", "。", "##京", "大"]
    tokenizer_files.write_tokenizer_dir(str(tmp_path), tokenizer_files.reserved_tokens() + words,
                                        subword_tokenizer_type="wordpiece")
    tok = AutoTokenizer.from_pretrained(str(tmp_path))
    text = "東京は日本の首都です。大阪は違う。"
    spans = finetune.token_spans(tok, text)
    assert [(t, text[s:e]) for t, s, e in spans[:7]] == [
        ("東京", "東京"), ("は", "は"), ("日本", "日本"), ("の", "の"), ("首都", "首都"), ("です", "です"), ("。", "。")]
    # 大阪 / は / 違う: unknown words are [UNK]s sharing the skipped characters in order
    rest = [(t, text[s:e]) for t, s, e in spans[7:]]
    assert rest[-1] == ("。", "。") and "".join(piece for _t, piece in rest[:-1]) == "大阪は違う"


def test_qa_windows_overlap_and_point_at_the_answer(tokenizer):
    context = "題名 [SEP] " + "山と川と海と空。" * 12 + "答えは仙台市である。" + "森と畑。" * 10
    start = context.index("仙台市")
    example = tasks.QAExample("q1", "どこ？", context, (("仙台市", start),))
    head = finetune.QuestionAnsweringHead(tokenizer, jglue.tasks.JGLUE_TASKS["jsquad"], 48)
    windows = head.windows(example)
    assert len(windows) > 3 and all(len(w["input_ids"]) <= 48 for w in windows)
    hits = [w for w in windows if w["target"] != (0, 0)]
    assert hits and len(hits) < len(windows)
    for w in hits:
        s, e = w["target"]
        assert context[w["spans"][s - w["offset"]][0]:w["spans"][e - w["offset"]][1]] == "仙台市"
    # consecutive windows share tokens (the stride), and together cover the whole context
    covered = sorted({sp for w in windows for sp in w["spans"]})
    assert covered == sorted({(s, e) for _t, s, e in finetune.token_spans(tokenizer, context)})
    assert set(windows[0]["spans"]) & set(windows[1]["spans"])


def test_qa_head_learns_its_training_questions(tmp_path):
    """Targets and decoding agree: a model trained on the questions (windows of 40 tokens, so most
    contexts are cut) answers them exactly, with the answer's own characters."""
    from transformers import AutoTokenizer

    task, train, _dev, _ = tasks.read_jglue_task(DATA, "jsquad")
    model = make_tiny_bert(str(tmp_path), [ex.context + ex.question for ex in train])
    head = finetune.QuestionAnsweringHead(AutoTokenizer.from_pretrained(model), task, 40)
    assert sum(len(head.windows(ex)) for ex in train) > len(train)
    result = finetune.fit(model, AutoTokenizer.from_pretrained(model), task, train, train, epochs=20,
                          learning_rate=3e-3, batch_size=4, max_length=40, seed=0)
    assert result["metrics"] == {"exact_match": 1.0, "f1": 1.0}


def test_qa_batches_stream_examples(tokenizer):
    """A batch is made from the examples it needs: the first comes before later examples are read."""
    def examples():
        for i in range(3):
            yield tasks.QAExample(f"q{i}", "どこ？", "題名 [SEP] 仙台市にある。", (("仙台市", 8),))
        raise AssertionError("read past the first batch")

    head = finetune.QuestionAnsweringHead(tokenizer, jglue.tasks.JGLUE_TASKS["jsquad"], 64)
    inputs, n = next(iter(head.batches(examples(), 2)))
    assert inputs["input_ids"].shape[0] == 2 and n == 2


# --- readers and bad input --------------------------------------------------------------------

def test_reads_every_task_from_the_repository_or_datasets_folder():
    for root in (DATA, DATASETS):
        task, train, dev, data = tasks.read_jglue_task(root, "jsts")
        assert data["version"] == "1.3" and data["valid"].endswith("jsts-v1.3/valid-v1.3.json")
        assert len(train) == 12 and len(dev) == 6 and all(0 <= ex.label <= 5 for ex in train)
    _t, train, _d, _ = tasks.read_jglue_task(DATA, "jnli")
    assert {ex.label for ex in train} == {0, 1, 2} and len(train[0].texts) == 2
    _t, train, _d, _ = tasks.read_jglue_task(DATA, "marc_ja")
    assert len(train[0].texts) == 1 and {ex.label for ex in train} == {0, 1}
    _t, train, _d, _ = tasks.read_jglue_task(DATA, "jcommonsenseqa")
    assert len(train[0].texts) == 6 and train[1].label == 2
    _t, train, dev, _ = tasks.read_jglue_task(DATA, "jsquad")
    assert all(ex.context[s:s + len(a)] == a for ex in train + dev for a, s in ex.answers)
    assert " [SEP] " in train[0].context and len(dev[0].answers) == 2
    assert tasks.parse_tasks("") == ["jsts", "jnli", "jsquad", "jcommonsenseqa"]
    assert tasks.parse_tasks("jsquad, MARC-ja") == ["marc_ja", "jsquad"]
    with pytest.raises(BadInput, match="unknown task"):
        tasks.parse_tasks("jsts,glue")


def test_any_version_and_early_string_labels(tmp_path):
    old = tmp_path / "datasets" / "jsts-v1.1"
    old.mkdir(parents=True)
    (old / "train-v1.1.json").write_text(json.dumps({"sentence1": "あ", "sentence2": "い", "label": "3.8"}) + "\n",
                                         encoding="utf-8")
    (old / "valid-v1.1.json").write_text(json.dumps({"sentence1": "う", "sentence2": "え", "label": "0.0"}) + "\n",
                                         encoding="utf-8")
    _t, train, dev, data = tasks.read_jglue_task(str(tmp_path), "jsts")
    assert data["version"] == "1.1" and train[0].label == 3.8 and dev[0].label == 0.0
    newer = tmp_path / "datasets" / "jsts-v1.10"
    shutil.copytree(old, newer)
    for split in ("train", "valid"):
        (newer / f"{split}-v1.1.json").rename(newer / f"{split}-v1.10.json")
    assert tasks.find_task_files(str(tmp_path), "jsts")[2] == "1.10"  # versions compare as numbers


def _copy_task(tmp_path, name):
    folder = next(d for d in os.listdir(DATASETS) if d.startswith(name + "-v"))
    shutil.copytree(os.path.join(DATASETS, folder), tmp_path / "datasets" / folder)
    return tmp_path / "datasets" / folder


@pytest.mark.parametrize("task, line, message", [
    ("jnli", '{"sentence1": "a", "sentence2": "b", "label": "unrelated"}',
     r"valid-v1\.3\.json:7: label 'unrelated' is not one of entailment, contradiction, neutral"),
    ("jsts", '{"sentence1": "a", "sentence2": "b", "label": 5.5}', r"valid-v1\.3\.json:7: label 5\.5 is not a similarity"),
    ("jsts", '{"sentence1": "a", "sentence2": "b", "label": "high"}', r"valid-v1\.3\.json:7: label 'high'"),
    ("jcommonsenseqa", json.dumps({"q_id": 1, "question": "q", **{f"choice{i}": "c" for i in range(5)}, "label": 5}),
     r"valid-v1\.3\.json:6: label 5 is not a choice number 0-4"),
    ("marc_ja", '{"sentence": "よい", "label": "neutral"}', r"valid-v1\.1\.json:9: label 'neutral' is not one of"),
    ("jnli", '{"sentence1": "a", "sentence2": "b", "label": "neutral"', r"valid-v1\.3\.json:7: not valid JSON"),
    ("jnli", '{"sentence1": "a", "label": "neutral"}', r"valid-v1\.3\.json:7: 'sentence2' must be a non-empty string"),
])
def test_bad_lines_are_named(tmp_path, task, line, message):
    folder = _copy_task(tmp_path, task)
    valid = next(folder.glob("valid-*.json"))
    valid.write_text(valid.read_text(encoding="utf-8") + line + "\n", encoding="utf-8")
    with pytest.raises(BadInput, match=message):
        tasks.read_jglue_task(str(tmp_path), task)


def test_jsquad_answer_offsets_are_checked(tmp_path):
    folder = _copy_task(tmp_path, "jsquad")
    doc = json.loads((folder / "train-v1.3.json").read_text(encoding="utf-8"))
    qa = doc["data"][0]["paragraphs"][0]["qas"][0]
    qa["answers"][0]["answer_start"] += 1
    (folder / "train-v1.3.json").write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(BadInput, match=rf"train-v1\.3\.json: data\[0\]\.paragraphs\[0\], question {qa['id']}: "
                                        rf"answer '{qa['answers'][0]['text']}' is not at character"):
        tasks.read_jglue_task(str(tmp_path), "jsquad")
    (folder / "train-v1.3.json").write_text('{"data": ["an article"]}', encoding="utf-8")
    with pytest.raises(BadInput, match=r"train-v1\.3\.json: data\[0\]: expected"):
        tasks.read_jglue_task(str(tmp_path), "jsquad")
    (folder / "train-v1.3.json").write_text('{"data": [', encoding="utf-8")
    with pytest.raises(BadInput, match=r"train-v1\.3\.json:1: not valid JSON"):
        tasks.read_jglue_task(str(tmp_path), "jsquad")


def test_missing_task_directory_and_dev_file(tmp_path):
    _copy_task(tmp_path, "jsts")
    with pytest.raises(BadInput, match=r"no jnli-v<version>/train-v<version>\.json"):
        tasks.read_jglue_task(str(tmp_path), "jnli")
    os.remove(tmp_path / "datasets" / "jsts-v1.3" / "valid-v1.3.json")
    with pytest.raises(BadInput, match=r"valid-v1\.3\.json: missing"):
        tasks.read_jglue_task(str(tmp_path), "jsts")


# --- livedoor ---------------------------------------------------------------------------------

LIVEDOOR_CATEGORIES = ("dokujo-tsushin", "it-life-hack", "kaden-channel", "livedoor-homme", "movie-enter",
                       "peachy", "smax", "sports-watch", "topic-news")


def _livedoor(root, per_category=5):
    topics = ["山", "川", "海", "空", "森", "花", "雨", "星", "猫"]
    for c, category in enumerate(LIVEDOOR_CATEGORIES):
        folder = root / "text" / category
        folder.mkdir(parents=True)
        (folder / "LICENSE.txt").write_text("not an article\n", encoding="utf-8")
        for n in range(per_category):
            (folder / f"{category}-{1000 + n}.txt").write_text(
                f"http://news.livedoor.com/article/detail/{c}{n}/\n2012-01-0{n + 1}T10:00:00+0900\n"
                f"{topics[c]}の話{n}\n{topics[c] * 3}について書いた記事です。\n\n続きの文。\n", encoding="utf-8")
    return root


def test_livedoor_split_is_stratified_and_seeded(tmp_path):
    root = str(_livedoor(tmp_path))
    task, train, dev, data = tasks.read_livedoor(root, seed=0)
    assert task.labels == LIVEDOOR_CATEGORIES and data["categories"] == list(LIVEDOOR_CATEGORIES)
    assert len(train) == 36 and len(dev) == 9 and sorted(ex.label for ex in dev) == list(range(9))
    assert train[0].texts[0].startswith(("山の話", "川の話")) and "続きの文。" in train[0].texts[0]
    assert tasks.read_livedoor(os.path.join(root, "text"), seed=0)[2] == dev  # text/ itself works too
    assert tasks.read_livedoor(root, seed=0)[2] == dev
    assert any(tasks.read_livedoor(root, seed=s)[2] != dev for s in (1, 2, 3))
    (tmp_path / "text" / "smax" / "smax-1000.txt").write_text("no url here\n", encoding="utf-8")
    with pytest.raises(BadInput, match=r"smax-1000\.txt:1: expected a livedoor article"):
        tasks.read_livedoor(root)


# --- fine-tuning ------------------------------------------------------------------------------

def test_every_jglue_task_fine_tunes_and_is_scored(model_dir, tmp_path):
    out = tmp_path / "out"
    result = jglue.evaluate_jglue(model_dir, output_dir=str(out), jglue_dir=DATA,
                                  task_names="marc_ja,jsts,jnli,jsquad,jcommonsenseqa", grid="quick", seeds=2)
    saved = json.loads((out / "jglue.json").read_text())
    assert saved == result["results"]
    assert {t: sorted(m) for t, m in saved.items()} == {
        "marc_ja": ["accuracy"], "jsts": ["pearson", "spearman"], "jnli": ["accuracy"],
        "jsquad": ["exact_match", "f1"], "jcommonsenseqa": ["accuracy"]}
    for task, values in saved.items():
        for name, value in values.items():
            assert (-1 if name in ("pearson", "spearman") else 0) <= value <= 1, (task, name, value)
    details = json.loads((out / "jglue_details.json").read_text())["tasks"]
    for task, r in details.items():
        assert r["seeds"] == [0, 1] and set(r["std"]) == set(saved[task])
        assert r["selected"]["learning_rate"] == 5e-5 and r["selected"]["epochs"] == 1
        assert r["cost"]["fine_tunings"] == 2 and r["cost"]["train_examples_per_second"] > 0
        assert all(run["cost"]["train_seconds"] > 0 for p in r["points"] for run in p["runs"])
    assert details["jcommonsenseqa"]["selected"]["batch_size"] == 64
    assert details["jsquad"]["selected"]["max_length"] == 128  # quick caps JSQuAD's 384
    table = (out / "jglue.md").read_text(encoding="utf-8")
    assert table == result["markdown"] and "| Model | MARC-ja (accuracy) | JSTS (pearson / spearman) |" in table
    assert f"{saved['jsts']['pearson']:.3f} ± " in table and "(published)" not in table  # tiny: none published


def test_published_numbers_sit_beside_ours_for_the_same_size_and_tokenizer(model_dir, tmp_path):
    base = tmp_path / "base-like"
    shutil.copytree(model_dir, base)
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "hidden_size": 768, "num_hidden_layers": 12}))
    name, scores = jglue.published_for(str(base))
    assert name == "bert-base-japanese-char-v3" and scores["jsts"] == {"pearson": 0.914, "spearman": 0.875}
    assert jglue.published_for(model_dir) is None
    ours = {"task": "jsts", "metrics": {"pearson": 0.5, "spearman": 0.25}, "std": {}, "seeds": [0], "grid": "jglue",
            "selected": {"learning_rate": 3e-5, "epochs": 4, "max_length": 128, "batch_size": 32},
            "train_examples": 10, "dev_examples": 5,
            "cost": {"fine_tunings": 6, "wall_seconds": 2.0, "train_examples_per_second": 30.0}}
    table = jglue.render_table({"jsts": ours}, model_name="m", published=(name, scores))
    assert "| `m` (ours) | 0.500 / 0.250 |" in table
    assert "| `bert-base-japanese-char-v3` (published) | 0.914 / 0.875 |" in table
    assert "| JSTS | 3e-05 | 4 | 128 | 32 | 10 / 5 | 6 | 2.0 | 30.0 |" in table


def test_jglue_grid_is_the_papers_and_picks_the_best_dev_point(model_dir, tokenizer, monkeypatch):
    calls = []

    def fake_fit(model_dir, tokenizer, task, train, dev, *, epochs, learning_rate, seed, **kwargs):
        calls.append((learning_rate, epochs, seed, kwargs["warmup_ratio"], kwargs["max_length"], kwargs["batch_size"]))
        score = 0.9 if (learning_rate, epochs) == (3e-5, 4) else 0.5 + seed / 100
        return {"epochs": epochs, "train_examples": len(train), "seed": seed, "metrics": {"accuracy": score},
                "cost": {"train_seconds": 1.0, "max_rss_mib": 1.0}}

    monkeypatch.setattr(finetune, "fit", fake_fit)
    task = tasks.JGLUE_TASKS["jcommonsenseqa"]
    result = jglue.run_task(model_dir, tokenizer, task, [1, 2], [3], grid="jglue", seeds=2, seed=7)
    assert sorted({(lr, ep) for lr, ep, *_ in calls}) == sorted((lr, ep) for lr in (5e-5, 3e-5, 2e-5) for ep in (3, 4))
    assert {(s, w, m, b) for _lr, _ep, s, w, m, b in calls} == {(7, 0.1, 64, 64), (8, 0.1, 64, 64)}
    assert result["selected"]["learning_rate"] == 3e-5 and result["selected"]["epochs"] == 4
    assert result["metrics"] == {"accuracy": 0.9} and result["std"] == {"accuracy": 0.0}
    assert result["cost"]["fine_tunings"] == 12 and result["cost"]["train_examples_per_second"] == pytest.approx(
        sum(ep * 2 for _lr, ep, *_ in calls) / 12)


def test_livedoor_fine_tunes_with_accuracy_and_macro_f1(model_dir, tmp_path):
    root = str(_livedoor(tmp_path / "livedoor", per_category=3))
    result = jglue.evaluate_jglue(model_dir, output_dir=str(tmp_path / "out"), livedoor_dir=root, grid="quick")
    assert sorted(result["results"]["livedoor"]) == ["accuracy", "macro_f1"]
    assert result["details"]["tasks"]["livedoor"]["dev_examples"] == 9
    assert "| Model | livedoor (accuracy / macro_f1) |" in result["markdown"]


def test_cli_writes_the_table_and_rejects_bad_data_before_training(model_dir, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pipelines.cli", "evaluate", model_dir, "--jglue", DATA, "--tasks", "jsts",
           "--grid", "quick", "--max-examples", "4", "--output-dir", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert set(json.loads((out / "jglue.json").read_text())) == {"jsts"} and "| JSTS |" in proc.stdout
    assert json.loads((out / "jglue_details.json").read_text())["tasks"]["jsts"]["train_examples"] == 4

    _copy_task(tmp_path / "bad", "jsts")
    _copy_task(tmp_path / "bad", "jnli")
    valid = tmp_path / "bad" / "datasets" / "jnli-v1.3" / "valid-v1.3.json"
    valid.write_text(valid.read_text(encoding="utf-8") + '{"sentence1": "a", "sentence2": "b", "label": 2}\n',
                     encoding="utf-8")
    cmd[cmd.index(DATA)] = str(tmp_path / "bad")
    cmd[cmd.index("jsts")] = "jsts,jnli"
    cmd[-1] = str(tmp_path / "out2")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and f"{valid}:7: label 2 is not one of" in proc.stderr
    assert "fine-tune" not in proc.stderr and not (tmp_path / "out2").exists()  # jsts (first) never trained


# --- the pipeline's fetch (content identity) and the model card --------------------------------

def _archive(kind: str, prefix: str = "JGLUE-1.3.0/") -> bytes:
    import io
    import tarfile
    import zipfile

    buffer = io.BytesIO()
    files = {}
    for folder in sorted(os.listdir(DATASETS)):
        for name in sorted(os.listdir(os.path.join(DATASETS, folder))):
            with open(os.path.join(DATASETS, folder, name), "rb") as f:
                files[f"{prefix}datasets/{folder}/{name}"] = f.read()
    files[f"{prefix}README.md"] = b"not a task file"
    files[f"{prefix}datasets/../../evil/jsts-v1.3/train-v1.3.json"] = b"{}"  # never written outside
    if kind == "zip":
        with zipfile.ZipFile(buffer, "w") as z:
            for name, data in files.items():
                z.writestr(name, data)
    else:
        with tarfile.open(fileobj=buffer, mode="w:gz") as t:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_fetch_a_directory_with_its_content_identity(tmp_path, gcs):
    from components import storage
    from components.evaluate import fetch

    source = tmp_path / "JGLUE"
    shutil.copytree(DATA, source)
    ident = fetch.identity(str(source))
    assert set(json.loads(ident)) == {f"datasets/{d}/{s}-v{d.split('-v')[1]}.json"
                                      for d in os.listdir(DATASETS) for s in ("train", "valid")}
    assert fetch.identity(str(source / "datasets")) == ident  # the same data: the same cache key
    out = tmp_path / "out"
    result = fetch.fetch(str(source), ident, str(out))
    assert result["tasks"] == ["marc_ja", "jsts", "jnli", "jsquad", "jcommonsenseqa"]
    assert tasks.read_jglue_task(str(out), "jsquad")[3]["version"] == "1.3"
    valid = source / "datasets" / "jnli-v1.3" / "valid-v1.3.json"
    valid.write_text(valid.read_text(encoding="utf-8").replace("neutral", "entailment", 1), encoding="utf-8")
    assert fetch.identity(str(source)) != ident  # changed bytes: a new cache key
    with pytest.raises(BadInput, match="changed since their identity was taken"):
        fetch.fetch(str(source), ident, str(tmp_path / "out2"))
    assert fetch.identity("") == ""
    with pytest.raises(BadInput, match="no JGLUE task folder"):
        fetch.identity(str(tmp_path / "out" / "datasets" / "jsts-v1.3"))

    remote = storage.join(gcs, "JGLUE")
    storage.copy_tree(DATA, remote)
    result = fetch.fetch(remote, fetch.identity(remote), str(tmp_path / "from-gcs"))
    assert result["tasks"] == ["marc_ja", "jsts", "jnli", "jsquad", "jcommonsenseqa"]


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_fetch_an_https_archive_of_the_repository(tmp_path, kind):
    from http_fixtures import FileServer, running

    from components.evaluate import fetch

    with running(FileServer()) as server:
        url = server.add(f"/yahoojapan/JGLUE/archive/v1.3.0.{kind}", _archive(kind))
        ident = fetch.identity(url)
        assert json.loads(ident)["archive"]["etag"]
        result = fetch.fetch(url, ident, str(tmp_path / "out"))
        assert result["tasks"] == ["marc_ja", "jsts", "jnli", "jsquad", "jcommonsenseqa"]
        assert not (tmp_path / "evil").exists() and not any("evil" in f for f in result["files"])
        server.add(f"/broken.{kind}", b"not an archive")
        with pytest.raises(BadInput, match=r"broken\..*not a readable archive"):
            fetch.fetch(server.url(f"/broken.{kind}"), fetch.identity(server.url(f"/broken.{kind}")),
                        str(tmp_path / "x"))
        with pytest.raises(BadInput, match="must be an archive"):
            fetch.identity(server.url("/yahoojapan/JGLUE"))


def test_fetch_rejects_bad_lines_before_any_fine_tuning(tmp_path):
    from components.evaluate import fetch

    source = tmp_path / "JGLUE"
    folder = _copy_task(source, "jcommonsenseqa")
    (folder / "train-v1.3.json").write_text('{"q_id": 1, "question": "q", "label": 0}\n', encoding="utf-8")
    with pytest.raises(BadInput, match=rf"{source}/datasets/jcommonsenseqa-v1\.3/train-v1\.3\.json:1: 'choice0' must"):
        fetch.fetch(str(source), fetch.identity(str(source)), str(tmp_path / "out"))


def test_model_card_carries_the_jglue_table(model_dir, tmp_path):
    from components.publish.core import publish_model

    table = "| Model | JSTS (pearson / spearman) |\n|---|---|\n| `m` (ours) | 0.500 / 0.250 |\n"
    publish_model(model_dir, str(tmp_path / "release"), jglue_table=table)
    card = (tmp_path / "release" / "README.md").read_text(encoding="utf-8")
    assert "### JGLUE" in card and table.strip() in card
    assert card.index("### JGLUE") < card.index("## Usage")
    publish_model(model_dir, str(tmp_path / "plain"))
    assert "JGLUE" not in (tmp_path / "plain" / "README.md").read_text(encoding="utf-8")
    from components.publish import cli as publish_cli

    (tmp_path / "jglue.md").write_text(table, encoding="utf-8")
    assert publish_cli.main([model_dir, str(tmp_path / "by-cli"), "--jglue-table", str(tmp_path / "jglue.md")]) == 0
    assert table.strip() in (tmp_path / "by-cli" / "README.md").read_text(encoding="utf-8")


def test_pipeline_fetches_jglue_once_and_fine_tunes_each_task_in_parallel_per_variant(tmp_path):
    from test_pipeline_compile import all_tasks, compile_to

    from pipelines import parameters

    spec, _platform = compile_to(tmp_path, "gcp")
    assert spec.root.input_definitions.parameters["jglue_uri"].default_value.string_value == ""
    tasks_ = all_tasks(spec)
    by_name = {}
    for owner, name, task in tasks_:
        by_name.setdefault(name, []).append((owner, task))
    # identity (never cached) -> fetch (cached on it), once for every variant, beside the other downloads
    (fetch_owner, fetch_task), = by_name["fetch-jglue"]
    (_o, ident), = by_name["jglue-identity"]
    assert fetch_task.caching_options.enable_cache and not ident.caching_options.enable_cache
    assert fetch_task.inputs.parameters["identity"].task_output_parameter.producer_task == "jglue-identity"
    assert fetch_owner == by_name["wiki-corpus"][0][0]
    # per variant: a loop over the fetched task names with one fine-tuning per task, then the table
    loops = [(o, t) for o, n, t in tasks_ if t.HasField("parameter_iterator")
             and any(x.startswith("finetune-jglue") for x in spec.components[t.component_ref.name].dag.tasks)]
    # per stage-1 layout for Model Garden variants, and once per PyTorch-trainer variant (cc100 only)
    per_variant = 2 * len(parameters.TRAINER_VARIANTS["model-garden"]) + len(parameters.TRAINER_VARIANTS["torch"])
    assert len(loops) == per_variant
    for _owner, loop in loops:
        assert "jglue_tasks" in loop.parameter_iterator.items.input_parameter
    reports = by_name["jglue-report"]
    assert len(reports) == per_variant
    for _owner, report in reports:
        assert report.inputs.artifacts["results"].task_output_artifact.producer_task.startswith("for-loop")
    # the card's table comes from the report, or from no-jglue when jglue_uri is empty
    for owner, publish in by_name["publish-model"]:
        source = publish.inputs.parameters["jglue"].task_output_parameter
        branches = spec.components[owner].dag.tasks[source.producer_task]
        oneof = spec.components[branches.component_ref.name].dag.outputs.parameters[source.output_parameter_key]
        assert sorted(s.output_parameter_key for s in oneof.value_from_oneof.parameter_selectors) == [
            "pipelinechannel--jglue-report-Output", "pipelinechannel--no-jglue-Output"]


@pytest.mark.slow
def test_local_pipeline_run_puts_the_jglue_table_in_the_model_card(tmp_path):
    """The whole DAG under kfp.local with JGLUE: fetch, one fine-tuning per task, report, card."""
    from test_pipeline_local import TINY

    from pipelines import commands

    result = commands.run_local(str(tmp_path), "local", {**TINY, "jglue_uri": DATA, "jglue_grid": "quick"})
    (model,) = result["models"]
    card = open(os.path.join(model["model_dir"], "README.md"), encoding="utf-8").read()
    assert "### JGLUE" in card and "| `bert-tiny-japanese` (ours) |" in card
    for column in ("MARC-ja", "JSTS", "JNLI", "JSQuAD", "JCommonsenseQA"):
        assert f"| {column} | 5e-05 | 1 |" in card, column
    (run,) = [d for d in os.listdir(tmp_path / "pipeline-root") if not d.startswith(".")]
    with open(tmp_path / "pipeline-root" / run / "jglue-report" / "metrics") as f:
        assert set(json.load(f)) == {"marc_ja.accuracy", "jsts.pearson", "jsts.spearman", "jnli.accuracy",
                                     "jsquad.exact_match", "jsquad.f1", "jcommonsenseqa.accuracy"}
