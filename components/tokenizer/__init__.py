"""Alphabet, WordPiece and character tokenizers (recipe steps 6 and 7).

``files`` holds the facts other steps share: special tokens and their ids, and
how a tokenizer directory (``vocab.txt`` + ``tokenizer_config.json``) is read
and written.
"""
