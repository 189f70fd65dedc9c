"""The recipe's JGLUE table (and livedoor news) for one converted model.

For each task: every point of the grid (learning rate x epochs; JGLUE's own: {5e-5, 3e-5, 2e-5} x
{3, 4}, warm-up 0.1, the task's max length and batch size) is fine-tuned on train with each seed
and scored on dev; the point with the best mean dev score (the mean of the task's metrics, e.g.
Pearson and Spearman for JSTS) is the task's result, as the recipe selected on dev. With several
seeds the result is their mean, and their sample standard deviation is the spread.

Writes ``jglue.json`` (task -> metric -> value: the selected point's mean), ``jglue_details.json``
(spread, selected hyper-parameters, every grid point, data files, cost) and ``jglue.md`` (the
recipe's table with Tohoku's published numbers for the same size and tokenizer beside ours, and
the fine-tuning cost).
"""

from __future__ import annotations

import json
import statistics
import time

from components import storage
from components.errors import BadInput
from components.evaluate import finetune, tasks
from components.evaluate.core import _local_model_dir

RESULTS_FILE = "jglue.json"
DETAILS_FILE = "jglue_details.json"
TABLE_FILE = "jglue.md"

# quick: one point, at most 128 tokens: a smoke run on CPU, not a result to compare.
GRIDS = {
    "jglue": {"learning_rates": (5e-5, 3e-5, 2e-5), "epochs": (3, 4), "max_length": None},
    "quick": {"learning_rates": (5e-5,), "epochs": (1,), "max_length": 128},
}
WARMUP_RATIO = 0.1

# Tohoku's published dev scores (cl-tohoku/bert-japanese README, one seed each) for the models our
# variants reproduce: the v3 generation (base v3; large v2 was trained alongside it, same recipe).
PUBLISHED = {
    ("base", "wordpiece"): ("bert-base-japanese-v3", {
        "marc_ja": {"accuracy": 0.962}, "jsts": {"pearson": 0.919, "spearman": 0.881},
        "jnli": {"accuracy": 0.907}, "jsquad": {"exact_match": 0.880, "f1": 0.946},
        "jcommonsenseqa": {"accuracy": 0.848}}),
    ("base", "character"): ("bert-base-japanese-char-v3", {
        "marc_ja": {"accuracy": 0.959}, "jsts": {"pearson": 0.914, "spearman": 0.875},
        "jnli": {"accuracy": 0.903}, "jsquad": {"exact_match": 0.871, "f1": 0.939},
        "jcommonsenseqa": {"accuracy": 0.786}}),
    ("large", "wordpiece"): ("bert-large-japanese-v2", {
        "marc_ja": {"accuracy": 0.960}, "jsts": {"pearson": 0.926, "spearman": 0.893},
        "jnli": {"accuracy": 0.929}, "jsquad": {"exact_match": 0.893, "f1": 0.956},
        "jcommonsenseqa": {"accuracy": 0.893}}),
    ("large", "character"): ("bert-large-japanese-char-v2", {
        "marc_ja": {"accuracy": 0.961}, "jsts": {"pearson": 0.921, "spearman": 0.884},
        "jnli": {"accuracy": 0.910}, "jsquad": {"exact_match": 0.892, "f1": 0.952},
        "jcommonsenseqa": {"accuracy": 0.859}}),
}
COLUMNS = {"marc_ja": "MARC-ja", "jsts": "JSTS", "jnli": "JNLI", "jsquad": "JSQuAD",
           "jcommonsenseqa": "JCommonsenseQA", "livedoor": "livedoor"}


