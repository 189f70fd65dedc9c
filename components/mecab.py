"""Word splitting: MeCab (fugashi) for sentence splitting, tokenizers and pretraining data, and vibrato.

The MeCab options mirror what ``transformers.BertJapaneseTokenizer`` passes to
fugashi for the same ``mecab_dic``, so that words seen at data-creation time are
the words the released tokenizer produces. vibrato (Tohoku's bybert split its
words with it) is a Viterbi tokenizer over MeCab-format dictionaries; set up as
here it gives MeCab's words for the same dictionary, through the same interface.
"""

from __future__ import annotations

import os
import unicodedata

from components.errors import BadInput

KNOWN_DICTIONARIES = ("unidic_lite", "unidic", "ipadic")
# ``mecab_dic="none"``: no word split. SentencePiece presets mask single tokens,
# as those systems did; a step that still needs MeCab (sentence splitting in the
# corpus) uses the default dictionary for it.
NO_WORD_SPLIT = "none"
MECAB_DIC_CHOICES = (*KNOWN_DICTIONARIES, NO_WORD_SPLIT)
# ``word_splitter``: what groups tokens into words for whole-word masking.
WORD_SPLITTERS = ("mecab", "vibrato", NO_WORD_SPLIT)
# A vibrato dictionary: a compiled system dictionary (vibrato's releases ship
# ``system.dic.zst``) or a MeCab-format text dictionary directory of these files.
VIBRATO_DICT_SUFFIXES = (".dic", ".dic.zst")
VIBRATO_TEXT_FILES = ("lex.csv", "matrix.def", "char.def", "unk.def")
MECAB_MAX_GROUPING_LEN = 24  # MeCab cuts runs of unknown characters here; vibrato by default does not


def check_mecab_dic(mecab_dic: str, what: str = "mecab_dic") -> str:
    """``mecab_dic`` itself if it is a known name, ``none`` or a directory; else BadInput."""
    if mecab_dic in MECAB_DIC_CHOICES or os.path.isdir(mecab_dic):
        return mecab_dic
    raise BadInput(f"{what}={mecab_dic!r}: not one of {MECAB_DIC_CHOICES} nor a dictionary directory")


def dictionary_dir(mecab_dic: str) -> str:
    """The dictionary directory for a known name, or ``mecab_dic`` itself if it is a directory."""
    if mecab_dic in ("unidic_lite", NO_WORD_SPLIT):
        import unidic_lite

        return unidic_lite.DICDIR
    if mecab_dic == "unidic":
        try:
            import unidic
        except ImportError as e:
            raise BadInput("mecab_dic='unidic' needs the 'unidic' package (pip install unidic; python -m unidic download)") from e
        return unidic.DICDIR
    if mecab_dic == "ipadic":
        try:
            import ipadic
        except ImportError as e:
            raise BadInput("mecab_dic='ipadic' needs the 'ipadic' package") from e
        return ipadic.DICDIR
    if os.path.isdir(mecab_dic):
        return mecab_dic
    raise BadInput(f"mecab_dic={mecab_dic!r}: not one of {MECAB_DIC_CHOICES} nor a dictionary directory")


def tagger_args(mecab_dic: str) -> str:
    """fugashi options for the dictionary; ipadic's own ``MECAB_ARGS`` (as transformers passes them)."""
    dicdir = dictionary_dir(mecab_dic)
    if mecab_dic == "ipadic":
        import ipadic

        return ipadic.MECAB_ARGS
    rc = os.path.join(dicdir, "mecabrc")
    rc = rc if os.path.isfile(rc) else os.devnull
    return f'-d "{dicdir}" -r "{rc}"'


def generic_tagger(mecab_dic: str = "unidic_lite"):
    """A ``fugashi.GenericTagger`` (features as tuples) for the dictionary."""
    import fugashi

    return fugashi.GenericTagger(tagger_args(mecab_dic))


def word_splitter(mecab_dic: str, do_lower_case: bool = False) -> "WordSplitter | None":
    """The MeCab word splitter, or None for ``mecab_dic="none"`` (tokens are not grouped into words)."""
    if check_mecab_dic(mecab_dic) == NO_WORD_SPLIT:
        return None
    return WordSplitter(mecab_dic, do_lower_case)


