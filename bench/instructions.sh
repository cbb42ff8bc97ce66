#!/usr/bin/env bash
# bench/instructions.sh -- CPU instructions per request of `weft proxy`, counted by callgrind:
# repeatable where requests/s on a shared 2-core machine are not (runs here have swung by 10 %).
#
# nginx (Debian) is the upstream, bench/bootstrap.yaml the config (its plain route). The worker
# thread's instructions are counted over N HTTP/1.1 requests on 4 connections (h2load --h1),
# after a warm-up, and divided by N. With BASE_WEFT=/path/to/weft the same is counted for a second
# build (say, the commit before a change) and the ratio printed.
#
# Knobs: N=3000 WEFT=target/release/weft BASE_WEFT= SKIP_BUILD=0 PORT_BASE=29000
#        WORK=${TMPDIR:-/tmp}/weft-instructions
# Not a test: it prints numbers; nothing here asserts them.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
N=${N:-3000} PORT_BASE=${PORT_BASE:-29000}
WORK=${WORK:-${TMPDIR:-/tmp}/weft-instructions}
UP=$PORT_BASE PROXY=$((PORT_BASE + 1)) ADMIN=$((PORT_BASE + 2)) PROXY_R=$((PORT_BASE + 3))
mkdir -p "$WORK/nginx/logs" "$WORK/nginx/tmp"
command -v valgrind >/dev/null && command -v h2load >/dev/null && command -v nginx >/dev/null ||
  { apt-get update -q && apt-get install -y -q valgrind nghttp2-client nginx; }
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release --locked -p weft
fi
WEFT=${WEFT:-$ROOT/target/release/weft}
. bench/lib.sh
write_nginx_conf "$WORK/nginx" "$UP"
sed -e "s/{ADMIN}/$ADMIN/; s/{PROXY}/$PROXY/; s/{PROXY_R}/$PROXY_R/; s/{UPSTREAM}/$UP/" \
  bench/bootstrap.yaml > "$WORK/weft.yaml"
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx/" & NGINX_PID=$!
trap 'kill $NGINX_PID 2>/dev/null || true' EXIT

# Instructions per request of one binary.
count() {
  local bin=$1 out="$WORK/callgrind.$$.$RANDOM" pid
  valgrind --tool=callgrind --callgrind-out-file="$out.%p" "$bin" proxy -c "$WORK/weft.yaml" \
    --concurrency 1 -l error > "$WORK/valgrind.log" 2>&1 & pid=$!
  for _ in $(seq 200); do curl -sf "http://127.0.0.1:$ADMIN/ready" >/dev/null 2>&1 && break; sleep 0.1; done
  h2load --h1 -n 200 -c 1 "http://127.0.0.1:$PROXY/" >/dev/null
  callgrind_control -z "$pid" >/dev/null 2>&1
  h2load --h1 -n "$N" -c 4 "http://127.0.0.1:$PROXY/" | grep -q "$N succeeded"
  callgrind_control -d "$pid" >/dev/null 2>&1
  sleep 1
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local total
  total=$(grep -h '^summary' "$out.$pid".* | awk '{s += $2} END {print s}')
  rm -f "$out".*
  echo $((total / N))
}

NEW=$(count "$WEFT")
echo "weft: $NEW instructions per request ($WEFT)"
if [ -n "${BASE_WEFT:-}" ]; then
  BASE=$(count "$BASE_WEFT")
  echo "base: $BASE instructions per request ($BASE_WEFT)"
  python3 -c "print(f'ratio weft/base: {$NEW / $BASE:.3f}')"
fi
