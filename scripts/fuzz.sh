#!/usr/bin/env bash
# Coverage-guided fuzzing of the loader and validator (libFuzzer via cargo-fuzz).
# Usage: scripts/fuzz.sh [SECONDS]   (default 300). Not part of CI; CI runs the bounded
# mutation smoke in crates/weft-api/tests/robustness.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-300}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
# Seed the corpus with every fixture so the fuzzer starts from real Istio YAML.
mkdir -p fuzz/corpus/load
cp crates/weft-api/tests/fixtures/seeds/*.yaml crates/weft-api/tests/fixtures/invalid/*.yaml fuzz/corpus/load/
# Only a stable toolchain exists here; cargo-fuzz's unstable flags are allowed through
# RUSTC_BOOTSTRAP, and the sanitizer is off (coverage instrumentation still works).
RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none load fuzz/corpus/load -- \
  -max_total_time="$seconds" -max_len=65536 -timeout=10