class WordSplitter:
    """Splits text into MeCab word surfaces the way ``BertJapaneseTokenizer`` does.

    NFKC first (``normalize_text=True`` there), optional lowercasing, no
    whitespace tokens.
    """

    def __init__(self, mecab_dic: str = "unidic_lite", do_lower_case: bool = False):
        import fugashi

        self.mecab_dic = mecab_dic
        self.do_lower_case = do_lower_case
        # One tagger (one mapping of the dictionary): its parse() gives MeCab's
        # one-line output (surfaces joined by spaces), ~20% faster than a node
        # object per word; calling it still gives nodes.
        self._tagger = fugashi.GenericTagger(f"{tagger_args(mecab_dic)} -Owakati")

    def __call__(self, text: str) -> list[str]:
        text = unicodedata.normalize("NFKC", text)
        if text.isprintable():
            # The only whitespace is ASCII space, which never occurs in a surface
            # (so no word is empty or blank). Lowercasing never makes or removes
            # whitespace, so the whole line is lowercased at once (one call, not one per word).
            parsed = self._tagger.parse(text)
            return (parsed.lower() if self.do_lower_case else parsed).split()
        words = [s for s in (w.surface for w in self._tagger(text)) if s and not s.isspace()]
        if self.do_lower_case:
            words = [w.lower() for w in words]
        return words

    def word_starts(self, text: str) -> list[int]:
        """Where each word starts in ``text`` itself (character offsets; no NFKC, which moves them).

        For tokenizers that keep the raw text (bytes): a run of whitespace
        counts as a word of its own, so it is never glued to a neighbour.
        """
        starts, pos = [], 0
        for node in self._tagger(text):
            if node.white_space:
                starts.append(pos)
                pos += len(node.white_space)
            starts.append(pos)
            pos += len(node.surface)
        if pos < len(text):  # trailing whitespace
            starts.append(pos)
        return starts

    def __getstate__(self):
        # Taggers are C objects: workers rebuild their own.
        return {"mecab_dic": self.mecab_dic, "do_lower_case": self.do_lower_case}

    def __setstate__(self, state):
        self.__init__(**state)


def make_word_splitter(word_splitter: str, *, mecab_dic: str = "unidic_lite", vibrato_dict: str | None = None,
                       do_lower_case: bool = False) -> "WordSplitter | VibratoSplitter | None":
    """The splitter a tokenizer directory records (``word_splitter`` + its dictionary); None: no word split."""
    if check_word_splitter(word_splitter) == "vibrato":
        if not vibrato_dict:
            raise BadInput("word_splitter='vibrato': needs a vibrato dictionary (vibrato_dict)")
        return VibratoSplitter(vibrato_dict, do_lower_case)
    if word_splitter == NO_WORD_SPLIT or check_mecab_dic(mecab_dic) == NO_WORD_SPLIT:
        return None
    return WordSplitter(mecab_dic, do_lower_case)


def check_word_splitter(word_splitter: str, what: str = "word_splitter") -> str:
    if word_splitter not in WORD_SPLITTERS:
        raise BadInput(f"{what}={word_splitter!r}: not one of {WORD_SPLITTERS}")
    return word_splitter


def vibrato_dict_kind(uri: str, what: str = "vibrato_dict") -> str:
    """"compiled" for a ``.dic``/``.dic.zst`` file, "text" for a text dictionary directory; else BadInput."""
    from components import storage

    if uri.endswith(VIBRATO_DICT_SUFFIXES):
        if not storage.exists(uri):
            raise BadInput(f"{what}={uri!r}: no such file")
        return "compiled"
    missing = [n for n in VIBRATO_TEXT_FILES if not storage.exists(storage.join(uri, n))]
    if missing:
        raise BadInput(f"{what}={uri!r}: not a vibrato system dictionary ({' or '.join(VIBRATO_DICT_SUFFIXES)}) "
                       f"nor a text dictionary directory (missing {', '.join(missing)})")
    return "text"


def load_vibrato(uri: str):
    """A ``vibrato.Vibrato`` that splits as MeCab does (spaces skipped, unknown runs cut at 24 characters)."""
    import vibrato

    from components import storage

    options = {"ignore_space": True, "max_grouping_len": MECAB_MAX_GROUPING_LEN}
    if vibrato_dict_kind(uri) == "text":
        texts = [storage.read_text(storage.join(uri, n)) for n in VIBRATO_TEXT_FILES]
        try:
            return vibrato.Vibrato.from_textdict(*texts, **options)
        except BaseException as e:  # the Rust side panics (PanicException) on malformed lines
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            raise BadInput(f"{uri}: not a valid text dictionary ({e})") from e
    data = storage.read_bytes(uri)
    if uri.endswith(".zst"):
        import zstandard

        try:
            data = zstandard.ZstdDecompressor().stream_reader(data).read()
        except zstandard.ZstdError as e:
            raise BadInput(f"{uri}: corrupt zstd data ({e})") from e
    try:
        return vibrato.Vibrato(data, **options)
    except ValueError as e:
        raise BadInput(f"{uri}: not a vibrato system dictionary of this vibrato "
                       f"({vibrato.VIBRATO_VERSION}): {e}") from e


class VibratoSplitter:
    """vibrato words with the interface of ``WordSplitter`` (surfaces of a line, word starts in raw text)."""

    def __init__(self, dict_uri: str, do_lower_case: bool = False):
        self.dict_uri = dict_uri
        self.do_lower_case = do_lower_case
        self._tokenizer = load_vibrato(dict_uri)

    def __call__(self, text: str) -> list[str]:
        words = self._tokenizer.tokenize_to_surfaces(unicodedata.normalize("NFKC", text))
        return [w.lower() for w in words] if self.do_lower_case else words

    def word_starts(self, text: str) -> list[int]:
        """As ``WordSplitter.word_starts``: a run of whitespace is a word of its own."""
        starts, pos = [], 0
        for token in self._tokenizer.tokenize(text):
            if token.start() > pos:
                starts.append(pos)
            starts.append(token.start())
            pos = token.end()
        if pos < len(text):
            starts.append(pos)
        return starts

    def __getstate__(self):
        return {"dict_uri": self.dict_uri, "do_lower_case": self.do_lower_case}

    def __setstate__(self, state):
        self.__init__(**state)
