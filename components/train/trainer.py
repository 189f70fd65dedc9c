"""BERT pretraining with TF Model Garden's ``bert/pretraining`` experiment, in process.

Why in process (``official.core.train_lib``) rather than ``python -m official.nlp.train``: the
trainer hooks an Orbit train action into every loop to print progress and write the heartbeat a TPU
controller follows; it checks every input (config, data, tokenizer, init checkpoint) with clear
errors before TensorFlow builds anything; it writes ``failed.json`` with the log tail when anything
goes wrong; and it hands the final metrics back to the caller as a dict.

Restarting is resuming: Model Garden's checkpoint manager restores the latest checkpoint in the
model dir when there is one (optimizer state and step included), and only on a fresh start loads
``init_checkpoint`` (weights only: stage 2 starting from stage 1). A preempted TPU VM therefore
just runs the same command again.

TensorFlow is imported inside the functions that need it, so ``bertja --help`` and the KFP compile
stay light.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import sys
import time
import traceback

import yaml

from components import storage, tfrecord
from components.convert import tensorbundle
from components.errors import BadInput
from components.tokenizer import files as tokenizer_files
from components.train import configs, status

STRATEGIES = ("one_device", "tpu")
LOG_TAIL_LINES = 200
# Features the data must carry (Model Garden "v2" names) and the stage value each length must equal.
_SEQ_FEATURES = ("input_word_ids", "input_mask", "input_type_ids")
_PRED_FEATURES = ("masked_lm_positions", "masked_lm_ids", "masked_lm_weights")


# ---------------------------------------------------------------------------
# Checkpoints (no TensorFlow: the controller and the converter use these too)
# ---------------------------------------------------------------------------

def latest_checkpoint(model_dir: str) -> str | None:
    """The newest checkpoint prefix in ``model_dir`` (e.g. ``.../ckpt-20000``), or None.

    Reads the ``checkpoint`` state file TensorFlow keeps beside the checkpoints, through the
    storage layer, so it works for local paths and gs:// without importing TensorFlow.
    """
    path = tensorbundle.state_file_checkpoint(model_dir)
    return path if path and storage.exists(path + ".index") else None


def checkpoint_step(checkpoint: str | None) -> int:
    """The step number in a ``ckpt-N`` prefix (0 when there is none)."""
    match = re.search(r"ckpt-(\d+)$", checkpoint or "")
    return int(match.group(1)) if match else 0


def _resolve_init_checkpoint(init_checkpoint: str) -> str:
    """A model dir or a checkpoint prefix -> a checkpoint prefix; anything else is bad input."""
    if storage.exists(init_checkpoint + ".index"):
        return init_checkpoint
    found = latest_checkpoint(init_checkpoint)
    if not found:
        raise BadInput(f"--init-checkpoint {init_checkpoint}: no checkpoint there "
                       "(expected a model dir with a 'checkpoint' file, or a ckpt-N prefix)")
    return found


# ---------------------------------------------------------------------------
# Input checks (before TensorFlow builds anything)
# ---------------------------------------------------------------------------

def data_files(data: str) -> list[str]:
    """The files of a comma-separated list of globs/URIs (what Model Garden's input_path takes)."""
    parts = [p.strip() for p in str(data).split(",") if p.strip()]
    if not parts:
        raise BadInput("--data: empty")
    found: list[str] = []
    for part in parts:
        matched = storage.glob(part)
        if not matched:
            raise BadInput(f"--data {part}: matches no file")
        found += [f for f in matched if f not in found]
    return found


def _tokenizer_facts(tokenizer_dir: str) -> tuple[int, dict]:
    """(vocab size, tokenizer description for bertja_model.json) from a tokenizer directory."""
    info_uri = storage.join(tokenizer_dir, tokenizer_files.BERTJA_TOKENIZER_FILE)
    if storage.exists(info_uri):
        info = tokenizer_files.read_tokenizer_info(tokenizer_dir)
        if info["type"] not in tokenizer_files.SUBWORD_TYPES:  # SentencePiece, bytes: a tokenizer.json
            return int(info["vocab_size"]), {
                "tokenizer_class": "PreTrainedTokenizerFast", "type": info["type"],
                "word_splitter": info["word_splitter"], "do_lower_case": info["do_lower_case"],
                "mecab_dic": info["mecab_dic"], "tokenizer_dir": tokenizer_dir,
            }
    for name in (tokenizer_files.VOCAB_FILE, tokenizer_files.TOKENIZER_CONFIG_FILE):
        uri = storage.join(tokenizer_dir, name)
        if not storage.exists(uri):
            raise BadInput(f"--tokenizer-dir {tokenizer_dir}: no {name} ({uri} does not exist)")
    tok = tokenizer_files.load_vocab(tokenizer_dir)
    return len(tok), {
        "tokenizer_class": "BertJapaneseTokenizer",
        "word_tokenizer_type": tok.word_tokenizer_type,
        "subword_tokenizer_type": tok.subword_tokenizer_type,
        "do_lower_case": tok.do_lower_case,
        "mecab_dic": tok.mecab_dic,
        "tokenizer_dir": tokenizer_dir,
    }


def _first_example(uri: str) -> dict[str, list]:
    """The first ``tf.train.Example`` of a TFRecord file (GZIP or not); reads only that far."""
    examples = tfrecord.iter_examples(uri)
    try:
        example = next(examples, None)
    finally:
        examples.close()
    if example is None:
        raise BadInput(f"{uri}: holds no TFRecord (empty)")
    return example


def check_data(uri: str, *, seq_length: int, max_predictions_per_seq: int, vocab_size: int,
               next_sentence_prediction: bool = True) -> dict:
    """Checks the first example of ``uri`` against the stage; returns its feature lengths.

    Mismatched lengths would otherwise surface as an opaque parse error deep inside tf.data.
    MLM-only data (no ``next_sentence_labels``) trains only with ``next_sentence_prediction=False``;
    NSP data may train MLM only (the labels are not read).
    """
    feature = _first_example(uri)
    missing = [n for n in (*_SEQ_FEATURES, *_PRED_FEATURES) if n not in feature]
    if missing:
        hint = " (v1 feature names? the data must use Model Garden v2 names)" if "input_ids" in feature else ""
        raise BadInput(f"{uri}: first example lacks feature(s) {', '.join(missing)}{hint}")
    if next_sentence_prediction and "next_sentence_labels" not in feature:
        raise BadInput(f"{uri}: MLM-only data (no next_sentence_labels) but the model trains next sentence "
                       "prediction: train it with next_sentence_prediction=False (--no-next-sentence-prediction)")

    lengths = {name: len(feature[name]) for name in (*_SEQ_FEATURES, *_PRED_FEATURES)}
    for names, want, what in ((_SEQ_FEATURES, seq_length, "seq_length"),
                              (_PRED_FEATURES, max_predictions_per_seq, "max_predictions_per_seq")):
        for name in names:
            if lengths[name] != want:
                raise BadInput(f"{uri}: {name} has length {lengths[name]} but this stage's {what} is {want} "
                               "(data made for the other stage?)")
    top = max(list(feature["input_word_ids"]) + list(feature["masked_lm_ids"]))
    if top >= vocab_size:
        raise BadInput(f"{uri}: token id {top} is outside the tokenizer's vocabulary of {vocab_size} "
                       "(data made with another tokenizer?)")
    return lengths


def _parse_overrides(overrides) -> list[tuple[str, dict]]:
    """``key.path=value`` strings -> (text, nested dict); values are YAML scalars/lists."""
    out = []
    for item in overrides:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip() or not re.fullmatch(r"[A-Za-z_][\w.]*", key.strip()):
            raise BadInput(f"--override {item!r}: expected key.path=value")
        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as e:
            raise BadInput(f"--override {item!r}: value is not valid YAML ({e})") from e
        nested: object = parsed
        for part in reversed(key.strip().split(".")):
            nested = {part: nested}
        out.append((str(item), nested))
    return out


def _check_same_architecture(description: dict, other_uri: str, what: str) -> None:
    if not storage.exists(other_uri):
        return
    other = storage.read_json_object(other_uri)
    diff = {k: (other.get(k), description[k]) for k in configs.ARCHITECTURE_KEYS if other.get(k) != description[k]}
    if diff:
        shown = ", ".join(f"{k} {a} there vs {b} here" for k, (a, b) in diff.items())
        raise BadInput(f"{what}: {other_uri} describes a different model ({shown})")


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------

class _LogTail(logging.Handler):
    """Keeps the last log lines for failed.json."""

    def __init__(self, lines: int = LOG_TAIL_LINES):
        super().__init__(logging.INFO)
        self.lines: collections.deque[str] = collections.deque(maxlen=lines)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record):
        self.lines.append(self.format(record))

    def text(self) -> str:
        return "\n".join(self.lines)


