#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test (the model is fetched if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
export ENGRAM_MODEL_DIR="${ENGRAM_MODEL_DIR:-$(scripts/fetch-model.sh)}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/engram-target}"
# The tests talk to real servers: PostgreSQL + pgvector, NATS JetStream,
# Redis, S3 (s3s-fs) and a llama.cpp LLM server, installed once into a cache
# (the first run builds s3s-fs and llama.cpp: ~25 min) and started if down.
eval "$(scripts/services.sh start postgres nats redis s3 llm)"
# Deploy files (compose, Helm, alerts, dashboard, runbooks) against the code.
bash scripts/check-deploy.sh
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo test --locked --workspace
