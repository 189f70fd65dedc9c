"""The recipe's two training stages (CC-100, then Wikipedia from stage 1's weights),
on this machine's CPU or on a Cloud TPU VM. The pipeline's train step calls this.
"""

from __future__ import annotations

from components import storage
from components.errors import BadInput


def stage_plan(*, config: str, stage1_data: list[str], stage2_data: list[str], model_root: str,
               train_steps: tuple[int, int] = (0, 0),
               shapes: tuple[tuple[int, int], tuple[int, int]] | None = None) -> list[dict]:
    """The two stages as data: what each trains on, where, and from what.

    ``shapes`` gives each stage's (max_seq_length, max_predictions) when the data
    was made with other values than the recipe's stage defaults (the small profiles).
    """
    if not stage1_data or not stage2_data:
        raise BadInput("training needs pretraining data for both stages (stage 1 CC-100, stage 2 Wikipedia)")
    stage1_dir = storage.join(model_root, "stage1_cc100")
    stage2_dir = storage.join(model_root, "stage2_wikipedia")
    plan = [
        {"stage": 1, "config": config, "data": ",".join(stage1_data), "model_dir": stage1_dir,
         "init_checkpoint": None, "train_steps": int(train_steps[0]) or None},
        {"stage": 2, "config": config, "data": ",".join(stage2_data), "model_dir": stage2_dir,
         "init_checkpoint": stage1_dir, "train_steps": int(train_steps[1]) or None},
    ]
    for entry, shape in zip(plan, shapes or ()):
        overrides = shape_overrides(entry["stage"], *shape)
        if overrides:
            entry["overrides"] = overrides
    return plan


def shape_overrides(stage: int, max_seq_length: int, max_predictions: int) -> list[str]:
    """Model Garden overrides for data whose shape differs from the stage's recipe values."""
    from components.train import configs

    st = configs.stage(stage)
    out = []
    if int(max_seq_length) != st.seq_length:
        out += [f"task.train_data.seq_length={int(max_seq_length)}",
                f"task.validation_data.seq_length={int(max_seq_length)}"]
    if int(max_predictions) != st.max_predictions_per_seq:
        out += [f"task.train_data.max_predictions_per_seq={int(max_predictions)}",
                f"task.validation_data.max_predictions_per_seq={int(max_predictions)}"]
    return out


def train_stages(plan: list[dict], *, tokenizer_dir: str, backend: str = "cpu", tpu: dict | None = None) -> dict:
    """Runs the plan; returns ``{"stages": [metrics...], "model_dir": final dir, ...}``."""
    if backend == "cpu":
        from components.train.trainer import train

        results = []
        for s in plan:
            results.append(train(config=s["config"], stage=s["stage"], data=s["data"], model_dir=s["model_dir"],
                                 tokenizer_dir=tokenizer_dir, init_checkpoint=s["init_checkpoint"],
                                 strategy="one_device", train_steps=s["train_steps"],
                                 overrides=s.get("overrides", ())))
        return {"backend": "cpu", "stages": results, "model_dir": plan[-1]["model_dir"]}
    if backend == "tpu":
        from components.tpu.orchestrate import train_on_tpu

        if not tpu:
            raise BadInput("training_backend='tpu' needs the TPU settings (gcp_project, gcp_zone, ...)")
        result = train_on_tpu(stages=plan, tokenizer_dir=tokenizer_dir, **tpu)
        return {"backend": "tpu", **result, "model_dir": plan[-1]["model_dir"]}
    raise BadInput(f"training_backend={backend!r}: expected 'cpu' or 'tpu'")
