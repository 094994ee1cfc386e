#!/usr/bin/env bash
# Installs the browser test's one npm package (playwright-core, no browser: the test drives
# Debian's /usr/bin/chromium). Idempotent: does nothing when node_modules matches the lock file.
set -euo pipefail
cd "$(dirname "$0")"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
stamp=node_modules/.package-lock.json
if [ -f "$stamp" ] && [ -d node_modules/playwright-core ] && cmp -s <(grep -v '"lockfileVersion"' package-lock.json | grep '"version"\|"resolved"') <(grep -v '"lockfileVersion"' "$stamp" | grep '"version"\|"resolved"'); then
  echo "browser setup: playwright-core already installed"
  exit 0
fi
npm ci --no-audit --no-fund --loglevel=error
echo "browser setup: done"