class _Monitor:
    """Orbit train action: after every loop, prints progress and writes the heartbeat."""

    def __init__(self, trainer, *, model_dir: str, stage: int, train_steps: int, batch_size: int,
                 log: logging.Logger):
        self.trainer, self.model_dir, self.stage = trainer, model_dir, stage
        self.train_steps, self.batch_size, self.log = train_steps, batch_size, log
        self.start_step = self.last_step = int(trainer.global_step.numpy())
        self.start_time = self.last_time = time.monotonic()
        self.first_loop_end: tuple[int, float] | None = None  # steady-state rates start here
        self.metrics: dict[str, float] = {}
        self.history: list[list[float]] = []  # [step, loss] per loop: the loss curve

    def started(self) -> None:
        """The first heartbeat: the trainer is up (checkpoint restored, about to trace the first loop)."""
        status.write_heartbeat(self.model_dir, stage=self.stage, step=self.start_step, train_steps=self.train_steps,
                               loss=None, steps_per_sec=None, examples_per_sec=None)
        self.start_time = self.last_time = time.monotonic()

    def __call__(self, output) -> None:
        now, step = time.monotonic(), int(self.trainer.global_step.numpy())
        steps_per_sec = (step - self.last_step) / max(now - self.last_time, 1e-9)
        if self.first_loop_end is None:
            self.first_loop_end = (step, now)
        self.last_step, self.last_time = step, now
        self.metrics = {k: float(v) for k, v in (output or {}).items() if _is_scalar(v)}
        loss = self.metrics.get("training_loss")
        self.history.append([step, loss])
        examples_per_sec = steps_per_sec * self.batch_size
        acc = self.metrics.get("masked_lm_accuracy")
        self.log.info("stage %d: step %d/%d loss %s mlm_acc %s %.2f steps/s %.1f examples/s", self.stage, step,
                      self.train_steps, _fmt(loss), _fmt(acc), steps_per_sec, examples_per_sec)
        status.write_heartbeat(self.model_dir, stage=self.stage, step=step, train_steps=self.train_steps,
                               loss=loss, steps_per_sec=steps_per_sec, examples_per_sec=examples_per_sec)

    def steady_steps_per_sec(self) -> float | None:
        """Steps/s after the first loop (which pays for tracing/compiling), or over all if only one."""
        if self.first_loop_end is None:
            return None
        step0, t0 = self.first_loop_end
        if self.last_step > step0:
            return (self.last_step - step0) / max(self.last_time - t0, 1e-9)
        return (self.last_step - self.start_step) / max(self.last_time - self.start_time, 1e-9)


