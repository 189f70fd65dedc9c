"""KFP component: the run's first step checks its parameters (a UI run skips the CLI's check)."""

from typing import List

from kfp import dsl

from components.images import image


@dsl.component(base_image=image("data"), install_kfp_package=False)
def check_parameters(
    wikipedia_dump_date: str, cirrus_index_url: str, cc100_url: str, unidic_url: str, vibrato_dict_url: str,
    mecab_dic: str, word_splitter: str,
    min_sentence_length: int, max_sentence_length: int, cc100_num_shards: int, wikipedia_num_shards: int,
    split_seed: int, tokenizer_sample_lines: int, variants: List[str], vocab_size: int, limit_alphabet: int,
    num_unused_tokens: int, min_frequency: int, do_lower_case: bool, character_vocab_size: int,
    sp_model_type: str, sp_character_coverage: float, sp_byte_fallback: bool, sp_split_digits: bool,
    sp_control_symbols: List[str], sp_user_symbols: List[str], sp_normalization: str, stage1_max_seq_length: int,
    stage1_max_predictions: int, stage1_dupe_factor: int, stage2_max_seq_length: int,
    stage2_max_predictions: int, stage2_dupe_factor: int, masked_lm_prob: float, short_seq_prob: float,
    data_seed: int, whole_word_masking: bool, next_sentence_prediction: bool, data_format: str,
    stage1_corpus: str, trainer: str, model_size: str, training_backend: str, stage1_train_steps: int,
    stage2_train_steps: int,
    gcp_project: str, gcp_zone: str, tpu_accelerator_type: str, tpu_runtime_version: str, tpu_spot: bool,
    tpu_queued: bool, tpu_queue_timeout_hours: float, tpu_network: str, tpu_subnetwork: str,
    tpu_service_account: str, tpu_price_per_hour: float, torch_plan: str, torch_architecture: str,
    torch_seq_lengths: List[int], torch_train_steps: List[int], torch_global_batch_size: int,
    torch_micro_batch_size: int, release_uri: str, jglue_uri: str, jglue_grid: str, jglue_seeds: int,
):
    """Fails the run with a message naming the bad parameter, before any data moves.

    Takes every pipeline parameter (tests/test_bad_input.py holds it to
    ``parameters.FIELDS``) and checks them with the CLI's own ``validate``.
    """
    values = dict(locals())  # before the import below adds a name
    from pipelines.parameters import validate

    validate(values)
    print("parameters OK")


@dsl.component(base_image=image("data"), install_kfp_package=False)
def variants_selected(variants: List[str], among: List[str], trainer: str, trainers: List[str]) -> bool:
    """Whether this run builds any of ``among`` with one of ``trainers`` (the DAG lays out every
    variant per trainer, and the MeCab WordPiece steps, behind this condition)."""
    from pipelines.parameters import builds

    return builds(variants, among, trainer, trainers)
