#!/usr/bin/env bash
# The meson test `dashboard_node` (suite `node`): GET /dashboard in a real headless Chromium
# (Debian's chromium, driven by npm puppeteer-core) against a real wsgwd; dashboard.js says what
# exactly it checks.
#
# Usage: tests/node/dashboard/run.sh PATH/TO/wsgwd
#   WSGW_CHROMIUM: the browser to drive (default: chromium, then chromium-browser, on PATH)
#   WSGW_DASHBOARD_SCREENSHOT: where the screenshot goes (default: docs/dashboard.png, the README's;
#                              meson's test puts it in the build dir)
# Exit status: 0 passed, 1 failed, 77 node or chromium missing (a failure under CI=true).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
wsgw_label="dashboard (node)"
# shellcheck source=tests/node/lib/daemon.sh
. "$here/../lib/daemon.sh"

[ $# -eq 1 ] || wsgw_die "usage: $0 PATH/TO/wsgwd"
[ -x "$1" ] || wsgw_die "wsgwd is not an executable: $1 (build it first: ninja -C build)"
wsgw_check_node
if [ -z "${WSGW_CHROMIUM:-}" ]; then
    WSGW_CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
fi
[ -n "$WSGW_CHROMIUM" ] && [ -x "$WSGW_CHROMIUM" ] ||
    wsgw_missing "chromium is not installed (Debian package chromium; scripts/bootstrap installs it)"
export WSGW_CHROMIUM
wsgw_ensure_ws >&2
exec node "$here/dashboard.js" "$1"