def _is_scalar(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _tf_path(uri: str) -> str:
    """What TensorFlow's file APIs take: gs:// as is, file:// as a plain path."""
    return uri if storage.is_gcs(uri) else storage.local_path(uri)


def _logger() -> logging.Logger:
    log = logging.getLogger("bertja.train")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = True
    return log


def train(*, config: str, stage: int, data: str, model_dir: str, tokenizer_dir: str,
          init_checkpoint: str | None = None, strategy: str = "one_device", tpu: str = "local",
          train_steps: int | None = None, overrides=(), next_sentence_prediction: bool = True) -> dict:
    """Trains (or resumes) one pretraining stage; returns the final metrics.

    ``data`` is a glob of GZIP TFRecords, or comma-separated globs/URIs (local, file:// or gs://); ``model_dir`` receives the
    checkpoints, ``params.yaml``, ``bertja_model.json``, TensorBoard summaries and ``status/``.
    Returned keys: config, stage, step, train_steps, loss, masked_lm_accuracy, lm_example_loss,
    next_sentence_accuracy, learning_rate, steps_per_sec, examples_per_sec, seconds, checkpoint,
    resumed_from, init_checkpoint, model_dir, history ([step, loss] after every loop of this run).
    """
    started = time.monotonic()
    log = _logger()
    tail = _LogTail()
    root = logging.getLogger()
    root.addHandler(tail)
    absl_logger = logging.getLogger("absl")
    absl_level = absl_logger.level
    absl_logger.setLevel(logging.INFO)
    try:
        status.clear(model_dir)
        prof, st = configs.profile(config), configs.stage(stage)
        if strategy not in STRATEGIES:
            raise BadInput(f"--strategy {strategy!r}: choose from {', '.join(STRATEGIES)}")
        files = data_files(data)
        vocab_size, tokenizer = _tokenizer_facts(tokenizer_dir)
        return _train(prof=prof, st=st, files=files, model_dir=model_dir, vocab_size=vocab_size,
                      tokenizer=tokenizer, init_checkpoint=init_checkpoint, strategy=strategy, tpu=tpu,
                      train_steps=train_steps, overrides=overrides, log=log,
                      started=started, next_sentence_prediction=bool(next_sentence_prediction))
    except BaseException as e:
        # The controller of a TPU VM sees the trainer only through storage: every failure,
        # bad input included, must leave failed.json behind.
        error = f"{type(e).__name__}: {e}"
        try:
            status.write_failed(model_dir, error, tail.text() + "\n" + traceback.format_exc())
        except Exception as write_error:  # the original error matters more
            log.error("could not write failed.json: %s", write_error)
        raise
    finally:
        root.removeHandler(tail)
        absl_logger.setLevel(absl_level)


def experiment_params(*, config: str, stage: int, vocab_size: int, files: list[str],
                      init_checkpoint: str | None = None, strategy: str = "one_device", tpu: str = "local",
                      train_steps: int | None = None, overrides=(), next_sentence_prediction: bool = True):
    """Model Garden's experiment config for one run (locked): the profile's settings, then the run's
    data, init checkpoint and strategy, then the user's ``key=value`` overrides."""
    from official.common import registry_imports  # noqa: F401  (registers bert/pretraining)
    from official.core import exp_factory

    params = exp_factory.get_exp_config(configs.EXPERIMENT)
    params.override(configs.experiment_overrides(config, stage, vocab_size=vocab_size, train_steps=train_steps,
                                                 next_sentence_prediction=next_sentence_prediction),
                    is_strict=True)
    params.override({
        "task": {"train_data": {"input_path": ",".join(_tf_path(f) for f in files)},
                 "init_checkpoint": _tf_path(init_checkpoint) if init_checkpoint else ""},
        "runtime": {"distribution_strategy": strategy, "tpu": tpu if strategy == "tpu" else None, "num_gpus": 0},
    }, is_strict=True)
    for text, nested in _parse_overrides(overrides):
        try:
            params.override(nested, is_strict=True)
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            raise BadInput(f"--override {text!r}: {e}") from e
    params.validate()
    params.lock()
    return params


def _train(*, prof, st, files, model_dir, vocab_size, tokenizer, init_checkpoint, strategy, tpu,
           train_steps, overrides, log, started, next_sentence_prediction=True) -> dict:
    resumed_from = latest_checkpoint(model_dir)
    init = _resolve_init_checkpoint(init_checkpoint) if init_checkpoint and not resumed_from else None
    params = experiment_params(config=prof.name, stage=st.number, vocab_size=vocab_size, files=files,
                               init_checkpoint=init, strategy=strategy, tpu=tpu, train_steps=train_steps,
                               overrides=overrides, next_sentence_prediction=next_sentence_prediction)
    data_cfg = params.task.train_data
    description = configs.model_description(prof.name, vocab_size=vocab_size, tokenizer=tokenizer,
                                            stage_number=st.number, encoder=params.task.model.encoder.bert.as_dict(),
                                            train_data=data_cfg.as_dict(),
                                            next_sentence_prediction=next_sentence_prediction)
    description_uri = storage.join(model_dir, configs.MODEL_DESCRIPTION)
    if resumed_from:
        _check_same_architecture(description, description_uri, f"--model-dir {model_dir}")
    if init:
        init_dir = init.rsplit("/", 1)[0] if "/" in init else "."
        _check_same_architecture(description, storage.join(init_dir, configs.MODEL_DESCRIPTION),
                                 f"--init-checkpoint {init_checkpoint}")
    check_data(files[0], seq_length=data_cfg.seq_length, max_predictions_per_seq=data_cfg.max_predictions_per_seq,
               vocab_size=description["vocab_size"], next_sentence_prediction=next_sentence_prediction)

    from official.common import distribute_utils
    from official.core import task_factory, train_lib, train_utils

    tf_model_dir = _tf_path(model_dir)
    if not storage.is_gcs(model_dir):
        os.makedirs(tf_model_dir, exist_ok=True)
    storage.write_text(description_uri, json.dumps(description, indent=2, sort_keys=True) + "\n")
    train_utils.serialize_config(params, tf_model_dir)

    total = params.trainer.train_steps
    if resumed_from:
        log.info("stage %d: resuming from %s (step %d of %d)", st.number, resumed_from,
                 checkpoint_step(resumed_from), total)
    elif init:
        log.info("stage %d: fresh start from the weights of %s", st.number, init)
    log.info("stage %d: %s model, %d data file(s), batch %d, seq %d, %d steps -> %s", st.number, prof.name,
             len(files), data_cfg.global_batch_size, data_cfg.seq_length, total, model_dir)

    distribution = distribute_utils.get_distribution_strategy(
        distribution_strategy=params.runtime.distribution_strategy, num_gpus=params.runtime.num_gpus,
        tpu_address=params.runtime.tpu)
    with distribution.scope():
        task = task_factory.get_task(params.task, logging_dir=tf_model_dir)
    runner = train_lib.OrbitExperimentRunner(distribution_strategy=distribution, task=task, mode="train",
                                             params=params, model_dir=tf_model_dir)
    monitor = _Monitor(runner.trainer, model_dir=model_dir, stage=st.number, train_steps=total,
                       batch_size=data_cfg.global_batch_size, log=log)
    runner.controller.train_actions = (*runner.controller.train_actions, monitor)
    monitor.started()
    # What runner.run() does in "train" mode, without its FLOPs profiling pass afterwards.
    with distribution.scope():
        runner.controller.train(steps=total)

    checkpoint = latest_checkpoint(model_dir)
    steps_per_sec = monitor.steady_steps_per_sec()
    m = monitor.metrics
    result = {
        "config": prof.name,
        "stage": st.number,
        "step": int(runner.trainer.global_step.numpy()),
        "train_steps": total,
        "loss": m.get("training_loss"),
        "masked_lm_accuracy": m.get("masked_lm_accuracy"),
        "lm_example_loss": m.get("lm_example_loss"),
        "next_sentence_accuracy": m.get("next_sentence_accuracy"),
        "learning_rate": m.get("learning_rate"),
        "steps_per_sec": steps_per_sec,
        "examples_per_sec": steps_per_sec * data_cfg.global_batch_size if steps_per_sec else None,
        "seconds": time.monotonic() - started,
        "checkpoint": checkpoint,
        "resumed_from": resumed_from,
        "init_checkpoint": init,
        "model_dir": model_dir,
        "history": monitor.history,
    }
    status.write_complete(model_dir, result)
    log.info("stage %d: done at step %d, loss %s -> %s", st.number, result["step"], _fmt(result["loss"]),
             checkpoint)
    return result
