"""KFP components: fill-mask sanity and held-out masked-LM accuracy of a converted or PyTorch-trained model; JGLUE
(identity, fetch, one fine-tuning task per JGLUE task, the results table)."""

from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from components.images import image


@dsl.component(base_image=image("convert"), install_kfp_package=False)
def evaluate_model(hf_model: Input[Model], heldout: Input[List[Dataset]], metrics: Output[Metrics],
                   fill_mask: Output[Markdown], results: Output[Dataset], seq_length: int = 0,
                   mask_rate: float = 0.15):
    """Fill-mask on fixed sentences (a table in the UI) and MLM/NSP accuracy on held-out records
    (TFRecords), or MLM accuracy on held-out token shards masked at ``mask_rate`` in sequences of
    ``seq_length`` (the PyTorch trainer's last stage)."""
    from components import artifacts, reports
    from components.evaluate.core import evaluate_model as evaluate

    eval_data = [f for h in heldout for f in artifacts.data_files(h.uri, h.path)]
    out_dir = artifacts.data_root(results.uri, results.path)
    result = evaluate(artifacts.data_root(hf_model.uri, hf_model.path), output_dir=out_dir, eval_data=eval_data,
                      seq_length=int(seq_length), mask_rate=float(mask_rate))
    artifacts.write_manifest(results.path, {"files": sorted(result.get("files", [])), "metrics": result.get("metrics", {})})
    reports.log_metrics(metrics, result.get("metrics", {}))
    with open(fill_mask.path, "w") as f:
        f.write(result.get("markdown", ""))
    print(result.get("markdown", ""))


@dsl.component(base_image=image("data"), install_kfp_package=False)
def jglue_identity(jglue_uri: str) -> str:
    """The content identity of the JGLUE data ("" for none): the fetch step's cache key, so this
    step itself is never cached."""
    from components.evaluate.fetch import identity

    return identity(jglue_uri)


@dsl.component(base_image=image("data"), install_kfp_package=False)
def fetch_jglue(jglue_uri: str, identity: str, jglue: Output[Dataset]) -> List[str]:
    """JGLUE's task files, verified and checked line by line; returns the tasks found ([]: none)."""
    from components import artifacts
    from components.evaluate.fetch import fetch

    result = fetch(jglue_uri, identity, artifacts.data_root(jglue.uri, jglue.path)) if jglue_uri else \
        {"tasks": [], "files": []}
    artifacts.write_manifest(jglue.path, {"source_uri": jglue_uri, "identity": identity, **result})
    return result["tasks"]


@dsl.component(base_image=image("convert"), install_kfp_package=False)
def finetune_jglue(hf_model: Input[Model], jglue: Input[Dataset], task: str, grid: str, seeds: int,
                   result: Output[Dataset], metrics: Output[Metrics]):
    """One JGLUE task: JGLUE's grid on train, selected on dev (KFP Metrics: its scores and cost)."""
    import json

    from components import artifacts, reports
    from components.evaluate.jglue import evaluate_task

    scored = evaluate_task(artifacts.data_root(hf_model.uri, hf_model.path),
                           artifacts.data_root(jglue.uri, jglue.path), task, grid=grid, seeds=seeds)
    artifacts.write_manifest(result.path, scored)
    reports.log_metrics(metrics, {task: {**scored["metrics"], **{f"{m}_std": v for m, v in scored["std"].items()}},
                                  f"{task}_cost": scored["cost"]})
    print(json.dumps({task: scored["metrics"], "cost": scored["cost"]}, indent=2))


@dsl.component(base_image=image("convert"), install_kfp_package=False)
def jglue_report(hf_model: Input[Model], results: Input[List[Dataset]], model_size: str, variant: str,
                 table: Output[Markdown], metrics: Output[Metrics], report: Output[Dataset]) -> str:
    """The recipe's table (with Tohoku's published scores) in the UI; returns it with the scores as
    JSON for the model card."""
    import json

    from components import artifacts, reports
    from components.evaluate.jglue import write_results
    from components.publish.naming import model_name

    per_task = [artifacts.read_manifest(r.path) for r in results]
    out = write_results({r["task"]: r for r in per_task}, output_dir=artifacts.data_root(report.uri, report.path),
                        model_dir=artifacts.data_root(hf_model.uri, hf_model.path),
                        model_name=model_name(model_size, variant))
    artifacts.write_manifest(report.path, {"files": out["files"], "results": out["results"]})
    reports.log_metrics(metrics, out["results"])
    with open(table.path, "w") as f:
        f.write(out["markdown"])
    print(out["markdown"])
    return json.dumps({"markdown": out["markdown"], "results": out["results"]}, ensure_ascii=False)


@dsl.component(base_image=image("data"), install_kfp_package=False)
def no_jglue() -> str:
    """The model card's JGLUE section when the run has no JGLUE data (KFP's If/Else needs a branch)."""
    return ""
