"""Model Garden BERT pretraining checkpoint -> Hugging Face ``BertForPreTraining`` directory.

The checkpoint is read with our own TensorBundle reader (no TensorFlow); weights
are streamed into safetensors one tensor at a time (no torch), so conversion runs in a small
image. The variable layout is that of Model Garden's ``bert/pretraining``
experiment (``BertPretrainerV2`` with a ``BertEncoderV2`` and one
``next_sentence`` classification head); SPEC 6.7 gives the mapping.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct

import numpy as np

from components import storage
from components.convert.tensorbundle import TensorBundle
from components.errors import BadInput
from components.progress import Progress
from components.tokenizer import files as tokenizer_files
from components.tokenizer.sentencepiece import MODEL_FILE as SENTENCEPIECE_MODEL_FILE
from components.train import configs as train_configs

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CONVERSION_FILE = "bertja_conversion.json"
TOKENIZER_FILE_NAMES = (tokenizer_files.VOCAB_FILE, tokenizer_files.TOKENIZER_CONFIG_FILE,
                        tokenizer_files.SPECIAL_TOKENS_MAP_FILE)
# SentencePiece and byte tokenizers: tokenizer.json (+ the SentencePiece model) and what they are.
FAST_TOKENIZER_FILE_NAMES = (tokenizer_files.FAST_TOKENIZER_FILE, tokenizer_files.TOKENIZER_CONFIG_FILE,
                             tokenizer_files.SPECIAL_TOKENS_MAP_FILE, SENTENCEPIECE_MODEL_FILE,
                             tokenizer_files.BERTJA_TOKENIZER_FILE)


VALUE = "/.ATTRIBUTES/VARIABLE_VALUE"
ENCODER_LAYER = re.compile(r"^encoder/layer_with_weights-(\d+)/")
POOLER_DENSE = re.compile(r"^(.+)\.\.pooler_dense/kernel" + re.escape(VALUE) + "$")
HEAD_OUT_PROJ = re.compile(r"^model/classification_heads/(\d+)/out_proj/kernel" + re.escape(VALUE) + "$")
# The first encoder layers: (word embeddings, saved as masked_lm/embedding_table), position, type, LayerNorm.
FIRST_TRANSFORMER_LAYER = 4


def _v(name: str) -> str:
    return name + VALUE


def _dense(prefix: str) -> dict[str, str]:
    return {"kernel": _v(f"{prefix}/kernel"), "bias": _v(f"{prefix}/bias")}


def _norm(prefix: str) -> dict[str, str]:
    return {"gamma": _v(f"{prefix}/gamma"), "beta": _v(f"{prefix}/beta")}


def _find_layout(bundle: TensorBundle) -> dict:
    """Finds layer indices and the NSP head in the checkpoint's variable names."""
    names = set(bundle.names())
    where = bundle.prefix
    word = _v("masked_lm/embedding_table")
    if word not in names:
        raise BadInput(f"{where}: no {word!r}: not a Model Garden BERT pretraining checkpoint "
                       f"(variables: {', '.join(sorted(names)[:5])}, ...)")
    indices = sorted({int(m.group(1)) for n in names if (m := ENCODER_LAYER.match(n))})
    layers = [i for i in indices
              if _v(f"encoder/layer_with_weights-{i}/_attention_layer/_query_dense/kernel") in names]
    if not layers or layers != list(range(FIRST_TRANSFORMER_LAYER, FIRST_TRANSFORMER_LAYER + len(layers))):
        raise BadInput(f"{where}: transformer layers are encoder/layer_with_weights-{layers}; expected "
                       f"consecutive layers from {FIRST_TRANSFORMER_LAYER} (factorised embeddings or "
                       "another encoder type are not supported)")
    poolers = [m.group(1) for n in names if (m := POOLER_DENSE.match(n))]
    heads = sorted(int(m.group(1)) for n in names if (m := HEAD_OUT_PROJ.match(n)))
    if len(poolers) != 1 or len(heads) != 1:
        raise BadInput(f"{where}: expected exactly one classification head (next_sentence), found "
                       f"poolers {poolers} and heads {heads}")
    return {"num_layers": len(layers), "layers": layers, "nsp_pooler": poolers[0], "nsp_head": heads[0]}


