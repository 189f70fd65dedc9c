"""The initial alphabet: every character of UniDic's surface forms (recipe step 6).

WordPiece training starts from this alphabet so that any character UniDic can
write gets its own token (ids 15.. in the vocabulary), however rare it is in
the training sample. UniDic 2.1.2's ``lex.csv`` gives 7,012 characters.
"""

from __future__ import annotations

import csv
import unicodedata
from collections.abc import Iterator

from components import storage
from components.errors import BadInput
from components.progress import Progress

# The recipe reads an empty surface as the double quote (UniDic's row for '"'
# does not survive CSV parsing as such); so do we, so that '"' is in the alphabet.
EMPTY_SURFACE_MEANS = '"'


def alphabet_characters(surface: str) -> Iterator[str]:
    """The alphabet characters one surface contributes: NFKC per character, one printable char."""
    for char in surface:
        char = unicodedata.normalize("NFKC", char)
        if len(char) == 1 and char.isprintable():
            yield char


def _lexicon_rows(lex_csv_uri: str) -> Iterator[tuple[int, list[str]]]:
    """``(line, row)`` for each CSV row; bad UTF-8 or CSV names the line."""
    lines = (line + "\n" for _n, line in storage.iter_lines(lex_csv_uri))
    reader = csv.reader(lines)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise BadInput(f"{lex_csv_uri}:{reader.line_num}: not CSV ({e})") from e
        yield reader.line_num, row


def _check_row(lex_csv_uri: str, line: int, row: list[str]) -> None:
    # A MeCab lexicon row is surface,left_id,right_id,cost,features...
    try:
        if len(row) < 4:
            raise ValueError
        for field in row[1:4]:
            int(field)
    except ValueError:
        raise BadInput(f"{lex_csv_uri}:{line}: not a MeCab/UniDic lexicon row "
                       f"(expected surface,left_id,right_id,cost,...; got {','.join(row)[:80]!r})") from None


def build_alphabet(lex_csv_uri: str, output_uri: str) -> dict:
    """Writes the sorted alphabet of ``lex.csv`` surfaces, one character per line.

    Returns ``{"characters": N, "rows": rows read}``.
    """
    storage.check_outputs([lex_csv_uri], files=[output_uri])
    chars: set[str] = set()
    rows = surfaces = 0
    progress = Progress("alphabet", "rows")
    for line, row in _lexicon_rows(lex_csv_uri):
        if not row:  # a blank line
            continue
        _check_row(lex_csv_uri, line, row)
        rows += 1
        progress.add()
        surface = row[0]
        if surface:
            surfaces += 1
        else:
            surface = EMPTY_SURFACE_MEANS
        chars.update(alphabet_characters(surface))
    progress.done()
    if rows == 0:
        raise BadInput(f"{lex_csv_uri}: no lexicon rows (empty file)")
    if surfaces == 0:
        raise BadInput(f"{lex_csv_uri}: no surface forms (the first column is empty on all {rows:,} rows)")
    alphabet = sorted(chars)
    with storage.open_write(output_uri, text=True) as f:
        for char in alphabet:
            f.write(char + "\n")
    return {"characters": len(alphabet), "rows": rows}


def read_alphabet(alphabet_uri: str) -> list[str]:
    """The characters of an alphabet file (one per line; a line may be a single space)."""
    chars = []
    for lineno, line in storage.iter_lines(alphabet_uri):
        if len(line) != 1:
            raise BadInput(f"{alphabet_uri}:{lineno}: expected exactly one character per line, "
                           f"got {line!r}")
        chars.append(line)
    if not chars:
        raise BadInput(f"{alphabet_uri}: empty alphabet file")
    return chars
