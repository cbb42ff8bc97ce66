#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer via cargo-fuzz) of the config loader and validator
# (`load`) and of an HTTP listener fed raw client bytes in process (`http_listener`).
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]   (default: 300 seconds for each of load and
# http_listener). Not part of CI; CI runs the bounded mutation smoke in
# crates/weft-api/tests/robustness.rs and the in-process exchange test of weft-proxy.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-300}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(load http_listener)
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
# Seed each corpus so the fuzzer starts from real input: Istio YAML for the loader, requests of
# every kind for the listener.
mkdir -p fuzz/corpus/load fuzz/corpus/http_listener
cp crates/weft-api/tests/fixtures/seeds/*.yaml crates/weft-api/tests/fixtures/invalid/*.yaml fuzz/corpus/load/
cp fuzz/corpus_seeds/http_listener/* fuzz/corpus/http_listener/
for target in "${targets[@]}"; do
  # Only a stable toolchain exists here; cargo-fuzz's unstable flags are allowed through
  # RUSTC_BOOTSTRAP, and the sanitizer is off (coverage instrumentation still works).
  RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none "$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -max_len=65536 -timeout=20
done
