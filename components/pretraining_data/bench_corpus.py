"""A benchmark corpus of technical Japanese: Latin terms, options, code, paths and numbers.

Source: the Japanese message catalogs (``/usr/share/locale/ja/LC_MESSAGES/*.mo``)
that Debian 12 ships with GNU coreutils, binutils, bash, grep, sed, tar, make,
wget, findutils, diffutils, gettext, GnuPG, dpkg, apt, glibc, GLib, elfutils,
systemd, net-tools, psmisc, man-db (GPL-2/3+ or LGPL-2.1+) and PostgreSQL 15
(PostgreSQL Licence). Their translated strings are copied into
``bench_data/technical_ja.txt.xz`` (made by ``regenerate``) under those licences,
as benchmark input only; nothing of them reaches a model or a release.

The stored text is real (about 28,000 lines). ``write_corpus``
makes a corpus of any length from it: documents of the stored lines, in passes,
each pass filling the printf/Python placeholders (``%s``, ``%d``, ``%1$s``,
``{0}``...) with fresh deterministic values (numbers, sizes, paths, identifiers,
options, SQL names), so a longer corpus keeps meeting new words as technical
text does. Same ``sentences`` and ``seed``, same bytes.
"""

from __future__ import annotations

import gettext
import os
import random
import re

from components import storage

DATA = os.path.join(os.path.dirname(__file__), "bench_data", "technical_ja.txt.xz")
# Catalogs whose licence allows copying the text (see above), by .mo name.
CATALOGS = (
    "coreutils", "binutils", "bfd", "gas", "ld", "gprof", "gold", "bash", "grep", "sed", "tar", "make", "wget",
    "wget-gnulib", "findutils", "diffutils", "gettext-runtime", "gettext-tools", "gnupg2", "dpkg", "apt",
    "libapt-pkg6.0", "libc", "glib20", "elfutils", "systemd", "net-tools", "psmisc", "man-db", "man-db-gnulib",
    "postgres-15", "psql-15", "pg_dump-15", "pg_upgrade-15", "pg_basebackup-15", "pgscripts-15", "libpq5-15",
    "pg_rewind-15", "initdb-15", "pg_ctl-15", "pg_waldump-15", "pg_amcheck-15", "pg_verifybackup-15",
    "pg_resetwal-15", "pg_checksums-15", "pg_controldata-15", "plpgsql-15",
)
DOCUMENT_LINES = 24  # stored lines per document
_JAPANESE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")
_PLACEHOLDER = re.compile(r"%(?:\d+\$)?[-+ #0']*(?:\d+|\*)?(?:\.(?:\d+|\*))?(?:hh|h|ll|l|L|z|j|t|q|I64)?"
                          r"[diouxXeEfgGcsSpm]|%<PRI[diouxX]\d+>|\{\d*\}")
_WORDS = ("buffer", "index", "table", "relation", "checkpoint", "segment", "symbol", "section", "archive",
          "locale", "socket", "target", "pattern", "backup", "replica", "schema", "trigger", "keyring", "module")


def regenerate(locale_dir: str = "/usr/share/locale/ja/LC_MESSAGES", output: str = DATA) -> int:
    """Rewrites the stored text from the catalogs on this machine; returns its lines.

    One line per message line that has Japanese in it, in catalog then msgid
    order; a blank line between catalogs.
    """
    blocks = []
    for name in CATALOGS:
        path = os.path.join(locale_dir, f"{name}.mo")
        if not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            catalog = gettext.GNUTranslations(f)._catalog
        lines = []
        for key in sorted(k for k in catalog if isinstance(k, str) and k):
            for line in str(catalog[key]).split("\n"):
                line = " ".join(line.split())
                if _JAPANESE.search(line):
                    lines.append(line)
        blocks.append("\n".join(lines))
    text = "\n\n".join(blocks) + "\n"
    with storage.open_write(output, text=True) as out:  # xz by the suffix
        out.write(text)
    return text.count("\n")


def _fill(rng: random.Random, spec: str) -> str:
    kind = spec[-1]
    if kind in "diouxXc" or spec.startswith("%<"):
        return str(rng.choice((rng.randrange(10), rng.randrange(1000), rng.randrange(1 << 32))))
    if kind in "eEfgG":
        return f"{rng.random() * 10 ** rng.randrange(4):.{rng.randrange(1, 4)}f}"
    if kind == "p":
        return hex(rng.randrange(1 << 48))
    word = rng.choice(_WORDS)
    return rng.choice((
        f"/var/lib/{word}/{rng.randrange(100000)}.dat", f"{word}_{rng.randrange(1000)}",
        f"--{word}-{rng.choice(_WORDS)}", f"pg_{word}", f"{word.upper()}{rng.randrange(100)}",
        f"public.{word}s", f"0x{rng.randrange(1 << 32):08x}", f"{rng.randrange(1, 65536)} bytes"))


def _documents() -> list[list[str]]:
    docs = []
    for block in storage.read_text(DATA).split("\n\n"):
        lines = [line for line in block.split("\n") if line]
        docs += [lines[i:i + DOCUMENT_LINES] for i in range(0, len(lines), DOCUMENT_LINES)]
    return docs


def write_corpus(output: str, sentences: int, seed: int = 0) -> int:
    """Writes a corpus of ``sentences`` lines (blank line between documents); returns its documents."""
    docs, rng = _documents(), random.Random(seed)
    written = n_docs = 0
    with storage.open_write(output, text=True) as out:
        while written < sentences:
            order = list(range(len(docs)))
            rng.shuffle(order)
            for i in order:
                lines = [_PLACEHOLDER.sub(lambda m: _fill(rng, m.group()), line) for line in docs[i]]
                lines = lines[:sentences - written]
                out.write("\n".join(lines) + "\n\n")
                written += len(lines)
                n_docs += 1
                if written >= sentences:
                    break
    return n_docs
