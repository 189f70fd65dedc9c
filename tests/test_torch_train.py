"""The PyTorch trainer: architectures, the data loader (packing, masking, determinism), training,
exact resume, the CLI on real token shards and fill-mask on its output. CPU only, tiny shapes."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from components.errors import BadInput  # noqa: E402
from components.pretraining_data.tokenization import load_tokenizer  # noqa: E402
from components.tokenizer import files as tokenizer_files  # noqa: E402
from components.tokenizer.byte import write_byte_tokenizer  # noqa: E402
from components.torch_train import configs, data, trainer  # noqa: E402

SENTENCES = os.path.join(os.path.dirname(__file__), "data", "ja_sentences.txt")


def corpus_documents(limit: int) -> list[list[str]]:
    docs, cur = [], []
    with open(SENTENCES, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                cur.append(line)
            elif cur:
                docs.append(cur)
                cur = []
                if len(docs) >= limit:
                    break
    return docs


@pytest.fixture(scope="module")
def byte_tokenizer(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("tok") / "byte")
    write_byte_tokenizer(out)  # MeCab (unidic-lite) words for whole-word masking
    return out


@pytest.fixture(scope="module")
def documents(byte_tokenizer):
    """40 documents of real Japanese prose as the data step tokenizes them (bytes + word starts)."""
    tok = load_tokenizer(byte_tokenizer)
    codes = []
    for doc in corpus_documents(40):
        cur: list[int] = []
        for line in doc:
            tok.extend_codes(cur, line)
        codes.append(cur)
    return data.Documents.from_codes(codes, vocab_size=tok.vocab_size, tokenizer_type="byte")


def small_documents(lengths, vocab_size=300, seed=0, word_prob=0.4):
    rng = np.random.default_rng(seed)
    return data.Documents.from_list([(rng.integers(5, vocab_size, n), rng.random(n) < word_prob) for n in lengths],
                                    vocab_size=vocab_size)


# ---------------------------------------------------------------------------
# Architectures
# ---------------------------------------------------------------------------

def test_modernbert_130m_shape_matches_the_card():
    """ModernBERT-Ja-130M: 19 layers, hidden 512, ~52M embedding and ~80M transformer parameters."""
    config = configs.model_config(configs.architecture("modernbert-130m"), vocab_size=102_400, max_length=8192)
    with torch.device("meta"):  # shapes only: initialising 132M weights takes a minute here
        model = transformers.ModernBertForMaskedLM(config)
    emb = model.model.embeddings.tok_embeddings.weight.numel()
    layers = sum(p.numel() for p in model.model.layers.parameters())
    assert (config.num_hidden_layers, config.hidden_size) == (19, 512)
    assert round(emb / 1e6) == 52 and round(layers / 1e6) == 80
    assert config.layer_types.count("full_attention") == 7 and config.local_attention == 128


@pytest.mark.parametrize("name", [n for n in configs.ARCHITECTURES if n.endswith("-tiny")])
def test_packed_logits_equal_each_document_alone(name):
    """Block-diagonal masks (ModernBERT: also its local window) keep packed documents apart."""
    arch = configs.architecture(name)
    docs = small_documents([30, 50, 7, 120, 13, 64])
    ds = data.PretrainingDataset(docs, seq_length=64, packing="best-fit", mask_rate=0.3, whole_word=True, seed=0,
                                 stage=1, epoch=0)
    batch = data.collate([ds[i] for i in range(len(ds))])
    model = configs.build_model(arch, vocab_size=300, max_length=64, seed=0).eval()
    assert batch["segment_ids"].max() > 1  # several documents per row
    with torch.no_grad():
        packed = model(**{k: v for k, v in trainer.model_inputs(batch, arch, model.config, "cpu").items()
                          if k != "labels"}).logits
        for row in range(len(batch["input_ids"])):
            for s in batch["segment_ids"][row].unique().tolist():
                if s:
                    idx = (batch["segment_ids"][row] == s).nonzero().squeeze(1)
                    alone = model(input_ids=batch["input_ids"][row, idx][None]).logits[0]
                    torch.testing.assert_close(packed[row, idx], alone, atol=1e-5, rtol=1e-5)


def test_eurobert_is_the_llama_style_encoder():
    config = configs.model_config(configs.architecture("eurobert-base"), vocab_size=261, max_length=1024)
    assert (config.hidden_act, config.num_key_value_heads < config.num_attention_heads) == ("silu", True)
    assert type(transformers.EuroBertForMaskedLM(configs.model_config(
        configs.architecture("eurobert-tiny"), vocab_size=261, max_length=64))).__name__ == "EuroBertForMaskedLM"


def test_sequence_longer_than_the_architecture_is_refused(tmp_path, byte_tokenizer, documents):
    with pytest.raises(BadInput, match="exceeds bert-tiny's maximum of 512"):
        trainer.train(plan="bert", architecture="bert-tiny", model_dir=str(tmp_path), tokenizer_dir=byte_tokenizer,
                      documents=documents, seq_lengths=[128, 1024], train_steps=1, global_batch_size=2,
                      micro_batch_size=2, device="cpu")
    assert not (tmp_path / "stage1").exists()


# ---------------------------------------------------------------------------
# Packing
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("packing", configs.PACKINGS)
def test_packing_covers_every_token_once_within_the_length(packing):
    docs = small_documents([30, 50, 7, 120, 13, 64, 3, 200, 61, 62])
    packs = data.pack(docs, 64, packing, np.random.default_rng(0))
    lengths = packs.sequence_lengths()
    assert lengths.max() <= 64
    covered = np.zeros(len(docs.ids), int)
    for start, n in zip(packs.seg_start, packs.seg_length):
        covered[start:start + n] += 1
    assert (covered == 1).all()
    if packing == "none":
        assert (np.diff(packs.seq_offsets) == 1).all()


def test_best_fit_needs_fewer_sequences_than_none_and_naive_fills_rows():
    docs = small_documents(np.random.default_rng(3).integers(5, 60, 300))
    rng = lambda: np.random.default_rng(0)  # noqa: E731
    none, best, naive = (data.pack(docs, 128, p, rng()) for p in ("none", "best-fit", "naive"))
    assert len(best) < len(none) / 2
    assert (naive.sequence_lengths()[:-1] >= 128 - 2).all()  # naive: every row but the last is full
    assert best.seg_length.size == none.seg_length.size  # best-fit never cuts a document that fits


# ---------------------------------------------------------------------------
# Masking, on the loader's output
# ---------------------------------------------------------------------------

def _loader_items(documents, *, rate, whole_word, n=64, seq_length=256):
    ds = data.PretrainingDataset(documents, seq_length=seq_length, packing="naive", mask_rate=rate,
                                 whole_word=whole_word, seed=5, stage=1, epoch=0)
    return ds, [ds[i] for i in range(min(n, len(ds)))]


@pytest.mark.parametrize("rate", [0.15, 0.30])
def test_masking_rate_and_80_10_10(documents, rate):
    ds, items = _loader_items(documents, rate=rate, whole_word=True)
    chosen = kept = masked = randomised = maskable = 0
    for x in items:
        special = np.isin(x["original_ids"], (tokenizer_files.CLS_ID, tokenizer_files.SEP_ID))
        at = x["labels"] != data.IGNORE_INDEX
        assert not (at & special).any()  # [CLS]/[SEP] are never chosen
        assert (x["labels"][at] == x["original_ids"][at]).all()
        maskable += (~special).sum()
        chosen += at.sum()
        masked += (x["input_ids"][at] == tokenizer_files.MASK_ID).sum()
        kept += (x["input_ids"][at] == x["original_ids"][at]).sum()
        randomised += ((x["input_ids"][at] != x["original_ids"][at])
                       & (x["input_ids"][at] != tokenizer_files.MASK_ID)).sum()
        assert (x["input_ids"][~at] == x["original_ids"][~at]).all()
    assert abs(chosen / maskable - rate) < 0.02
    assert abs(masked / chosen - 0.8) < 0.02
    assert abs(kept / chosen - 0.1) < 0.02 + 1 / 256  # a random token may draw itself
    assert abs(randomised / chosen - 0.1) < 0.02


def test_whole_words_are_masked_together(documents):
    """Every chosen token's word (a start mark up to the next) is chosen whole."""
    ds, items = _loader_items(documents, rate=0.15, whole_word=True)
    partial = words = 0
    for i, x in enumerate(items):
        # rebuild word groups of this sequence from the documents' word-start marks (a piece cut
        # mid-word, by packing, starts a group of its own: the rest of that word is in another sequence)
        starts = np.concatenate([[True, True, *documents.word_starts[a + 1:a + n], True] for a, n in zip(
            ds.packs.seg_start[ds.packs.seq_offsets[i]:ds.packs.seq_offsets[i + 1]],
            ds.packs.seg_length[ds.packs.seq_offsets[i]:ds.packs.seq_offsets[i + 1]])])
        group = np.cumsum(starts)
        at = x["labels"] != data.IGNORE_INDEX
        for g in np.unique(group[at]):
            words += 1
            partial += not at[group == g].all()
    assert words > 100 and partial == 0
    assert documents.word_starts.mean() < 0.5  # bytes: words span several tokens, so this tests grouping


