#!/usr/bin/env bash
# Tests of the Python client (clients/python) and of docs/openapi.yaml against the real server.
#
#   scripts/test-python.sh [pytest args...]
#
# Uses (or creates) a virtualenv in target/py-venv, installs the client and the test tools into it,
# and runs pytest. The server binary is $MATCHD_BIN (default target/debug/matchd: build it first with
# `cargo build --bin matchd`); redis-server must be on the PATH (the Redis tests fail without it).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

venv="$root/target/py-venv"
python="${PYTHON:-python3}"
export MATCHD_BIN="${MATCHD_BIN:-$root/target/debug/matchd}"
# The tests run from clients/python: a relative path is taken from the repository root.
case "$MATCHD_BIN" in /*) ;; *) MATCHD_BIN="$root/$MATCHD_BIN" ;; esac

if [[ ! -x "$MATCHD_BIN" ]]; then
    echo "test-python: no matchd binary at $MATCHD_BIN (run: cargo build --bin matchd, or set MATCHD_BIN)" >&2
    exit 1
fi
if ! command -v "${MATCHD_REDIS_SERVER_BIN:-redis-server}" >/dev/null; then
    echo "test-python: redis-server is missing (apt-get install redis-server); the Redis tests would fail" >&2
fi

# The wheel build leaves these in the source tree; remove them however the run ends.
cleanup() { rm -rf "$root/clients/python/build" "$root"/clients/python/src/*.egg-info; }
trap cleanup EXIT

if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" "./clients/python[test]"
# Then the package itself again, so the run tests the sources as they are now (a regular install,
# not an editable one: the tests import it as users get it).
"${pip[@]}" --force-reinstall --no-deps ./clients/python

# Nothing written into the source tree: no bytecode, no cache directory.
export PYTHONDONTWRITEBYTECODE=1
status=0
(cd clients/python && "$venv/bin/python" -m pytest -p no:cacheprovider "$@") || status=$?
if [[ $status -eq 5 ]]; then
    echo "test-python: pytest collected no tests" >&2
    exit 1
fi
exit "$status"
