#!/usr/bin/env bash
# make demo: builds latscope, the demo services and Jaeger v2, starts them
# all on loopback with latscope tracing catalog and pricing (the two
# services without tracing code), drives load through gateway, and keeps
# running until Ctrl-C. Needs root (latscope) and redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/bin
LOG=$PWD/bin/demo-logs
mkdir -p "$BIN" "$LOG"

command -v redis-server >/dev/null || { echo "demo: redis-server missing: apt-get install -y redis-server"; exit 1; }
[ "$(id -u)" = 0 ] || { echo "demo: latscope needs root (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN): sudo make demo"; exit 1; }

echo "demo: building latscope, the demo services and Jaeger (the first Jaeger build takes a few minutes)"
go build -o "$BIN/latscope" ./cmd/latscope
(cd examples/demo && GOWORK=off go build -o "$BIN/" ./gateway ./catalog ./pricing ./reviews ./loadgen)
[ -x "$BIN/jaeger" ] || (cd tools/jaeger && GOWORK=off go build -o "$BIN/jaeger" github.com/jaegertracing/jaeger/cmd/jaeger)

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

run jaeger "$BIN/jaeger" --config tools/jaeger/config.yaml
run redis redis-server --port 6379 --bind 127.0.0.1 --save '' --appendonly no
wait_for redis "Ready to accept"
OTLP=(env OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf)
run pricing "$BIN/pricing" -listen 127.0.0.1:8082 -redis 127.0.0.1:6379
run reviews "${OTLP[@]}" "$BIN/reviews" -listen 127.0.0.1:8083
run catalog "$BIN/catalog" -listen 127.0.0.1:8081 -pricing 127.0.0.1:8082 -reviews http://127.0.0.1:8083
run gateway "${OTLP[@]}" "$BIN/gateway" -listen 127.0.0.1:8080 -catalog http://127.0.0.1:8081
for s in pricing reviews catalog gateway; do wait_for $s "msg=listening"; done

# One latscope traces both services (one per node: it owns the socket
# programs that carry trace context).
run latscope env OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 OTEL_EXPORTER_OTLP_PROTOCOL=grpc \
	"$BIN/latscope" trace --pid "${pid_of[catalog]},${pid_of[pricing]}" --funcs 'main.*' --tree "$LOG/trees"
wait_for latscope "msg=tracing"

cat <<MSG

demo: running. gateway http://127.0.0.1:8080/product/7  (OTel SDK)
      catalog and pricing have no tracing code: latscope traces them.
      Jaeger's query API: http://127.0.0.1:16686/api/traces?service=catalog
      latscope's call trees: $LOG/trees
      logs: $LOG/
demo: sending load (20 s, 4 concurrent), then idling until Ctrl-C
MSG
"$BIN/loadgen" -url 'http://127.0.0.1:8080/product/%d' -ids 1-20 -c 4 -n 100000 -duration 20s
sleep 2
echo; echo "demo: one trace of catalog, as latscope saw it:"
# (awk stops by itself: with pipefail, `| head` would end the demo on SIGPIPE)
awk '/^trace /{n++; show = ($0 ~ /pid '"${pid_of[catalog]}"' /)} show && n>=3 {print; if (++lines == 30) exit}' "$LOG/trees"
echo; echo "demo: Ctrl-C to stop"
while sleep 3600; do :; done