def test_per_token_masking_without_word_marks(documents):
    """No word splitter: tokens are chosen one by one, so some words are masked only in part."""
    ds, items = _loader_items(documents, rate=0.15, whole_word=False)
    ws = documents.word_starts
    # a chosen continuation byte whose predecessor was not chosen: impossible with whole words
    found = any(((x["labels"][2:] != -100) & (x["labels"][1:-1] == -100) &
                 (x["input_ids"][2:] != tokenizer_files.SEP_ID)).any() for x in items)
    assert found and ws.mean() < 0.5


# ---------------------------------------------------------------------------
# Determinism and data position
# ---------------------------------------------------------------------------

def _batches(documents, *, workers, position=(0, 0), count=6, rank=0, world=1):
    st = configs.Stage(128, "best-fit", 0.3, 10, 1e-3, 4)
    ranks = trainer.Ranks()
    ranks.rank, ranks.world = rank, world
    stream = trainer.BatchStream(documents, st, stage=1, seed=3, micro_batch=2, ranks=ranks, workers=workers,
                                 whole_word=True, position=position)
    out = []
    for batch in stream:
        out.append((stream.position, batch))
        if len(out) == count:
            return out


def test_batches_do_not_depend_on_workers_and_resume_mid_epoch(documents):
    end = int(documents.offsets[2])  # two documents: ~57 micro-batches an epoch
    documents = data.Documents(documents.ids[:end], documents.word_starts[:end], documents.offsets[:3],
                               documents.vocab_size)
    plain = _batches(documents, workers=0, count=70)
    epochs = {p[0] for p, _ in plain}
    assert len(epochs) > 1  # crosses an epoch boundary: new packing and masks
    workers = _batches(documents, workers=2, count=70)
    for (p1, b1), (p2, b2) in zip(plain, workers):
        assert p1 == p2
        for key in b1:
            assert torch.equal(b1[key], b2[key])
    # resume at the position after batch 17: the next batch is batch 18; also across the epoch's end
    resumed = _batches(documents, workers=0, position=plain[17][0], count=3)
    for (_, b1), (_, b2) in zip(plain[18:21], resumed):
        assert torch.equal(b1["input_ids"], b2["input_ids"]) and torch.equal(b1["labels"], b2["labels"])
    last = max(i for i, (p, _) in enumerate(plain) if p[0] == 0)
    resumed = _batches(documents, workers=0, position=plain[last][0], count=2)
    for (_, b1), (_, b2) in zip(plain[last + 1:], resumed):
        assert torch.equal(b1["input_ids"], b2["input_ids"]) and torch.equal(b1["labels"], b2["labels"])
    # masks differ between epochs for the same sequence (dynamic masking)
    first, second = (data.PretrainingDataset(documents, seq_length=128, packing="none", mask_rate=0.3,
                                             whole_word=True, seed=3, stage=1, epoch=e) for e in (0, 1))
    assert not np.array_equal(first[0]["labels"], second[0]["labels"]) or len(first) != len(second)


