"""Release names, in the recipe's style: ``bert-base-japanese`` (WordPiece) and
``bert-base-japanese-char`` (character), suffixed with the Wikipedia dump date so
each retrain on a new dump is a new release beside the old ones.
"""

from __future__ import annotations

import re


# The recipe names WordPiece models plainly; other variants carry their tokenizer type.
VARIANT_SUFFIXES = {"wordpiece": "", "character": "-char", "sentencepiece": "-sentencepiece", "byte": "-byte"}


def model_name(model_size: str, variant: str) -> str:
    return f"bert-{model_size}-japanese" + VARIANT_SUFFIXES.get(variant, f"-{variant}")


def release_name(model_size: str, variant: str, dump_date: str) -> str:
    return f"{model_name(model_size, variant)}-{dump_date}"


def releases_of(names: list[str], model_size: str, variant: str) -> list[str]:
    """The names among ``names`` that are releases of this model, oldest dump first."""
    pattern = re.compile(re.escape(model_name(model_size, variant)) + r"-(\d{8})$")
    return sorted((n for n in names if pattern.match(n)), key=lambda n: pattern.match(n).group(1))
