"""A few instances of a TFRecord shard (or documents of a token shard) decoded back to tokens,
for a person to read in the KFP UI: what the model will actually see, masks and labels included.
"""

from __future__ import annotations

import itertools

from components import tfrecord
from components.tokenizer import files as tokenizer_files


def decode_instance(example: dict, tokens: list[str]) -> dict:
    """One parsed Example -> segments A/B as text, masked positions with their labels."""
    length = int(sum(example["input_mask"]))
    ids = [int(i) for i in example["input_word_ids"][:length]]
    types = [int(t) for t in example["input_type_ids"][:length]]
    words = [_token(tokens, i) for i in ids]
    a_words = [w for w, t in zip(words, types) if t == 0][1:-1]  # less [CLS] ... [SEP]
    b_words = [w for w, t in zip(words, types) if t == 1][:-1]  # less the final [SEP]
    masked = [(int(p), _token(tokens, label)) for p, label, w in
              zip(example["masked_lm_positions"], example["masked_lm_ids"], example["masked_lm_weights"]) if w > 0]
    return {
        "segment_a": " ".join(a_words),
        "segment_b": " ".join(b_words),
        # MLM-only data has no next-sentence label (and no B).
        "random_next": bool(int(example["next_sentence_labels"][0])) if "next_sentence_labels" in example else None,
        "tokens": length,
        "masked": [{"position": p, "input": words[p], "label": label} for p, label in masked],
    }


def preview_markdown(tfrecord_uri: str, vocab_dir: str, n: int = 3, title: str = "Sample instances") -> str:
    """Markdown with the first ``n`` instances of a shard, decoded."""
    tokens = tokenizer_files.token_strings(vocab_dir)
    lines = [f"## {title}", ""]
    for number, example in enumerate(itertools.islice(tfrecord.iter_examples(tfrecord_uri), n), 1):
        inst = decode_instance(example, tokens)
        if inst["random_next"] is None:
            lines += [f"### Instance {number}: {inst['tokens']} tokens (MLM only)", "",
                      f"- **A:** {inst['segment_a']}", ""]
        else:
            nsp = "random (from another document)" if inst["random_next"] else "actual continuation"
            lines += [f"### Instance {number}: {inst['tokens']} tokens, B is the {nsp}", "",
                      f"- **A:** {inst['segment_a']}", f"- **B:** {inst['segment_b']}", ""]
        lines += ["| position | input | label |", "|---|---|---|"]
        lines += [f"| {m['position']} | {_cell(m['input'])} | {_cell(m['label'])} |" for m in inst["masked"]]
        lines.append("")
    return "\n".join(lines) + "\n"


def shards_markdown(shards_uri: str, vocab_dir: str, n: int = 3, max_tokens: int = 64,
                    title: str = "Token shards") -> str:
    """Markdown with the start of the first ``n`` documents of a token shard, words separated by " / "."""
    from components.pretraining_data.shards import read_token_shards

    shards = read_token_shards(shards_uri)
    tokens = tokenizer_files.token_strings(vocab_dir)
    meta = shards.meta
    lines = [f"## {title}", "", f"{meta['documents']:,} documents, {meta['sentences']:,} sentences, "
             f"{meta['tokens']:,} tokens ({meta['dtype']}); tokenizer {meta['tokenizer']['type']}, word splitter "
             f"{meta['tokenizer']['word_splitter']}.", ""]
    for number in range(min(n, len(shards))):
        ids, starts = shards.document(number)
        words: list[str] = []
        for i, start in zip(ids[:max_tokens].tolist(), starts[:max_tokens].tolist()):
            if start or not words:
                words.append("")
            words[-1] += ("" if not words[-1] else " ") + _token(tokens, i)
        lines += [f"### Document {number + 1}: {len(ids):,} tokens", "", " / ".join(words), ""]
    return "\n".join(lines) + "\n"


def _token(tokens: list[str], i) -> str:
    i = int(i)
    return tokens[i] if 0 <= i < len(tokens) else f"<{i}>"


def _cell(text: str) -> str:
    """A token as a Markdown table cell (a ``|`` token would end the cell)."""
    return text.replace("|", "\\|")