def _variable_map(layout: dict) -> dict[str, tuple[str, str]]:
    """HF parameter name -> (checkpoint variable, how to transform it)."""
    m: dict[str, tuple[str, str]] = {
        "bert.embeddings.word_embeddings.weight": (_v("masked_lm/embedding_table"), "copy"),
        "bert.embeddings.position_embeddings.weight": (_v("encoder/layer_with_weights-1/embeddings"), "copy"),
        "bert.embeddings.token_type_embeddings.weight": (_v("encoder/layer_with_weights-2/embeddings"), "copy"),
        "bert.embeddings.LayerNorm.weight": (_v("encoder/layer_with_weights-3/gamma"), "copy"),
        "bert.embeddings.LayerNorm.bias": (_v("encoder/layer_with_weights-3/beta"), "copy"),
    }
    for hf_index, index in enumerate(layout["layers"]):
        src = f"encoder/layer_with_weights-{index}"
        dst = f"bert.encoder.layer.{hf_index}"
        for part in ("query", "key", "value"):
            dense = _dense(f"{src}/_attention_layer/_{part}_dense")
            m[f"{dst}.attention.self.{part}.weight"] = (dense["kernel"], "qkv_kernel")
            m[f"{dst}.attention.self.{part}.bias"] = (dense["bias"], "flatten")
        dense = _dense(f"{src}/_attention_layer/_output_dense")
        m[f"{dst}.attention.output.dense.weight"] = (dense["kernel"], "attention_out_kernel")
        m[f"{dst}.attention.output.dense.bias"] = (dense["bias"], "copy")
        for hf_name, mg_name in (("attention.output.LayerNorm", "_attention_layer_norm"),
                                 ("output.LayerNorm", "_output_layer_norm")):
            norm = _norm(f"{src}/{mg_name}")
            m[f"{dst}.{hf_name}.weight"] = (norm["gamma"], "copy")
            m[f"{dst}.{hf_name}.bias"] = (norm["beta"], "copy")
        for hf_name, mg_name in (("intermediate.dense", "_intermediate_dense"), ("output.dense", "_output_dense")):
            dense = _dense(f"{src}/{mg_name}")
            m[f"{dst}.{hf_name}.weight"] = (dense["kernel"], "transpose")
            m[f"{dst}.{hf_name}.bias"] = (dense["bias"], "copy")
    # The encoder's own pooler (the layer after the transformer layers) is untrained in
    # pretraining: the next_sentence head's pooler is the one that saw gradients.
    pooler = _dense(f"{layout['nsp_pooler']}..pooler_dense")
    head = _dense(f"model/classification_heads/{layout['nsp_head']}/out_proj")
    m["bert.pooler.dense.weight"] = (pooler["kernel"], "transpose")
    m["bert.pooler.dense.bias"] = (pooler["bias"], "copy")
    m["cls.seq_relationship.weight"] = (head["kernel"], "transpose")
    m["cls.seq_relationship.bias"] = (head["bias"], "copy")
    mlm = _dense("masked_lm/dense")
    norm = _norm("masked_lm/layer_norm")
    m["cls.predictions.transform.dense.weight"] = (mlm["kernel"], "transpose")
    m["cls.predictions.transform.dense.bias"] = (mlm["bias"], "copy")
    m["cls.predictions.transform.LayerNorm.weight"] = (norm["gamma"], "copy")
    m["cls.predictions.transform.LayerNorm.bias"] = (norm["beta"], "copy")
    # The decoder weight is tied to the word embeddings (transformers re-ties it on load).
    m["cls.predictions.bias"] = (_v("masked_lm/output_bias.Sbias"), "copy")
    return m


def _transform(array: np.ndarray, how: str) -> np.ndarray:
    if how == "copy":
        return array
    if how == "flatten":  # [heads, head_dim] -> [hidden]
        return array.reshape(-1)
    if how == "transpose":  # Keras [in, out] -> torch Linear [out, in]
        return array.T
    if how == "qkv_kernel":  # [hidden, heads, head_dim] -> [hidden_out, hidden_in]
        return array.reshape(array.shape[0], -1).T
    if how == "attention_out_kernel":  # [heads, head_dim, hidden] -> [hidden_out, hidden_in]
        return array.reshape(-1, array.shape[-1]).T
    raise AssertionError(how)


