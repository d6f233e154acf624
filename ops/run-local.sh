#!/usr/bin/env bash
# The main job on embedded defaults, end to end on this machine:
# installs the pinned tools, builds helm-service and kube-sim, starts a private
# nats-server with JetStream and kube-sim (the project's Kubernetes API emulator),
# starts the worker, pushes a chart (yours, or the example ops/examples/charts/hello), publishes
# an event (ops/examples/deployment-triggered.json unless given), prints the replies (started,
# finished), `helm list` and what the release created. Everything it starts is stopped on exit.
#
# Usage: ops/run-local.sh [CHART_DIR] [EVENT.json]   (either, both or neither, in any order)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
CHART="$ROOT/ops/examples/charts/hello"
EVENT="$ROOT/ops/examples/deployment-triggered.json"
for arg in "$@"; do
  if [ -d "$arg" ]; then
    [ -f "$arg/Chart.yaml" ] || { echo "$arg has no Chart.yaml: not a chart directory" >&2; exit 2; }
    CHART="$(cd "$arg" && pwd -P)"
  elif [ -f "$arg" ]; then
    EVENT="$arg"
  else
    echo "usage: $0 [CHART_DIR] [EVENT.json] ($arg is neither a directory nor a file)" >&2
    exit 2
  fi
done
"$ROOT/ops/setup.sh" >&2
export PATH="$ROOT/.tools/bin:$PATH"

echo "building helm-service and kube-sim (release)..." >&2
cargo build --release --quiet -p helm-service -p kube-sim --bin helm-service --bin kube-sim --manifest-path "$ROOT/Cargo.toml"
BIN="$ROOT/target/release/helm-service"
SIM="$ROOT/target/release/kube-sim"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/helm-service-local.XXXXXX")"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
NATS_PORT="$(free_port)"
HTTP_PORT="$(free_port)"
NATS_URL="nats://127.0.0.1:$NATS_PORT"

nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$WORK/jetstream" >"$WORK/nats.log" 2>&1 &
PIDS+=($!)
# Wait (bounded) until nats-server accepts connections.
python3 - "$NATS_PORT" <<'PY' || { echo "nats-server did not start:" >&2; tail -n 20 "$WORK/nats.log" >&2; exit 1; }
import socket, sys, time
deadline = time.time() + 15
while True:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
        break
    except OSError:
        if time.time() > deadline:
            raise
        time.sleep(0.05)
PY
# kube-sim stands in for a cluster (with the Gateway API CRDs, so charts with HTTPRoutes
# install); helm and the worker reach it through its kubeconfig.
KUBECONFIG="$WORK/kubeconfig.json"
"$SIM" --kubeconfig-out "$KUBECONFIG" --rollout-delay-ms 500 --gateway-api >"$WORK/kube-sim.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 150); do [ -s "$KUBECONFIG" ] && break; sleep 0.1; done
[ -s "$KUBECONFIG" ] || { echo "kube-sim did not start:" >&2; tail -n 20 "$WORK/kube-sim.log" >&2; exit 1; }
export KUBECONFIG
# helm keeps its cache and config in the work dir, not in the user's home.
export HELM_CACHE_HOME="$WORK/helm/cache" HELM_CONFIG_HOME="$WORK/helm/config" HELM_DATA_HOME="$WORK/helm/data"

PROJECT="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["data"]["project"])' "$EVENT")"
STAGE="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["data"]["stage"])' "$EVENT")"
SERVICE="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["data"]["service"])' "$EVENT")"
echo "pushing chart $CHART for $PROJECT/$STAGE/$SERVICE" >&2
"$BIN" charts --nats-url "$NATS_URL" push --project "$PROJECT" --stage "$STAGE" --service "$SERVICE" \
  "$CHART" >&2

"$BIN" run --nats-url "$NATS_URL" --http-addr "127.0.0.1:$HTTP_PORT" \
  --helm-bin "$ROOT/.tools/bin/helm" --kubeconfig "$KUBECONFIG" >"$WORK/worker.log" 2>&1 &
PIDS+=($!)

# Wait (bounded) until the worker is bound to JetStream.
for _ in $(seq 1 200); do
  if python3 - "$HTTP_PORT" <<'PY' 2>/dev/null; then break; fi
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/readyz", timeout=1)
PY
  sleep 0.1
done
python3 - "$HTTP_PORT" <<'PY' || { echo "worker did not become ready:" >&2; tail -n 30 "$WORK/worker.log" >&2; exit 1; }
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/readyz", timeout=1)
PY
echo "worker ready (metrics on http://127.0.0.1:$HTTP_PORT/metrics); publishing $EVENT" >&2

"$BIN" send --nats-url "$NATS_URL" --file "$EVENT" --wait 120s
echo
echo "helm list -A:"
helm list -A
echo
echo "what the release created (kubectl get all,cm,secrets,pvc,ing -A, without helm's records):"
kubectl get all,cm,secrets,pvc,ing -A 2>/dev/null | grep -v "sh.helm.release" || true
echo >&2
echo "worker log:" >&2
tail -n 20 "$WORK/worker.log" >&2
