"""One training core for the PyTorch trainer: a plan's stages, each from the last stage's weights.

Per optimizer step: ``accumulation`` micro-batches per rank (global batch = micro x accumulation x
ranks). The loss of a step is the mean over every masked token of the global batch, whatever the
split: each micro-batch's mean loss is weighted by its share of the masked tokens (summed over
ranks), so accumulation and DDP change nothing but speed. AdamW (no decay on biases and norms),
warmup-stable-decay or linear schedule, gradient clipping at 1.0, bf16 autocast where the device
has it, SDPA attention with block-diagonal masks for packed sequences (``data.attention_masks``).
``torch.compile`` is off unless asked for: on CPU it needs a C++ compiler at run time, which the
images leave out, so asking for it without one is refused before the first step.

The core is the training loop (``Stage`` in, weights out): fine-tuning can share it later by
passing its own batches and loss; pretraining specifics (masking, packing) live in ``data``.

Resuming: ``{model_dir}/stage{N}/checkpoint.pt`` holds the model, optimizer, scheduler, step,
data position ``(epoch, micro-batch)``, torch RNG states and the losses so far, written
atomically every ``checkpoint_every`` steps and when stopped early; the same command resumes
to the same next batch and loss. A finished stage leaves a Hugging Face directory
(``stage{N}/hf``) the next stage starts from; the last one is copied to ``{model_dir}/hf`` with
the tokenizer: evaluate and publish take it as is. Status/heartbeat files as the Model Garden
trainer writes them (``components.train.status``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
import traceback

from components import storage
from components.errors import BadInput
from components.tokenizer import files as tokenizer_files
from components.torch_train import configs, data
from components.train import status

DESCRIPTION = "bertja_torch.json"
CHECKPOINT = "checkpoint.pt"
TOKENIZER_FILES = (tokenizer_files.FAST_TOKENIZER_FILE, tokenizer_files.TOKENIZER_CONFIG_FILE,
                   tokenizer_files.SPECIAL_TOKENS_MAP_FILE, tokenizer_files.BERTJA_TOKENIZER_FILE,
                   tokenizer_files.VOCAB_FILE)
PRECISIONS = ("auto", "fp32", "bf16")


def _logger() -> logging.Logger:
    """``bertja.train.torch``: under the Model Garden trainer's logger, so both print alike."""
    from components.train.trainer import _logger as train_logger

    return train_logger().getChild("torch")


# ---------------------------------------------------------------------------
# Devices, ranks, precision
# ---------------------------------------------------------------------------