def _transformed_shape(shape: tuple[int, ...], how: str) -> tuple[int, ...]:
    return _transform(np.empty(shape, dtype=np.uint8), how).shape  # views only: no data moved


def write_safetensors(uri: str, bundle: TensorBundle, mapping: dict[str, tuple[str, str]]) -> int:
    """Streams the mapped tensors into a safetensors file (float32), one tensor in memory at a time.

    The header (names, shapes, offsets) is known from the index alone, so it goes first and each
    tensor follows as it is read, in the checkpoint's storage order. Returns the parameter count.
    """
    by_source: dict[str, list[tuple[str, str]]] = {}
    for name, (src, how) in mapping.items():
        by_source.setdefault(src, []).append((name, how))
    order = bundle.read_order(by_source)
    header: dict[str, dict] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for src in order:
        for name, how in by_source[src]:
            shape = _transformed_shape(bundle.shape(src), how)
            nbytes = 4 * int(np.prod(shape, dtype=np.int64))
            header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)  # tensors start 8-byte aligned
    progress = Progress("convert", "tensors", total=len(mapping))
    with storage.open_write(uri, compress=False) as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for src, array in bundle.iter_tensors(order):
            for name, how in by_source[src]:
                out = np.ascontiguousarray(_transform(array, how), dtype="<f4")
                if list(out.shape) != header[name]["shape"]:
                    raise AssertionError(f"{name}: shape {out.shape} != planned {header[name]['shape']}")
                f.write(memoryview(out).cast("B"))
                progress.add()
    progress.done()
    return sum(int(np.prod(h["shape"], dtype=np.int64)) for k, h in header.items() if k != "__metadata__")


def _trainer_metadata(bundle: TensorBundle) -> tuple[dict, str | None]:
    """The trainer's ``bertja_model.json`` in the checkpoint's directory, if there is one."""
    directory = bundle.prefix.rsplit("/", 1)[0] if "/" in bundle.prefix else "."
    uri = storage.join(directory, train_configs.MODEL_DESCRIPTION)
    if not storage.exists(uri):
        return {}, None
    return storage.read_json_object(uri), uri


def bert_config(*, vocab_size: int, hidden_size: int, num_layers: int, num_heads: int,
                intermediate_size: int, max_position_embeddings: int, type_vocab_size: int,
                metadata: dict | None = None, tokenizer_class: str = "BertJapaneseTokenizer") -> dict:
    """``config.json`` for BertForPreTraining: sizes from the checkpoint, numerics from the trainer.

    Without the trainer's description the recipe's settings are assumed (Model Garden gelu,
    i.e. ``gelu_new``; dropout 0.1; init range 0.02).
    """
    metadata = metadata or {}
    return {
        "architectures": ["BertForPreTraining"],
        "model_type": "bert",
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "intermediate_size": intermediate_size,
        "hidden_act": metadata.get("hidden_act", train_configs.HF_ACTIVATION),
        "hidden_dropout_prob": metadata.get("hidden_dropout_prob", 0.1),
        "attention_probs_dropout_prob": metadata.get("attention_probs_dropout_prob", 0.1),
        "max_position_embeddings": max_position_embeddings,
        "type_vocab_size": type_vocab_size,
        "initializer_range": metadata.get("initializer_range", 0.02),
        "layer_norm_eps": metadata.get("layer_norm_eps", train_configs.LAYER_NORM_EPS),
        "pad_token_id": tokenizer_files.PAD_ID,
        "tokenizer_class": tokenizer_class,
        "torch_dtype": "float32",
    }


def _check_metadata(metadata: dict, config: dict, uri: str) -> None:
    """The trainer's description must describe this checkpoint (same sizes)."""
    for key in train_configs.ARCHITECTURE_KEYS:
        if key in metadata and int(metadata[key]) != config[key]:
            raise BadInput(f"{uri}: says {key}={metadata[key]} but the checkpoint has {config[key]}: "
                           "the description belongs to another model")


