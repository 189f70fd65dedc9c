"""SentencePiece unigram tokenizers (the yoheikikuta, rinna and ModernBERT-Ja presets).

The ``sentencepiece`` library trains the model (it has what the seeds used:
character coverage, byte fallback, digit splitting, control/user symbols,
normalisation rules; ``tokenizers``' own UnigramTrainer has none of the first
three). The directory also gets a ``tokenizer.json`` written from the trained
model: a ``tokenizers`` Unigram with the model's pieces and scores, its byte
fallback and its own normaliser (the precompiled character map), so that
``transformers.AutoTokenizer.from_pretrained(DIR)`` loads a fast tokenizer
giving the model's ids. transformers' converter cannot be used here: it needs
``sentencepiece_model_pb2``, which sentencepiece 0.2.3 generated for a newer
protobuf than the 6.x kfp pins, so the few fields needed are read straight from
the serialized ``ModelProto`` (:func:`read_model_proto`).

Ids 0..4 are ``[PAD] [UNK] [CLS] [SEP] [MASK]``, as in the WordPiece
vocabularies, so data and trainer code use the same special ids for every type.
"""

from __future__ import annotations

import json
import struct
import time

from components import storage
from components.convert.tensorbundle import proto_fields
from components.errors import BadInput
from components.progress import Progress
from components.tokenizer import files

MODEL_FILE = "sentencepiece.model"
MODEL_TYPES = ("unigram",)
NORMALIZATIONS = ("nmt_nfkc", "nfkc", "nmt_nfkc_cf", "nfkc_cf", "identity")
# Piece types in sentencepiece_model.proto (SentencePiece.Type).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
_META = "\u2581"  # "▁": sentencepiece's whitespace


def train_sentencepiece(input_uris: list[str] | str, output_dir: str, *, vocab_size: int,
                        model_type: str = "unigram", character_coverage: float = 0.9995,
                        byte_fallback: bool = False, split_digits: bool = False,
                        control_symbols=(), user_symbols=(), normalization: str = "nmt_nfkc",
                        do_lower_case: bool = False, input_sentence_size: int = 0, seed: int = 0,
                        workers: int = 1) -> dict:
    """Trains a unigram model on the corpus lines and writes a tokenizer directory.

    ``control_symbols`` are added after ``[CLS] [SEP] [MASK]`` (which are always
    there; ``[PAD]``/``[UNK]`` in the list are the pad/unk pieces themselves);
    ``user_symbols`` are pieces matched in text. ``do_lower_case`` lowercases the
    training text and, in ``tokenizer.json``, the input before the model's
    normaliser. ``input_sentence_size`` > 0 trains on that many lines drawn at
    random (sentencepiece's sampling); 0 uses every line. Returns statistics.
    """
    import sentencepiece as spm

    inputs = [input_uris] if isinstance(input_uris, str) else list(input_uris)
    controls = _control_symbols(control_symbols)
    users = _symbols(user_symbols, "user_symbols")
    _check_options(vocab_size=vocab_size, model_type=model_type, character_coverage=character_coverage,
                   byte_fallback=byte_fallback, normalization=normalization, workers=workers,
                   input_sentence_size=input_sentence_size, n_meta=2 + len(controls) + len(users))
    if not inputs:
        raise BadInput("no input files")
    clash = set(controls) & set(users)
    if clash:
        raise BadInput(f"user_symbols: {sorted(clash)} are also control symbols")
    storage.check_outputs(inputs, dirs=[output_dir])

    progress = Progress("sentencepiece", "lines")
    counted = {"lines": 0, "sentences": 0}

    def sentences():
        for uri in inputs:
            for _n, line in storage.iter_lines(uri):
                progress.add(1)
                counted["lines"] += 1
                if line.strip():
                    counted["sentences"] += 1
                    yield line.lower() if do_lower_case else line

    model = _BytesSink()
    spm.set_random_generator_seed(int(seed))
    started = time.monotonic()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=sentences(), model_writer=model, model_type=model_type,
            vocab_size=int(vocab_size), character_coverage=float(character_coverage),
            byte_fallback=bool(byte_fallback), split_digits=bool(split_digits),
            normalization_rule_name=normalization,
            pad_id=files.PAD_ID, pad_piece=files.PAD_TOKEN, unk_id=files.UNK_ID, unk_piece=files.UNK_TOKEN,
            bos_id=-1, eos_id=-1, control_symbols=controls, user_defined_symbols=users,
            input_sentence_size=int(input_sentence_size), shuffle_input_sentence=True,
            num_threads=int(workers), minloglevel=2)
    except RuntimeError as e:
        message = str(e)
        detail = message.strip().rsplit("] ", 1)[-1]
        if "Vocabulary size too high" in message:
            raise BadInput(f"vocab_size={vocab_size}: more pieces than {', '.join(inputs)} allow "
                           f"(sentencepiece: {detail})") from e
        if "Vocabulary size is smaller than required_chars" in message:
            raise BadInput(f"vocab_size={vocab_size}: fewer than the characters character_coverage="
                           f"{character_coverage} keeps (sentencepiece: {detail})") from e
        if not counted["sentences"]:
            raise BadInput(f"{', '.join(inputs)}: empty corpus (no text in {counted['lines']} lines)") from e
        raise
    train_s = time.monotonic() - started
    progress.done()

    proto = model.getvalue()
    model_proto = read_model_proto(proto)
    tokenizer = tokenizer_json(model_proto, do_lower_case=do_lower_case)
    storage.write_bytes(storage.join(output_dir, MODEL_FILE), proto)
    pieces = model_proto["pieces"]
    files.write_fast_tokenizer_dir(output_dir, tokenizer, info=files.tokenizer_info(
        type="sentencepiece", word_splitter="none", mecab_dic="none", do_lower_case=do_lower_case,
        vocab_size=len(pieces)))
    return {
        "vocab_size": len(pieces),
        "lines": counted["lines"],
        "byte_pieces": sum(t == BYTE for _p, _s, t in pieces),
        "train_seconds": round(train_s, 2),
    }


