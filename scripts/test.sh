#!/usr/bin/env bash
# Runs every pixpipe test from a fresh Debian 12 machine (as root): installs packages, fetches the models,
# then builds and runs
#   1. the release build (gcc, -Werror): all unit and integration tests under ctest;
#   2. an address+undefined sanitizer build: the same tests; the same build has fault injection
#      (-DPX_FAULT_INJECTION=ON), and runs the allocation torture test (label "torture"): every
#      allocation of anonymize, the nn loader, the manifest and the bot's update handling failed
#      in turn, each a clean error, no crash, no leak;
#   3. a thread-sanitizer build: the tests labelled "concurrent";
#   4. clang libFuzzer targets, each for PX_FUZZ_SECONDS (default 20) on seeds: tests/fuzz/seeds/<target>/,
#      files named in <target>.list (test photos, models) and made by <target>.gen.
# The last line is "summary: N passed, N failed" (ctest test counts plus one per fuzz target).
# Set PX_TEST_QUICK=1 to run only stage 1 while developing.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
jobs=${PX_JOBS:-$(nproc)}
fuzz_seconds=${PX_FUZZ_SECONDS:-20}
passed=0
failed=0
failed_names=()

log() { printf '\n=== %s ===\n' "$*"; }

scripts/install-deps.sh || exit 1
scripts/fetch-models.sh || exit 1
if [ -x tests/browser/setup.sh ]; then tests/browser/setup.sh || exit 1; fi

# run_ctest NAME BUILD_DIR [ctest args...]: adds the counts from ctest's closing line to the totals.
run_ctest() {
  local name=$1 dir=$2
  shift 2
  local out
  out=$(cd "$dir" && ctest --output-on-failure -j "$jobs" "$@" 2>&1)
  local rc=$?
  printf '%s\n' "$out" | tail -n 60
  local line
  line=$(printf '%s\n' "$out" | grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' | tail -1)
  if [ -z "$line" ]; then
    if printf '%s\n' "$out" | grep -q 'No tests were found'; then
      echo "$name: no tests"
      return 0
    fi
    failed=$((failed + 1)); failed_names+=("$name (ctest did not finish)")
    return 1
  fi
  local nfail total
  nfail=$(printf '%s' "$line" | sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/')
  total=$(printf '%s' "$line" | sed -E 's/.* failed out of ([0-9]+).*/\1/')
  passed=$((passed + total - nfail))
  failed=$((failed + nfail))
  [ "$nfail" -eq 0 ] && [ $rc -eq 0 ] || failed_names+=("$name")
}

build() {
  local dir=$1
  shift
  cmake -S . -B "$dir" -DPX_WERROR=ON "$@" >"$dir/configure.log" 2>&1 || { cat "$dir/configure.log"; return 1; }
  cmake --build "$dir" -j "$jobs" 2>&1 | grep -E 'error|warning|Error' | head -50
  return "${PIPESTATUS[0]}"
}

log "release build (gcc)"
mkdir -p build
if build build -DCMAKE_BUILD_TYPE=Release; then
  run_ctest release build
else
  failed=$((failed + 1)); failed_names+=("release build")
fi

if [ "${PX_TEST_QUICK:-0}" != 1 ]; then
  log "address+undefined sanitizer build"
  mkdir -p build-asan
  if build build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPX_SANITIZE=ON -DPX_BENCH=OFF \
      -DPX_FAULT_INJECTION=ON; then
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
      run_ctest asan build-asan -LE "nosan|torture"
    log "allocation torture (ASan, every allocation failed in turn)"
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
      run_ctest torture build-asan -L torture
  else
    failed=$((failed + 1)); failed_names+=("asan build")
  fi

  log "thread sanitizer build (concurrent parts)"
  mkdir -p build-tsan
  if build build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPX_TSAN=ON -DPX_BENCH=OFF; then
    TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 run_ctest tsan build-tsan -L concurrent
  else
    failed=$((failed + 1)); failed_names+=("tsan build")
  fi

  log "libFuzzer targets (clang, ${fuzz_seconds}s each)"
  mkdir -p build-fuzz
  if CC=clang build build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPX_FUZZ=ON -DPX_BENCH=OFF; then
    for f in build-fuzz/tests/fuzz/fuzz_*; do
      [ -x "$f" ] || continue
      name=$(basename "$f")
      corpus=build-fuzz/corpus/$name
      mkdir -p "$corpus"
      # seeds: checked-in ones, plus files named by the target's seeds list (test photos, models)
      [ -d tests/fuzz/seeds/$name ] && cp -n tests/fuzz/seeds/$name/* "$corpus"/ 2>/dev/null
      # generated seeds (binary inputs are made at test time, not committed)
      [ -x tests/fuzz/seeds/$name.gen ] && tests/fuzz/seeds/$name.gen "$corpus"
      if [ -f tests/fuzz/seeds/$name.list ]; then
        while read -r s; do
          [ -n "$s" ] && [ -f "$s" ] && cp -n "$s" "$corpus"/ 2>/dev/null
        done < <(sed "s|@SHARED@|$root/../shared|; s|@MODELS@|$root/models|" tests/fuzz/seeds/$name.list)
      fi
      if "$f" -max_total_time="$fuzz_seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
          "$corpus" >"build-fuzz/$name.log" 2>&1; then
        echo "$name: ok ($(grep -E 'stat::number_of_executed_units' "build-fuzz/$name.log" | awk '{print $2}') runs)"
        passed=$((passed + 1))
      else
        echo "$name: FAILED"; tail -n 40 "build-fuzz/$name.log"
        failed=$((failed + 1)); failed_names+=("$name")
      fi
    done
  else
    failed=$((failed + 1)); failed_names+=("fuzz build")
  fi
fi

echo
[ ${#failed_names[@]} -gt 0 ] && echo "failed: ${failed_names[*]}"
echo "summary: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ ${#failed_names[@]} -eq 0 ]
