# Sourced by the benchmark scripts: the engram processes they start (PIDS,
# stopped on exit) and waiting for one to answer.
PIDS=()

stop() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}
trap stop EXIT

# wait_up URL: until URL/healthz answers (60 s at most).
wait_up() {
    for _ in $(seq 600); do
        curl -fsS "$1/healthz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "engram did not start on $1" >&2
    exit 1
}
