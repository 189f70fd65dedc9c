"""A small random BERT with a real BertJapaneseTokenizer, for evaluation and fine-tuning tests."""

from __future__ import annotations

from collections import Counter

from components.tokenizer import files as tokenizer_files


def make_tiny_bert(root: str, texts: list[str], *, max_chars: int = 400, max_position_embeddings: int = 64) -> str:
    """Writes a 2-layer, hidden-32 BertForPreTraining and a character tokenizer whose vocabulary is
    the ``max_chars`` most frequent characters of ``texts`` to ``root``; returns ``root``."""
    import torch
    from transformers import BertConfig, BertForPreTraining

    counts = Counter(c for line in texts for c in line if not c.isspace())
    tokens = tokenizer_files.reserved_tokens() + [c for c, _ in counts.most_common(max_chars)]
    tokenizer_files.write_tokenizer_dir(root, tokens, subword_tokenizer_type="character")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokens), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=max_position_embeddings,
                        hidden_act="gelu_new", architectures=["BertForPreTraining"],
                        tokenizer_class="BertJapaneseTokenizer")
    BertForPreTraining(config).save_pretrained(root)
    return root