def run_task(model_dir: str, tokenizer, task: tasks.Task, train: list, dev: list, *, grid: str = "jglue",
             seeds: int = 1, seed: int = 0) -> dict:
    """Grid x seeds for one task; the best point on dev (see the module doc)."""
    if grid not in GRIDS:
        raise BadInput(f"grid={grid!r}: choose from {', '.join(GRIDS)}")
    if seeds < 1:
        raise BadInput(f"seeds={seeds}: must be at least 1")
    spec = GRIDS[grid]
    max_length = min(task.max_length, spec["max_length"] or task.max_length)
    started = time.perf_counter()
    points, train_seconds, trained = [], 0.0, 0
    for learning_rate in spec["learning_rates"]:
        for epochs in spec["epochs"]:
            runs = [finetune.fit(model_dir, tokenizer, task, train, dev, epochs=epochs, learning_rate=learning_rate,
                                 batch_size=task.batch_size, max_length=max_length, seed=seed + i,
                                 warmup_ratio=WARMUP_RATIO) for i in range(seeds)]
            train_seconds += sum(r["cost"]["train_seconds"] for r in runs)
            trained += sum(r["epochs"] * r["train_examples"] for r in runs)
            points.append({"learning_rate": learning_rate, "epochs": epochs,
                           "metrics": {m: statistics.fmean(r["metrics"][m] for r in runs) for m in task.metrics},
                           "std": ({m: statistics.stdev(r["metrics"][m] for r in runs) for m in task.metrics}
                                   if seeds > 1 else {}),
                           "runs": [{"seed": r["seed"], "metrics": r["metrics"], "cost": r["cost"]} for r in runs]})
    best = max(points, key=lambda p: statistics.fmean(p["metrics"].values()))
    wall = time.perf_counter() - started
    return {"task": task.name, "metrics": best["metrics"], "std": best["std"],
            "selected": {"learning_rate": best["learning_rate"], "epochs": best["epochs"],
                         "batch_size": task.batch_size, "max_length": max_length, "warmup_ratio": WARMUP_RATIO},
            "seeds": [seed + i for i in range(seeds)], "grid": grid, "train_examples": len(train),
            "dev_examples": len(dev), "points": points,
            "cost": {"wall_seconds": round(wall, 3), "fine_tunings": len(points) * seeds,
                     "train_seconds": round(train_seconds, 3),
                     "train_examples_per_second": round(trained / max(train_seconds, 1e-9), 2),
                     "max_rss_mib": max(r["cost"]["max_rss_mib"] for p in points for r in p["runs"])}}


def published_for(model_dir: str) -> tuple[str, dict] | None:
    """Tohoku's published (name, scores) for this model's size and tokenizer, if they published one."""
    from components.publish.core import describe_model

    try:
        info = describe_model(model_dir)
    except BadInput:
        return None
    return PUBLISHED.get((info["size"], info["subword_tokenizer_type"]))


def _cell(metrics: dict, std: dict, names: tuple[str, ...]) -> str:
    return " / ".join(f"{metrics[m]:.3f}" + (f" ± {std[m]:.3f}" if m in std else "") for m in names)


