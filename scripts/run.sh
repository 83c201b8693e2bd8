#!/usr/bin/env bash
# Run engram on the embedded default: fetch the model if missing, build, serve.
# Extra arguments go to `engram serve` (e.g. --listen 0.0.0.0:8080 --data-dir /var/lib/engram).
# On the first run with the default data dir, an admin API key is created and
# saved to ./engram-data/admin.key (every API route needs credentials).
set -euo pipefail
cd "$(dirname "$0")/.."
export ENGRAM_MODEL_DIR="${ENGRAM_MODEL_DIR:-$(scripts/fetch-model.sh)}"
# The /docs page's assets (npm swagger-ui-dist), compiled into the binary.
export ENGRAM_SWAGGER_UI_DIR="${ENGRAM_SWAGGER_UI_DIR:-$(scripts/fetch-swagger-ui.sh)}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/engram-target}"
# Build (release) and install the `engram` command into ~/.cargo/bin (on the
# PATH of a rustup toolchain), so the README's `engram ...` lines work as
# printed; cargo install reuses the build in $CARGO_TARGET_DIR.
cargo install --locked --quiet --force --path crates/engram
bin="$CARGO_TARGET_DIR/release/engram"
if [ $# -eq 0 ] && [ ! -e engram-data/admin.key ] && [ ! -e engram-data/engram.db ]; then
    mkdir -p engram-data
    (umask 077 && "$bin" keys create --data-dir engram-data --name bootstrap --role admin \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])' > engram-data/admin.key)
    echo "created an admin API key: export ENGRAM_API_KEY=\$(cat engram-data/admin.key)" >&2
fi
exec "$bin" serve "$@"
