#!/usr/bin/env bash
# Re-embedding a loaded embedded node to another model while it serves
# (BENCHMARKS.md).
#
#   scripts/bench-reembed.sh [N] [PROFILE]      e.g. scripts/bench-reembed.sh 10000 release
#
# 1. An embedded node ingests N synthetic memories (engram-bench load), and
#    search latency and recall are measured.
# 2. A second engram serves /v1/embeddings (the same MiniLM, so the new model
#    is recorded under another version: the OpenAI-compatible remote embedder
#    path with real vectors). The first node restarts with it as
#    [embedder.next].
# 3. Until the switch, searches run back to back (engram-bench load --n 0)
#    and the progress is logged; then latency and recall are measured again.
# Results on stdout, logs under $OUT (default /tmp/engram-bench-reembed).
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-10000}"
PROFILE="${2:-release}"
OUT="${OUT:-/tmp/engram-bench-reembed}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/engram-target}"
export ENGRAM_MODEL_DIR="${ENGRAM_MODEL_DIR:-$(scripts/fetch-model.sh)}"
if [ "$PROFILE" = release ]; then
    cargo build --locked --release -q -p engram -p engram-bench
    BIN="$CARGO_TARGET_DIR/release"
else
    cargo build --locked -q -p engram -p engram-bench
    BIN="$CARGO_TARGET_DIR/debug"
fi
mkdir -p "$OUT"
rm -rf "$OUT/node" "$OUT/remote"
NODE=127.0.0.1:18490
REMOTE=127.0.0.1:18491
source scripts/bench-lib.sh
# search QUERIES RECALL_QUERIES SEED: fresh queries per seed, so no cached
# query embedding or ranking is measured.
search() {
    "$BIN/engram-bench" --url "http://$NODE" load --n 0 --queries "$1" \
        --concurrency 1 --recall-queries "$2" --ack-samples 0 --seed "$3"
}
node_env=(ENGRAM_AUTH__ENABLED=false ENGRAM_LISTEN="$NODE" ENGRAM_DATA_DIR="$OUT/node")

echo "== ingest N=$N ($PROFILE build)"
env "${node_env[@]}" "$BIN/engram" serve >"$OUT/node-1.log" 2>&1 &
PIDS+=($!)
wait_up "http://$NODE"
"$BIN/engram-bench" --url "http://$NODE" load --n "$N" --queries 300 \
    --concurrency 1 --recall-queries 200 --ack-samples 0
stop

echo "== re-embedding to the remote embedder"
env ENGRAM_AUTH__ENABLED=false ENGRAM_LISTEN="$REMOTE" ENGRAM_DATA_DIR="$OUT/remote" \
    ENGRAM_WORKERS=0 "$BIN/engram" serve >"$OUT/remote.log" 2>&1 &
PIDS+=($!)
wait_up "http://$REMOTE"
started=$(date +%s.%N)
env "${node_env[@]}" \
    ENGRAM_EMBEDDER__NEXT__KIND=openai \
    ENGRAM_EMBEDDER__NEXT__BASE_URL="http://$REMOTE/v1" \
    ENGRAM_EMBEDDER__NEXT__MODEL=all-MiniLM-L6-v2 \
    ENGRAM_EMBEDDER__NEXT__VERSION=remote-1 \
    ENGRAM_EMBEDDER__NEXT__DIMS=384 \
    "$BIN/engram" serve >"$OUT/node-2.log" 2>&1 &
PIDS+=($!)
wait_up "http://$NODE"
switched() {
    curl -fsS "http://$NODE/v1/stats" | python3 -c \
        'import json,sys; s=json.load(sys.stdin); r=s.get("reembed"); print(s["model"]["version"], r and round(100 * r["progress"]))'
}
round=0
while true; do
    read -r version percent <<<"$(switched)"
    now=$(date +%s.%N)
    printf 'progress at %.0f s: model %s, %s %%\n' "$(echo "$now - $started" | bc)" \
        "${version:0:12}" "$percent"
    [ "$version" = remote-1 ] && break
    round=$((round + 1))
    echo "-- searches during the re-embedding, round $round"
    search 100 0 $((1000 + round)) | grep -E "^search" || true
done
printf 'switched after %.1f s\n' "$(echo "$(date +%s.%N) - $started" | bc)"
echo "== after the switch"
search 300 200 7
