#!/usr/bin/env bash
# make demo: builds latscope, the demo services and Jaeger v2, starts the
# latscope agent and then the services, all on loopback; the agent traces
# catalog, pricing and inventory (the services without tracing code;
# inventory is a CloudWeGo Hertz service) from their exec, keeps their
# traces and exports them to Jaeger. Drives load through gateway, prints
# a trace from the agent, ends by printing the agent's web UI address,
# and keeps running until Ctrl-C.
# Needs root (latscope); installs redis-server when it is missing.
#
# Ports and the load phase can be changed through the environment (the
# defaults below); JAEGER_BIN names a Jaeger v2 binary to use instead of
# building one into bin/.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/bin
LOG=$PWD/bin/demo-logs
mkdir -p "$BIN" "$LOG"
GATEWAY_PORT=${GATEWAY_PORT:-8080}
CATALOG_PORT=${CATALOG_PORT:-8081}
PRICING_PORT=${PRICING_PORT:-8082}
REVIEWS_PORT=${REVIEWS_PORT:-8083}
INVENTORY_PORT=${INVENTORY_PORT:-8084}
REDIS_PORT=${REDIS_PORT:-6379}
AGENT_PORT=${LATSCOPE_AGENT_PORT:-7070}
export LATSCOPE_JAEGER_QUERY_PORT=${LATSCOPE_JAEGER_QUERY_PORT:-16686}
export LATSCOPE_JAEGER_OTLP_GRPC_PORT=${LATSCOPE_JAEGER_OTLP_GRPC_PORT:-4317}
export LATSCOPE_JAEGER_OTLP_HTTP_PORT=${LATSCOPE_JAEGER_OTLP_HTTP_PORT:-4318}
DEMO_LOAD=${DEMO_LOAD:-20s}
JAEGER=${JAEGER_BIN:-$BIN/jaeger}

[ "$(id -u)" = 0 ] || { echo "demo: latscope needs root (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN): sudo make demo"; exit 1; }
if ! command -v redis-server >/dev/null; then
	echo "demo: installing redis-server (pricing's cache)"
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; } >/dev/null ||
		{ echo "demo: could not install redis-server: apt-get install -y redis-server"; exit 1; }
fi

echo "demo: building latscope, the demo services and Jaeger (the first Jaeger build takes a few minutes)"
go build -o "$BIN/latscope" ./cmd/latscope
(cd examples/demo && GOWORK=off go build -o "$BIN/" ./gateway ./catalog ./pricing ./reviews ./inventory ./loadgen)
[ -x "$JAEGER" ] || (cd tools/jaeger && GOWORK=off go build -o "$JAEGER" github.com/jaegertracing/jaeger/cmd/jaeger)

pids=()
declare -A pid_of
cleanup() {
	trap - EXIT INT TERM
	echo; echo "demo: stopping"
	for ((i=${#pids[@]}-1; i>=0; i--)); do kill -INT "${pids[$i]}" 2>/dev/null || true; sleep 0.2; done
	wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

run() { local name=$1; shift; "$@" >"$LOG/$name.log" 2>&1 & pids+=($!); pid_of[$name]=$!; }
wait_for() { for _ in $(seq 100); do grep -q "$2" "$LOG/$1.log" 2>/dev/null && return; sleep 0.2; done; echo "demo: $1 did not start, see $LOG/$1.log"; exit 1; }

run jaeger "$JAEGER" --config tools/jaeger/config.yaml
run redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no
wait_for redis "Ready to accept"
OTLP=(env OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$LATSCOPE_JAEGER_OTLP_HTTP_PORT OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf)

# The agent first: it traces catalog, pricing and inventory from their
# exec, as it would on a node where they are deployed after it. One agent
# per node (it owns the socket programs that carry trace context).
run latscope env OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$LATSCOPE_JAEGER_OTLP_GRPC_PORT OTEL_EXPORTER_OTLP_PROTOCOL=grpc \
	"$BIN/latscope" agent --exe "$BIN/catalog" --exe "$BIN/pricing" --exe "$BIN/inventory" --funcs 'main.*' --http 127.0.0.1:$AGENT_PORT
wait_for latscope "agent API listening"
AGENT=http://127.0.0.1:$AGENT_PORT

run pricing "$BIN/pricing" -listen 127.0.0.1:$PRICING_PORT -redis 127.0.0.1:$REDIS_PORT
run reviews "${OTLP[@]}" "$BIN/reviews" -listen 127.0.0.1:$REVIEWS_PORT
run inventory "$BIN/inventory" -listen 127.0.0.1:$INVENTORY_PORT -reviews http://127.0.0.1:$REVIEWS_PORT
run catalog "$BIN/catalog" -listen 127.0.0.1:$CATALOG_PORT -pricing 127.0.0.1:$PRICING_PORT -reviews http://127.0.0.1:$REVIEWS_PORT \
	-inventory http://127.0.0.1:$INVENTORY_PORT
run gateway "${OTLP[@]}" "$BIN/gateway" -listen 127.0.0.1:$GATEWAY_PORT -catalog http://127.0.0.1:$CATALOG_PORT
for s in pricing reviews inventory catalog gateway; do wait_for $s "msg=listening"; done
wait_for latscope "service=catalog"
wait_for latscope "service=pricing"
wait_for latscope "service=inventory"

cat <<MSG

demo: running. gateway http://127.0.0.1:$GATEWAY_PORT/product/7  (OTel SDK)
      catalog, pricing and inventory (CloudWeGo Hertz, http://127.0.0.1:$INVENTORY_PORT/stock/7)
      have no tracing code: the latscope agent traces them.
      latscope web UI: $AGENT/   (overview, slow traces, traces, flame graphs, agent status)
      latscope agent:  $AGENT/api/status    (or: $BIN/latscope status --agent $AGENT)
        traces:        $AGENT/api/traces?service=catalog   (Jaeger's query API: Grafana's Jaeger data source can read it)
        slowest:       $BIN/latscope traces --agent $AGENT --service catalog
        metrics:       $AGENT/metrics
      Jaeger (every service, OTLP): http://127.0.0.1:$LATSCOPE_JAEGER_QUERY_PORT/api/traces?service=catalog
      logs: $LOG/
demo: sending load ($DEMO_LOAD, 4 concurrent), then idling until Ctrl-C
MSG
"$BIN/loadgen" -url "http://127.0.0.1:$GATEWAY_PORT/product/%d" -ids 1-20 -c 4 -n 100000 -duration "$DEMO_LOAD"
sleep 2
echo; echo "demo: one trace of catalog, as latscope saw it (the slowest of the load):"
"$BIN/latscope" traces --agent "$AGENT" --service catalog --limit 1
echo "demo: the agent's API: $AGENT/api/status, metrics: $AGENT/metrics"
echo "demo: open latscope's web UI: $AGENT/  (Ctrl-C to stop)"
while sleep 3600; do :; done
