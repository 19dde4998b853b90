#!/usr/bin/env bash
# Runs the JavaScript client's tests (clients/js) against the real matchd binary, Redis and headless
# Chromium. MATCHD_BIN names the binary; when it is unset, `cargo build --bin matchd` brings
# ${CARGO_TARGET_DIR:-target}/debug/matchd up to date first (the binary embeds clients/js/matchd.js).
# Needs node >= 20, redis-server, chromium and chromedriver (./scripts/test.sh installs the last three).
# Exits non-zero on any failure.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if ! command -v node >/dev/null 2>&1; then
    echo "test-js: node is missing; install Node.js 20 or newer (e.g. apt-get install -y nodejs)" >&2
    exit 1
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
    echo "test-js: node $(node --version) is too old; the client and its tests need Node.js 20 or newer" >&2
    exit 1
fi
for bin in redis-server; do
    if ! command -v "$bin" >/dev/null 2>&1; then
        echo "test-js: $bin is missing; install it (apt-get install -y redis-server)" >&2
        exit 1
    fi
done

if [ -z "${MATCHD_BIN:-}" ]; then
    cargo build --bin matchd
    MATCHD_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/matchd"
fi
case "$MATCHD_BIN" in
    /*) ;;
    *) MATCHD_BIN="$root/$MATCHD_BIN" ;;
esac
if [ ! -x "$MATCHD_BIN" ]; then
    echo "test-js: no matchd binary at $MATCHD_BIN; build it (cargo build --bin matchd) or set MATCHD_BIN" >&2
    exit 1
fi
export MATCHD_BIN

# The client has no dependencies and its tests use only Node's own modules: nothing to install.
cd "$root/clients/js"
exec node --test test/
