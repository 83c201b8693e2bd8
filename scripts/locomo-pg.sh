#!/usr/bin/env bash
# LoCoMo dev retrieval quality in the scale-out mode (PostgreSQL + pgvector,
# PostgreSQL full-text search), the same evaluation as the embedded mode's
# (BENCHMARKS.md, "Retrieval"):
#
#   scripts/locomo-pg.sh            # release build of this checkout
#   LOCOMO_BIN_DIR=target/debug scripts/locomo-pg.sh   # binaries built already
#
# The conversations are loaded into a fresh database through the session API,
# then ANALYZE and a wait for the keyword index to re-read the statistics
# (the lexemes' frequencies), then every mode is evaluated.
# PostgreSQL from scripts/services.sh; the database is dropped afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/engram-target}"
export ENGRAM_MODEL_DIR="${ENGRAM_MODEL_DIR:-$(scripts/fetch-model.sh)}"
if [ -z "${LOCOMO_BIN_DIR:-}" ]; then
    cargo build --locked --release -q -p engram -p engram-bench
fi
BIN="${LOCOMO_BIN_DIR:-$CARGO_TARGET_DIR/release}"
eval "$(scripts/services.sh start postgres)"
PSQL=(psql -h 127.0.0.1 -p 55432 -U engram)
DB="locomo_$(date +%s)"
"${PSQL[@]}" -d engram -qc "CREATE DATABASE $DB"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
URL="http://127.0.0.1:$PORT"
LOG=$(mktemp)
PID=
stop() { [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true; PID=; }
trap 'stop; "${PSQL[@]}" -d engram -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null; rm -f "$LOG"' EXIT
env ENGRAM_AUTH__ENABLED=false ENGRAM_STORE=postgres \
    ENGRAM_POSTGRES__URL="postgres://engram@127.0.0.1:55432/$DB" \
    "$BIN/engram" serve --listen "127.0.0.1:$PORT" >"$LOG" 2>&1 &
PID=$!
for _ in $(seq 600); do curl -fsS "$URL/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fsS "$URL/readyz" >/dev/null || { cat "$LOG" >&2; exit 1; }
"$BIN/engram-bench" --url "$URL" locomo --modes hybrid >/dev/null
"${PSQL[@]}" -d "$DB" -qc "ANALYZE memories"
# The keyword index re-reads the statistics every 30 s.
sleep 35
"$BIN/engram-bench" --url "$URL" locomo --skip-load "$@"
