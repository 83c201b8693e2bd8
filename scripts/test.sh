#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test (the model is fetched if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
export ENGRAM_MODEL_DIR="${ENGRAM_MODEL_DIR:-$(scripts/fetch-model.sh)}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/engram-target}"
# The scale-out back-ends' tests talk to real servers: PostgreSQL + pgvector,
# NATS JetStream and Redis (installed once, started if down). No test uses S3
# yet, so its server (a cargo build) is not started here.
eval "$(scripts/services.sh start postgres nats redis)"
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo test --locked --workspace