def test_ranks_get_disjoint_batches(documents):
    r0 = _batches(documents, workers=0, count=4, rank=0, world=2)
    r1 = _batches(documents, workers=0, count=4, rank=1, world=2)
    for (_, a), (_, b) in zip(r0, r1):
        assert not torch.equal(a["input_ids"], b["input_ids"])


# ---------------------------------------------------------------------------
# Training, resume
# ---------------------------------------------------------------------------

def _train(tmp, tok, docs, **kw):
    args = dict(plan="modernbert-ja", architecture="modernbert-tiny", model_dir=str(tmp), tokenizer_dir=tok,
                documents=docs, seq_lengths=[128, 256, 256], train_steps=[12, 6, 6], global_batch_size=8,
                micro_batch_size=4, learning_rate=2e-3, warmup_steps=2, log_every=4, checkpoint_every=5, device="cpu")
    args.update(kw)
    return trainer.train(**args)


def test_three_stage_plan_loss_falls_and_writes_a_hugging_face_dir(tmp_path, byte_tokenizer, documents):
    result = _train(tmp_path / "m", byte_tokenizer, documents)
    assert result["finished"] and [s["stage"] for s in result["stages"]] == [1, 2, 3]
    assert [(s["seq_length"], s["packing"], s["mask_rate"]) for s in result["stages"]] == [
        (128, "naive", 0.30), (256, "best-fit", 0.30), (256, "none", 0.15)]
    first, last = result["stages"][0]["history"][0][1], result["stages"][-1]["loss"]
    assert last < first - 1.0, (first, last)
    assert result["stages"][0]["tokens_per_sec"] > 0 and result["stages"][0]["samples_per_sec"] > 0
    hf = result["hf_dir"]
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(os.listdir(hf))
    status = json.loads((tmp_path / "m" / "status" / "complete.json").read_text())
    heartbeat = json.loads((tmp_path / "m" / "status" / "heartbeat.json").read_text())
    assert status["finished"] and heartbeat["stage"] == 3 and heartbeat["step"] == 6
    # stage 2 started from stage 1's weights: its first loss is far below stage 1's first
    assert result["stages"][1]["history"][0][1] < first - 1.0


