#!/usr/bin/env bash
# LoCoMo dev retrieval quality in the scale-out mode (PostgreSQL full-text
# search), with common terms on (postgres.keyword_common_cutoff = 0.01) and
# off (0), for both turn formats (BENCHMARKS.md).
#
#   scripts/locomo-pg.sh
#
# Each format is loaded once into a fresh database, then ANALYZE and 35 s for
# the keyword index to re-read the statistics, then the evaluation at 0.01;
# the node is restarted at 0 and the evaluation repeated (the load is
# idempotent by client id). Release binaries; PostgreSQL from scripts/services.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/engram-target}"
export ENGRAM_MODEL_DIR="${ENGRAM_MODEL_DIR:-$(scripts/fetch-model.sh)}"
cargo build --locked --release -q -p engram -p engram-bench
BIN="$CARGO_TARGET_DIR/release"
eval "$(scripts/services.sh start postgres)"
PSQL=(psql -h 127.0.0.1 -p 55432 -U engram)
DB="locomo_$(date +%s)"
"${PSQL[@]}" -d engram -qc "CREATE DATABASE $DB"
URL=http://127.0.0.1:18493
PID=
start() {
    env ENGRAM_AUTH__ENABLED=false ENGRAM_STORE=postgres \
        ENGRAM_POSTGRES__URL="postgres://engram@127.0.0.1:55432/$DB" \
        ENGRAM_POSTGRES__KEYWORD_COMMON_CUTOFF="$1" \
        "$BIN/engram" serve --listen 127.0.0.1:18493 >"/tmp/locomo-pg-serve-$1.log" 2>&1 &
    PID=$!
    for _ in $(seq 600); do curl -fsS "$URL/readyz" >/dev/null 2>&1 && return 0; sleep 0.2; done
    echo "engram did not start" >&2
    exit 1
}
stop() { [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true; PID=; }
trap 'stop; "${PSQL[@]}" -d engram -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null' EXIT
for fmt in plain context; do
    start 0.01
    "$BIN/engram-bench" --url "$URL" locomo --format "$fmt" >/dev/null
    "${PSQL[@]}" -d "$DB" -qc "ANALYZE memories"
    sleep 35
    echo "== $fmt, keyword_common_cutoff 0.01"
    "$BIN/engram-bench" --url "$URL" locomo --format "$fmt"
    stop
    start 0
    echo "== $fmt, keyword_common_cutoff 0 (off)"
    "$BIN/engram-bench" --url "$URL" locomo --format "$fmt"
    stop
done
