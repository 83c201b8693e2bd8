#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test (the model is fetched if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
export ENGRAM_MODEL_DIR="${ENGRAM_MODEL_DIR:-$(scripts/fetch-model.sh)}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/engram-target}"
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo test --locked --workspace
