"""Fine-tuning: the one training loop (:func:`fit`) and a head per kind of task.

Heads (what the recipe's JGLUE table needs, all from the pretrained encoder with a fresh head):
- ``classification``/``regression``: ``AutoModelForSequenceClassification`` (regression = one
  output, MSE loss) over one text or a sentence pair: MARC-ja, JNLI, JSTS, livedoor, and the
  JSONL check below;
- ``multiple_choice``: ``AutoModelForMultipleChoice`` over (question, choice) pairs: JCommonsenseQA;
- ``question_answering``: ``AutoModelForQuestionAnswering`` over (question, context window): JSQuAD.
  Our MeCab ``BertJapaneseTokenizer`` is a slow tokenizer: asked for ``return_offsets_mapping`` it
  silently returns none, so :func:`token_spans` aligns tokens to characters itself (fast tokenizers
  give offsets, and their absence is an error rather than a silent fallback).

Memory: examples stay as text; each batch is tokenized when it is used, so a run holds the model,
the raw data and one batch (QA windows too: they are made per batch, never for a whole set).

The JSONL check (``finetune_classification``): one JSON object per line, UTF-8:
``{"text": "...", "label": "sports"}`` or ``{"sentence1": "...", "sentence2": "...", "label": "..."}``;
the label set is the training file's; accuracy and macro-F1 on the eval file.
"""

from __future__ import annotations

import functools
import math
import resource
import time
import unicodedata

from components.errors import BadInput
from components.evaluate import metrics as scores
from components.evaluate.tasks import Example, QAExample, Task, json_lines
from components.progress import Progress

# SQuAD/JGLUE fine-tuning defaults for JSQuAD.
MAX_QUERY_TOKENS = 64
DOC_STRIDE = 128  # tokens shared by consecutive windows of a long context
MAX_ANSWER_TOKENS = 30
N_BEST = 20


def read_examples(uri: str) -> tuple[list[tuple[str, str | None, str]], bool]:
    """``[(text_a, text_b or None, label)]`` and whether the file holds sentence pairs."""
    examples, pair = [], None
    for lineno, row in json_lines(uri):
        if "label" not in row:
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


# ---------------------------------------------------------------------------
# Token-to-character alignment (slow tokenizers have no offsets)
# ---------------------------------------------------------------------------

def token_spans(tokenizer, text: str) -> list[tuple[str, int, int]]:
    """``(token, start, end)`` for each token of ``text`` (no special tokens added): the
    characters ``text[start:end]`` it came from."""
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = encoded.get("offset_mapping")
        if offsets is None:
            raise RuntimeError(f"{type(tokenizer).__name__}: a fast tokenizer returned no offset mapping")
        return [(t, s, e) for t, (s, e) in zip(tokenizer.convert_ids_to_tokens(encoded["input_ids"]), offsets)]
    return align_tokens(text, tokenizer.tokenize(text), tokenizer.unk_token)


