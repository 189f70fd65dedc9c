"""KFP component: Model Garden checkpoint -> Hugging Face directory."""

from kfp import dsl
from kfp.dsl import Input, Model, Output

from components.images import image


@dsl.component(base_image=image("convert"), install_kfp_package=False)
def convert_model(trained: Input[Model], tokenizer: Input[Model], hf_model: Output[Model]):
    """Reads the final stage's latest checkpoint (no TensorFlow) and writes safetensors + tokenizer files."""
    from components import artifacts
    from components.convert.convert import convert_checkpoint

    model_dir = artifacts.resolve(trained.uri, trained.path, artifacts.read_manifest(trained.path)["final_model_dir"])
    result = convert_checkpoint(model_dir, artifacts.data_root(hf_model.uri, hf_model.path),
                                tokenizer_dir=artifacts.data_root(tokenizer.uri, tokenizer.path))
    artifacts.write_manifest(hf_model.path, {"source_checkpoint": result.get("checkpoint"), "stats": result})
    hf_model.metadata.update({k: v for k, v in result.items() if isinstance(v, (str, int, float))})