def render_table(results: dict, *, model_name: str, published: tuple[str, dict] | None = None) -> str:
    """The recipe's table (ours, then the published row when there is one) and the cost table.

    ``results`` is jglue_details.json's ``tasks``: task -> :func:`run_task`'s result.
    """
    names = [t for t in tasks.TASK_ORDER if t in results]
    metric_names = {t: tuple(results[t]["metrics"]) for t in names}
    header = ["Model"] + [f"{COLUMNS[t]} ({' / '.join(metric_names[t])})" for t in names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.append("| " + " | ".join([f"`{model_name}` (ours)"] + [
        _cell(results[t]["metrics"], results[t].get("std") or {}, metric_names[t]) for t in names]) + " |")
    if published:
        name, scores = published
        cells = [_cell(scores[t], {}, metric_names[t]) if t in scores else "–" for t in names]
        lines.append("| " + " | ".join([f"`{name}` (published)"] + cells) + " |")
    seeds = max(len(results[t]["seeds"]) for t in names)
    lines += ["", "Dev-set scores; each task's learning rate and epochs chosen on dev from the "
              f"`{results[names[0]]['grid']}` grid" + (f"; mean ± sample std over {seeds} seeds" if seeds > 1 else "")
              + (". Published: Tohoku's README, one seed." if published else "."), "",
              "| task | learning rate | epochs | max length | batch | train / dev examples | fine-tunings | "
              "wall time (s) | train examples/s |", "|---|---|---|---|---|---|---|---|---|"]
    for t in names:
        r, sel = results[t], results[t]["selected"]
        lines.append(f"| {COLUMNS[t]} | {sel['learning_rate']:g} | {sel['epochs']} | {sel['max_length']} | "
                     f"{sel['batch_size']} | {r['train_examples']} / {r['dev_examples']} | {r['cost']['fine_tunings']} | "
                     f"{r['cost']['wall_seconds']:.1f} | {r['cost']['train_examples_per_second']:.1f} |")
    return "\n".join(lines) + "\n"


def evaluate_jglue(model_dir: str, *, output_dir: str, jglue_dir: str | None = None, task_names=None,
                   livedoor_dir: str | None = None, grid: str = "jglue", seeds: int = 1, seed: int = 0,
                   max_examples: int | None = None, model_name: str | None = None) -> dict:
    """Reads and checks every asked-for task first, then fine-tunes task by task; writes the three
    files (module doc) to ``output_dir`` and returns :func:`write_results`'s dict.

    ``max_examples`` keeps the first N train and dev examples of each task (quick runs).
    """
    if not jglue_dir and not livedoor_dir:
        raise BadInput("give a JGLUE directory (--jglue) or a livedoor news directory (--livedoor)")
    _check_settings(grid, seeds, max_examples)
    loaded = []  # every file is read and checked before the first fine-tuning
    if jglue_dir:
        loaded += [tasks.read_jglue_task(jglue_dir, name) for name in tasks.parse_tasks(task_names)]
    if livedoor_dir:
        loaded.append(tasks.read_livedoor(livedoor_dir, seed=seed))
    local, tokenizer = _model(model_dir)
    results = {task.name: _run(local, tokenizer, task, train, dev, data, grid, seeds, seed, max_examples)
               for task, train, dev, data in loaded}
    return write_results(results, output_dir=output_dir, model_dir=model_dir, model_name=model_name)


def evaluate_task(model_dir: str, jglue_dir: str, name: str, *, grid: str = "jglue", seeds: int = 1,
                  seed: int = 0, max_examples: int | None = None) -> dict:
    """One JGLUE task (a pipeline task runs one each, in parallel): :func:`run_task`'s result."""
    _check_settings(grid, seeds, max_examples)
    task, train, dev, data = tasks.read_jglue_task(jglue_dir, tasks.parse_tasks(name)[0])
    local, tokenizer = _model(model_dir)
    return _run(local, tokenizer, task, train, dev, data, grid, seeds, seed, max_examples)


def _check_settings(grid: str, seeds: int, max_examples: int | None) -> None:
    if grid not in GRIDS or seeds < 1 or (max_examples is not None and max_examples < 1):
        raise BadInput(f"grid={grid!r}, seeds={seeds}, max_examples={max_examples}: grid one of "
                       f"{', '.join(GRIDS)}, seeds and max_examples at least 1")


def _model(model_dir: str):
    from transformers import AutoTokenizer

    local = _local_model_dir(model_dir)
    return local, AutoTokenizer.from_pretrained(local)


def _run(local, tokenizer, task, train, dev, data, grid, seeds, seed, max_examples) -> dict:
    if max_examples:
        train, dev = train[:max_examples], dev[:max_examples]
    return {**run_task(local, tokenizer, task, train, dev, grid=grid, seeds=seeds, seed=seed), "data": data}


def write_results(results: dict, *, output_dir: str, model_dir: str, model_name: str | None = None) -> dict:
    """Writes jglue.json, jglue_details.json and jglue.md for ``results`` (task -> :func:`run_task`'s
    result); returns ``{"results", "details", "markdown", "files"}``."""
    if not results:
        raise BadInput("no JGLUE or livedoor results to report")
    results = {t: results[t] for t in tasks.TASK_ORDER if t in results}
    published = published_for(_local_model_dir(model_dir))
    markdown = render_table(results, model_name=model_name or storage.basename(model_dir.rstrip("/")),
                            published=published)
    summary = {t: r["metrics"] for t, r in results.items()}
    details = {"model_dir": model_dir, "tasks": results,
               "published": {"model": published[0], "scores": published[1]} if published else None}
    storage.write_text(storage.join(output_dir, RESULTS_FILE), json.dumps(summary, indent=2) + "\n")
    storage.write_text(storage.join(output_dir, DETAILS_FILE), json.dumps(details, ensure_ascii=False, indent=2) + "\n")
    storage.write_text(storage.join(output_dir, TABLE_FILE), markdown)
    return {"results": summary, "details": details, "markdown": markdown,
            "files": [RESULTS_FILE, DETAILS_FILE, TABLE_FILE]}