@pytest.mark.parametrize("arch", ["bert-tiny", "modernbert-tiny"])
def test_interrupted_run_resumes_to_the_same_losses_and_weights(tmp_path, byte_tokenizer, documents, arch):
    """bert-tiny has dropout: the RNG state is part of the checkpoint."""
    kw = dict(plan="bert", architecture=arch, seq_lengths=[128, 128], train_steps=[9, 3], workers=0)
    if arch == "modernbert-tiny":
        kw.update(plan="modernbert-ja", seq_lengths=[128, 128, 128], train_steps=[9, 2, 2], workers=2)
    whole = _train(tmp_path / "whole", byte_tokenizer, documents, **kw)
    part = _train(tmp_path / "cut", byte_tokenizer, documents, stop_at=7, **kw)
    assert not part["finished"] and part["stages"][0]["step"] == 7
    assert json.loads((tmp_path / "cut" / "status" / "heartbeat.json").read_text())["step"] == 7
    rest = _train(tmp_path / "cut", byte_tokenizer, documents, **kw)
    assert rest["stages"][0]["resumed"]
    for a, b in zip(whole["stages"], rest["stages"]):
        assert a["history"] == b["history"]  # every step's loss, before and after the cut
        assert a["data_position"] == b["data_position"]
    from safetensors.torch import load_file
    w1, w2 = (load_file(os.path.join(r["hf_dir"], "model.safetensors")) for r in (whole, rest))
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


def test_gradient_accumulation_equals_one_big_batch(tmp_path, byte_tokenizer, documents):
    """Same global batch as 1 x 8 or 4 x 2 micro-batches: the same losses step after step (EuroBERT: no dropout)."""
    kw = dict(plan="bybert", architecture="eurobert-tiny", seq_lengths=128, train_steps=4, global_batch_size=8,
              warmup_steps=0, learning_rate=1e-3)
    big = _train(tmp_path / "big", byte_tokenizer, documents, micro_batch_size=8, **kw)
    accumulated = _train(tmp_path / "acc", byte_tokenizer, documents, micro_batch_size=2, **kw)
    a, b = big["stages"][0]["history"], accumulated["stages"][0]["history"]
    assert len(a) == 4 and [s for s, _ in a] == [s for s, _ in b]
    assert [loss for _, loss in a] == pytest.approx([loss for _, loss in b], rel=1e-4)
    assert a[-1][1] < a[0][1]


