#!/usr/bin/env bash
# Fetch the Swagger UI assets of the /docs page (npm package swagger-ui-dist,
# pinned by version and integrity) into the cache, once. Prints the folder;
# the build compiles its files into the binary when ENGRAM_SWAGGER_UI_DIR
# names it (scripts/run.sh and scripts/test.sh set it). Nothing is fetched
# at run time.
set -euo pipefail
version=5.36.0
integrity='sha512-Lt6/Kb0gXmLdiabLhvso4VdJP9V7qJWB0zh0gzeXUV3+CMOTzMmvpJRSXN7EAjfwixwmoi9ezDbLHiexC7lA9A=='
cache="${ENGRAM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/engram}"
dest="$cache/swagger-ui-dist-$version"
if [ -f "$dest/swagger-ui-bundle.js" ] && [ -f "$dest/swagger-ui.css" ]; then
  echo "$dest"
  exit 0
fi
command -v npm >/dev/null || { echo "fetch-swagger-ui: npm is needed (Node.js)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "swagger-ui-dist@$version" >/dev/null)
tgz="$tmp/swagger-ui-dist-$version.tgz"
got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
if [ "$got" != "$integrity" ]; then
  echo "fetch-swagger-ui: integrity mismatch for swagger-ui-dist $version: $got" >&2
  exit 1
fi
mkdir -p "$tmp/x" "$cache"
tar -xzf "$tgz" -C "$tmp/x"
rm -rf "$dest.partial"
mkdir -p "$dest.partial"
for f in swagger-ui-bundle.js swagger-ui.css LICENSE favicon-32x32.png; do
  cp "$tmp/x/package/$f" "$dest.partial/"
done
rm -rf "$dest"
mv "$dest.partial" "$dest"
echo "$dest"