def convert_checkpoint(checkpoint: str, output_dir: str, *, tokenizer_dir: str) -> dict:
    """Converts a checkpoint (``.../ckpt-N`` or a model dir) into a HF model directory.

    Writes ``config.json``, ``model.safetensors``, the tokenizer files and
    ``bertja_conversion.json`` (where it came from); returns that summary.
    """
    bundle = TensorBundle(checkpoint)
    layout = _find_layout(bundle)
    mapping = _variable_map(layout)
    sources = {src for src, _how in mapping.values()}
    missing = sorted(sources - set(bundle.names()))
    if missing:
        raise BadInput(f"{bundle.prefix}: checkpoint lacks variables the BERT layout needs: {missing[:5]}")

    tokenizer = tokenizer_files.read_tokenizer_info(tokenizer_dir)
    fast = tokenizer["type"] not in tokenizer_files.SUBWORD_TYPES  # SentencePiece, bytes: tokenizer.json
    shapes = {name: bundle.shape(src) for name, (src, _how) in mapping.items()}
    vocab_size, hidden = shapes["bert.embeddings.word_embeddings.weight"]
    if vocab_size != tokenizer["vocab_size"]:
        vocab_file = tokenizer_files.FAST_TOKENIZER_FILE if fast else tokenizer_files.VOCAB_FILE
        raise BadInput(f"{bundle.prefix}: the checkpoint's vocabulary has {vocab_size} tokens but "
                       f"{storage.join(tokenizer_dir, vocab_file)} has {tokenizer['vocab_size']}: "
                       "wrong tokenizer for this model?")
    q_shape = shapes["bert.encoder.layer.0.attention.self.query.weight"]  # [hidden, heads, head_dim]
    metadata, metadata_uri = _trainer_metadata(bundle)
    config = bert_config(
        vocab_size=vocab_size, hidden_size=hidden, num_layers=layout["num_layers"], num_heads=q_shape[1],
        intermediate_size=shapes["bert.encoder.layer.0.intermediate.dense.weight"][1],
        max_position_embeddings=shapes["bert.embeddings.position_embeddings.weight"][0],
        type_vocab_size=shapes["bert.embeddings.token_type_embeddings.weight"][0],
        metadata=metadata, tokenizer_class="PreTrainedTokenizerFast" if fast else "BertJapaneseTokenizer",
    )
    if metadata_uri:
        _check_metadata(metadata, config, metadata_uri)

    summary = {
        "checkpoint": bundle.prefix,
        "output_dir": output_dir,
        "trainer_metadata": metadata_uri,
        "training_config": metadata.get("config"),  # tiny | base | large, when the trainer said so
        "stage": metadata.get("stage"),
        "global_step": _global_step(bundle),
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "num_hidden_layers": layout["num_layers"],
        "num_attention_heads": q_shape[1],
        "intermediate_size": config["intermediate_size"],
        "max_position_embeddings": config["max_position_embeddings"],
        "hidden_act": config["hidden_act"],
        "subword_tokenizer_type": tokenizer["type"],
        "num_parameters": None,  # counted while the weights are written
        "num_tensors": len(mapping),
        "num_checkpoint_variables_skipped": len(set(bundle.names()) - sources),
        "tokenizer_files": [],
    }
    fresh_dir = None if storage.is_gcs(output_dir) else storage.local_path(output_dir)
    if fresh_dir and os.path.exists(fresh_dir):
        fresh_dir = None
    try:
        summary["num_parameters"] = write_safetensors(storage.join(output_dir, WEIGHTS_FILE), bundle, mapping)
        storage.write_text(storage.join(output_dir, CONFIG_FILE),
                           json.dumps(config, indent=2, sort_keys=True) + "\n")
        for file_name in FAST_TOKENIZER_FILE_NAMES if fast else TOKENIZER_FILE_NAMES:
            src = storage.join(tokenizer_dir, file_name)
            if storage.exists(src):
                storage.copy(src, storage.join(output_dir, file_name))
                summary["tokenizer_files"].append(file_name)
        storage.write_text(storage.join(output_dir, CONVERSION_FILE), json.dumps(summary, indent=2) + "\n")
    except BaseException:
        if fresh_dir:  # a failed conversion leaves no directory behind (each file write is atomic)
            shutil.rmtree(fresh_dir, ignore_errors=True)
        raise
    return summary


def _global_step(bundle: TensorBundle) -> int | None:
    name = _v("global_step")
    if name in bundle.entries:
        return int(bundle.read(name))
    return None