class _BytesSink:
    """The ``model_writer`` sentencepiece writes the serialized model to."""

    def __init__(self):
        self._chunks: list[bytes] = []

    def write(self, data: bytes) -> None:
        self._chunks.append(bytes(data))

    def getvalue(self) -> bytes:
        return b"".join(self._chunks)


def _symbols(values, name: str) -> list[str]:
    out = []
    for value in ([values] if isinstance(values, str) else list(values or ())):
        if not isinstance(value, str) or not value or any(c.isspace() for c in value):
            raise BadInput(f"{name}: {value!r} is not a non-empty symbol without whitespace")
        if value not in out:
            out.append(value)
    return out


def _control_symbols(values) -> list[str]:
    """[CLS] [SEP] [MASK] first (ids 2..4), then the others; [PAD]/[UNK] are the pad/unk pieces."""
    extra = [s for s in _symbols(values, "control_symbols") if s not in files.SPECIAL_TOKENS]
    return [files.CLS_TOKEN, files.SEP_TOKEN, files.MASK_TOKEN, *extra]


def _check_options(*, vocab_size, model_type, character_coverage, byte_fallback, normalization, workers,
                   input_sentence_size, n_meta: int) -> None:
    if model_type not in MODEL_TYPES:
        raise BadInput(f"model_type={model_type!r}: not one of {MODEL_TYPES}")
    if normalization not in NORMALIZATIONS:
        raise BadInput(f"normalization={normalization!r}: not one of {NORMALIZATIONS}")
    if not 0.0 < float(character_coverage) <= 1.0:
        raise BadInput(f"character_coverage={character_coverage}: must be in (0, 1]")
    if int(workers) < 1:
        raise BadInput(f"workers={workers}: must be >= 1")
    if int(input_sentence_size) < 0:
        raise BadInput(f"input_sentence_size={input_sentence_size}: must be >= 0 (0: every line)")
    least = n_meta + 1 + (256 if byte_fallback else 0)
    if int(vocab_size) < least:
        why = f"256 byte pieces + {n_meta} special/user pieces + 1" if byte_fallback else f"{n_meta} special/user pieces + 1"
        raise BadInput(f"vocab_size={vocab_size}: byte_fallback={bool(byte_fallback)} needs at least {least} ({why})")


# --- The serialized ModelProto ----------------------------------------------------------------

# Field numbers from sentencepiece_model.proto.
_MODEL_PIECES, _MODEL_TRAINER_SPEC, _MODEL_NORMALIZER_SPEC = 1, 2, 3
_PIECE_PIECE, _PIECE_SCORE, _PIECE_TYPE = 1, 2, 3
_NORMALIZER = {1: ("name", "str"), 2: ("precompiled_charsmap", "bytes"), 3: ("add_dummy_prefix", "bool"),
               4: ("remove_extra_whitespaces", "bool"), 5: ("escape_whitespaces", "bool")}
_TRAINER = {3: ("model_type", "int"), 4: ("vocab_size", "int"), 10: ("character_coverage", "float"),
            11: ("input_sentence_size", "int"), 16: ("num_threads", "int"), 19: ("shuffle_input_sentence", "bool"),
            25: ("split_digits", "bool"), 30: ("control_symbols", "list"), 31: ("user_defined_symbols", "list"),
            35: ("byte_fallback", "bool"), 40: ("unk_id", "sint"), 41: ("bos_id", "sint"), 42: ("eos_id", "sint"),
            43: ("pad_id", "sint"), 45: ("unk_piece", "str"), 48: ("pad_piece", "str")}
# Defaults proto2 leaves out of the bytes.
_NORMALIZER_DEFAULTS = {"name": "", "precompiled_charsmap": b"", "add_dummy_prefix": True,
                        "remove_extra_whitespaces": True, "escape_whitespaces": True}
_TRAINER_DEFAULTS = {"model_type": 1, "split_digits": False, "byte_fallback": False, "control_symbols": [],
                     "user_defined_symbols": [], "shuffle_input_sentence": True, "input_sentence_size": 0}


