#!/usr/bin/env bash
# The kind path: a laptop cluster with KFP standalone, our images and chart, and a CPU run of
# the pipeline (kind profile: bundled sample corpus, tiny model). Needs docker, kind, kubectl
# and helm. Every command is echoed; PRINT=1 (or --dry-run) prints them without running any.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: deploy/kind.sh [--dry-run] COMMAND

commands:
  up       create the kind cluster and install KFP standalone ($KFP_VERSION, pinned)
  build    build all runtime images (names and tags from components/images.py)
  push     push the built images (set BERTJA_IMAGE_REGISTRY to your registry first)
  images   build the images the pipeline's pods run and load them into the kind cluster
           (not those only a Cloud TPU VM pulls: components/images.py --cluster)
  install  install or upgrade the Helm chart with values-kind.yaml
  run      compile the pipeline with the kind profile and submit a run
  all      up, images, install, run
  down     delete the kind cluster

environment (defaults):
  KIND_CLUSTER=bertja  KIND_NODE_IMAGE=kindest/node:v1.33.1  KFP_VERSION=2.17.0 (at least 2.17.0)
  NAMESPACE=kubeflow   RELEASE=bertja  EXPERIMENT=bert-japanese-kind  API_PORT=8888
  PYTHON=.venv/bin/python  PRINT=0
EOF
}

KIND_CLUSTER=${KIND_CLUSTER:-bertja}
KIND_NODE_IMAGE=${KIND_NODE_IMAGE:-kindest/node:v1.33.1}
# A released kubeflow/pipelines tag (2.17.0: its manifests are the ones applied below). The minimum
# is 2.17.0: older launchers download the sibling {uri}_data/ prefix along with an input artifact
# (DownloadBlob listed by bare prefix; kubeflow/pipelines#12928, first in 2.17.0, keeps to {uri}/).
KFP_VERSION=${KFP_VERSION:-2.17.0}
KFP_MIN_VERSION=2.17.0
NAMESPACE=${NAMESPACE:-kubeflow}
RELEASE=${RELEASE:-bertja}
EXPERIMENT=${EXPERIMENT:-bert-japanese-kind}
API_PORT=${API_PORT:-8888}
PYTHON=${PYTHON:-.venv/bin/python}
PRINT=${PRINT:-0}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CHART=helm/bert-japanese-pipelines
KFP_MANIFESTS=github.com/kubeflow/pipelines/manifests/kustomize
CONTEXT=kind-$KIND_CLUSTER
COMPILED=runs/kind/pipeline.yaml

# Echo a command (shell-quoted, so it can be pasted), then run it unless printing only.
run() {
  local quoted
  printf -v quoted ' %q' "$@"
  echo "+${quoted}"
  [[ $PRINT == 1 ]] || "$@"
}

kubectl_() { run kubectl --context "$CONTEXT" "$@"; }

# KEY REFERENCE DOCKERFILE lines, from the one place that names the images; --cluster: only
# the images pods run (kind never runs the TPU VM trainer, so it neither builds nor loads it).
image_table() { "$PYTHON" -m components.images "$@"; }
version() { "$PYTHON" -m components.images --version; }

