"""KFP component: the run's first step checks its parameters (a UI run skips the CLI's check)."""

from typing import List

from kfp import dsl

from components.images import image


@dsl.component(base_image=image("data"), install_kfp_package=False)
def check_parameters(cc100_num_shards: int, wikipedia_num_shards: int, tokenizer_sample_lines: int,
                     variants: List[str], vocab_size: int, limit_alphabet: int, num_unused_tokens: int,
                     min_frequency: int, min_sentence_length: int, max_sentence_length: int,
                     stage1_max_seq_length: int, stage1_max_predictions: int, stage2_max_seq_length: int,
                     stage2_max_predictions: int, stage1_dupe_factor: int, stage2_dupe_factor: int,
                     masked_lm_prob: float, model_size: str, training_backend: str, gcp_project: str,
                     gcp_zone: str, tpu_accelerator_type: str, tpu_runtime_version: str,
                     wikipedia_dump_date: str, release_uri: str):
    """Fails the run with a message naming the bad parameter, before any data moves."""
    from pipelines.parameters import validate

    validate(dict(locals()))
    print("parameters OK")


@dsl.component(base_image=image("data"), install_kfp_package=False)
def variant_selected(variants: List[str], variant: str) -> bool:
    """Whether this run builds ``variant`` (the DAG lays out every variant behind this condition)."""
    from pipelines.parameters import variant_selected as selected

    return selected(variants, variant)
