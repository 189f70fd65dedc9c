"""KFP component: copy the converted model to its release location with a model card."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components.images import image


@dsl.component(base_image=image("convert"), install_kfp_package=False)
def publish_model(hf_model: Input[Model], evaluation: Input[Dataset], release_uri: str, variant: str,
                  model_size: str, wikipedia_dump_date: str, cc100_url: str, wikipedia_url: str,
                  release: Output[Model], jglue: str = ""):
    """Publishes to ``release_uri`` (or, when empty, into this artifact) with a generated README.
    ``jglue``: the JGLUE report step's JSON (its table goes into the card); empty without JGLUE."""
    import json

    from components import artifacts, storage
    from components.publish.core import publish_model as publish
    from components.publish.naming import model_name, release_name

    evaluated = artifacts.read_manifest(evaluation.path)
    # the evaluation's metrics.json carries the fill-mask examples for the card, not just numbers
    metrics = (artifacts.resolve(evaluation.uri, evaluation.path, "metrics.json")
               if "metrics.json" in evaluated.get("files", []) else evaluated.get("metrics", {}))
    target = release_uri.rstrip("/") if release_uri else artifacts.data_root(release.uri, release.path)
    if release_uri:
        target = storage.join(target, release_name(model_size, variant, wikipedia_dump_date))
    result = publish(artifacts.data_root(hf_model.uri, hf_model.path), target, metrics=metrics,
                     model_name=model_name(model_size, variant), variant=variant,
                     sources={"wikipedia_dump_date": wikipedia_dump_date, "wikipedia_url": wikipedia_url,
                              "cc100_url": cc100_url},
                     jglue_table=json.loads(jglue)["markdown"] if jglue else None)
    artifacts.write_manifest(release.path, {"release_uri": target, "stats": result})
    release.metadata.update({"release_uri": target, "variant": variant})
