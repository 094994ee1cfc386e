#!/usr/bin/env bash
# Installs every Debian 12 package pixpipe needs to build, test and benchmark.
# Idempotent: packages already present are left alone; run as root.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config git ca-certificates clang libclang-rt-14-dev
  libjpeg62-turbo-dev libpng-dev libwebp-dev libexif-dev libtiff-dev libgif-dev libheif-dev
  liblcms2-dev
  libopenblas-dev protobuf-c-compiler libprotobuf-c-dev libonnx-dev
  libutf8proc-dev zlib1g-dev
  libcmocka-dev libjansson-dev libcurl4-openssl-dev libsqlite3-dev libmicrohttpd-dev libssl-dev
  python3 python3-opencv python3-numpy
  chromium nodejs wrk
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# The browser test's `npm ci` needs npm: Debian's nodejs ships without it (package npm), while a
# NodeSource nodejs has it built in and conflicts with Debian's npm, so ask only when it is absent.
command -v npm >/dev/null 2>&1 || missing+=(npm)

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages (${missing[*]}); run this script as root" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Refresh the lists at most once an hour so repeated runs stay quick.
stamp=/var/lib/apt/periodic/update-success-stamp
if [ ! -e /var/lib/apt/lists/lock ] || [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -60 2>/dev/null | head -1)" ]; then
  apt-get update -qq
fi
apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: done"
