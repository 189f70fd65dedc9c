"""``make chart-sync``: copy what the chart repeats from the code into it, so a release bumps
code, images and chart together (tests/test_helm.py fails until this has been run).

- Chart.yaml ``version``/``appVersion`` and values.yaml ``image.tag``: the package version;
- values.yaml ``image.registry`` and ``image.repositories``: components/images.py;
- values.schema.json: the image keys (components/images.py), the pipeline parameter names
  (pipelines/parameters.py), and the profiles a cluster can run (pipelines/profiles.py: those with
  Kubernetes settings) with the rule that those on a gs:// root need the bucket and the project.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from components import images
from pipelines import profiles
from pipelines.parameters import PipelineParameters

CHART = Path(__file__).resolve().parent.parent / "helm" / "bert-japanese-pipelines"


def _sub(text: str, pattern: str, replacement: str, path: Path) -> str:
    new, count = re.subn(pattern, replacement, text, count=1, flags=re.M)
    if count != 1:
        raise SystemExit(f"{path}: no line matches {pattern!r}")
    return new


def main() -> int:
    version = images.version()
    chart_yaml = CHART / "Chart.yaml"
    text = chart_yaml.read_text(encoding="utf-8")
    text = _sub(text, r"^version: .*$", f"version: {version}", chart_yaml)
    text = _sub(text, r"^appVersion: .*$", f'appVersion: "{version}"', chart_yaml)
    chart_yaml.write_text(text, encoding="utf-8")

    values_yaml = CHART / "values.yaml"
    text = values_yaml.read_text(encoding="utf-8")
    text = _sub(text, r"^  tag: .*$", f'  tag: "{version}"', values_yaml)
    text = _sub(text, r"^  registry: .*$", f"  registry: {images.REGISTRY}", values_yaml)
    for key, (repository, _what, _dockerfile) in images.IMAGES.items():
        text = _sub(text, rf"^    {key}: .*$", f"    {key}: {repository}", values_yaml)
    values_yaml.write_text(text, encoding="utf-8")

    schema_json = CHART / "values.schema.json"
    schema = json.loads(schema_json.read_text(encoding="utf-8"))
    repositories = schema["properties"]["image"]["properties"]["repositories"]
    repositories["required"] = list(images.IMAGES)
    repositories["properties"] = {key: {"$ref": "#/definitions/repository"} for key in images.IMAGES}
    names = [f.name for f in dataclasses.fields(PipelineParameters)]
    schema["properties"]["pipeline"]["properties"]["parameters"]["propertyNames"]["enum"] = names
    cluster = [p for p in profiles.PROFILES.values() if p.platform.kubernetes]
    schema["properties"]["pipeline"]["properties"]["profile"]["enum"] = [p.name for p in cluster]
    gcs_rule = schema["allOf"][0]
    on_gcs = [p.name for p in cluster if p.needs_gcs_root]
    gcs_rule["if"]["properties"]["pipeline"]["properties"]["profile"] = {"enum": on_gcs}
    gcs_rule["then"]["description"] = (f"profiles {', '.join(on_gcs)} need a bucket (pipeline root, checkpoints) "
                                       "and parameters.gcp_project (TPU VMs)")
    helpers = CHART / "templates" / "_helpers.tpl"
    text = helpers.read_text(encoding="utf-8")
    listed = " ".join(json.dumps(name) for name in on_gcs)
    text = _sub(text, r'\(has \.Values\.pipeline\.profile \(list [^)]*\)\)',
                f"(has .Values.pipeline.profile (list {listed}))", helpers)
    helpers.write_text(text, encoding="utf-8")
    schema_json.write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"chart synced: version {version}, {len(images.IMAGES)} images, {len(names)} pipeline parameters")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
