"""Evaluation of a Hugging Face model (recipe step 11), on CPU: a converted BERT
(``BertForPreTraining``) or a masked-LM of the PyTorch trainer (ModernBERT, RoBERTa, EuroBERT, BERT).

Three checks, each optional but the first:
- fill-mask on fixed sentences: what a person looks at to see the model learned Japanese;
- masked-LM (and next-sentence) accuracy/loss on held-out data: pretraining TFRecords, computed
  with the converted PyTorch model (so it also checks the conversion end to end), or token
  shards (the PyTorch trainer's data), masked at a fixed seed as its loader masks them;
- a small fine-tuning run (sequence classification on JSONL) with accuracy and macro-F1.

Results land in ``output_dir`` as ``metrics.json`` (machine-readable) and
``report.md`` (for people); fill-mask answers also in ``fill_mask.json``.
"""

from __future__ import annotations

import json
import math

import numpy as np

from components import storage
from components.errors import BadInput
from components.evaluate import finetune
from components.tfrecord import iter_examples
from components.progress import Progress

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
FILL_MASK_FILE = "fill_mask.json"
MASK = "[MASK]"

# Everyday sentences with one blank each; a model that learned Japanese fills them sensibly.
DEFAULT_SENTENCES = (
    "日本の首都は[MASK]です。",
    "今日はとても[MASK]天気ですね。",
    "彼は毎朝[MASK]を飲んでから会社へ行く。",
    "富士山は日本で一番[MASK]山です。",
    "私は図書館で[MASK]を借りた。",
    "猫が[MASK]の上で寝ている。",
    "春になると[MASK]の花が咲く。",
    "東北大学は[MASK]市にある国立大学である。",
    "電車が駅に[MASK]した。",
    "子供たちは公園で[MASK]をして遊んだ。",
)

# A base model scores ~3 examples/s on 2 CPU cores: cap held-out evaluation at 64 batches
# (2,048 examples at batch 32) unless asked for more; 0 or None = all of the data.
DEFAULT_MAX_EVAL_BATCHES = 64

PRETRAINING_FEATURES = ("input_word_ids", "input_mask", "input_type_ids", "masked_lm_positions",
                        "masked_lm_ids", "masked_lm_weights")


def read_sentences(uri: str) -> list[str]:
    """One sentence per line (blank lines skipped); each needs exactly one ``[MASK]``."""
    sentences = []
    for lineno, line in storage.iter_lines(uri):
        line = line.strip()
        if not line:
            continue
        if line.count(MASK) != 1:
            raise BadInput(f"{uri}:{lineno}: needs exactly one {MASK} (found {line.count(MASK)}): {line!r}")
        sentences.append(line)
    if not sentences:
        raise BadInput(f"{uri}: no sentences")
    return sentences


def load_model(model_dir: str):
    """Tokenizer and model from a local or gs:// model directory, in eval mode: BertForPreTraining
    for a converted BERT (its NSP head is evaluated too), else the masked-LM its config names."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer, BertForPreTraining

    from components.tokenizer.files import FAST_TOKENIZER_FILE, VOCAB_FILE

    local = _local_model_dir(model_dir)
    # WordPiece/character models carry vocab.txt; SentencePiece and byte ones tokenizer.json.
    for names in (("config.json",), (VOCAB_FILE, FAST_TOKENIZER_FILE)):
        if not any(storage.exists(storage.join(local, name)) for name in names):
            raise BadInput(f"{storage.join(model_dir, names[0])}: missing; not a converted model directory?")
    tokenizer = AutoTokenizer.from_pretrained(local)
    architectures = storage.read_json_object(storage.join(local, "config.json")).get("architectures") or []
    model_class = BertForPreTraining if "BertForPreTraining" in architectures else AutoModelForMaskedLM
    model = model_class.from_pretrained(local).eval()
    if model.config.vocab_size != len(tokenizer):
        raise BadInput(f"{model_dir}: the model has {model.config.vocab_size} tokens, its tokenizer {len(tokenizer)}")
    return tokenizer, model


_DOWNLOADS: dict[str, str] = {}


def _local_model_dir(model_dir: str) -> str:
    """transformers reads local directories: a gs:// model is copied to a temporary one once."""
    if not storage.is_gcs(model_dir):
        return storage.local_path(model_dir)
    if model_dir not in _DOWNLOADS:
        import tempfile

        local = tempfile.mkdtemp(prefix="bertja-model-")
        storage.copy_tree(model_dir, local)
        _DOWNLOADS[model_dir] = local
    return _DOWNLOADS[model_dir]