def align_tokens(text: str, tokens: list[str], unk_token: str) -> list[tuple[str, int, int]]:
    """Character spans of ``tokens`` (in order) in ``text``.

    Works on a normalised copy of the text (NFKC and lower case per character, as the MeCab and
    character tokenizers normalise), with each normalised character mapped back to the original
    one. Each token's text (``##`` stripped) is looked for just after the previous token; tokens
    that cannot be found (``[UNK]``) share the characters skipped before the next found token.
    """
    norm_parts, owner = [], []
    for i, char in enumerate(text):
        part = unicodedata.normalize("NFKC", char).lower()
        norm_parts.append(part)
        owner.extend([i] * len(part))
    norm = "".join(norm_parts)
    spans: list[tuple[int, int] | None] = [None] * len(tokens)
    pending: list[int] = []
    cursor = 0

    def char_at(position: int) -> int:
        return owner[position] if position < len(owner) else len(text)

    def settle(end: int) -> None:
        """Shares norm[cursor:end] (whitespace aside) among the pending tokens, in order."""
        chars = [p for p in range(cursor, end) if not norm[p].isspace()]
        n = len(pending)
        for j, k in enumerate(pending):
            part = chars[len(chars) * j // n: len(chars) * (j + 1) // n]
            if part:
                spans[k] = (char_at(part[0]), char_at(part[-1]) + 1)
            else:
                at = char_at(chars[len(chars) * j // n] if len(chars) * j // n < len(chars) else end)
                spans[k] = (at, at)
        pending.clear()

    for k, token in enumerate(tokens):
        piece = token[2:] if token.startswith("##") and len(token) > 2 else token
        piece = unicodedata.normalize("NFKC", piece).lower()
        at = -1
        if token != unk_token and piece:
            at = norm.find(piece, cursor, cursor + len(piece) + 16 + 8 * len(pending))
        if at < 0:
            pending.append(k)
            continue
        if pending:
            settle(at)
        spans[k] = (char_at(at), char_at(at + len(piece) - 1) + 1)
        cursor = at + len(piece)
    if pending:
        settle(len(norm))
    return [(t, s, e) for t, (s, e) in zip(tokens, spans)]


# ---------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------

class _Head:
    """Encodes examples for one model class; ``batches`` yields ``(inputs with labels, n examples)``."""
    auto_class = ""

    def __init__(self, tokenizer, task: Task, max_length: int):
        self.tokenizer, self.task, self.max_length = tokenizer, task, max_length

    def load(self, model_dir: str):
        import transformers

        return getattr(transformers, self.auto_class).from_pretrained(model_dir, **self.model_kwargs())

    def model_kwargs(self) -> dict:
        return {}

    def num_batches(self, examples: list, batch_size: int) -> int:
        return math.ceil(len(examples) / batch_size)

    def batches(self, examples: list, batch_size: int):
        for start in range(0, len(examples), batch_size):
            rows = examples[start:start + batch_size]
            yield self.encode(rows), len(rows)

    def predict(self, model, examples: list, batch_size: int) -> list:
        import torch

        out = []
        with torch.no_grad():
            for inputs, _n in self.batches(examples, batch_size):
                inputs.pop("labels")
                out += self.decode(model(**_to(inputs, model.device)).logits)
        return out

    def gold(self, examples: list) -> list:
        return [ex.label for ex in examples]


class SequenceHead(_Head):
    """One text or a pair -> ``num_labels`` logits, or one score (regression)."""
    auto_class = "AutoModelForSequenceClassification"

    def model_kwargs(self) -> dict:
        return {"num_labels": 1 if self.task.head == "regression" else len(self.task.labels)}

    def encode(self, rows: list[Example]) -> dict:
        import torch

        first = [r.texts[0] for r in rows]
        second = [r.texts[1] for r in rows] if len(rows[0].texts) > 1 else None
        enc = dict(self.tokenizer(first, second, truncation=True, max_length=self.max_length, padding=True,
                                  return_tensors="pt"))
        regression = self.task.head == "regression"
        enc["labels"] = torch.tensor([r.label for r in rows], dtype=torch.float if regression else torch.long)
        return enc

    def decode(self, logits) -> list:
        return logits[:, 0].tolist() if self.task.head == "regression" else logits.argmax(-1).tolist()


class ChoiceHead(_Head):
    """(question, choice_i) for each choice -> one logit each; JGLUE pairs them without a prefix."""
    auto_class = "AutoModelForMultipleChoice"

    def encode(self, rows: list[Example]) -> dict:
        import torch

        n = len(rows[0].texts) - 1
        first = [r.texts[0] for r in rows for _ in range(n)]
        second = [choice for r in rows for choice in r.texts[1:]]
        enc = self.tokenizer(first, second, truncation=True, max_length=self.max_length, padding=True,
                             return_tensors="pt")
        out = {k: v.view(len(rows), n, -1) for k, v in enc.items()}
        out["labels"] = torch.tensor([r.label for r in rows], dtype=torch.long)
        return out

    def decode(self, logits) -> list:
        return logits.argmax(-1).tolist()


class QuestionAnsweringHead(_Head):
    """[CLS] question [SEP] context window [SEP] -> start/end logits; long contexts become windows
    that overlap by ``DOC_STRIDE`` tokens; an answer outside a window trains it towards [CLS]."""
    auto_class = "AutoModelForQuestionAnswering"

    def __init__(self, tokenizer, task: Task, max_length: int):
        super().__init__(tokenizer, task, max_length)
        # Several questions share a paragraph: keep the last few contexts' alignments.
        self.context_spans = functools.lru_cache(maxsize=64)(functools.partial(token_spans, tokenizer))

    def windows(self, example: QAExample) -> list[dict]:
        """Model inputs for each window of one example, with its context tokens' character spans."""
        question = self.tokenizer.tokenize(example.question)[:MAX_QUERY_TOKENS]
        context = self.context_spans(example.context)
        room = self.max_length - len(question) - 3
        if room < 8:
            raise BadInput(f"max_length={self.max_length}: too short for JSQuAD question {example.id} "
                           f"({len(question)} tokens) and a context window")
        overlap = min(DOC_STRIDE, room // 2)
        text, start = example.answers[0]
        answer = [i for i, (_t, s, e) in enumerate(context) if s < start + len(text) and e > start]
        head = [self.tokenizer.cls_token] + question + [self.tokenizer.sep_token]
        out, first = [], 0
        while True:
            part = context[first:first + room]
            tokens = head + [t for t, _s, _e in part] + [self.tokenizer.sep_token]
            if answer and answer[0] >= first and answer[-1] < first + room:
                target = (len(head) + answer[0] - first, len(head) + answer[-1] - first)
            else:
                target = (0, 0)
            out.append({"input_ids": self.tokenizer.convert_tokens_to_ids(tokens),
                        "token_type_ids": [0] * len(head) + [1] * (len(part) + 1),
                        "target": target, "offset": len(head), "spans": [(s, e) for _t, s, e in part]})
            if first + room >= len(context):
                return out
            first += room - overlap

    def num_batches(self, examples: list[QAExample], batch_size: int) -> int:
        return math.ceil(sum(len(self.windows(ex)) for ex in examples) / batch_size)

    def _window_batches(self, examples: list[QAExample], batch_size: int):
        """``(inputs, windows, example index of each window)`` per batch of ``batch_size`` windows."""
        buffer: list[tuple[int, dict]] = []
        for i, example in enumerate(examples):
            buffer += [(i, w) for w in self.windows(example)]
            while len(buffer) >= batch_size:
                chunk, buffer = buffer[:batch_size], buffer[batch_size:]
                yield self._encode_windows([w for _i, w in chunk]), [w for _i, w in chunk], [i for i, _w in chunk]
        if buffer:
            yield self._encode_windows([w for _i, w in buffer]), [w for _i, w in buffer], [i for i, _w in buffer]

    def _encode_windows(self, windows: list[dict]) -> dict:
        import torch

        width = max(len(w["input_ids"]) for w in windows)
        pad = self.tokenizer.pad_token_id
        return {
            "input_ids": torch.tensor([w["input_ids"] + [pad] * (width - len(w["input_ids"])) for w in windows]),
            "token_type_ids": torch.tensor([w["token_type_ids"] + [0] * (width - len(w["input_ids"])) for w in windows]),
            "attention_mask": torch.tensor([[1] * len(w["input_ids"]) + [0] * (width - len(w["input_ids"]))
                                            for w in windows]),
            "start_positions": torch.tensor([w["target"][0] for w in windows]),
            "end_positions": torch.tensor([w["target"][1] for w in windows]),
        }

    def batches(self, examples: list[QAExample], batch_size: int):
        previous = -1
        for inputs, _windows, owners in self._window_batches(examples, batch_size):
            yield inputs, owners[-1] - previous  # examples finished (for progress)
            previous = owners[-1]

    def predict(self, model, examples: list[QAExample], batch_size: int) -> list[str]:
        """The best-scoring span (start + end logit) over all windows of each question."""
        import torch

        best: list[tuple[float, str]] = [(-math.inf, "")] * len(examples)
        with torch.no_grad():
            for inputs, windows, owners in self._window_batches(examples, batch_size):
                del inputs["start_positions"], inputs["end_positions"]
                out = model(**_to(inputs, model.device))
                for row, (window, i) in enumerate(zip(windows, owners)):
                    found = _best_span(out.start_logits[row].tolist(), out.end_logits[row].tolist(), window)
                    if found and found[0] > best[i][0]:
                        s, e = found[1], found[2]
                        best[i] = (found[0], examples[i].context[s:e])
        return [text for _score, text in best]

    def gold(self, examples: list[QAExample]) -> list[list[str]]:
        return [[text for text, _start in ex.answers] for ex in examples]


def _best_span(start_logits: list[float], end_logits: list[float], window: dict):
    """(score, char start, char end) of the best answer within the window's context tokens."""
    offset, spans = window["offset"], window["spans"]
    positions = range(offset, offset + len(spans))
    starts = sorted(positions, key=lambda p: -start_logits[p])[:N_BEST]
    ends = sorted(positions, key=lambda p: -end_logits[p])[:N_BEST]
    best = None
    for s in starts:
        for e in ends:
            if s <= e < s + MAX_ANSWER_TOKENS:
                score = start_logits[s] + end_logits[e]
                if best is None or score > best[0]:
                    best = (score, spans[s - offset][0], spans[e - offset][1])
    return best


HEADS = {"classification": SequenceHead, "regression": SequenceHead, "multiple_choice": ChoiceHead,
         "question_answering": QuestionAnsweringHead}


def _to(inputs: dict, device) -> dict:
    return {k: v.to(device) for k, v in inputs.items()}


# ---------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------

def fit(model_dir: str, tokenizer, task: Task, train: list, dev: list, *, epochs: int, learning_rate: float,
        batch_size: int, max_length: int, seed: int = 0, warmup_ratio: float = 0.1) -> dict:
    """Fine-tunes a fresh ``task`` head from the encoder in ``model_dir`` on ``train`` and scores
    ``dev``: AdamW, linear warm-up over ``warmup_ratio`` of the steps then linear decay to zero
    (JGLUE's schedule), gradients clipped at 1.0. Runs on the GPU when there is one.

    Returns the hyper-parameters, ``metrics`` (``task.metrics`` on dev) and ``cost`` (wall time and
    examples per second for training and for scoring, peak memory).
    """
    import torch
    from transformers.utils import logging as hf_logging

    if epochs < 1 or batch_size < 1 or max_length < 8:
        raise BadInput(f"{task.name}: epochs={epochs}, batch_size={batch_size}, max_length={max_length}: "
                       "need epochs and batch size of at least 1 and a max length of at least 8")
    if not 0 <= warmup_ratio < 1:
        raise BadInput(f"warmup_ratio={warmup_ratio}: must be in [0, 1)")
    head = HEADS[task.head](tokenizer, task, max_length)
    torch.manual_seed(seed)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialized head" is expected here
    try:
        model = head.load(model_dir)
    finally:
        hf_logging.set_verbosity(verbosity)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    total_steps = epochs * head.num_batches(train, batch_size)
    warmup = math.ceil(total_steps * warmup_ratio)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: (step + 1) / warmup if step < warmup
        else max(0.0, (total_steps - step) / max(1, total_steps - warmup)))
    generator = torch.Generator().manual_seed(seed)
    progress = Progress(f"fine-tune {task.name}", "examples", total=epochs * len(train))
    started = time.perf_counter()
    model.train()
    for _epoch in range(epochs):
        order = torch.randperm(len(train), generator=generator).tolist()
        for inputs, n in head.batches([train[i] for i in order], batch_size):
            loss = model(**_to(inputs, device)).loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            progress.add(n)
    progress.done()
    train_seconds = time.perf_counter() - started

    model.eval()
    started = time.perf_counter()
    predicted = head.predict(model, dev, batch_size)
    eval_seconds = time.perf_counter() - started
    cost = {"train_seconds": round(train_seconds, 3),
            "train_examples_per_second": round(epochs * len(train) / max(train_seconds, 1e-9), 2),
            "eval_seconds": round(eval_seconds, 3),
            "eval_examples_per_second": round(len(dev) / max(eval_seconds, 1e-9), 2),
            "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.type == "cuda":
        cost["gpu_peak_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return {"task": task.name, "epochs": epochs, "learning_rate": learning_rate, "batch_size": batch_size,
            "max_length": max_length, "warmup_ratio": warmup_ratio, "seed": seed, "train_examples": len(train),
            "eval_examples": len(dev), "steps": total_steps,
            "metrics": scores.score(task.metrics, head.gold(dev), predicted, num_labels=len(task.labels)),
            "cost": cost}


def finetune_classification(model_dir: str, tokenizer, train_uri: str, eval_uri: str, *, epochs: int = 2,
                            max_seq_length: int = 128, learning_rate: float = 5e-5, batch_size: int = 16,
                            seed: int = 0) -> dict:
    """The JSONL check: a fresh classifier from the pretrained encoder; accuracy and macro-F1.
    No warm-up: a few epochs of a small check learn too little with one."""
    train_rows, pair = read_examples(train_uri)
    eval_rows, eval_pair = read_examples(eval_uri)
    if pair != eval_pair:
        raise BadInput(f"{eval_uri}: {'sentence pairs' if eval_pair else 'single texts'}, but {train_uri} holds "
                       f"{'sentence pairs' if pair else 'single texts'}")
    labels = sorted({label for *_texts, label in train_rows})
    if len(labels) < 2:
        raise BadInput(f"{train_uri}: needs at least two labels, found {labels}")
    unknown = sorted({label for *_t, label in eval_rows} - set(labels))
    if unknown:
        raise BadInput(f"{eval_uri}: labels {unknown} do not occur in {train_uri}")
    name = "sentence_pair_classification" if pair else "text_classification"
    task = Task(name, "classification", ("accuracy", "macro_f1"), max_seq_length, batch_size, tuple(labels))

    def examples(rows):
        return [Example((a, b) if pair else (a,), labels.index(label)) for a, b, label in rows]

    result = fit(model_dir, tokenizer, task, examples(train_rows), examples(eval_rows), epochs=epochs,
                 learning_rate=learning_rate, batch_size=batch_size, max_length=max_seq_length, seed=seed,
                 warmup_ratio=0.0)
    return {"task": name, "train_examples": len(train_rows), "eval_examples": len(eval_rows),
            "num_labels": len(labels), "labels": labels, **result["metrics"], **result["cost"]}
