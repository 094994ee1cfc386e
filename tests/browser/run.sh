#!/usr/bin/env bash
# ctest wrapper of the review pages' browser tests:
#   run.sh PIXPIPE_BIN SERVE_MAKE_POOL BUILD_DIR [NAME.test.mjs ...]
# Runs every tests/browser/*.test.mjs (or the ones named), each against its own fresh server: a
# pool of 4 theme/type slots x PER images (make_pool), three accounts made with `pixpipe serve
# reviewer add` (ana and ben reviewers, root admin; their one-time tokens go to the test in
# PX_TOKENS), `pixpipe serve` on a free port, the test in headless Debian chromium, then SIGTERM
# (the server must exit 0). Screenshots land in the test's temporary folder and are copied to
# BUILD_DIR/browser-shots/. Exit 77 (skipped) when chromium or the npm package
# (tests/browser/setup.sh) is missing.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$1 make_pool=$2 build=$3
shift 3
if [ ! -x /usr/bin/chromium ] || [ ! -d "$here/node_modules/playwright-core" ] || ! command -v node >/dev/null; then
  echo "browser test skipped: needs /usr/bin/chromium, node and tests/browser/setup.sh" >&2
  exit 77
fi
per=6
work=$(mktemp -d "$build/serve-browser-XXXXXX") || exit 1
pid=
stop() {
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null
  wait "$pid"; local rc=$?; pid=
  return $rc
}
trap 'stop; rm -rf "$work"' EXIT

# one test: fresh pool, accounts, server; prints the test's output
one() {
  local test=$1 name dir first tokens url rc
  name=$(basename "$test" .test.mjs)
  dir="$work/$name"
  mkdir -p "$dir/tmp"
  first=$("$make_pool" "$dir/pool" "$per" 5) || return 1
  tokens='{'
  for acc in ana ben root:--admin; do
    local n=${acc%%:*} extra=
    [ "$n" != "$acc" ] && extra=${acc#*:}
    local tok
    tok=$("$bin" serve reviewer add "$n" $extra --pool "$dir/pool" 2>"$dir/account.err") ||
      { echo "$name: serve reviewer add $n failed:" >&2; cat "$dir/account.err" >&2; return 1; }
    tokens+="\"$n\":\"$tok\","
  done
  tokens="${tokens%,}}"
  local pre=() more=()
  if [ "$name" = campaigns ]; then # the Campaigns page renders on the fake image server
    pre=("$build/fake_imageserver_run" --delay-ms 600 --)
    more=(--gen-server 'gpu1={URL}' --gen-server 'gpu2={URL}')
  fi
  "${pre[@]}" "$bin" serve --listen 127.0.0.1:0 --pool "$dir/pool" --no-anonymize "${more[@]}" \
    >"$dir/serve.out" 2>"$dir/serve.err" &
  pid=$!
  for _ in $(seq 200); do
    grep -q listening "$dir/serve.out" 2>/dev/null && break
    sleep 0.05
  done
  url=$(sed -n 's/.*listening on \(http[^ ]*\)\/$/\1/p' "$dir/serve.out")
  if [ -z "$url" ]; then
    echo "$name: server did not start:" >&2; cat "$dir/serve.err" >&2; stop; return 1
  fi
  PX_URL=$url PX_MANIFEST="$dir/pool/manifest.sqlite" PX_FIRST=$first PX_PER=$per \
    PX_TOKENS=$tokens PX_TMP="$dir/tmp" PX_POOL="$dir/pool" PX_BIN=$bin PX_MAKE_POOL=$make_pool node "$test"
  rc=$?
  stop || { echo "$name: the server exited with $?:" >&2; cat "$dir/serve.err" >&2; rc=1; }
  mkdir -p "$build/browser-shots"
  for f in "$dir"/tmp/*.png; do [ -e "$f" ] && cp "$f" "$build/browser-shots/$name-$(basename "$f")"; done
  return $rc
}

tests=()
if [ $# -gt 0 ]; then
  for t in "$@"; do tests+=("$here/$t"); done
else
  tests=("$here"/*.test.mjs)
fi
failed=()
for t in "${tests[@]}"; do
  one "$t" || failed+=("$(basename "$t")")
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "browser tests failed: ${failed[*]}" >&2
  exit 1
fi
echo "browser tests: ${#tests[@]} passed"
