"""The bert-japanese DAG, top to bottom in the order of the recipe's README.

resolve sources -> download (Wikipedia CirrusSearch, CC-100, UniDic) -> Wikipedia
sentences -> merge/split into shards -> tokenizer sample -> alphabet -> WordPiece
tokenizer -> per model variant: tokenizer, pretraining TFRecords per shard
(ParallelFor), two-stage training, conversion, evaluation, publishing. Training
sits inside an ExitHandler whose exit task releases the TPU VMs whatever happens.

The other seed systems (``pipelines/recipes.py``) run through the same steps, chosen by
parameters: ``stage1_corpus`` (CC-100, Wikipedia or one stage), the variants'
tokenizers (WordPiece/character on MeCab, SentencePiece, bytes), the objective, and
``trainer``: a PyTorch-trainer variant (ModernBERT-Ja, rinna's RoBERTa, bybert) trains its
plan (``torch_plan``) on token shards of both corpora in the pod -- on the profile's GPUs,
with torchrun, where it has them -- and its Hugging Face directory goes straight to evaluation
and publishing (no conversion).

``build(profile)`` returns the pipeline function for a profile: the profile's
platform settings are applied to tasks here, and its parameter values become the
compiled defaults (``pipelines.commands``). Parameter defaults below are the
recipe's, read from ``parameters.PipelineParameters``.
"""


from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Model

from components.convert.component import convert_model
from components.corpus.component import sample_corpus, split_corpus, wiki_corpus
from components.download.component import download_source, resolve_sources
from components.evaluate.component import (evaluate_model, fetch_jglue, finetune_jglue, jglue_identity,
                                           jglue_report, no_jglue)
from components.images import image
from components.pretraining_data.component import pretraining_data
from components.publish.component import publish_model
from components.tokenizer.component import alphabet, variant_tokenizer, wordpiece_tokenizer
from components.tpu.component import release_compute
from components.words.component import split_words
from components.torch_train.component import train_torch
from components.torch_train.trainjob_component import train_torch_trainjob
from components.train.component import train_model
from components.train.stages import training_root
from pipelines import platform as k8s
from pipelines.check_component import check_parameters, variants_selected
from pipelines.parameters import FIELDS, MECAB_VARIANTS, TRAINER_VARIANTS, PipelineParameters
from pipelines.profiles import Profile

PIPELINE_NAME = "bert-japanese-pretraining"
D = PipelineParameters()
RUN_ID = dsl.PIPELINE_JOB_ID_PLACEHOLDER  # only the never-cached exit task takes it
# A lost controller pod (OOM, a crash, a failed TPU API call) retries; the retried task
# resumes in the same content-named training dir (components/train/stages.py).
TRAIN_RETRY = dict(num_retries=3, backoff_duration="120s", backoff_factor=2.0, backoff_max_duration="3600s")