def fill_mask(tokenizer, model, sentences: list[str], *, top_k: int = 5) -> list[dict]:
    """Top-k tokens and probabilities for each sentence's ``[MASK]`` (what the fill-mask pipeline
    computes, from BertForPreTraining's prediction logits or a masked-LM's logits)."""
    import inspect

    import torch

    if top_k < 1:
        raise BadInput(f"top_k={top_k}: must be at least 1")
    accepted = inspect.signature(model.forward).parameters
    results = []
    for sentence in sentences:
        encoded = tokenizer(sentence, return_tensors="pt", truncation=True,
                            max_length=min(model.config.max_position_embeddings, 512))
        encoded = {k: v for k, v in encoded.items() if k in accepted}  # e.g. ModernBERT takes no token types
        where = (encoded["input_ids"][0] == tokenizer.mask_token_id).nonzero().flatten()
        if len(where) != 1:
            raise BadInput(f"fill-mask sentence {sentence!r}: tokenizes to {len(where)} {MASK} tokens, needs one")
        with torch.no_grad():
            out = model(**encoded)
            logits = (out.prediction_logits if hasattr(out, "prediction_logits") else out.logits)[0, where[0]]
        probs, ids = torch.softmax(logits, -1).topk(min(top_k, logits.shape[-1]))
        predictions = []
        for p, i in zip(probs.tolist(), ids.tolist()):
            token = tokenizer.convert_ids_to_tokens(i)
            predictions.append({"token": token, "score": round(p, 6),
                                "filled": sentence.replace(MASK, token.removeprefix("##"), 1)})
        results.append({"sentence": sentence, "predictions": predictions})
    return results


def _examples(uris):
    """Every record of ``uris`` as a dict of features, with ``_where`` naming its file and number."""
    for uri in uris:
        for number, example in enumerate(iter_examples(uri), 1):
            missing = [f for f in PRETRAINING_FEATURES if f not in example]
            if missing:
                raise BadInput(f"{uri}: record {number}: missing features {missing} (not Model Garden v2 "
                               "pretraining data?)")
            example["_where"] = f"{uri}: record {number}"
            yield example


def _batches(uris, batch_size: int, max_batches: int | None):
    """Batches of at most ``batch_size`` examples; a new batch starts when the shape changes."""
    if batch_size < 1:
        raise BadInput(f"batch_size={batch_size}: must be at least 1")
    batch: list[dict] = []
    count = 0
    for example in _examples(uris):
        if batch and (len(batch) == batch_size
                      or len(example["input_word_ids"]) != len(batch[0]["input_word_ids"])):
            yield batch
            count += 1
            if max_batches and count >= max_batches:
                return
            batch = []
        batch.append(example)
    if batch:
        yield batch


def pretraining_metrics(model, eval_data: list[str], *, batch_size: int = 32,
                        max_eval_batches: int | None = None) -> dict:
    """Masked-LM and next-sentence accuracy and loss, as Model Garden computes them (weighted)."""
    import torch

    vocab_size = model.config.vocab_size
    max_len = model.config.max_position_embeddings
    mlm_loss = mlm_correct = mlm_weight = 0.0
    nsp_loss = nsp_correct = 0.0
    nsp_count = examples = 0
    progress = Progress("evaluate masked-LM", "examples")
    for batch in _batches(eval_data, batch_size, max_eval_batches):
        arrays = {f: np.array([ex[f] for ex in batch]) for f in PRETRAINING_FEATURES}
        ids = arrays["input_word_ids"]
        if ids.shape[1] > max_len:
            raise BadInput(f"{batch[0]['_where']}: sequence length {ids.shape[1]} exceeds the model's "
                           f"max_position_embeddings {max_len}")
        if ids.max() >= vocab_size or arrays["masked_lm_ids"].max() >= vocab_size:
            raise BadInput(f"{batch[0]['_where']}: token ids up to {max(ids.max(), arrays['masked_lm_ids'].max())} "
                           f"but the model has {vocab_size} tokens: data made with another tokenizer?")
        with torch.inference_mode():
            # The encoder once, then the MLM head only at the masked positions (19 of 128 in
            # stage 1): the vocabulary projection is most of the head's cost.
            sequence, pooled = model.bert(input_ids=torch.from_numpy(ids).long(),
                                          attention_mask=torch.from_numpy(arrays["input_mask"]).long(),
                                          token_type_ids=torch.from_numpy(arrays["input_type_ids"]).long(),
                                          return_dict=False)[:2]
            positions = torch.from_numpy(arrays["masked_lm_positions"]).long()
            at_masks = torch.gather(sequence, 1, positions.unsqueeze(-1).expand(-1, -1, sequence.shape[-1]))
            logits = model.cls.predictions(at_masks)  # [B, P, V]
            nsp_logits = model.cls.seq_relationship(pooled)
        labels = torch.from_numpy(arrays["masked_lm_ids"]).long()
        weights = torch.from_numpy(arrays["masked_lm_weights"].astype(np.float32))
        log_probs = torch.log_softmax(logits, dim=-1)
        per_token = -log_probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
        mlm_loss += float((per_token * weights).sum())
        mlm_correct += float(((logits.argmax(-1) == labels).float() * weights).sum())
        mlm_weight += float(weights.sum())
        if all("next_sentence_labels" in ex for ex in batch):
            nsp_labels = torch.tensor([ex["next_sentence_labels"][0] for ex in batch]).long()
            nsp_loss += float(torch.nn.functional.cross_entropy(nsp_logits, nsp_labels, reduction="sum"))
            nsp_correct += float((nsp_logits.argmax(-1) == nsp_labels).sum())
            nsp_count += len(batch)
        examples += len(batch)
        progress.add(len(batch))
    progress.done()
    if not examples:
        raise BadInput(f"{', '.join(eval_data)}: no examples")
    metrics = {
        "eval_examples": examples,
        "masked_tokens": int(mlm_weight),
        "masked_lm_accuracy": mlm_correct / mlm_weight if mlm_weight else None,
        "masked_lm_loss": mlm_loss / mlm_weight if mlm_weight else None,
    }
    metrics["masked_lm_perplexity"] = math.exp(metrics["masked_lm_loss"]) if mlm_weight else None
    if nsp_count:
        metrics["next_sentence_accuracy"] = nsp_correct / nsp_count
        metrics["next_sentence_loss"] = nsp_loss / nsp_count
    return metrics