def _float32(bits: int) -> float:
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def _decode(data: bytes, layout: dict, defaults: dict) -> dict:
    out = {k: (list(v) if isinstance(v, list) else v) for k, v in defaults.items()}
    for number, value in proto_fields(data):
        if number not in layout:
            continue
        name, kind = layout[number]
        if kind == "str":
            out[name] = value.decode("utf-8")
        elif kind == "bytes":
            out[name] = bytes(value)
        elif kind == "bool":
            out[name] = bool(value)
        elif kind == "int":
            out[name] = value
        elif kind == "sint":  # int32 as varint: negatives are 10-byte two's complement
            out[name] = value - (1 << 64) if value >= 1 << 63 else value
        elif kind == "float":
            out[name] = _float32(value)
        else:  # "list": repeated string
            out.setdefault(name, []).append(value.decode("utf-8"))
    return out


def read_model_proto(data: bytes, where: str = "sentencepiece model") -> dict:
    """The pieces ``[(piece, score, type)]``, ``normalizer_spec`` and ``trainer_spec`` of a ``.model``."""
    pieces: list[tuple[str, float, int]] = []
    normalizer: dict = dict(_NORMALIZER_DEFAULTS)
    trainer: dict = {}
    try:
        for number, value in proto_fields(data):
            if not isinstance(value, bytes):
                continue
            if number == _MODEL_PIECES:
                piece, score, kind = "", 0.0, NORMAL
                for n, v in proto_fields(value):
                    if n == _PIECE_PIECE:
                        piece = v.decode("utf-8")
                    elif n == _PIECE_SCORE:
                        score = _float32(v)
                    elif n == _PIECE_TYPE:
                        kind = v
                pieces.append((piece, score, kind))
            elif number == _MODEL_TRAINER_SPEC:
                trainer = _decode(value, _TRAINER, _TRAINER_DEFAULTS)
            elif number == _MODEL_NORMALIZER_SPEC:
                normalizer = _decode(value, _NORMALIZER, _NORMALIZER_DEFAULTS)
    except (ValueError, UnicodeDecodeError, struct.error) as e:
        raise BadInput(f"{where}: not a sentencepiece ModelProto ({e})") from e
    if not pieces:
        raise BadInput(f"{where}: no pieces (not a sentencepiece model)")
    return {"pieces": pieces, "normalizer_spec": normalizer, "trainer_spec": trainer}


def tokenizer_json(model: dict, *, do_lower_case: bool = False) -> str:
    """A ``tokenizers`` Tokenizer (JSON) that encodes as the sentencepiece model does.

    Model: Unigram over the same pieces and scores (byte fallback as trained;
    user pieces score 0, so the lattice keeps them whole as sentencepiece does).
    Normaliser: [lowercase], the model's precompiled map (its normalisation
    rule), then sentencepiece's whitespace handling (strip, collapse runs of
    spaces). Pre-tokeniser: Metaspace adding the dummy prefix to every text
    between special tokens ("first" would miss it when leading spaces were
    stripped: it looks at original offsets). Control pieces are special added
    tokens, which sentencepiece never matches in text: here only the literal
    token text does.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    pieces, spec, trainer = model["pieces"], model["normalizer_spec"], model["trainer_spec"]
    if trainer.get("model_type", 1) != 1:
        raise BadInput(f"model_type={trainer.get('model_type')}: only unigram models are supported")
    byte_fallback = bool(trainer.get("byte_fallback"))
    unk_id = next(i for i, (_p, _s, t) in enumerate(pieces) if t == UNKNOWN)
    tokenizer = Tokenizer(Unigram([(p, s) for p, s, _t in pieces], unk_id=unk_id, byte_fallback=byte_fallback))
    steps = [normalizers.Lowercase()] if do_lower_case else []
    if spec["precompiled_charsmap"]:
        steps.append(normalizers.Precompiled(spec["precompiled_charsmap"]))
    if spec["remove_extra_whitespaces"]:
        steps += [normalizers.Strip(left=True, right=True), normalizers.Replace(Regex(" {2,}"), " ")]
    tokenizer.normalizer = normalizers.Sequence(steps)
    prepend = "always" if spec["add_dummy_prefix"] else "never"
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=_META, prepend_scheme=prepend, split=False)
    steps = [decoders.Replace(_META, " ")]
    if byte_fallback:
        steps += [decoders.ByteFallback(), decoders.Fuse()]
    if spec["add_dummy_prefix"]:
        steps.append(decoders.Strip(" ", 1, 0))
    tokenizer.decoder = decoders.Sequence(steps)
    tokenizer.add_special_tokens([AddedToken(p, normalized=False, special=True)
                                  for p, _s, t in pieces if t in (CONTROL, UNKNOWN)])
    cls, sep = files.CLS_TOKEN, files.SEP_TOKEN
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, files.CLS_ID), (sep, files.SEP_ID)])
    return tokenizer.to_str()