check_kfp_version() {
  if [[ ! $KFP_VERSION =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
    echo "KFP_VERSION=$KFP_VERSION: expected a KFP release tag like $KFP_MIN_VERSION" >&2
    return 2
  fi
  if [[ $(printf '%s\n%s\n' "$KFP_MIN_VERSION" "$KFP_VERSION" | sort -V | head -n 1) != "$KFP_MIN_VERSION" ]]; then
    echo "KFP_VERSION=$KFP_VERSION: this pipeline needs KFP >= $KFP_MIN_VERSION (older launchers copy each" \
      "artifact's {uri}_data/ prefix into the pods that read it)" >&2
    return 2
  fi
}

cmd_up() {
  check_kfp_version
  if [[ $PRINT != 1 ]] && kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then
    echo "kind cluster $KIND_CLUSTER exists; reusing it" >&2
  else
    run kind create cluster --name "$KIND_CLUSTER" --image "$KIND_NODE_IMAGE" --wait 5m
  fi
  kubectl_ apply -k "$KFP_MANIFESTS/cluster-scoped-resources?ref=$KFP_VERSION"
  kubectl_ wait --for condition=established --timeout=60s crd/applications.app.k8s.io
  kubectl_ apply -k "$KFP_MANIFESTS/env/platform-agnostic?ref=$KFP_VERSION"
  kubectl_ --namespace "$NAMESPACE" wait --for condition=Available --timeout=20m deployment --all
}

# Arguments go to image_table (none: every image).
cmd_build() {
  local key ref dockerfile version_
  version_=$(version)
  while read -r key ref dockerfile; do
    run docker build --file "$dockerfile" --tag "$ref" --build-arg "BERTJA_VERSION=$version_" .
  done < <(image_table "$@")
}

cmd_push() {
  local key ref dockerfile
  while read -r key ref dockerfile; do
    run docker push "$ref"
  done < <(image_table)
}

cmd_images() {
  cmd_build --cluster
  local key ref dockerfile
  while read -r key ref dockerfile; do
    run kind load docker-image "$ref" --name "$KIND_CLUSTER"
  done < <(image_table --cluster)
}

cmd_install() {
  run helm upgrade --install "$RELEASE" "$CHART" --kube-context "$CONTEXT" \
    --namespace "$NAMESPACE" --values "$CHART/values-kind.yaml" \
    --set-string "image.tag=$(version)" --wait --timeout 10m
}

cmd_run() {
  run mkdir -p "$(dirname "$COMPILED")"
  run "$PYTHON" -m pipelines.cli compile "$COMPILED" --profile kind
  # The KFP API through a port-forward that lives as long as this command.
  local pf_pid=""
  if [[ $PRINT == 1 ]]; then
    run kubectl --context "$CONTEXT" --namespace "$NAMESPACE" port-forward svc/ml-pipeline "$API_PORT:8888"
  else
    echo "+ kubectl --context $CONTEXT --namespace $NAMESPACE port-forward svc/ml-pipeline $API_PORT:8888 &"
    kubectl --context "$CONTEXT" --namespace "$NAMESPACE" port-forward svc/ml-pipeline "$API_PORT:8888" >/dev/null &
    pf_pid=$!
    trap 'kill "$pf_pid" 2>/dev/null || true' EXIT
    local tries=0
    until curl -fsS "http://127.0.0.1:$API_PORT/apis/v2beta1/healthz" >/dev/null 2>&1; do
      (( ++tries > 30 )) && { echo "KFP API not reachable on port $API_PORT" >&2; return 1; }
      sleep 1
    done
  fi
  run "$PYTHON" -m pipelines.cli submit --endpoint "http://127.0.0.1:$API_PORT" \
    --experiment "$EXPERIMENT" --pipeline-file "$COMPILED" --run-name "bert-japanese-kind-$(date -u +%Y%m%d-%H%M%S)"
  echo "UI: kubectl --context $CONTEXT --namespace $NAMESPACE port-forward svc/ml-pipeline-ui 8080:80, then http://localhost:8080" >&2
}

cmd_down() { run kind delete cluster --name "$KIND_CLUSTER"; }

main() {
  if [[ ${1:-} == --dry-run ]]; then PRINT=1; shift; fi
  cd "$ROOT"
  case ${1:-} in
    up) cmd_up ;;
    build) cmd_build ;;
    push) cmd_push ;;
    images) cmd_images ;;
    install) cmd_install ;;
    run) cmd_run ;;
    all) cmd_up; cmd_images; cmd_install; cmd_run ;;
    down) cmd_down ;;
    -h|--help|help) usage ;;
    *) usage >&2; return 2 ;;
  esac
}

main "$@"
