"""The recipe's fine-tuning tasks: what each is, and readers for the data as it is distributed.

JGLUE (https://github.com/yahoojapan/JGLUE) keeps each task in
``datasets/<task>-v<version>/{train,valid}-v<version>.json``; the reader accepts the repository root,
its ``datasets/`` folder, or a folder holding the task folders, and any version (the highest when
several are there). Train is fine-tuned on and valid ("dev") scored, as the recipe's table does.
MARC-ja, JSTS, JNLI and JCommonsenseQA are JSON lines; JSQuAD is one SQuAD 1.1 document.

livedoor news is read from the corpus's own layout ``text/<category>/<category>-NNNN.txt`` (URL,
date, title, then the body); it has no official split, so :func:`read_livedoor` makes one.

Everything a user can get wrong is checked here, before any training: file and line are named.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass

from components import storage
from components.errors import BadInput


@dataclass(frozen=True)
class Task:
    """One fine-tuning task: its data, its head, what is scored and JGLUE's per-task settings."""
    name: str
    head: str  # "classification" | "regression" | "question_answering" | "multiple_choice"
    metrics: tuple[str, ...]
    max_length: int
    batch_size: int
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class Example:
    """A classification/regression/multiple-choice example: ``texts`` is one text, a pair, or
    (question, choice0, ..., choice4); ``label`` a label index or a similarity score."""
    texts: tuple[str, ...]
    label: int | float


@dataclass(frozen=True)
class QAExample:
    """A JSQuAD question: ``answers`` are (text, character offset in ``context``)."""
    id: str
    question: str
    context: str
    answers: tuple[tuple[str, int], ...]


NUM_CHOICES = 5
# Max lengths and batch sizes are JGLUE's fine-tuning README's (512/128/128/384/64, batch 32, 64 for
# JCommonsenseQA); livedoor takes MARC-ja's (whole articles, one label each).
JGLUE_TASKS = {
    "marc_ja": Task("marc_ja", "classification", ("accuracy",), 512, 32, ("positive", "negative")),
    "jsts": Task("jsts", "regression", ("pearson", "spearman"), 128, 32),
    "jnli": Task("jnli", "classification", ("accuracy",), 128, 32, ("entailment", "contradiction", "neutral")),
    "jsquad": Task("jsquad", "question_answering", ("exact_match", "f1"), 384, 32),
    "jcommonsenseqa": Task("jcommonsenseqa", "multiple_choice", ("accuracy",), 64, 64),
}
LIVEDOOR = Task("livedoor", "classification", ("accuracy", "macro_f1"), 512, 32)
# The order of the recipe's results table.
TASK_ORDER = ("marc_ja", "jsts", "jnli", "jsquad", "jcommonsenseqa", "livedoor")


