"""A small fine-tuning check: sequence classification on user-supplied JSONL, on CPU.

Data format (one JSON object per line, UTF-8; train and eval files alike):
- single text (livedoor news categories, MARC-ja sentiment): ``{"text": "...", "label": "sports"}``
- sentence pairs (JNLI, JSTS-as-classes): ``{"sentence1": "...", "sentence2": "...", "label": "entailment"}``
Labels are strings or integers; the label set is the training file's. Every line of a file
must have the same shape. Metrics: accuracy and macro-F1 on the eval file.
"""

from __future__ import annotations

import json

from components import storage
from components.errors import BadInput
from components.progress import Progress


def read_examples(uri: str) -> tuple[list[tuple[str, str | None, str]], bool]:
    """``[(text_a, text_b or None, label)]`` and whether the file holds sentence pairs."""
    examples, pair = [], None
    for lineno, line in storage.iter_lines(uri):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise BadInput(f"{uri}:{lineno}: not valid JSON ({e.msg})") from e
        if not isinstance(row, dict) or "label" not in row:
            raise BadInput(f"{uri}:{lineno}: expected an object with a 'label'")
        this_pair = "sentence1" in row
        if pair is not None and this_pair != pair:
            raise BadInput(f"{uri}:{lineno}: mixes single texts and sentence pairs")
        pair = this_pair
        keys = ("sentence1", "sentence2") if pair else ("text",)
        for key in keys:
            if not isinstance(row.get(key), str) or not row[key]:
                raise BadInput(f"{uri}:{lineno}: {key!r} must be a non-empty string")
        examples.append((row[keys[0]], row["sentence2"] if pair else None, str(row["label"])))
    if not examples:
        raise BadInput(f"{uri}: no examples")
    return examples, bool(pair)


def macro_f1(gold: list[int], predicted: list[int], num_labels: int) -> float:
    """Mean of per-label F1 over the labels that occur in gold or predictions."""
    scores = []
    for label in range(num_labels):
        tp = sum(g == p == label for g, p in zip(gold, predicted))
        fp = sum(p == label != g for g, p in zip(gold, predicted))
        fn = sum(g == label != p for g, p in zip(gold, predicted))
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores) if scores else 0.0


def finetune_classification(model_dir: str, tokenizer, train_uri: str, eval_uri: str, *, epochs: int = 2,
                            max_seq_length: int = 128, learning_rate: float = 5e-5, batch_size: int = 16,
                            seed: int = 0) -> dict:
    """Fine-tunes a fresh classifier from the pretrained encoder; returns accuracy and macro-F1."""
    import torch
    from transformers import BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    if epochs < 1 or batch_size < 1:
        raise BadInput(f"finetune epochs={epochs}, batch_size={batch_size}: must be at least 1")
    train, pair = read_examples(train_uri)
    evaluation, eval_pair = read_examples(eval_uri)
    if pair != eval_pair:
        raise BadInput(f"{eval_uri}: {'sentence pairs' if eval_pair else 'single texts'}, but {train_uri} holds "
                       f"{'sentence pairs' if pair else 'single texts'}")
    labels = sorted({label for *_texts, label in train})
    if len(labels) < 2:
        raise BadInput(f"{train_uri}: needs at least two labels, found {labels}")
    label_ids = {label: i for i, label in enumerate(labels)}
    unknown = sorted({label for *_t, label in evaluation} - set(labels))
    if unknown:
        raise BadInput(f"{eval_uri}: labels {unknown} do not occur in {train_uri}")

    torch.manual_seed(seed)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialized classifier" is expected here
    try:
        model = BertForSequenceClassification.from_pretrained(model_dir, num_labels=len(labels))
    finally:
        hf_logging.set_verbosity(verbosity)

    def encode(rows):
        a = [r[0] for r in rows]
        b = [r[1] for r in rows] if pair else None
        enc = tokenizer(a, b, truncation=True, max_length=max_seq_length, padding=True, return_tensors="pt")
        return enc, torch.tensor([label_ids[r[2]] for r in rows])

    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    progress = Progress("fine-tune", "examples", total=epochs * len(train))
    model.train()
    for _epoch in range(epochs):
        order = torch.randperm(len(train), generator=generator).tolist()
        for start in range(0, len(order), batch_size):
            rows = [train[i] for i in order[start:start + batch_size]]
            enc, gold = encode(rows)
            loss = model(**enc, labels=gold).loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            progress.add(len(rows))
    progress.done()

    model.eval()
    gold_all, predicted = [], []
    with torch.no_grad():
        for start in range(0, len(evaluation), batch_size):
            enc, gold = encode(evaluation[start:start + batch_size])
            predicted += model(**enc).logits.argmax(-1).tolist()
            gold_all += gold.tolist()
    accuracy = sum(g == p for g, p in zip(gold_all, predicted)) / len(gold_all)
    return {
        "task": "sentence_pair_classification" if pair else "text_classification",
        "train_examples": len(train),
        "eval_examples": len(evaluation),
        "num_labels": len(labels),
        "labels": labels,
        "accuracy": accuracy,
        "macro_f1": macro_f1(gold_all, predicted, len(labels)),
    }