class Ranks:
    """torchrun's environment (one process when absent); joins the process group on entry."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.joined = False

    def join(self, device) -> None:
        import torch.distributed as dist

        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            self.joined = True

    def leave(self) -> None:
        import torch.distributed as dist

        if self.joined and dist.is_initialized():
            dist.destroy_process_group()

    def sum(self, value: float, device) -> float:
        import torch
        import torch.distributed as dist

        if self.world == 1:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return float(t.item())

    def barrier(self) -> None:
        import torch.distributed as dist

        if self.world > 1:
            dist.barrier()


def pick_device(device: str, ranks: Ranks):
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise BadInput("--device cuda: no CUDA device here")
        torch.cuda.set_device(ranks.local_rank)
        return torch.device("cuda", ranks.local_rank)
    if device != "cpu":
        raise BadInput(f"--device {device!r}: choose auto, cpu or cuda")
    return torch.device("cpu")


def pick_dtype(precision: str, device):
    """bf16 autocast where the device has it (CUDA with bf16); fp32 otherwise unless asked."""
    import torch

    if precision not in PRECISIONS:
        raise BadInput(f"--precision {precision!r}: choose from {', '.join(PRECISIONS)}")
    if precision == "auto":
        has_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if has_bf16 else None
    return torch.bfloat16 if precision == "bf16" else None


def check_compile(compile: bool, device) -> None:
    """``torch.compile`` builds native code at run time: C++ kernels on CPU (a C++ compiler), and on
    GPUs Triton compiles its CUDA launcher with a C compiler. The images' final stages carry none, so
    --compile is refused before the first step rather than failing inside it."""
    if not compile:
        return
    if device.type == "cpu":
        found, need = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++"), "a C++ compiler (g++/c++, CXX)"
    else:
        found, need = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc") or shutil.which("clang"), \
            "a C compiler for Triton (gcc/cc/clang, CC)"
    if not found:
        raise BadInput(f"--compile on {device.type} needs {need} at run time and none was found; drop --compile "
                       "(the images have no compiler)")


# ---------------------------------------------------------------------------
# Schedules and optimizer
# ---------------------------------------------------------------------------

def lr_factor(step: int, st: configs.Stage) -> float:
    """The learning-rate multiplier after ``step`` optimizer steps (warmup from 1/warmup)."""
    total, warmup = st.train_steps, st.warmup_steps
    if warmup and step < warmup:
        return (step + 1) / warmup
    if st.schedule == "linear":
        return max(0.0, (total - step) / max(1, total - warmup))
    decay_start = total - int(round(st.decay_fraction * total))
    return 1.0 if step < decay_start else max(0.0, (total - step) / max(1, total - decay_start))


def make_optimizer(model, st: configs.Stage):
    import torch

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": st.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=st.learning_rate, betas=(0.9, 0.98), eps=1e-6)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, st))
    return optimizer, scheduler


# ---------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------

class BatchStream:
    """This rank's micro-batches of one stage, epoch after epoch, from a data position on.
    ``position`` is what the trainer has consumed: saved in checkpoints, it resumes exactly."""

    def __init__(self, documents: data.Documents, st: configs.Stage, *, stage: int, seed: int, micro_batch: int,
                 ranks: Ranks, workers: int, whole_word: bool, position=(0, 0)):
        self.documents, self.st, self.stage, self.seed = documents, st, stage, seed
        self.micro_batch, self.ranks, self.workers, self.whole_word = micro_batch, ranks, workers, whole_word
        self.epoch, self.index = position

    @property
    def position(self) -> tuple[int, int]:
        return self.epoch, self.index

    def __iter__(self):
        import torch
        from torch.utils.data import DataLoader

        while True:
            ds = data.PretrainingDataset(self.documents, seq_length=self.st.seq_length, packing=self.st.packing,
                                         mask_rate=self.st.mask_rate, whole_word=self.whole_word, seed=self.seed,
                                         stage=self.stage, epoch=self.epoch)
            batches = data.epoch_batches(len(ds), micro_batch=self.micro_batch, rank=self.ranks.rank,
                                         world=self.ranks.world, seed=self.seed, stage=self.stage, epoch=self.epoch)
            if not batches:
                raise BadInput(f"stage {self.stage}: {len(ds)} sequence(s) of {self.st.seq_length} tokens are fewer "
                               f"than one micro-batch of {self.micro_batch} per rank x {self.ranks.world} rank(s)")
            # Its own generator: a DataLoader draws a seed from the global RNG when iterated, which
            # would shift the dropout RNG of a resumed run (the loader's randomness is unused: items
            # are a function of their index).
            loader = DataLoader(ds, batch_sampler=batches[self.index:], num_workers=self.workers,
                                collate_fn=data.collate, generator=torch.Generator().manual_seed(0))
            for batch in loader:
                self.index += 1
                yield batch
            self.epoch, self.index = self.epoch + 1, 0


def model_inputs(batch: dict, arch: configs.Architecture, model_config, device) -> dict:
    """input ids, positions (0 per segment, plus the family's offset), block-diagonal masks, labels."""
    seg = batch["segment_ids"].to(device)
    full = data.attention_masks(seg)
    if arch.family == "modernbert":
        mask = {"full_attention": full,
                "sliding_attention": data.attention_masks(seg, sliding_window=model_config.sliding_window)}
    else:
        mask = full
    return {"input_ids": batch["input_ids"].to(device), "attention_mask": mask,
            "position_ids": batch["position_ids"].to(device) + configs.position_offset(arch),
            "labels": batch["labels"].to(device)}


# ---------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------

def _save_checkpoint(uri: str, *, model, optimizer, scheduler, step: int, position, history, tokens: int) -> None:
    import torch

    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "step": step, "position": list(position), "history": history, "tokens": tokens,
             "rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
    with storage.open_write(uri, compress=False) as f:
        torch.save(state, f)


def _load_checkpoint(uri: str) -> dict:
    import torch

    with storage.open_read(uri, decompress=False) as f:
        return torch.load(f, map_location="cpu", weights_only=False)


def _save_hf(model, target: str, tokenizer_dir: str | None = None) -> None:
    """A Hugging Face directory at ``target`` (local or gs://), with the tokenizer's files when given."""
    with tempfile.TemporaryDirectory(prefix="bertja-hf-") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer_dir:
            for name in TOKENIZER_FILES:
                src = storage.join(tokenizer_dir, name)
                if storage.exists(src):
                    storage.copy(src, os.path.join(tmp, name))
        storage.copy_tree(tmp, target)


@contextlib.contextmanager
def _local_dir(uri: str):
    if not storage.is_gcs(uri):
        yield storage.local_path(uri)
        return
    with tempfile.TemporaryDirectory(prefix="bertja-hf-") as tmp:
        storage.copy_tree(uri, tmp)
        yield tmp


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------

def train(*, plan: str, model_dir: str, tokenizer_dir: str, data_uris: list[str] | None = None,
          documents: data.Documents | None = None, architecture: str | None = None, seq_lengths=None,
          train_steps=None, global_batch_size=None, learning_rate=None, warmup_steps=None, micro_batch_size: int = 8,
          workers: int = 0, seed: int = 0, device: str = "auto", precision: str = "auto", compile: bool = False,
          log_every: int = 10, checkpoint_every: int = 100, stop_at: int | None = None) -> dict:
    """Trains (or resumes) every stage of ``plan``; returns the metrics per stage.

    Data: tokenized shards (``data_uris``) or, from Python, ``documents`` already in memory.
    ``stop_at``: stop after this many steps of the stage being trained, with a checkpoint (what a
    preempted run leaves; the same call without it resumes). Everything the run could refuse
    (plan, lengths, batch split, tokenizer, data, compiler) is checked before the first step.
    """
    log = _logger()
    ranks = Ranks()
    try:
        if ranks.rank == 0:
            status.clear(model_dir)
        result = _train(plan=plan, model_dir=model_dir, tokenizer_dir=tokenizer_dir, data_uris=data_uris,
                        documents=documents, architecture=architecture, seq_lengths=seq_lengths,
                        train_steps=train_steps, global_batch_size=global_batch_size, learning_rate=learning_rate,
                        warmup_steps=warmup_steps, micro_batch_size=micro_batch_size, workers=workers, seed=seed,
                        device=device, precision=precision, compile=compile, log_every=log_every,
                        checkpoint_every=checkpoint_every, stop_at=stop_at, ranks=ranks, log=log)
        return result
    except BaseException as e:
        if ranks.rank == 0:
            with contextlib.suppress(Exception):
                status.write_failed(model_dir, f"{type(e).__name__}: {e}", traceback.format_exc())
        raise
    finally:
        ranks.leave()


def _train(*, plan, model_dir, tokenizer_dir, data_uris, documents, architecture, seq_lengths, train_steps,
           global_batch_size, learning_rate, warmup_steps, micro_batch_size, workers, seed, device, precision,
           compile, log_every, checkpoint_every, stop_at, ranks, log) -> dict:
    stages = configs.plan_stages(plan, seq_lengths=seq_lengths, train_steps=train_steps,
                                 global_batch_size=global_batch_size, learning_rate=learning_rate,
                                 warmup_steps=warmup_steps)
    arch = configs.architecture(architecture or configs.plan(plan).architecture)
    for i, st in enumerate(stages, 1):
        configs.check_length(arch, st.seq_length, f"plan {plan} stage {i}")
        per_step = micro_batch_size * ranks.world
        if micro_batch_size < 1 or st.global_batch_size % per_step:
            raise BadInput(f"plan {plan} stage {i}: global batch {st.global_batch_size} is not a multiple of "
                           f"micro-batch {micro_batch_size} x {ranks.world} rank(s)")
    info = tokenizer_files.read_tokenizer_info(tokenizer_dir)
    vocab_size = int(info["vocab_size"])
    dev = pick_device(device, ranks)
    dtype = pick_dtype(precision, dev)
    check_compile(compile, dev)
    if documents is None:
        if not data_uris:
            raise BadInput("--data: no shards given")
        documents = data.load_documents(data_uris, vocab_size=vocab_size, tokenizer_type=info["type"])
    elif documents.vocab_size != vocab_size:
        raise BadInput(f"documents made for a vocabulary of {documents.vocab_size}, tokenizer has {vocab_size}")
    if not len(documents):
        raise BadInput("--data: the shards hold no document")
    whole_word = info["word_splitter"] != "none"
    description = {"plan": plan, "architecture": arch.name, "vocab_size": vocab_size, "seed": seed,
                   "stages": [st.__dict__ for st in stages], "tokenizer_type": info["type"]}
    desc_uri = storage.join(model_dir, DESCRIPTION)
    if storage.exists(desc_uri):
        theirs = storage.read_json_object(desc_uri)
        diff = [k for k in ("plan", "architecture", "vocab_size", "seed", "stages") if theirs.get(k) != description[k]]
        if diff:
            raise BadInput(f"--model-dir {model_dir}: holds a run with other {', '.join(diff)} ({desc_uri}); "
                           "use a new model dir")
    ranks.join(dev)
    if ranks.rank == 0:
        storage.write_text(desc_uri, json.dumps(description, indent=2, sort_keys=True) + "\n")
    max_length = max(st.seq_length for st in stages)
    results, previous_hf = [], None
    for number, st in enumerate(stages, 1):
        stage_dir = storage.join(model_dir, f"stage{number}")
        done_uri = storage.join(stage_dir, "result.json")
        if storage.exists(done_uri):
            results.append(storage.read_json_object(done_uri))
            previous_hf = storage.join(stage_dir, "hf")
            log.info("stage %d: already trained (%s)", number, done_uri)
            continue
        res = _train_stage(number=number, st=st, stages=len(stages), arch=arch, stage_dir=stage_dir,
                           model_dir=model_dir, previous_hf=previous_hf, documents=documents, vocab_size=vocab_size,
                           max_length=max_length, whole_word=whole_word, seed=seed, micro_batch=micro_batch_size,
                           workers=workers, dev=dev, dtype=dtype, compile=compile, log_every=log_every,
                           checkpoint_every=checkpoint_every, stop_at=stop_at, ranks=ranks, log=log,
                           tokenizer_dir=tokenizer_dir)
        results.append(res)
        if not res["finished"]:
            return {"plan": plan, "architecture": arch.name, "finished": False, "stages": results,
                    "model_dir": model_dir}
        previous_hf = storage.join(stage_dir, "hf")
    final = storage.join(model_dir, "hf")
    if ranks.rank == 0:
        storage.copy_tree(previous_hf, final)
        out = {"plan": plan, "architecture": arch.name, "finished": True, "stages": results, "model_dir": model_dir,
               "hf_dir": final, "loss": results[-1]["loss"],
               "tokens_per_sec": results[-1]["tokens_per_sec"], "samples_per_sec": results[-1]["samples_per_sec"]}
        status.write_complete(model_dir, out)
        return out
    return {"plan": plan, "finished": True, "stages": results, "model_dir": model_dir, "hf_dir": final}


def _train_stage(*, number, st, stages, arch, stage_dir, model_dir, previous_hf, documents, vocab_size, max_length,
                 whole_word, seed, micro_batch, workers, dev, dtype, compile, log_every, checkpoint_every, stop_at,
                 ranks, log, tokenizer_dir) -> dict:
    import torch

    ckpt_uri = storage.join(stage_dir, CHECKPOINT)
    if previous_hf:
        import transformers

        with _local_dir(previous_hf) as local:
            model = getattr(transformers, configs.FAMILIES[arch.family][1]).from_pretrained(local)
    else:
        model = configs.build_model(arch, vocab_size=vocab_size, max_length=max_length, seed=seed)
    model.to(dev)
    optimizer, scheduler = make_optimizer(model, st)
    step, position, history, tokens = 0, (0, 0), [], 0
    resumed = storage.exists(ckpt_uri)
    if resumed:
        state = _load_checkpoint(ckpt_uri)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, position, history, tokens = state["step"], tuple(state["position"]), state["history"], state["tokens"]
        torch.set_rng_state(state["rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        log.info("stage %d: resuming at step %d (data epoch %d, micro-batch %d)", number, step, *position)
    else:
        torch.manual_seed(seed * 1000 + number + ranks.rank)
    model.train()
    forward = torch.compile(model) if compile else model
    if ranks.world > 1:
        forward = torch.nn.parallel.DistributedDataParallel(forward, device_ids=[dev.index] if dev.type == "cuda"
                                                            else None)
    accumulation = st.global_batch_size // (micro_batch * ranks.world)
    stream = BatchStream(documents, st, stage=number, seed=seed, micro_batch=micro_batch, ranks=ranks,
                         workers=workers, whole_word=whole_word, position=position)
    batches = iter(stream)
    log.info("stage %d/%d: %s, %d tokens, packing %s, mask %.0f%%, batch %d = %d x %d x %d rank(s), steps %d..%d",
             number, stages, arch.name, st.seq_length, st.packing, st.mask_rate * 100, st.global_batch_size,
             micro_batch, accumulation, ranks.world, step, st.train_steps)
    if ranks.rank == 0:
        status.write_heartbeat(model_dir, stage=number, step=step, train_steps=st.train_steps, loss=None,
                               steps_per_sec=None, examples_per_sec=None)
    end = st.train_steps if stop_at is None else min(st.train_steps, stop_at)
    timing = {"start": None, "steps": 0, "tokens": 0, "samples": 0}
    window = {"t": time.monotonic(), "steps": 0, "tokens": 0, "samples": 0}
    loss_value = None
    while step < end:
        micro = [next(batches) for _ in range(accumulation)]
        masked = [int((b["labels"] != data.IGNORE_INDEX).sum()) for b in micro]
        total_masked = ranks.sum(sum(masked), dev)
        step_loss = 0.0
        for k, (b, n) in enumerate(zip(micro, masked)):
            inputs = model_inputs(b, arch, model.config, dev)
            sync = contextlib.nullcontext() if (ranks.world == 1 or k == accumulation - 1) else forward.no_sync()
            autocast = torch.autocast(dev.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
            with sync, autocast:
                out = forward(**inputs)
                # DDP averages gradients over ranks: scale back to a sum, then divide by all masked tokens.
                loss = out.loss * (n * ranks.world / max(total_masked, 1)) if n else out.logits.sum() * 0.0
            loss.backward()
            if n:
                step_loss += float(out.loss.detach()) * n
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        loss_value = ranks.sum(step_loss, dev) / max(total_masked, 1)
        step_tokens = ranks.sum(sum(int((b["segment_ids"] != 0).sum()) for b in micro), dev)
        step_samples = micro_batch * accumulation * ranks.world
        tokens += int(step_tokens)
        history.append([step, loss_value])
        if timing["start"] is None:  # the first step pays for start-up (and compiling): rates start after it
            timing["start"] = time.monotonic()
        else:
            timing["steps"] += 1
            timing["tokens"] += step_tokens
            timing["samples"] += step_samples
        window["steps"] += 1
        window["tokens"] += step_tokens
        window["samples"] += step_samples
        if step % log_every == 0 or step == end:
            dt = max(time.monotonic() - window["t"], 1e-9)
            rates = {"steps_per_sec": window["steps"] / dt, "tokens_per_sec": window["tokens"] / dt,
                     "samples_per_sec": window["samples"] / dt}
            log.info("stage %d: step %d/%d loss %.4f lr %.2e %.2f steps/s %.0f tokens/s %.1f samples/s", number, step,
                     st.train_steps, loss_value, scheduler.get_last_lr()[0], rates["steps_per_sec"],
                     rates["tokens_per_sec"], rates["samples_per_sec"])
            if ranks.rank == 0:
                status.write_heartbeat(model_dir, stage=number, step=step, train_steps=st.train_steps,
                                       loss=loss_value, steps_per_sec=rates["steps_per_sec"],
                                       examples_per_sec=rates["samples_per_sec"])
            window = {"t": time.monotonic(), "steps": 0, "tokens": 0, "samples": 0}
        if step < st.train_steps and (step % checkpoint_every == 0 or step == end):
            if ranks.rank == 0:
                _save_checkpoint(ckpt_uri, model=model, optimizer=optimizer, scheduler=scheduler, step=step,
                                 position=stream.position, history=history, tokens=tokens)
            ranks.barrier()
    elapsed = (time.monotonic() - timing["start"]) if timing["start"] else 0.0
    steady = {k: (timing[k] / elapsed if elapsed > 0 and timing["steps"] else None)
              for k in ("steps", "tokens", "samples")}
    result = {"stage": number, "step": step, "train_steps": st.train_steps, "loss": loss_value,
              "seq_length": st.seq_length, "packing": st.packing, "mask_rate": st.mask_rate,
              "steps_per_sec": steady["steps"], "tokens_per_sec": steady["tokens"],
              "samples_per_sec": steady["samples"], "tokens": tokens, "resumed": resumed,
              "data_position": list(stream.position), "finished": step >= st.train_steps, "history": history}
    if result["finished"]:
        if ranks.rank == 0:
            hf = storage.join(stage_dir, "hf")
            _save_hf(model, hf, tokenizer_dir)
            storage.write_text(storage.join(stage_dir, "result.json"), json.dumps(result, sort_keys=True) + "\n")
            storage.remove(ckpt_uri)
        ranks.barrier()
    return result