def build(profile: Profile):
    plat = profile.platform
    train_root = training_root(profile.pipeline_root)  # '' unless gs://

    def on(task, step_class: str = "data", **kw):
        return k8s.apply(task, plat, step_class, **kw)

    def shard_data(names, shards, tokenizer, *, loop: str, max_seq_length, max_predictions, dupe_factor,
                   masked_lm_prob, short_seq_prob, data_seed, whole_word_masking, next_sentence_prediction,
                   data_format, words=None, stage1_corpus=None, parallelism=profile.data_parallelism):
        """One pretraining-data task per shard (ParallelFor); returns the task in the loop. ``words``: the
        shards' MeCab words (split_words), which MeCab tokenizers read instead of the text."""
        with dsl.ParallelFor(names, parallelism=parallelism, name=loop) as shard:
            task = on(pretraining_data(
                shards=shards, shard=shard, tokenizer=tokenizer, max_seq_length=max_seq_length,
                max_predictions=max_predictions, dupe_factor=dupe_factor, masked_lm_prob=masked_lm_prob,
                short_seq_prob=short_seq_prob, base_seed=data_seed, whole_word_masking=whole_word_masking,
                next_sentence_prediction=next_sentence_prediction, data_format=data_format,
                **({"words": words} if words is not None else {}),
                **({"stage1_corpus": stage1_corpus} if stage1_corpus is not None else {})))
        return task

    # The PyTorch trainer in the pod; where the profile gives that step GPUs, the same function on the GPU
    # image (chosen here, at build time) and torchrun with one rank per GPU. GPUs on more than one machine:
    # a TrainJob, created and followed by a control pod (the "train" class, as the TPU controller).
    gpus = plat.accelerators.get("train-torch")
    multi = plat.trainjob("train-torch")
    trainer = train_torch if gpus is None else dsl.component(
        train_torch.python_func, base_image=image(gpus.image), install_kfp_package=False)
    train_class, placement = "train-torch", dict(processes=gpus.count if gpus else 1)
    if multi:  # the TrainJob is named after the run (BERTJA_RUN_ID), so the exit task finds it
        node = plat.resources["train-torch"]
        trainer, train_class, placement = train_torch_trainjob, "train", dict(
            trainer_image=image(multi.image), runtime=multi.runtime, num_nodes=multi.nodes, gpus_per_node=multi.count,
            cpu=node.cpu, memory=node.memory, node_selector=multi.node_selector, tolerations=multi.tolerations,
            timeout_hours=node.timeout_s / 3600)

    def jglue_table(hf_model, *, jglue_uri, jglue, jglue_tasks, jglue_grid, jglue_seeds, model_size, variant):
        """JGLUE: one pod per task, in parallel; each runs its task's whole grid and picks on dev (so the
        choice needs no further step and a task's points share one model load), then the table; or none."""
        with dsl.If(jglue_uri != "", name="jglue"):
            with dsl.ParallelFor(jglue_tasks, name="jglue-tasks") as jglue_task:
                tuned = on(finetune_jglue(hf_model=hf_model, jglue=jglue, task=jglue_task, grid=jglue_grid,
                                          seeds=jglue_seeds), "convert")
            table = on(jglue_report(hf_model=hf_model, results=dsl.Collected(tuned.outputs["result"]),
                                    model_size=model_size, variant=variant), "convert")
        with dsl.Else(name="no-jglue"):
            no_table = on(no_jglue(), "control")
        return dsl.OneOf(table.outputs["Output"], no_table.output)

    def model_garden_pipeline():
        """The Model Garden variant sub-pipeline: two stages, or one (stage1_corpus 'none'), in one layout."""
        @dsl.pipeline(name="bert-japanese-variant",
                      description="One model variant trained with Model Garden: TFRecords per shard, two training "
                                  "stages (or stage 2's settings from scratch when stage1_corpus is 'none'), "
                                  "conversion, evaluation, publishing.")
        def variant_pipeline(
            variant: str, tokenizer: Model, stage1_shards: Dataset, stage1_names: List[str], stage1_words: Dataset,
            wikipedia_shards: Dataset, wikipedia_names: List[str], wikipedia_words: Dataset, heldout_names: List[str],
            stage1_corpus: str, stage1_max_seq_length: int, stage1_max_predictions: int, stage1_dupe_factor: int,
            stage2_max_seq_length: int, stage2_max_predictions: int, stage2_dupe_factor: int,
            masked_lm_prob: float, short_seq_prob: float, data_seed: int, whole_word_masking: bool,
            next_sentence_prediction: bool,
            model_size: str, training_backend: str, stage1_train_steps: int, stage2_train_steps: int,
            gcp_project: str, gcp_zone: str, tpu_accelerator_type: str, tpu_runtime_version: str, tpu_spot: bool,
            tpu_queued: bool, tpu_queue_timeout_hours: float, tpu_network: str, tpu_subnetwork: str,
            tpu_service_account: str,
            tpu_price_per_hour: float, release_uri: str, wikipedia_dump_date: str, wikipedia_url: str, cc100_url: str,
            jglue_uri: str, jglue: Dataset, jglue_tasks: List[str], jglue_grid: str, jglue_seeds: int,
        ) -> Model:
            masking = dict(masked_lm_prob=masked_lm_prob, short_seq_prob=short_seq_prob, data_seed=data_seed,
                           whole_word_masking=whole_word_masking, next_sentence_prediction=next_sentence_prediction,
                           data_format="tfrecord")
            stage2_shape = dict(max_seq_length=stage2_max_seq_length,
                                max_predictions=stage2_max_predictions, dupe_factor=stage2_dupe_factor)

            def train(stage1, stage2, stages: str):
                trained = on(train_model(
                    stage1_examples=dsl.Collected(stage1.outputs["examples"]),
                    stage2_examples=dsl.Collected(stage2.outputs["examples"]),
                    tokenizer=tokenizer, variant=variant, model_size=model_size,
                    backend=training_backend, stage1_max_seq_length=stage1_max_seq_length,
                    stage1_max_predictions=stage1_max_predictions, stage2_max_seq_length=stage2_max_seq_length,
                    stage2_max_predictions=stage2_max_predictions,
                    stage1_train_steps=stage1_train_steps, stage2_train_steps=stage2_train_steps,
                    training_root=train_root, trainer_image=image("train-tpu"), gcp_project=gcp_project,
                    gcp_zone=gcp_zone, tpu_accelerator_type=tpu_accelerator_type,
                    tpu_runtime_version=tpu_runtime_version, tpu_spot=tpu_spot, tpu_queued=tpu_queued,
                    tpu_queue_timeout_hours=tpu_queue_timeout_hours,
                    tpu_network=tpu_network, tpu_subnetwork=tpu_subnetwork, tpu_service_account=tpu_service_account,
                    tpu_price_per_hour=tpu_price_per_hour, stage1_corpus=stages,
                    next_sentence_prediction=next_sentence_prediction),
                    "train", run_id_env=True)
                if plat.resources:  # a cluster; under kfp.local a failure should end the run at once
                    trained.set_retry(**TRAIN_RETRY)
                return trained

            # Stage 2 data: Wikipedia, seq 512, 76 predictions, dupe 30.
            stage2 = shard_data(wikipedia_names, wikipedia_shards, tokenizer, loop="wikipedia-shards",
                                words=wikipedia_words, **stage2_shape, **masking)
            # Stage 1 data: CC-100 (or Wikipedia), seq 128, 19 predictions, dupe 5 (one task per shard). With
            # stage1_corpus 'none' (Tohoku v1/v2) each of these tasks writes an empty dataset at once and training
            # is one stage on Wikipedia with stage 2's settings, from scratch: one layout for both (a second
            # layout doubled the compiled workflow, which etcd bounds).
            stage1 = shard_data(stage1_names, stage1_shards, tokenizer, loop="stage1-shards", words=stage1_words,
                                stage1_corpus=stage1_corpus, max_seq_length=stage1_max_seq_length,
                                max_predictions=stage1_max_predictions, dupe_factor=stage1_dupe_factor, **masking)
            # Stage 1, then stage 2 on Wikipedia initialised from stage 1.
            trained = train(stage1, stage2, stage1_corpus)
            trained_model = trained.outputs["model"]
            # Held-out Wikipedia shard, same format as stage 2: masked-LM accuracy on unseen text.
            heldout = shard_data(heldout_names, wikipedia_shards, tokenizer, loop="heldout-shards", parallelism=0,
                                 words=wikipedia_words, max_seq_length=stage2_max_seq_length, max_predictions=stage2_max_predictions,
                                 dupe_factor=1, **masking)
            converted = on(convert_model(trained=trained_model, tokenizer=tokenizer), "convert")
            evaluated = on(evaluate_model(hf_model=converted.outputs["hf_model"],
                                          heldout=dsl.Collected(heldout.outputs["examples"])), "convert")
            jglue_result = jglue_table(converted.outputs["hf_model"], jglue_uri=jglue_uri, jglue=jglue,
                                       jglue_tasks=jglue_tasks, jglue_grid=jglue_grid, jglue_seeds=jglue_seeds,
                                       model_size=model_size, variant=variant)
            published = on(publish_model(
                hf_model=converted.outputs["hf_model"], evaluation=evaluated.outputs["results"],
                release_uri=release_uri, variant=variant, model_size=model_size,
                wikipedia_dump_date=wikipedia_dump_date, cc100_url=cc100_url, wikipedia_url=wikipedia_url,
                jglue=jglue_result), "convert", uses_secrets=True)
            return published.outputs["release"]
        return variant_pipeline

    model_garden_variant = model_garden_pipeline()

    @dsl.pipeline(name="bert-japanese-torch-variant",
                  description="One variant of a PyTorch-trainer recipe: token shards of both corpora, the plan's "
                              "stages with the PyTorch trainer, held-out masked-LM accuracy, JGLUE, publishing.")
    def torch_variant_pipeline(
        variant: str, tokenizer: Model, stage1_shards: Dataset, stage1_names: List[str],
        wikipedia_shards: Dataset, wikipedia_names: List[str], heldout_names: List[str], stage1_max_seq_length: int,
        stage1_max_predictions: int, stage2_max_seq_length: int, stage2_max_predictions: int,
        masked_lm_prob: float, short_seq_prob: float, data_seed: int, whole_word_masking: bool,
        model_size: str, release_uri: str, wikipedia_dump_date: str, wikipedia_url: str, cc100_url: str,
        torch_plan: str, torch_architecture: str, torch_seq_lengths: List[int], torch_train_steps: List[int],
        torch_global_batch_size: int, torch_micro_batch_size: int,
        jglue_uri: str, jglue: Dataset, jglue_tasks: List[str], jglue_grid: str, jglue_seeds: int,
    ) -> Model:
        # Shards are unmasked and written once: masking and packing happen at load time (SPEC 8).
        unmasked = dict(dupe_factor=1, masked_lm_prob=masked_lm_prob, short_seq_prob=short_seq_prob,
                        data_seed=data_seed, whole_word_masking=whole_word_masking,
                        next_sentence_prediction=False, data_format="shards")
        stage2_shape = dict(max_seq_length=stage2_max_seq_length, max_predictions=stage2_max_predictions)
        stage1 = shard_data(stage1_names, stage1_shards, tokenizer, loop="stage1-token-shards",
                            max_seq_length=stage1_max_seq_length, max_predictions=stage1_max_predictions, **unmasked)
        stage2 = shard_data(wikipedia_names, wikipedia_shards, tokenizer, loop="wikipedia-token-shards",
                            **stage2_shape, **unmasked)
        # Both corpora feed every stage of the plan (its stages differ in length, packing and masking).
        trained = on(trainer(
            shards=dsl.Collected(stage1.outputs["examples"]), more_shards=dsl.Collected(stage2.outputs["examples"]),
            tokenizer=tokenizer, variant=variant, plan=torch_plan,
            architecture=torch_architecture, seq_lengths=torch_seq_lengths, train_steps=torch_train_steps,
            global_batch_size=torch_global_batch_size, micro_batch_size=torch_micro_batch_size, seed=data_seed,
            training_root=train_root, **placement), train_class, run_id_env=bool(multi))
        if plat.resources:  # a cluster: a lost pod resumes in the content-named training dir
            trained.set_retry(**TRAIN_RETRY)
        hf = trained.outputs["hf_model"]
        # Held-out Wikipedia shard, as token shards: masked at a fixed seed at the last stage's length and rate.
        heldout = shard_data(heldout_names, wikipedia_shards, tokenizer, loop="heldout-token-shards", parallelism=0,
                             **stage2_shape, **unmasked)
        evaluated = on(evaluate_model(hf_model=hf, heldout=dsl.Collected(heldout.outputs["examples"]),
                                      seq_length=trained.outputs["seq_length"],
                                      mask_rate=trained.outputs["mask_rate"]), "convert")
        jglue_result = jglue_table(hf, jglue_uri=jglue_uri, jglue=jglue, jglue_tasks=jglue_tasks,
                                   jglue_grid=jglue_grid, jglue_seeds=jglue_seeds, model_size=model_size,
                                   variant=variant)
        published = on(publish_model(
            hf_model=hf, evaluation=evaluated.outputs["results"], release_uri=release_uri, variant=variant,
            model_size=model_size, wikipedia_dump_date=wikipedia_dump_date, cc100_url=cc100_url,
            wikipedia_url=wikipedia_url, jglue=jglue_result), "convert", uses_secrets=True)
        return published.outputs["release"]

    @dsl.pipeline(name=PIPELINE_NAME, pipeline_root=profile.pipeline_root,
                  description="Tohoku bert-japanese recipe: raw Japanese text to released Japanese BERT models "
                              f"(profile: {profile.name}).")
    def bert_japanese(
        wikipedia_dump_date: str = D.wikipedia_dump_date,
        cirrus_index_url: str = D.cirrus_index_url,
        cc100_url: str = D.cc100_url,
        unidic_url: str = D.unidic_url,
        vibrato_dict_url: str = D.vibrato_dict_url,
        mecab_dic: str = D.mecab_dic,
        word_splitter: str = D.word_splitter,
        min_sentence_length: int = D.min_sentence_length,
        max_sentence_length: int = D.max_sentence_length,
        cc100_num_shards: int = D.cc100_num_shards,
        wikipedia_num_shards: int = D.wikipedia_num_shards,
        split_seed: int = D.split_seed,
        tokenizer_sample_lines: int = D.tokenizer_sample_lines,
        variants: List[str] = D.variants,
        vocab_size: int = D.vocab_size,
        limit_alphabet: int = D.limit_alphabet,
        num_unused_tokens: int = D.num_unused_tokens,
        min_frequency: int = D.min_frequency,
        do_lower_case: bool = D.do_lower_case,
        character_vocab_size: int = D.character_vocab_size,
        sp_model_type: str = D.sp_model_type,
        sp_character_coverage: float = D.sp_character_coverage,
        sp_byte_fallback: bool = D.sp_byte_fallback,
        sp_split_digits: bool = D.sp_split_digits,
        sp_control_symbols: List[str] = D.sp_control_symbols,
        sp_user_symbols: List[str] = D.sp_user_symbols,
        sp_normalization: str = D.sp_normalization,
        stage1_max_seq_length: int = D.stage1_max_seq_length,
        stage1_max_predictions: int = D.stage1_max_predictions,
        stage1_dupe_factor: int = D.stage1_dupe_factor,
        stage2_max_seq_length: int = D.stage2_max_seq_length,
        stage2_max_predictions: int = D.stage2_max_predictions,
        stage2_dupe_factor: int = D.stage2_dupe_factor,
        masked_lm_prob: float = D.masked_lm_prob,
        short_seq_prob: float = D.short_seq_prob,
        data_seed: int = D.data_seed,
        whole_word_masking: bool = D.whole_word_masking,
        next_sentence_prediction: bool = D.next_sentence_prediction,
        data_format: str = D.data_format,
        stage1_corpus: str = D.stage1_corpus,
        trainer: str = D.trainer,
        model_size: str = D.model_size,
        training_backend: str = D.training_backend,
        stage1_train_steps: int = D.stage1_train_steps,
        stage2_train_steps: int = D.stage2_train_steps,
        gcp_project: str = D.gcp_project,
        gcp_zone: str = D.gcp_zone,
        tpu_accelerator_type: str = D.tpu_accelerator_type,
        tpu_runtime_version: str = D.tpu_runtime_version,
        tpu_spot: bool = D.tpu_spot,
        tpu_queued: bool = D.tpu_queued,
        tpu_queue_timeout_hours: float = D.tpu_queue_timeout_hours,
        tpu_network: str = D.tpu_network,
        tpu_subnetwork: str = D.tpu_subnetwork,
        tpu_service_account: str = D.tpu_service_account,
        tpu_price_per_hour: float = D.tpu_price_per_hour,
        torch_plan: str = D.torch_plan,
        torch_architecture: str = D.torch_architecture,
        torch_seq_lengths: List[int] = D.torch_seq_lengths,
        torch_train_steps: List[int] = D.torch_train_steps,
        torch_global_batch_size: int = D.torch_global_batch_size,
        torch_micro_batch_size: int = D.torch_micro_batch_size,
        release_uri: str = D.release_uri,
        jglue_uri: str = D.jglue_uri,
        jglue_grid: str = D.jglue_grid,
        jglue_seeds: int = D.jglue_seeds,
    ):
        release = on(release_compute(backend=training_backend, run_id=RUN_ID, variants=variants,
                                     gcp_project=gcp_project, gcp_zone=gcp_zone,
                                     **({"trainjobs": True} if multi else {})), "control", run_id_env=True)
        release.set_caching_options(False)  # releasing compute is never "already done"
        with dsl.ExitHandler(release, name="release-training-compute"):
            # 1. Concrete sources (never cached): the cache key of everything below.
            arguments = locals()  # every pipeline parameter goes to the check (not a hand-kept subset)
            checked = on(check_parameters(**{name: arguments[name] for name in sorted(FIELDS)}), "control")
            sources = on(resolve_sources(
                wikipedia_dump_date=wikipedia_dump_date, cirrus_index_url=cirrus_index_url, cc100_url=cc100_url,
                unidic_url=unidic_url, vibrato_dict_url=vibrato_dict_url), "control").after(checked)
            sources.set_caching_options(False)
            # 2. Downloads, verified against the resolved size/checksum (CC-100 and UniDic below, only
            # when the recipe reads them).
            wiki_dump = on(download_source(url=sources.outputs["wikipedia_url"],
                                           identity=sources.outputs["wikipedia_identity"], extract_member=""))
            # JGLUE (optional, for evaluation): fetched once for every variant, cached by its content.
            jglue_id = on(jglue_identity(jglue_uri=jglue_uri), "control").after(checked)
            jglue_id.set_caching_options(False)
            jglue = on(fetch_jglue(jglue_uri=jglue_uri, identity=jglue_id.output))
            # 3. Wikipedia sentences (MeCab), filtered by length.
            wiki = on(wiki_corpus(wikipedia=wiki_dump.outputs["data"], min_sentence_length=min_sentence_length,
                                  max_sentence_length=max_sentence_length, mecab_dic=mecab_dic))
            # 4. Merge/split: Wikipedia into 8 (+1 held out for evaluation).
            wiki_split = on(split_corpus(source=wiki.outputs["corpus"], num_files=wikipedia_num_shards,
                                         heldout_files=1, seed=split_seed))
            # 5. Tokenizer sample.
            sample = on(sample_corpus(shards=wiki_split.outputs["shards"], lines=tokenizer_sample_lines,
                                      seed=split_seed))
            data = dict(wikipedia_shards=wiki_split.outputs["shards"], wikipedia_names=wiki_split.outputs["names"],
                        stage1_max_seq_length=stage1_max_seq_length, stage1_max_predictions=stage1_max_predictions,
                        stage2_max_seq_length=stage2_max_seq_length, stage2_max_predictions=stage2_max_predictions,
                        masked_lm_prob=masked_lm_prob, short_seq_prob=short_seq_prob, data_seed=data_seed,
                        whole_word_masking=whole_word_masking, model_size=model_size, release_uri=release_uri,
                        wikipedia_dump_date=sources.outputs["wikipedia_dump_date"])
            evaluation = dict(
                heldout_names=wiki_split.outputs["heldout_names"], wikipedia_url=sources.outputs["wikipedia_url"],
                cc100_url=sources.outputs["cc100_url"], jglue_uri=jglue_uri, jglue=jglue.outputs["jglue"],
                jglue_tasks=jglue.outputs["Output"], jglue_grid=jglue_grid, jglue_seeds=jglue_seeds)
            torch_settings = dict(
                torch_plan=torch_plan, torch_architecture=torch_architecture, torch_seq_lengths=torch_seq_lengths,
                torch_train_steps=torch_train_steps, torch_global_batch_size=torch_global_batch_size,
                torch_micro_batch_size=torch_micro_batch_size)
            model_garden = dict(
                stage1_corpus=stage1_corpus,
                stage1_dupe_factor=stage1_dupe_factor, stage2_dupe_factor=stage2_dupe_factor,
                next_sentence_prediction=next_sentence_prediction, training_backend=training_backend,
                stage1_train_steps=stage1_train_steps, stage2_train_steps=stage2_train_steps,
                gcp_project=gcp_project, gcp_zone=gcp_zone, tpu_accelerator_type=tpu_accelerator_type,
                tpu_runtime_version=tpu_runtime_version, tpu_spot=tpu_spot, tpu_queued=tpu_queued,
                tpu_queue_timeout_hours=tpu_queue_timeout_hours, tpu_network=tpu_network,
                tpu_subnetwork=tpu_subnetwork, tpu_service_account=tpu_service_account,
                tpu_price_per_hour=tpu_price_per_hour)
            options = dict(sample=sample.outputs["sample"], vocab_size=vocab_size,
                           character_vocab_size=character_vocab_size, do_lower_case=do_lower_case,
                           sp_model_type=sp_model_type, sp_character_coverage=sp_character_coverage,
                           sp_byte_fallback=sp_byte_fallback, sp_split_digits=sp_split_digits,
                           sp_control_symbols=sp_control_symbols, sp_user_symbols=sp_user_symbols,
                           sp_normalization=sp_normalization, mecab_dic=mecab_dic, word_splitter=word_splitter,
                           seed=split_seed)

            # MeCab once per shard for every MeCab variant (and their tokenizer's sample); nothing is split when
            # the run has none.
            uses_mecab = on(variants_selected(variants=variants, among=list(MECAB_VARIANTS), trainer=trainer,
                                              trainers=["model-garden"]), "control")
            wiki_words = on(split_words(shards=wiki_split.outputs["shards"], mecab_dic=mecab_dic,
                                        enabled=uses_mecab.output))

            def selected(among, trainers):
                return on(variants_selected(variants=variants, among=list(among), trainer=trainer,
                                            trainers=list(trainers)), "control").output == True  # noqa: E712

            def variants_for(stage1_shards, stage1_names, stage1_words, trainers: tuple):
                """Steps 6-12 for one stage-1 layout: tokenizers, then per variant data, training (Model
                Garden, then conversion; or the PyTorch trainer), evaluation, publishing. The variants are laid out statically
                (each behind a condition on `variants` and `trainer`) rather than in a ParallelFor: the
                per-variant pipeline has loops of its own, and kfp.local confuses the loop items of a loop
                nested in another pipeline's loop."""
                stage1 = dict(stage1_shards=stage1_shards, stage1_names=stage1_names)
                split = dict(stage1_words=stage1_words, wikipedia_words=wiki_words.outputs["words"])
                # 6-7. MeCab + WordPiece (UniDic alphabet, WordPiece), for the variants built on it.
                with dsl.If(uses_mecab.output == True, name="mecab-wordpiece"):  # noqa: E712
                    unidic = on(download_source(url=sources.outputs["unidic_url"],
                                                identity=sources.outputs["unidic_identity"], extract_member="lex.csv"))
                    chars = on(alphabet(lex=unidic.outputs["data"]))
                    # The same lines as the text sample (word files keep the line numbers), already split.
                    words_sample = on(sample_corpus(shards=wiki_words.outputs["words"], lines=tokenizer_sample_lines,
                                                    seed=split_seed))
                    wordpiece = on(wordpiece_tokenizer(
                        sample=words_sample.outputs["sample"], words=True, characters=chars.outputs["characters"],
                        vocab_size=vocab_size, limit_alphabet=limit_alphabet, num_unused_tokens=num_unused_tokens,
                        min_frequency=min_frequency, mecab_dic=mecab_dic, do_lower_case=do_lower_case))
                    for name in MECAB_VARIANTS:
                        with dsl.If(selected([name], ["model-garden"]), name=f"build-{name}"):
                            tokenizer = on(variant_tokenizer(variant=name, wordpiece=wordpiece.outputs["tokenizer"],
                                                             **options))
                            model_garden_variant(variant=name, tokenizer=tokenizer.outputs["tokenizer"],
                                                          **stage1, **split, **data, **evaluation, **model_garden)
                # SentencePiece and bytes: their tokenizers come from the sample alone.
                for t in trainers:
                    for name in (v for v in TRAINER_VARIANTS[t] if v not in MECAB_VARIANTS):
                        with dsl.If(selected([name], [t]), name=f"build-{name}-{t}"):
                            words = {}
                            if name == "byte":  # vibrato's dictionary: fetches nothing unless word_splitter=vibrato
                                vibrato = on(download_source(url=sources.outputs["vibrato_dict_url"],
                                                             identity=sources.outputs["vibrato_dict_identity"],
                                                             extract_member=""))
                                words = {"vibrato_dict": vibrato.outputs["data"]}
                            tokenizer = on(variant_tokenizer(variant=name, **options, **words))
                            if t == "torch":
                                torch_variant_pipeline(variant=name, tokenizer=tokenizer.outputs["tokenizer"],
                                                       **stage1, **data, **evaluation, **torch_settings)
                            else:
                                model_garden_variant(variant=name, tokenizer=tokenizer.outputs["tokenizer"],
                                                              **stage1, **split, **data, **evaluation, **model_garden)

            # Stage 1 (the recipe's `stage1_corpus`): CC-100 into 64 shards, downloaded only for it; Wikipedia's
            # shards again; or none (one stage). PyTorch-trainer recipes read CC-100 and Wikipedia.
            with dsl.If(stage1_corpus == "cc100", name="stage1-cc100"):
                cc100 = on(download_source(url=sources.outputs["cc100_url"],
                                           identity=sources.outputs["cc100_identity"], extract_member=""))
                cc100_split = on(split_corpus(source=cc100.outputs["data"], num_files=cc100_num_shards,
                                              heldout_files=0, seed=split_seed))
                cc100_words = on(split_words(shards=cc100_split.outputs["shards"], mecab_dic=mecab_dic,
                                             enabled=uses_mecab.output))
                variants_for(cc100_split.outputs["shards"], cc100_split.outputs["names"], cc100_words.outputs["words"],
                             ("model-garden", "torch"))
            with dsl.Else(name="stage1-wikipedia-or-none"):  # 'none': the stage-1 data tasks write nothing
                variants_for(wiki_split.outputs["shards"], wiki_split.outputs["names"], wiki_words.outputs["words"],
                             ("model-garden",))

    return bert_japanese

