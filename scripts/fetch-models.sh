#!/usr/bin/env bash
# Puts the models listed (face detectors, the CLIP vocabulary) in models/models.tsv into models/ (or $PIXPIPE_MODEL_DIR).
# Source: the mirror directory $PIXPIPE_MODEL_MIRROR (default ../shared/models beside the
# checkout) when it has the file, else the official URL. Every file is checked against its
# SHA-256 before it is kept; a file already in place with the right sum is left alone.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mirror=${PIXPIPE_MODEL_MIRROR:-$root/../shared/models}
dest=${PIXPIPE_MODEL_DIR:-$root/models}
mkdir -p "$dest"
fail=0
while IFS=$'\t' read -r name sum licence url; do
  case "$name" in ''|'#'*) continue ;; esac
  target="$dest/$name"
  if [ -f "$target" ] && echo "$sum  $target" | sha256sum -c --status; then
    echo "fetch-models: $name ok (already present)"
    continue
  fi
  tmp=$(mktemp "$dest/.$name.XXXXXX")
  if [ -f "$mirror/$name" ]; then
    cp "$mirror/$name" "$tmp"
    from="mirror $mirror"
  elif curl -fsSL --retry 2 --max-time 120 -o "$tmp" "$url"; then
    from="$url"
  else
    rm -f "$tmp"
    echo "fetch-models: cannot get $name: not in mirror $mirror and download from $url failed" >&2
    fail=1
    continue
  fi
  if echo "$sum  $tmp" | sha256sum -c --status; then
    mv "$tmp" "$target"
    echo "fetch-models: $name ok ($licence, from $from)"
  else
    rm -f "$tmp"
    echo "fetch-models: $name from $from has the wrong SHA-256 (expected $sum); not kept" >&2
    fail=1
  fi
done < "$root/models/models.tsv"
exit $fail