def test_other_tokenizer_documents_and_bad_batches_are_refused(tmp_path, byte_tokenizer, documents):
    other = small_documents([40, 50], vocab_size=300)
    with pytest.raises(BadInput, match="vocabulary of 300, tokenizer has 261"):
        _train(tmp_path / "a", byte_tokenizer, other)
    with pytest.raises(BadInput, match="not a multiple of micro-batch 3"):
        _train(tmp_path / "b", byte_tokenizer, documents, micro_batch_size=3)
    with pytest.raises(BadInput, match="3 stage\\(s\\)"):
        _train(tmp_path / "c", byte_tokenizer, documents, seq_lengths=[128, 256])
    with pytest.raises(BadInput, match="fewer than one micro-batch"):
        _train(tmp_path / "d", byte_tokenizer, small_documents([40], vocab_size=261))
    # another architecture in a model dir that holds a run: refused, not silently mixed
    _train(tmp_path / "e", byte_tokenizer, documents, stop_at=1)
    with pytest.raises(BadInput, match="other architecture"):
        _train(tmp_path / "e", byte_tokenizer, documents, architecture="eurobert-tiny")


def test_compile_without_a_compiler_is_refused_on_cpu(tmp_path, byte_tokenizer, documents, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(BadInput, match="needs a C\\+\\+ compiler"):
        _train(tmp_path, byte_tokenizer, documents, compile=True)


def test_schedules():
    wsd = configs.Stage(128, "naive", 0.3, 100, 1.0, 8, warmup_steps=10, decay_fraction=0.2)
    lin = configs.Stage(128, "naive", 0.3, 100, 1.0, 8, warmup_steps=10, schedule="linear")
    assert trainer.lr_factor(0, wsd) == pytest.approx(0.1) and trainer.lr_factor(9, wsd) == 1.0
    assert trainer.lr_factor(50, wsd) == 1.0 and trainer.lr_factor(79, wsd) == 1.0
    assert trainer.lr_factor(90, wsd) == pytest.approx(0.5) and trainer.lr_factor(100, wsd) == 0.0
    assert trainer.lr_factor(55, lin) == pytest.approx(0.5) and trainer.lr_factor(100, lin) == 0.0


def test_block_diagonal_mask_memory_at_8192():
    """The measured size of one (1, 1, 8192, 8192) boolean mask; float32 would be 4x."""
    seg = torch.ones(1, 8192, dtype=torch.long)
    mask = data.attention_masks(seg)
    assert mask.dtype == torch.bool
    assert mask.element_size() * mask.nelement() == data.mask_bytes(8192) == 64 * 2**20


def test_plan_overrides_take_whole_floats_as_kfp_lists_send_them():
    stages = configs.plan_stages("modernbert-ja", seq_lengths=[64.0, 128.0, 128.0], train_steps=[6.0, 2, 2])
    assert [s.seq_length for s in stages] == [64, 128, 128] and all(type(s.seq_length) is int for s in stages)
    with pytest.raises(BadInput, match="--seq-length 64.5: must be a whole number"):
        configs.plan_stages("modernbert-ja", seq_lengths=64.5)


# ---------------------------------------------------------------------------
# Memory-mapped shards (a corpus larger than memory)
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def byte_shards(tmp_path_factory, byte_tokenizer):
    """Two token-shard directories of real Japanese prose, as the data step writes them."""
    from components.pretraining_data.shards import write_token_shards

    root = tmp_path_factory.mktemp("byte-shards")
    docs = ["\n".join(d) for d in corpus_documents(40)]
    uris = []
    for i, part in enumerate((docs[:25], docs[25:])):
        corpus = root / f"corpus-{i}.txt"
        corpus.write_text("\n\n".join(part) + "\n", encoding="utf-8")
        write_token_shards(str(corpus), str(root / f"shard-{i}"), byte_tokenizer)
        uris.append(str(root / f"shard-{i}"))
    return uris


def _in_memory(uris):
    """The same shards read wholly into memory, through the in-memory constructor."""
    from components.pretraining_data.shards import read_token_shards

    pairs = [(np.array(i), np.array(w)) for u in uris for i, w in read_token_shards(u).iter_documents()]
    return data.Documents.from_list(pairs, vocab_size=261, tokenizer_type="byte")


def test_mapped_shards_give_the_batches_in_memory_documents_give(byte_shards):
    import pickle

    mapped = data.load_documents(byte_shards, vocab_size=261, tokenizer_type="byte")
    memory = _in_memory(byte_shards)
    assert isinstance(mapped.ids, data.Concatenated) and len(mapped.ids.parts) == 2
    assert np.array_equal(mapped.offsets, memory.offsets) and len(mapped) == 40
    boundary = int(mapped.ids.starts[1])  # a slice across the two shards, and bit offsets not on a byte
    for a, b in ((0, 9), (boundary - 13, boundary + 5), (3, len(memory.ids)), (boundary + 1, boundary + 1)):
        assert np.array_equal(mapped.ids[a:b], memory.ids[a:b])
        assert np.array_equal(mapped.word_starts[a:b], memory.word_starts[a:b])
    # a worker started by spawn gets the file names, not the corpus (a memmap would pickle its content)
    shipped = pickle.dumps(mapped)
    assert len(shipped) < len(mapped.ids) // 4
    for docs in (mapped, pickle.loads(shipped)):
        ds, ref = (data.PretrainingDataset(d, seq_length=256, packing="best-fit", mask_rate=0.3, whole_word=True,
                                           seed=1, stage=2, epoch=3) for d in (docs, memory))
        assert len(ds) == len(ref) > 5
        for i in range(len(ds)):
            got, want = ds[i], ref[i]
            assert all(np.array_equal(got[k], want[k]) for k in want)


def test_loading_allocates_the_same_for_a_corpus_ten_times_larger(tmp_path):
    """Python/numpy allocations while loading (tracemalloc; memory maps are not allocations) stay
    flat when the tokens grow 10x at the same number of documents; reading the shards into memory
    would allocate at least 3 bytes per token (uint16 ids, unpacked word-start bits)."""
    import tracemalloc

    from components.torch_train import bench

    peaks = []
    for tokens in (2_000_000, 20_000_000):
        uris = bench.synthetic_shards(str(tmp_path / str(tokens)), shards=4, tokens=tokens, documents=2_000,
                                      vocab_size=32_768)
        tracemalloc.start()
        docs = data.load_documents(uris, vocab_size=32_768, tokenizer_type="sentencepiece")
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert len(docs.ids) == tokens and len(docs) == 2_000
        shutil.rmtree(tmp_path / str(tokens))
    small, large = peaks
    assert large < 1.5 * small + 64 * 1024, peaks
    assert large < 0.02 * 20_000_000 * 2, peaks  # under 2% of the ids' own bytes


def test_an_id_outside_the_vocabulary_is_refused_when_loading(tmp_path):
    from components.torch_train import bench

    (uri,) = bench.synthetic_shards(str(tmp_path), shards=1, tokens=5_000, documents=10, vocab_size=261)
    tokens = np.load(os.path.join(uri, "tokens.npy"))
    tokens[4_321] = 300
    np.save(os.path.join(uri, "tokens.npy"), tokens)
    with pytest.raises(BadInput, match=f"{uri}: token id 300 is outside the vocabulary of 261"):
        data.load_documents([uri], vocab_size=261, tokenizer_type="sentencepiece")


def test_gcs_shards_are_mapped_from_a_local_copy(tmp_path, byte_shards, gcs):
    from components import storage

    remote = [f"{gcs}/shards/{os.path.basename(u)}" for u in byte_shards]
    for local, uri in zip(byte_shards, remote):
        storage.copy_tree(local, uri)
    spool = tmp_path / "spool"
    mapped = data.load_documents(remote, vocab_size=261, tokenizer_type="byte", spool=str(spool))
    memory = _in_memory(byte_shards)
    assert all(p.path.startswith(str(spool)) for p in mapped.ids.parts)
    assert np.array_equal(mapped.ids[0:len(memory.ids)], memory.ids)
    assert np.array_equal(mapped.word_starts[0:len(memory.ids)], memory.word_starts)


def test_compile_without_a_compiler_is_refused_before_training_on_cpu_and_gpu(monkeypatch):
    """Issue 13: torch.compile builds native code at run time (C++ on CPU, Triton's C launcher on CUDA);
    the images have no compiler, so --compile must fail at once with the reason, not inside a step."""
    import types

    from components.errors import BadInput
    from components.torch_train import trainer

    monkeypatch.setattr(trainer.shutil, "which", lambda name: None)
    for var in ("CC", "CXX"):
        monkeypatch.delenv(var, raising=False)
    for kind, needs in (("cpu", "C\\+\\+ compiler"), ("cuda", "C compiler for Triton")):
        with pytest.raises(BadInput, match=needs):
            trainer.check_compile(True, types.SimpleNamespace(type=kind))
        trainer.check_compile(False, types.SimpleNamespace(type=kind))  # no --compile: nothing needed
    monkeypatch.setenv("CC", "/usr/bin/gcc")
    trainer.check_compile(True, types.SimpleNamespace(type="cuda"))
