"""What ``bertja run --local`` shows: one line per task, the executor logs in a file.

kfp.local prints everything to ``sys.stdout`` (its own ``logging`` lines through a
``StreamHandler(sys.stdout)`` it makes per task, each executor's output through ``print``)
and RuntimeWarnings to ``sys.stderr``; a newcomer got ~2,600 lines. ``capture`` points both
streams at the log file for the run and hooks two module attributes kfp.local calls through
(in memory, never on disk), which ``tests/test_pipeline_local.py`` pins:

- ``kfp.local.orchestrator.task_executor.execute_single_task``: one call per task of the DAG
  (cache hit or not; the dag orchestrators call it as a module attribute): name, seconds, outputs.
- ``kfp.local.task_dispatcher.run_single_task_implementation``: called only when the task
  really runs (a cache hit returns before it): ran or cached.

Tasks of a ParallelFor run in threads, so the task a log line belongs to is thread-local.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import re
import sys
import threading
import time

TAIL_LINES = 40


@dataclasses.dataclass
class TaskRecord:
    """One executed task: what the summary line says, and the tail of its log for a failure."""
    name: str
    component: str
    ran: bool = False
    seconds: float = 0.0
    ok: bool = False
    outputs: dict = dataclasses.field(default_factory=dict)
    _chunks: collections.deque = dataclasses.field(default_factory=lambda: collections.deque(maxlen=20 * TAIL_LINES))

    def tail(self, lines: int = TAIL_LINES) -> list[str]:
        return "".join(self._chunks).rstrip("\n").splitlines()[-lines:]


class _LogStream:
    """``sys.stdout``/``sys.stderr`` during the run: everything to the log file, and the part
    written by a task's thread to that task's tail."""

    encoding = "utf-8"

    def __init__(self, file, local: threading.local):
        self._file = file
        self._local = local
        self._lock = threading.Lock()

    def write(self, s: str) -> int:
        with self._lock:
            self._file.write(s)
        record = getattr(self._local, "record", None)
        if record is not None:
            record._chunks.append(s)
        return len(s)

    def flush(self) -> None:
        with self._lock:
            self._file.flush()

    def isatty(self) -> bool:
        return False


def display_name(task_name: str, pipeline_resource_name: str) -> str:
    """``pretraining-data`` inside ``.../for-loop-1-iteration-0`` -> ``pretraining-data[for-loop-1#0]``."""
    m = re.search(r"(for-loop-\d+)-iteration-(\d+)$", pipeline_resource_name)
    return f"{task_name}[{m.group(1)}#{m.group(2)}]" if m else task_name


@contextlib.contextmanager
def capture(log_path: str, records: list, on_task=None):
    """Runs the body with kfp.local's output in ``log_path``, appending a TaskRecord to
    ``records`` as each task finishes and calling ``on_task(record)`` then."""
    from kfp.local import task_dispatcher
    from kfp.local.orchestrator import task_executor

    local = threading.local()
    lock = threading.Lock()
    real_execute = task_executor.execute_single_task
    real_dispatch = task_dispatcher.run_single_task_implementation

    def execute_single_task(*args, **kwargs):
        call = _bind(real_execute, args, kwargs)
        record = TaskRecord(name=display_name(call["task_name"], call["pipeline_resource_name"]),
                            component=call["task_spec"].component_ref.name.removeprefix("comp-"))
        local.record = record
        start = time.monotonic()
        try:
            outputs, status = real_execute(*args, **kwargs)
        finally:
            record.seconds = time.monotonic() - start
            local.record = None
            with lock:
                records.append(record)
        record.outputs, record.ok = dict(outputs or {}), status.name == "SUCCESS"
        if on_task is not None:
            with lock:  # ParallelFor tasks end in threads: one whole line at a time
                on_task(record)
        return outputs, status

    def run_single_task_implementation(*args, **kwargs):
        record = getattr(local, "record", None)
        if record is not None:
            record.ran = True
        return real_dispatch(*args, **kwargs)

    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "w", encoding="utf-8", buffering=1) as f:
        stream = _LogStream(f, local)
        saved = sys.stdout, sys.stderr
        task_executor.execute_single_task = execute_single_task
        task_dispatcher.run_single_task_implementation = run_single_task_implementation
        sys.stdout = sys.stderr = stream
        try:
            yield
        finally:
            sys.stdout, sys.stderr = saved
            task_executor.execute_single_task = real_execute
            task_dispatcher.run_single_task_implementation = real_dispatch
            _drop_handlers_on(stream)


def _drop_handlers_on(stream) -> None:
    """Logging handlers made during the run on the captured stdout (a step's ``basicConfig`` in this
    process) would write to the closed log file afterwards ('--- Logging error ---'): they go."""
    import logging

    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    for logger in loggers:
        for handler in list(logger.handlers):
            if getattr(handler, "stream", None) is stream:
                logger.removeHandler(handler)


def _bind(func, args, kwargs) -> dict:
    import inspect

    return inspect.signature(func).bind(*args, **kwargs).arguments


