#!/usr/bin/env bash
# The main job, from a fresh Debian 12 machine (as root): install packages, fetch and verify the models,
# build pixpipe, anonymize the sample photos into out/anonymized/ and print a summary.
# Photos: $1 if given (a file or folder), else the test photos in ../shared/testdata/faces.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
input=${1:-$root/../shared/testdata/faces}
outdir=${PIXPIPE_OUT:-$root/out/anonymized}

scripts/install-deps.sh
scripts/fetch-models.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target pixpipe 2>&1 | grep -E 'error|warning' || true
mkdir -p "$outdir"
echo "anonymizing $input -> $outdir"
set +e
build/src/app/pixpipe anonymize --outdir "$outdir" --json "$input" >"$outdir/report.jsonl"
rc=$?
set -e
/usr/bin/python3 - "$outdir/report.jsonl" <<'PY'
import json, sys
n = faces = bad = 0
ms = 0.0
for line in open(sys.argv[1]):
    r = json.loads(line)
    if "error" in r:
        bad += 1
        print(f"  FAILED {r.get('input')}: {r['error']}")
        continue
    n += 1
    faces += len(r["faces"])
    t = r.get("timings_ms", {}).get("total", 0)
    ms += t
    print(f"  {r['input'].split('/')[-1]:28s} {r['width']}x{r['height']:<5d} faces {len(r['faces']):3d}  {t:7.1f} ms -> {r['output']}")
print(f"summary: {n} images anonymized, {faces} faces hidden, {bad} failed, {ms:.0f} ms in all")
PY
echo "report: $outdir/report.jsonl"
exit $rc
