#!/usr/bin/env bash
# Run engram on the embedded default: fetch the model if missing, build, serve.
# Extra arguments go to `engram serve` (e.g. --listen 0.0.0.0:8080 --data-dir /var/lib/engram).
set -euo pipefail
cd "$(dirname "$0")/.."
export ENGRAM_MODEL_DIR="${ENGRAM_MODEL_DIR:-$(scripts/fetch-model.sh)}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/engram-target}"
exec cargo run --release --locked -p engram -- serve "$@"
