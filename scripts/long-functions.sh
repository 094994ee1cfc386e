#!/usr/bin/env bash
# Lists C functions longer than N lines (default 150) under the given folders (default src/):
# a function starts at a line that begins with a letter and ends at the next "}" in column 0.
# The house style allows at most 150 lines; this is the check (run by hand or in review).
set -euo pipefail
max=${PX_MAX_FUNCTION_LINES:-150}
dirs=("$@")
[ ${#dirs[@]} -gt 0 ] || dirs=(src)
find "${dirs[@]}" -name '*.c' -print0 | sort -z | xargs -0 awk -v max="$max" '
  FNR == 1 { start = 0 }
  /^[A-Za-z].*\(/ && !/;[[:space:]]*$/ && !start { name = $0; start = FNR }
  /^}/ && start { len = FNR - start + 1; if (len > max) printf "%s:%d: %d lines: %s\n", FILENAME, start, len, name; start = 0 }'
