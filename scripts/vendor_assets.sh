#!/usr/bin/env bash
# Refresh static/vendor/ from the npm registry (run by hand on upgrades; never at run time).
# Update the versions here and in static/vendor/VERSIONS together; tests check the hashes.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm install --no-audit --no-fund htmx.org@2.0.11 >/dev/null)
cp "$tmp/node_modules/htmx.org/dist/htmx.min.js" static/vendor/
sha256sum static/vendor/htmx.min.js