# Token shards: masked as the PyTorch trainer's loader masks (80-10-10, whole words where the
# tokenizer marks them), one document per sequence, at this fixed seed: every model of a run
# is scored on the same masked tokens.
HELDOUT_SEED = 20240101
HELDOUT_MASK_RATE = 0.15
LOGIT_BUDGET = 1 << 26  # floats of full-vocabulary logits per batch (256 MB): rows = budget / (length x vocab)


def is_token_shards(uri: str) -> bool:
    from components.pretraining_data.shards import META_FILE

    return storage.exists(storage.join(uri, META_FILE))


def token_shard_metrics(model, tokenizer_dir: str, shard_dirs: list[str], *, seq_length: int,
                        mask_rate: float = HELDOUT_MASK_RATE, batch_size: int = 32,
                        max_examples: int | None = DEFAULT_MAX_EVAL_BATCHES * 32) -> dict:
    """Masked-LM accuracy and loss on held-out token shards, the model numbering positions itself
    as the fill-mask pipeline lets it (a RoBERTa whose positions were trained offset must agree)."""
    import torch

    from components.tokenizer.files import read_tokenizer_info
    from components.torch_train import data

    info = read_tokenizer_info(tokenizer_dir)
    vocab_size = int(info["vocab_size"])
    if model.config.vocab_size != vocab_size:
        raise BadInput(f"{tokenizer_dir}: tokenizer of {vocab_size} tokens, the model has {model.config.vocab_size}")
    documents = data.load_documents(shard_dirs, vocab_size=vocab_size, tokenizer_type=info["type"])
    if not len(documents):
        raise BadInput(f"{', '.join(shard_dirs)}: the held-out shards hold no document")
    dataset = data.PretrainingDataset(documents, seq_length=int(seq_length), packing="none",
                                      mask_rate=float(mask_rate), whole_word=info["word_splitter"] != "none",
                                      seed=HELDOUT_SEED, stage=0, epoch=0)
    total = len(dataset) if not max_examples else min(len(dataset), int(max_examples))
    rows = max(1, min(int(batch_size), LOGIT_BUDGET // (int(seq_length) * vocab_size)))
    loss_sum = correct = masked = 0.0
    progress = Progress("evaluate masked-LM", "examples")
    for start in range(0, total, rows):
        batch = data.collate([dataset[i] for i in range(start, min(start + rows, total))])
        with torch.inference_mode():
            logits = model(input_ids=batch["input_ids"], attention_mask=(batch["segment_ids"] != 0).long()).logits
        labels = batch["labels"]
        at = labels != data.IGNORE_INDEX
        picked, wanted = logits[at].float(), labels[at]
        loss_sum += float(torch.nn.functional.cross_entropy(picked, wanted, reduction="sum"))
        correct += float((picked.argmax(-1) == wanted).sum())
        masked += float(at.sum())
        progress.add(len(labels))
    progress.done()
    return {"eval_examples": total, "masked_tokens": int(masked),
            "masked_lm_accuracy": correct / masked if masked else None,
            "masked_lm_loss": loss_sum / masked if masked else None,
            "masked_lm_perplexity": math.exp(loss_sum / masked) if masked else None}


def evaluate_model(model_dir: str, *, output_dir: str, eval_data: tuple[str, ...] | list[str] = (),
                   sentences: str | None = None, top_k: int = 5, batch_size: int = 32,
                   max_eval_batches: int | None = DEFAULT_MAX_EVAL_BATCHES, finetune_train: str | None = None,
                   finetune_eval: str | None = None, finetune_epochs: int = 2,
                   finetune_max_seq_length: int = 128, finetune_learning_rate: float = 5e-5,
                   finetune_batch_size: int = 16, seed: int = 0, seq_length: int = 0,
                   mask_rate: float = HELDOUT_MASK_RATE) -> dict:
    """Runs the evaluations and writes ``metrics.json``, ``report.md`` and ``fill_mask.json``.

    Returns ``{"model_dir", "metrics", "fill_mask", "eval_data", "finetune", "files", "markdown"}``:
    ``metrics`` holds numbers only (``masked_lm_accuracy``, ``masked_lm_loss``,
    ``masked_lm_perplexity``, ``next_sentence_accuracy``, ``next_sentence_loss``, ``eval_examples``,
    ``masked_tokens`` with ``eval_data``; ``finetune_accuracy``, ``finetune_macro_f1``, ... with
    fine-tuning data); ``files`` are the written names relative to ``output_dir``; ``markdown`` is
    the report. ``metrics.json`` holds all of it but the markdown.
    """
    import torch

    torch.manual_seed(seed)
    eval_data = list(eval_data or [])
    if bool(finetune_train) != bool(finetune_eval):
        raise BadInput("finetune_train and finetune_eval: give both or neither")
    sentence_list = read_sentences(sentences) if sentences else list(DEFAULT_SENTENCES)
    tokenizer, model = load_model(model_dir)

    result: dict = {"model_dir": model_dir, "metrics": {}, "eval_data": eval_data, "finetune": None}
    result["fill_mask"] = fill_mask(tokenizer, model, sentence_list, top_k=top_k)
    shards = [u for u in eval_data if is_token_shards(u)]
    if shards and len(shards) != len(eval_data):
        raise BadInput(f"held-out data mixes token shards and TFRecords: {', '.join(eval_data)}")
    if shards:
        if seq_length < 8:
            raise BadInput(f"seq_length={seq_length}: token shards are masked at a sequence length (>= 8)")
        result["metrics"].update(token_shard_metrics(
            model, _local_model_dir(model_dir), shards, seq_length=seq_length, mask_rate=mask_rate,
            batch_size=batch_size, max_examples=max_eval_batches * batch_size if max_eval_batches else None))
    elif eval_data:
        result["metrics"].update(pretraining_metrics(model, eval_data, batch_size=batch_size,
                                                     max_eval_batches=max_eval_batches))
    if finetune_train:
        finetuned = finetune.finetune_classification(
            _local_model_dir(model_dir), tokenizer, finetune_train, finetune_eval, epochs=finetune_epochs,
            max_seq_length=finetune_max_seq_length, learning_rate=finetune_learning_rate,
            batch_size=finetune_batch_size, seed=seed)
        result["finetune"] = {"task": finetuned.pop("task"), "labels": finetuned.pop("labels"),
                              "train_data": finetune_train, "eval_data": finetune_eval}
        result["metrics"].update({f"finetune_{k}": v for k, v in finetuned.items()})

    result["files"] = [METRICS_FILE, REPORT_FILE, FILL_MASK_FILE]
    storage.write_text(storage.join(output_dir, METRICS_FILE),
                       json.dumps(result, ensure_ascii=False, indent=2) + "\n")
    storage.write_text(storage.join(output_dir, FILL_MASK_FILE),
                       json.dumps(result["fill_mask"], ensure_ascii=False, indent=2) + "\n")
    result["markdown"] = render_report(result)
    storage.write_text(storage.join(output_dir, REPORT_FILE), result["markdown"])
    return result


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def render_report(result: dict) -> str:
    """The Markdown a person reads: metric tables, then each sentence's top answers."""
    lines = [f"# Evaluation of `{result['model_dir']}`", ""]
    if result["metrics"]:
        lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in result["metrics"].items()]
        lines.append("")
    if result.get("eval_data"):
        lines += ["Held-out data: " + ", ".join(f"`{u}`" for u in result["eval_data"]), ""]
    if result.get("finetune"):
        ft = result["finetune"]
        lines += [f"Fine-tuning: {ft['task']} on `{ft['train_data']}`, evaluated on `{ft['eval_data']}`; "
                  f"labels: {', '.join(ft['labels'])}.", ""]
    lines += ["## Fill-mask", ""]
    for item in result["fill_mask"]:
        lines += [f"**{item['sentence']}**", "", "| rank | token | score | sentence |", "|---|---|---|---|"]
        lines += [f"| {i} | {p['token']} | {p['score']:.4f} | {p['filled']} |"
                  for i, p in enumerate(item["predictions"], 1)]
        lines.append("")
    return "\n".join(lines)
