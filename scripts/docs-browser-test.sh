#!/usr/bin/env bash
# The interactive API page (/docs) in headless Chromium: it loads from engram
# alone (no CDN), lists the routes, and a search run from it with an API key
# returns hits. Installs Debian's chromium and the npm package playwright-core
# (into the cache) when missing. Needs the engram binary built with the
# Swagger UI assets (ENGRAM_SWAGGER_UI_DIR) and ENGRAM_MODEL_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${FUZZ_BIN:-${CARGO_TARGET_DIR:-target}/debug/engram}"
cache="${ENGRAM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/engram}"
log() { echo "docs-browser-test: $*" >&2; }

if ! command -v chromium >/dev/null; then
    log "installing Debian's chromium"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
pw="$cache/browser"
if [ ! -d "$pw/node_modules/playwright-core" ]; then
    log "installing playwright-core 1.64.1 into $pw"
    mkdir -p "$pw"
    (cd "$pw" && npm install --silent --no-audit --no-fund playwright-core@1.64.1 >/dev/null)
fi

work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
export ENGRAM_DATA_DIR="$work/data" ENGRAM_LISTEN="127.0.0.1:$port" ENGRAM_LOG=warn
key=$("$bin" keys create --name docs --role admin | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
"$bin" serve >"$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 600); do
    curl -fsS "$url/readyz" >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/serve.log" >&2; exit 1; }
    sleep 0.1
done
text="The lighthouse on the north cape was repainted in May"
curl -fsS -XPOST "$url/v1/memories?wait=true" -H "authorization: Bearer $key" \
    -H 'content-type: application/json' -d "{\"namespace\":\"docs\",\"text\":\"$text\"}" >/dev/null
cp scripts/browser/docs.mjs "$pw/docs.mjs"
node "$pw/docs.mjs" "$url" "$key" "$text"
