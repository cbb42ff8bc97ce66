#!/usr/bin/env bash
# Regenerates crates/weft-proxy/descriptors/envoy.bin from the protos inside the envoy-types crate
# the workspace locks. Run after changing tools/envoy-descriptors/src/main.rs's list of protos.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(cargo metadata --format-version 1 --locked |
  python3 -c 'import json,sys; m=json.load(sys.stdin); print([p["manifest_path"] for p in m["packages"] if p["name"]=="envoy-types"][0])')
cargo run --release --manifest-path tools/envoy-descriptors/Cargo.toml -- \
  "$(dirname "$dir")/proto" crates/weft-proxy/descriptors/envoy.bin
