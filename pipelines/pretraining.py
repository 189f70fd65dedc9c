"""The bert-japanese DAG, top to bottom in the order of the recipe's README.

resolve sources -> download (Wikipedia CirrusSearch, CC-100, UniDic) -> Wikipedia
sentences -> merge/split into shards -> tokenizer sample -> alphabet -> WordPiece
tokenizer -> per model variant: tokenizer, pretraining TFRecords per shard
(ParallelFor), two-stage training, conversion, evaluation, publishing. Training
sits inside an ExitHandler whose exit task releases the TPU VMs whatever happens.

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
from components.train.component import train_model
from components.train.stages import training_root
from pipelines import platform as k8s
from pipelines.check_component import check_parameters, variant_selected
from pipelines.parameters import FIELDS, VARIANTS, PipelineParameters
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

    @dsl.pipeline(name="bert-japanese-variant",
                  description="One model variant: tokenizer, TFRecords per shard, two-stage training, "
                              "conversion, evaluation, publishing.")
    def variant_pipeline(
        variant: str, wordpiece: Model, cc100_shards: Dataset, cc100_names: List[str],
        wikipedia_shards: Dataset, wikipedia_names: List[str], heldout_names: List[str],
        stage1_max_seq_length: int, stage1_max_predictions: int, stage1_dupe_factor: int,
        stage2_max_seq_length: int, stage2_max_predictions: int, stage2_dupe_factor: int,
        masked_lm_prob: float, short_seq_prob: float, data_seed: int,
        model_size: str, training_backend: str, stage1_train_steps: int, stage2_train_steps: int,
        gcp_project: str, gcp_zone: str, tpu_accelerator_type: str, tpu_runtime_version: str, tpu_spot: bool,
        tpu_queued: bool, tpu_queue_timeout_hours: float, tpu_network: str, tpu_subnetwork: str,
        tpu_service_account: str,
        tpu_price_per_hour: float, release_uri: str, wikipedia_dump_date: str, wikipedia_url: str, cc100_url: str,
        jglue_uri: str, jglue: Dataset, jglue_tasks: List[str], jglue_grid: str, jglue_seeds: int,
    ) -> Model:
        tokenizer = on(variant_tokenizer(variant=variant, wordpiece=wordpiece))

        # Stage 1 data: CC-100, seq 128, 19 predictions, dupe 5 (one task per shard).
        with dsl.ParallelFor(cc100_names, parallelism=profile.data_parallelism, name="cc100-shards") as shard:
            stage1 = on(pretraining_data(
                shards=cc100_shards, shard=shard, tokenizer=tokenizer.outputs["tokenizer"],
                max_seq_length=stage1_max_seq_length, max_predictions=stage1_max_predictions,
                dupe_factor=stage1_dupe_factor, masked_lm_prob=masked_lm_prob, short_seq_prob=short_seq_prob,
                base_seed=data_seed))
        # Stage 2 data: Wikipedia, seq 512, 76 predictions, dupe 30.
        with dsl.ParallelFor(wikipedia_names, parallelism=profile.data_parallelism, name="wikipedia-shards") as shard:
            stage2 = on(pretraining_data(
                shards=wikipedia_shards, shard=shard, tokenizer=tokenizer.outputs["tokenizer"],
                max_seq_length=stage2_max_seq_length, max_predictions=stage2_max_predictions,
                dupe_factor=stage2_dupe_factor, masked_lm_prob=masked_lm_prob, short_seq_prob=short_seq_prob,
                base_seed=data_seed))
        # Held-out Wikipedia shard, same format as stage 2: masked-LM accuracy on unseen text.
        with dsl.ParallelFor(heldout_names, name="heldout-shards") as shard:
            heldout = on(pretraining_data(
                shards=wikipedia_shards, shard=shard, tokenizer=tokenizer.outputs["tokenizer"],
                max_seq_length=stage2_max_seq_length, max_predictions=stage2_max_predictions,
                dupe_factor=1, masked_lm_prob=masked_lm_prob, short_seq_prob=short_seq_prob,
                base_seed=data_seed))

        # Stage 1 on CC-100, then stage 2 on Wikipedia initialised from stage 1.
        trained = on(train_model(
            stage1_examples=dsl.Collected(stage1.outputs["examples"]),
            stage2_examples=dsl.Collected(stage2.outputs["examples"]),
            tokenizer=tokenizer.outputs["tokenizer"], variant=variant, model_size=model_size,
            backend=training_backend, stage1_max_seq_length=stage1_max_seq_length,
            stage1_max_predictions=stage1_max_predictions, stage2_max_seq_length=stage2_max_seq_length,
            stage2_max_predictions=stage2_max_predictions,
            stage1_train_steps=stage1_train_steps, stage2_train_steps=stage2_train_steps,
            training_root=train_root, trainer_image=image("train-tpu"), gcp_project=gcp_project, gcp_zone=gcp_zone, tpu_accelerator_type=tpu_accelerator_type,
            tpu_runtime_version=tpu_runtime_version, tpu_spot=tpu_spot, tpu_queued=tpu_queued,
            tpu_queue_timeout_hours=tpu_queue_timeout_hours,
            tpu_network=tpu_network, tpu_subnetwork=tpu_subnetwork, tpu_service_account=tpu_service_account,
            tpu_price_per_hour=tpu_price_per_hour),
            "train", run_id_env=True)
        if plat.resources:  # a cluster; under kfp.local a failure should end the run at once
            trained.set_retry(**TRAIN_RETRY)
        converted = on(convert_model(trained=trained.outputs["model"], tokenizer=tokenizer.outputs["tokenizer"]),
                       "convert")
        evaluated = on(evaluate_model(hf_model=converted.outputs["hf_model"],
                                      heldout=dsl.Collected(heldout.outputs["examples"])), "convert")
        # JGLUE: one pod per task, in parallel; each runs its task's whole grid and picks on dev (so
        # the choice needs no further step and a task's points share one model load), then the table.
        with dsl.If(jglue_uri != "", name="jglue"):
            with dsl.ParallelFor(jglue_tasks, name="jglue-tasks") as jglue_task:
                tuned = on(finetune_jglue(hf_model=converted.outputs["hf_model"], jglue=jglue, task=jglue_task,
                                          grid=jglue_grid, seeds=jglue_seeds), "convert")
            jglue_table = on(jglue_report(hf_model=converted.outputs["hf_model"],
                                          results=dsl.Collected(tuned.outputs["result"]), model_size=model_size,
                                          variant=variant), "convert")
        with dsl.Else(name="no-jglue"):
            no_table = on(no_jglue(), "control")
        published = on(publish_model(
            hf_model=converted.outputs["hf_model"], evaluation=evaluated.outputs["results"],
            release_uri=release_uri, variant=variant, model_size=model_size,
            wikipedia_dump_date=wikipedia_dump_date, cc100_url=cc100_url, wikipedia_url=wikipedia_url,
            jglue=dsl.OneOf(jglue_table.outputs["Output"], no_table.output)),
            "convert", uses_secrets=True)
        return published.outputs["release"]

    @dsl.pipeline(name=PIPELINE_NAME, pipeline_root=profile.pipeline_root,
                  description="Tohoku bert-japanese recipe: raw Japanese text to released Japanese BERT models "
                              f"(profile: {profile.name}).")
    def bert_japanese(
        wikipedia_dump_date: str = D.wikipedia_dump_date,
        cirrus_index_url: str = D.cirrus_index_url,
        cc100_url: str = D.cc100_url,
        unidic_url: str = D.unidic_url,
        mecab_dic: str = D.mecab_dic,
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
        stage1_max_seq_length: int = D.stage1_max_seq_length,
        stage1_max_predictions: int = D.stage1_max_predictions,
        stage1_dupe_factor: int = D.stage1_dupe_factor,
        stage2_max_seq_length: int = D.stage2_max_seq_length,
        stage2_max_predictions: int = D.stage2_max_predictions,
        stage2_dupe_factor: int = D.stage2_dupe_factor,
        masked_lm_prob: float = D.masked_lm_prob,
        short_seq_prob: float = D.short_seq_prob,
        data_seed: int = D.data_seed,
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
        release_uri: str = D.release_uri,
        jglue_uri: str = D.jglue_uri,
        jglue_grid: str = D.jglue_grid,
        jglue_seeds: int = D.jglue_seeds,
    ):
        release = on(release_compute(backend=training_backend, run_id=RUN_ID, variants=variants,
                                     gcp_project=gcp_project, gcp_zone=gcp_zone), "control", run_id_env=True)
        release.set_caching_options(False)  # releasing compute is never "already done"
        with dsl.ExitHandler(release, name="release-training-compute"):
            # 1. Concrete sources (never cached): the cache key of everything below.
            arguments = locals()  # every pipeline parameter goes to the check (not a hand-kept subset)
            checked = on(check_parameters(**{name: arguments[name] for name in sorted(FIELDS)}), "control")
            sources = on(resolve_sources(
                wikipedia_dump_date=wikipedia_dump_date, cirrus_index_url=cirrus_index_url, cc100_url=cc100_url,
                unidic_url=unidic_url), "control").after(checked)
            sources.set_caching_options(False)
            # 2. Downloads, verified against the resolved size/checksum.
            wiki_dump = on(download_source(url=sources.outputs["wikipedia_url"],
                                           identity=sources.outputs["wikipedia_identity"], extract_member=""))
            cc100 = on(download_source(url=sources.outputs["cc100_url"],
                                       identity=sources.outputs["cc100_identity"], extract_member=""))
            unidic = on(download_source(url=sources.outputs["unidic_url"],
                                        identity=sources.outputs["unidic_identity"], extract_member="lex.csv"))
            # JGLUE (optional, for evaluation): fetched once for every variant, cached by its content.
            jglue_id = on(jglue_identity(jglue_uri=jglue_uri), "control").after(checked)
            jglue_id.set_caching_options(False)
            jglue = on(fetch_jglue(jglue_uri=jglue_uri, identity=jglue_id.output))
            # 3. Wikipedia sentences (MeCab), filtered by length.
            wiki = on(wiki_corpus(wikipedia=wiki_dump.outputs["data"], min_sentence_length=min_sentence_length,
                                  max_sentence_length=max_sentence_length, mecab_dic=mecab_dic))
            # 4. Merge/split: CC-100 into 64 shards, Wikipedia into 8 (+1 held out for evaluation).
            cc100_split = on(split_corpus(source=cc100.outputs["data"], num_files=cc100_num_shards,
                                          heldout_files=0, seed=split_seed))
            wiki_split = on(split_corpus(source=wiki.outputs["corpus"], num_files=wikipedia_num_shards,
                                         heldout_files=1, seed=split_seed))
            # 5-7. Tokenizer sample, UniDic alphabet, WordPiece tokenizer.
            sample = on(sample_corpus(shards=wiki_split.outputs["shards"], lines=tokenizer_sample_lines,
                                      seed=split_seed))
            chars = on(alphabet(lex=unidic.outputs["data"]))
            wordpiece = on(wordpiece_tokenizer(
                sample=sample.outputs["sample"], characters=chars.outputs["characters"], vocab_size=vocab_size,
                limit_alphabet=limit_alphabet, num_unused_tokens=num_unused_tokens, min_frequency=min_frequency,
                mecab_dic=mecab_dic, do_lower_case=do_lower_case))
            # 8-12. Per variant: data, training, conversion, evaluation, publishing. The variants are
            # laid out statically (each behind a condition on the `variants` parameter) rather than in a
            # ParallelFor: the per-variant pipeline has loops of its own, and kfp.local confuses the
            # loop items of a loop nested in another pipeline's loop.
            for name in VARIANTS:
                selected = on(variant_selected(variants=variants, variant=name), "control")
                with dsl.If(selected.output == True, name=f"build-{name}"):  # noqa: E712 (a KFP condition)
                    variant_pipeline(
                        variant=name, wordpiece=wordpiece.outputs["tokenizer"],
                        cc100_shards=cc100_split.outputs["shards"], cc100_names=cc100_split.outputs["names"],
                        wikipedia_shards=wiki_split.outputs["shards"], wikipedia_names=wiki_split.outputs["names"],
                        heldout_names=wiki_split.outputs["heldout_names"],
                        stage1_max_seq_length=stage1_max_seq_length, stage1_max_predictions=stage1_max_predictions,
                        stage1_dupe_factor=stage1_dupe_factor, stage2_max_seq_length=stage2_max_seq_length,
                        stage2_max_predictions=stage2_max_predictions, stage2_dupe_factor=stage2_dupe_factor,
                        masked_lm_prob=masked_lm_prob, short_seq_prob=short_seq_prob, data_seed=data_seed,
                        model_size=model_size, training_backend=training_backend,
                        stage1_train_steps=stage1_train_steps, stage2_train_steps=stage2_train_steps,
                        gcp_project=gcp_project, gcp_zone=gcp_zone, tpu_accelerator_type=tpu_accelerator_type,
                        tpu_runtime_version=tpu_runtime_version, tpu_spot=tpu_spot, tpu_queued=tpu_queued,
                        tpu_queue_timeout_hours=tpu_queue_timeout_hours,
                        tpu_network=tpu_network, tpu_subnetwork=tpu_subnetwork,
                        tpu_service_account=tpu_service_account,
                        tpu_price_per_hour=tpu_price_per_hour, release_uri=release_uri,
                        wikipedia_dump_date=sources.outputs["wikipedia_dump_date"],
                        wikipedia_url=sources.outputs["wikipedia_url"], cc100_url=sources.outputs["cc100_url"],
                        jglue_uri=jglue_uri, jglue=jglue.outputs["jglue"], jglue_tasks=jglue.outputs["Output"],
                        jglue_grid=jglue_grid, jglue_seeds=jglue_seeds)

    return bert_japanese

