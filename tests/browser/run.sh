#!/usr/bin/env bash
# ctest wrapper of the review page browser test:
#   run.sh PIXPIPE_BIN SERVE_MAKE_POOL BUILD_DIR
# makes a small pool, starts `pixpipe serve` on a free port, runs review.test.mjs in headless
# Debian chromium, stops the server with SIGTERM. Exit 77 (skipped) when chromium or the npm
# package (tests/browser/setup.sh) is missing.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$1 make_pool=$2 build=$3
if [ ! -x /usr/bin/chromium ] || [ ! -d "$here/node_modules/playwright-core" ] || ! command -v node >/dev/null; then
  echo "browser test skipped: needs /usr/bin/chromium, node and tests/browser/setup.sh" >&2
  exit 77
fi
work=$(mktemp -d "$build/serve-browser-XXXXXX")
pid=
cleanup() {
  [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
first=$("$make_pool" "$work/pool" 3 5) || exit 1
"$bin" serve --listen 127.0.0.1:0 --pool "$work/pool" --no-anonymize >"$work/serve.out" 2>"$work/serve.err" &
pid=$!
for _ in $(seq 100); do
  grep -q listening "$work/serve.out" 2>/dev/null && break
  sleep 0.05
done
url=$(sed -n 's/.*listening on \(http[^ ]*\)\/$/\1/p' "$work/serve.out")
if [ -z "$url" ]; then
  echo "server did not start:" >&2; cat "$work/serve.err" >&2; exit 1
fi
node "$here/review.test.mjs" "$url" "$work/pool/manifest.sqlite" "$first" "$build/review-page.png"
rc=$?
kill -TERM "$pid"; wait "$pid"; src=$?; pid=
[ $src -eq 0 ] || { echo "server exited with $src" >&2; cat "$work/serve.err" >&2; rc=1; }
exit $rc
