#!/usr/bin/env bash
# The screenshots in docs/ui.md: the demo traced by the agent, about a
# minute and a half of load, then pricing restarted with -delay 15ms (a
# slowdown the agent traces from its exec) and another minute of load;
# each page captured by headless chromium with a 1m window, so the
# overview compares the slow minute with the one before.
# Needs root (the agent), redis-server and chromium. Writes to
# bin/ui-docs/ (copy to docs/ui/ to update the docs). Loopback only.
set -u
cd "$(dirname "$0")/.."
B=$PWD/bin/ui-docs/bin; L=$PWD/bin/ui-docs/log; S=$PWD/bin/ui-docs
mkdir -p "$B" "$L"
go build -o "$B/latscope" ./cmd/latscope || exit 1
(cd examples/demo && GOWORK=off go build -o "$B/" ./gateway ./catalog ./pricing ./reviews ./inventory ./loadgen) || exit 1
P=${UI_DOCS_PORT_BASE:-27000}
pids=()
run() { local n=$1; shift; "$@" >"$L/$n.log" 2>&1 & pids+=($!); }
cleanup() { for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null; done; sleep 3; for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; }
trap cleanup EXIT
printf 'export:\n  jaegerQueryURL: http://127.0.0.1:16686\n' >"$S/agent.yaml"
run redis redis-server --port $((P+379)) --bind 127.0.0.1 --save '' --appendonly no
sleep 1
run latscope "$B/latscope" agent --config "$S/agent.yaml" --exe "$B/catalog" --exe "$B/pricing" --exe "$B/inventory" --funcs 'main.*' --http 127.0.0.1:$((P+70))
sleep 3
export OTEL_TRACES_EXPORTER=none
run pricing "$B/pricing" -listen 127.0.0.1:$((P+82)) -redis 127.0.0.1:$((P+379))
PRICING=${pids[-1]}
run reviews "$B/reviews" -listen 127.0.0.1:$((P+83))
run inventory "$B/inventory" -listen 127.0.0.1:$((P+84)) -reviews http://127.0.0.1:$((P+83))
run catalog "$B/catalog" -listen 127.0.0.1:$((P+81)) -pricing 127.0.0.1:$((P+82)) -reviews http://127.0.0.1:$((P+83)) -inventory http://127.0.0.1:$((P+84))
run gateway "$B/gateway" -listen 127.0.0.1:$((P+80)) -catalog http://127.0.0.1:$((P+81))
sleep 4
LOAD=("$B/loadgen" -url "http://127.0.0.1:$((P+80))/product/%d" -ids 1-20 -c 2 -n 10000000)
"${LOAD[@]}" -duration 80s >"$L/load1.log" 2>&1
kill -INT "$PRICING"; sleep 1
run pricing-slow "$B/pricing" -listen 127.0.0.1:$((P+82)) -redis 127.0.0.1:$((P+379)) -delay 15ms
sleep 2
"${LOAD[@]}" -duration 65s >"$L/load2.log" 2>&1 &
load=$!
sleep 60
A=http://127.0.0.1:$((P+70))
shot() { timeout 90 chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars --window-size="${3:-1400,1000}" \
	--virtual-time-budget="${4:-4000}" --screenshot="$S/$1.png" "$2" >/dev/null 2>&1; }
OP='GET+%2Fproduct%2F%7Bid%7D'
shot overview "$A/?window=1m"
shot overview-narrow "$A/?window=1m&kind=server" 420,900
shot traces "$A/traces?service=catalog&operation=$OP&since=2m"
ID=$(curl -s "$A/api/requests?service=catalog&operation=$OP&since=1m&limit=1" |
	python3 -c 'import json,sys; r=json.load(sys.stdin)["rows"][0]; print(r["traceID"]+"?span="+r["spanID"])')
shot trace "$A/trace/$ID"
shot flame "$A/flame?service=catalog&operation=$OP&since=1m&baselineSince=2m&normalize=true" 1400,1500 8000
shot status "$A/status"
wait "$load"
cat "$L/load1.log" "$L/load2.log"
echo "screenshots in $S"