def parse_tasks(spec: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """``"jsts,jnli"`` (or a list) -> JGLUE task names in table order; empty = the four public ones
    (MARC-ja is no longer distributed: only when asked for)."""
    if not spec:
        return ["jsts", "jnli", "jsquad", "jcommonsenseqa"]
    names = [n.strip().lower().replace("-", "_") for n in (spec.split(",") if isinstance(spec, str) else spec)]
    unknown = [n for n in names if n not in JGLUE_TASKS]
    if unknown or not all(names):
        raise BadInput(f"tasks={spec!r}: unknown task {unknown or ['']}; choose from {', '.join(JGLUE_TASKS)}")
    return [n for n in TASK_ORDER if n in names]


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def find_task_files(root: str, task: str) -> tuple[str, str, str]:
    """(train URI, valid URI, version) of ``task`` under ``root`` (see the module doc)."""
    root = root.rstrip("/")
    found: dict[str, str] = {}
    for base in (storage.join(root, "datasets"), root):
        for uri in storage.glob(storage.join(base, f"{task}-v*", "train-v*.json")):
            folder = storage.basename(uri[: -len(storage.basename(uri)) - 1])
            match = re.fullmatch(rf"{task}-v(\d+(?:\.\d+)*)", folder)
            if match and storage.basename(uri) == f"train-v{match.group(1)}.json":
                found.setdefault(match.group(1), uri)
        if found:
            break
    if not found:
        raise BadInput(f"{root}: no {task}-v<version>/train-v<version>.json (looked in {root}/datasets and "
                       f"{root}); is this JGLUE's repository or its datasets/ folder?")
    version = max(found, key=_version_key)
    train = found[version]
    valid = train[: -len(f"train-v{version}.json")] + f"valid-v{version}.json"
    if not storage.exists(valid):
        raise BadInput(f"{valid}: missing (the dev set of {task} v{version})")
    return train, valid, version


def json_lines(uri: str):
    """(line number, object) for each non-blank line."""
    for lineno, line in storage.iter_lines(uri):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise BadInput(f"{uri}:{lineno}: not valid JSON ({e.msg})") from e
        if not isinstance(row, dict):
            raise BadInput(f"{uri}:{lineno}: expected a JSON object")
        yield lineno, row


def _text(row: dict, key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise BadInput(f"{where}: {key!r} must be a non-empty string")
    return value


def _similarity(value, where: str) -> float:
    """JSTS labels: a number (v1.2+) or a numeric string (v1.0/v1.1), 0 to 5."""
    try:
        score = float(value) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else None
    except ValueError:
        score = None
    if score is None or not 0.0 <= score <= 5.0:
        raise BadInput(f"{where}: label {value!r} is not a similarity from 0 to 5")
    return score


def read_examples(task: Task, uri: str) -> list[Example] | list[QAExample]:
    """Every example of one JGLUE file, checked (see the module doc for the formats)."""
    if task.head == "question_answering":
        return _read_jsquad(uri)
    examples: list[Example] = []
    for lineno, row in json_lines(uri):
        where = f"{uri}:{lineno}"
        if "label" not in row:
            raise BadInput(f"{where}: missing 'label'")
        label = row["label"]
        if task.head == "regression":
            examples.append(Example((_text(row, "sentence1", where), _text(row, "sentence2", where)),
                                    _similarity(label, where)))
        elif task.head == "multiple_choice":
            if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < NUM_CHOICES:
                raise BadInput(f"{where}: label {label!r} is not a choice number 0-{NUM_CHOICES - 1}")
            texts = [_text(row, "question", where)] + [_text(row, f"choice{i}", where) for i in range(NUM_CHOICES)]
            examples.append(Example(tuple(texts), label))
        else:
            if label not in task.labels:
                raise BadInput(f"{where}: label {label!r} is not one of {', '.join(task.labels)}")
            keys = ("sentence",) if task.name == "marc_ja" else ("sentence1", "sentence2")
            examples.append(Example(tuple(_text(row, k, where) for k in keys), task.labels.index(label)))
    if not examples:
        raise BadInput(f"{uri}: no examples")
    return examples


def _read_jsquad(uri: str) -> list[QAExample]:
    """SQuAD 1.1 layout; every answer's ``answer_start`` must point at its ``text`` in the context."""
    try:
        document = json.loads(storage.read_text(uri))
    except json.JSONDecodeError as e:
        raise BadInput(f"{uri}:{e.lineno}: not valid JSON ({e.msg}); JSQuAD is one JSON document") from e
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise BadInput(f'{uri}: expected {{"data": [...]}} (SQuAD 1.1 layout)')
    examples = []
    for a, article in enumerate(document["data"]):
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            raise BadInput(f'{uri}: data[{a}]: expected {{"title": ..., "paragraphs": [...]}}')
        for p, paragraph in enumerate(article["paragraphs"]):
            where = f"{uri}: data[{a}].paragraphs[{p}]"
            context = _text(paragraph if isinstance(paragraph, dict) else {}, "context", where)
            for q, qa in enumerate(paragraph.get("qas") or []):
                qid = qa.get("id", f"qas[{q}]") if isinstance(qa, dict) else f"qas[{q}]"
                where_q = f"{where}, question {qid}"
                question = _text(qa if isinstance(qa, dict) else {}, "question", where_q)
                answers = []
                for answer in qa.get("answers") or []:
                    text, start = (answer.get("text"), answer.get("answer_start")) if isinstance(answer, dict) else (None, None)
                    if not isinstance(text, str) or not text or not isinstance(start, int) or isinstance(start, bool):
                        raise BadInput(f"{where_q}: each answer needs a non-empty 'text' and an integer 'answer_start'")
                    if context[start:start + len(text)] != text:
                        raise BadInput(f"{where_q}: answer {text!r} is not at character {start} of the context "
                                       f"(found {context[start:start + len(text)]!r})")
                    answers.append((text, start))
                if not answers:
                    raise BadInput(f"{where_q}: no answers (JSQuAD questions all have one)")
                examples.append(QAExample(str(qid), question, context, tuple(answers)))
    if not examples:
        raise BadInput(f"{uri}: no questions")
    return examples


def read_jglue_task(root: str, name: str) -> tuple[Task, list, list, dict]:
    """(task, train examples, dev examples, {"train", "valid", "version"}) of one JGLUE task."""
    task = JGLUE_TASKS[name]
    train_uri, valid_uri, version = find_task_files(root, name)
    return task, read_examples(task, train_uri), read_examples(task, valid_uri), {
        "train": train_uri, "valid": valid_uri, "version": version}


LIVEDOOR_DEV_FRACTION = 0.2


def read_livedoor(root: str, *, seed: int = 0) -> tuple[Task, list[Example], list[Example], dict]:
    """livedoor news: text = title + newline + body, label = category folder.

    Split (the corpus has none): per category, the articles sorted by name are shuffled with
    ``random.Random(seed)`` and the first 20% (at least one) are dev, the rest train; stratified so
    every category is scored, and the same for the same seed and files.
    """
    root = root.rstrip("/")
    base = storage.join(root, "text") if storage.glob(storage.join(root, "text", "*", "*.txt")) else root
    by_category: dict[str, list[str]] = {}
    for uri in storage.glob(storage.join(base, "*", "*.txt")):
        category = storage.basename(uri[: -len(storage.basename(uri)) - 1])
        if re.fullmatch(rf"{re.escape(category)}-\d+\.txt", storage.basename(uri)):  # not LICENSE.txt
            by_category.setdefault(category, []).append(uri)
    if len(by_category) < 2:
        raise BadInput(f"{root}: expected livedoor news's text/<category>/<category>-NNNN.txt files in at least "
                       f"two categories, found {sorted(by_category) or 'none'}")
    labels = tuple(sorted(by_category))
    task = Task("livedoor", LIVEDOOR.head, LIVEDOOR.metrics, LIVEDOOR.max_length, LIVEDOOR.batch_size, labels)
    rng = random.Random(seed)
    train, dev = [], []
    for label_id, category in enumerate(labels):
        uris = sorted(by_category[category])
        rng.shuffle(uris)
        n_dev = max(1, round(len(uris) * LIVEDOOR_DEV_FRACTION))
        if len(uris) < 2:
            raise BadInput(f"{base}/{category}: needs at least two articles (one to train on, one to score)")
        for i, uri in enumerate(uris):
            (dev if i < n_dev else train).append(Example((_livedoor_text(uri),), label_id))
    return task, train, dev, {"root": base, "categories": list(labels), "seed": seed,
                              "dev_fraction": LIVEDOOR_DEV_FRACTION}


def _livedoor_text(uri: str) -> str:
    lines = storage.read_lines(uri)
    if len(lines) < 4 or not lines[0].startswith("http"):
        raise BadInput(f"{uri}:1: expected a livedoor article (URL, date, title, then the body)")
    title, body = lines[2].strip(), "\n".join(line.strip() for line in lines[3:] if line.strip())
    if not title and not body:
        raise BadInput(f"{uri}:3: empty article")
    return f"{title}\n{body}"
