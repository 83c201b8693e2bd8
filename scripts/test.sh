#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test (the model is fetched if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
export ENGRAM_MODEL_DIR="${ENGRAM_MODEL_DIR:-$(scripts/fetch-model.sh)}"
export ENGRAM_SWAGGER_UI_DIR="${ENGRAM_SWAGGER_UI_DIR:-$(scripts/fetch-swagger-ui.sh)}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/engram-target}"
# The tests talk to real servers: PostgreSQL + pgvector, NATS JetStream,
# Redis, S3 (s3s-fs), a llama.cpp LLM server and the official Python clients
# (openai, mcp) in a venv, installed once into a cache
# (the first run builds s3s-fs and llama.cpp: ~25 min) and started if down.
eval "$(scripts/services.sh start postgres nats redis s3 llm py ts)"
# Deploy files (compose, Helm, alerts, dashboard, runbooks) against the code.
bash scripts/check-deploy.sh
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo test --locked --workspace
# The API against its own OpenAPI document: schemathesis, >= 10,000 cases per
# mode, no 5xx, no answer off the document, the node still serving after.
bash scripts/fuzz-api.sh embedded
bash scripts/fuzz-api.sh scaleout
# The interactive API page (/docs) in headless Chromium.
bash scripts/docs-browser-test.sh
