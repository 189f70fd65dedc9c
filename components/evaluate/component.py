"""KFP component: fill-mask sanity and held-out masked-LM accuracy of the converted model."""

from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from components.images import image


@dsl.component(base_image=image("convert"), install_kfp_package=False)
def evaluate_model(hf_model: Input[Model], heldout: Input[List[Dataset]], metrics: Output[Metrics],
                   fill_mask: Output[Markdown], results: Output[Dataset]):
    """Fill-mask on fixed sentences (a table in the UI) and MLM/NSP accuracy on held-out records."""
    from components import artifacts, reports
    from components.evaluate.core import evaluate_model as evaluate

    eval_data = [f for h in heldout for f in artifacts.data_files(h.uri, h.path)]
    out_dir = artifacts.data_root(results.uri, results.path)
    result = evaluate(artifacts.data_root(hf_model.uri, hf_model.path), output_dir=out_dir, eval_data=eval_data)
    artifacts.write_manifest(results.path, {"files": sorted(result.get("files", [])), "metrics": result.get("metrics", {})})
    reports.log_metrics(metrics, result.get("metrics", {}))
    with open(fill_mask.path, "w") as f:
        f.write(result.get("markdown", ""))
    print(result.get("markdown", ""))
