#!/usr/bin/env bash
# Create the secret files deploy/compose/scaleout.yml mounts, with random
# values, once: existing files are kept, so running it again is harmless.
# The folder is 0700 (only you on the host); the files are 0644 because
# compose bind-mounts them unchanged and the containers read them as their
# own users (engram 10001, postgres 999, ...).
set -euo pipefail
dir="$(cd "$(dirname "$0")" && pwd)/secrets"
mkdir -p "$dir"
chmod 700 "$dir"
rand() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }
put() {
    if [ ! -s "$dir/$1" ]; then
        (umask 022 && printf '%s' "$2" >"$dir/$1.tmp" && mv "$dir/$1.tmp" "$dir/$1")
    fi
}
get() { cat "$dir/$1"; }

put postgres_password "$(rand)"
put engram_postgres_url "postgres://engram:$(get postgres_password)@postgres:5432/engram"
put redis_password "$(rand)"
put redis_conf "requirepass $(get redis_password)
save \"\"
appendonly no
"
put engram_redis_url "redis://:$(get redis_password)@redis:6379"
put minio_root_user "root-$(rand | cut -c1-8)"
put minio_root_password "$(rand)"
put engram_s3_access_key_id "engram-$(rand | cut -c1-12)"
put engram_s3_secret_access_key "$(rand)"
put grafana_admin_password "$(rand | cut -c1-24)"
echo "secrets in $dir" >&2