# ---------------------------------------------------------------------------
# Key figures, read from the task's outputs (artifact metadata, an artifact's manifest.json stats)
# ---------------------------------------------------------------------------

def _stats(artifact) -> dict:
    """An artifact's metadata with its ``manifest.json`` stats (where a step writes its counts)."""
    found = dict(artifact.metadata or {})
    path = os.path.join(artifact.path, "manifest.json") if isinstance(artifact.path, str) else ""
    if path and os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                manifest = json.load(f)
        except (OSError, ValueError):
            return found
        found.update({k: v for k, v in manifest.items() if k != "stats"})
        found.update(manifest.get("stats") or {})
    return found


def _n(x) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:.4g}"


def _tokenizer(out):
    s = _stats(out["tokenizer"])
    return f"vocab {_n(s['vocab_size'])}" if "vocab_size" in s else None


def _train(out):
    m = _stats(out["metrics"])
    stages = sorted(int(k.split("_")[0][5:]) for k in m if re.fullmatch(r"stage\d+_loss", k))
    return f"stage {stages[-1]} loss {m[f'stage{stages[-1]}_loss']:.3f}" if stages else None


FIGURES = {
    "resolve-sources": lambda o: f"dump {o['wikipedia_dump_date']}",
    "download-source": lambda o: (lambda s: f"{', '.join(s['files'])} ({_n(s['size'])} bytes)")(_stats(o["data"])),
    "wiki-corpus": lambda o: (lambda s: f"{_n(s['sentences'])} sentences from {_n(s['pages_kept'])} pages")(
        _stats(o["stats"])),
    "split-corpus": lambda o: (lambda s: f"{len(o['names'])} shards + {len(o['heldout_names'])} held out, "
                                         f"{_n(s['lines'])} lines")(_stats(o["shards"])),
    "sample-corpus": lambda o: f"{_n(_stats(o['sample'])['lines'])} lines",
    "alphabet": lambda o: f"{_n(_stats(o['characters'])['characters'])} characters",
    "wordpiece-tokenizer": _tokenizer,
    "variant-tokenizer": _tokenizer,
    "pretraining-data": lambda o: (lambda s: f"{s['shard']}: {_n(s['instances'])} instances")(_stats(o["examples"])),
    "train-model": _train,
    "convert-model": lambda o: f"{_n(_stats(o['hf_model'])['num_parameters'])} parameters",
    "evaluate-model": lambda o: f"masked-LM accuracy {_stats(o['metrics'])['masked_lm_accuracy']:.3f}",
    "publish-model": lambda o: os.path.basename(_stats(o["release"])["release_uri"]),
}


def key_figure(record: TaskRecord) -> str:
    """The one figure worth a glance: a known step's own, else its first output parameter."""
    base = re.sub(r"-\d+$", "", record.component)
    figure = FIGURES.get(base)
    if figure is not None:
        try:
            found = figure(record.outputs)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            found = None
        if found:
            return found
    for key, value in record.outputs.items():
        if hasattr(value, "metadata"):
            numbers = {k: v for k, v in _stats(value).items() if isinstance(v, (int, float))}
            if numbers:
                k, v = next(iter(numbers.items()))
                return f"{k} {_n(v)}"
        elif isinstance(value, (str, int, float, bool)) and value != "":
            return f"{key}={value}" if key != "Output" else str(value)
    return ""


def task_line(record: TaskRecord, width: int = 34) -> str:
    state = ("ran" if record.ran else "cached") if record.ok else "FAILED"
    figure = key_figure(record) if record.ok else ""
    return f"{record.name:<{width}} {state:<6} {record.seconds:6.1f}s  {figure}".rstrip()


# ---------------------------------------------------------------------------
# The run's metrics table
# ---------------------------------------------------------------------------

METRICS_OF = ("train-model", "evaluate-model", "finetune-jglue", "jglue-report")
SKIP_METRIC = re.compile(r"(_stage|_learning_rate|_train_steps|_step)$")


def metrics_rows(records: list[TaskRecord]) -> list[tuple[str, str, str]]:
    """(task, metric, value) for the Metrics outputs of training and evaluation."""
    rows = []
    for record in records:
        if re.sub(r"-\d+$", "", record.component) not in METRICS_OF or not record.ok:
            continue
        for value in record.outputs.values():
            if type(value).__name__ != "Metrics":
                continue
            for k, v in sorted((value.metadata or {}).items()):
                if isinstance(v, (int, float)) and not SKIP_METRIC.search(k):
                    rows.append((record.name, k, _n(v)))
    return rows


def metrics_table(records: list[TaskRecord]) -> str:
    rows = metrics_rows(records)
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in rows + [("task", "metric", "value")]) for i in range(3)]
    lines = [f"{'task':<{widths[0]}}  {'metric':<{widths[1]}}  {'value':>{widths[2]}}"]
    lines += [f"{t:<{widths[0]}}  {m:<{widths[1]}}  {v:>{widths[2]}}" for t, m, v in rows]
    return "\n".join(lines)
