#!/usr/bin/env bash
# HTTP benchmark of `pixpipe serve` with wrk (Debian): 10 connections against
#   1. POST /v1/anonymize with a 2-megapixel photo (a test photo scaled to 1728x1152 with OpenCV),
#   2. GET /healthz.
# Prints requests/s, p50/p99 latency and errors (non-2xx and socket errors) for each; never
# passes or fails on time.
#   bench/bench_serve.sh [BUILD_DIR] [SECONDS] [WORKERS]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
secs=${2:-15}
workers=${3:-$(nproc)}
bin=$build/src/app/pixpipe
photo_src=$root/../shared/testdata/faces/deface_city.jpg
command -v wrk >/dev/null || { echo "bench_serve: wrk missing (scripts/install-deps.sh)" >&2; exit 1; }
[ -x "$bin" ] || { echo "bench_serve: build $bin first" >&2; exit 1; }

work=$(mktemp -d "$build/bench-serve-XXXXXX")
pid=
cleanup() { [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

photo=$work/photo-2mp.jpg
# Debian's python3 has python3-opencv (a pyenv python on PATH may not)
/usr/bin/python3 - "$photo_src" "$photo" <<'PY'
import sys, cv2
img = cv2.imread(sys.argv[1])
img = cv2.resize(img, (1728, 1152), interpolation=cv2.INTER_CUBIC)
cv2.imwrite(sys.argv[2], img, [cv2.IMWRITE_JPEG_QUALITY, 90])
PY

# wrk posts the file's bytes from a Lua script; the report adds p50/p99 and the error counts.
cat >"$work/post.lua" <<LUA
local f = assert(io.open("$photo", "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "image/jpeg"
LUA
cat >"$work/report.lua" <<'LUA'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT req/s=%.1f p50_ms=%.1f p99_ms=%.1f requests=%d non2xx=%d socket_errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, summary.requests, e.status,
    e.connect + e.read + e.write + e.timeout))
end
LUA
cat "$work/report.lua" >>"$work/post.lua"

"$bin" serve --listen 127.0.0.1:0 --workers "$workers" --threads 1 --queue 64 \
  >"$work/serve.out" 2>"$work/serve.err" &
pid=$!
for _ in $(seq 100); do grep -q listening "$work/serve.out" 2>/dev/null && break; sleep 0.05; done
url=$(sed -n 's/.*listening on \(http[^ ]*\)\/$/\1/p' "$work/serve.out")
[ -n "$url" ] || { cat "$work/serve.err" >&2; exit 1; }

echo "pixpipe serve: $workers workers x 1 thread, $(nproc) cores; photo $(stat -c %s "$photo") bytes, 1728x1152"
curl -s -o /dev/null -w "one request: %{http_code} in %{time_total}s\n" --data-binary @"$photo" "$url/v1/anonymize"
echo "== POST /v1/anonymize (2 MP JPEG), 10 connections, ${secs}s"
wrk -t 2 -c 10 -d "${secs}s" --timeout 30s -s "$work/post.lua" "$url/v1/anonymize" | grep RESULT
echo "== GET /healthz, 10 connections, ${secs}s"
wrk -t 2 -c 10 -d "${secs}s" -s "$work/report.lua" "$url/healthz" | grep RESULT
curl -s "$url/metrics" | grep -E '^pixpipe_(faces_found_total|anonymize_images_total|rejected_busy_total|anonymize_timeouts_total) '
