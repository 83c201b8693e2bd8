#!/usr/bin/env bash
# Write-acknowledgement latency on an existing embedded data dir, without
# workers (nothing embeds) and with one, twice each (BENCHMARKS.md).
#
#   scripts/ack-latency.sh DATA_DIR [SAMPLES]
set -uo pipefail
cd "$(dirname "$0")/.."
DATA="${1:?usage: scripts/ack-latency.sh DATA_DIR [SAMPLES]}"
SAMPLES="${2:-300}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/engram-target}"
export ENGRAM_MODEL_DIR="${ENGRAM_MODEL_DIR:-$(scripts/fetch-model.sh)}"
cargo build --locked --release -q -p engram -p engram-bench || exit 1
BIN="$CARGO_TARGET_DIR/release"
for w in 0 1 0 1; do
    ENGRAM_AUTH__ENABLED=false "$BIN/engram" serve --data-dir "$DATA" --listen 127.0.0.1:18494 \
        --workers "$w" >"/tmp/ack-latency-serve-$w.log" 2>&1 &
    PID=$!
    for _ in $(seq 300); do curl -fsS http://127.0.0.1:18494/readyz >/dev/null 2>&1 && break; sleep 0.2; done
    echo "== workers $w"
    # Without workers the load never becomes idle: stop it once the line is out.
    timeout 120 "$BIN/engram-bench" --url http://127.0.0.1:18494 load --n 0 --queries 0 \
        --concurrency 1 --recall-queries 0 --ack-samples "$SAMPLES" --namespace "ack$w$RANDOM" 2>&1 |
        grep "write ack"
    kill "$PID"
    wait "$PID" 2>/dev/null
done
