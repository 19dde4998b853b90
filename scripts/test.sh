#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs the system packages the tests start
# (redis-server, nginx for the cluster tests' load balancer, chromium + chromedriver, Node.js and
# Python's venv for the client libraries) when they are missing, checks formatting and lints, then
# runs every test: the Rust suite, then the JS and Python clients' suites against the built server. Nothing is skipped: a test whose
# server cannot start fails. The cluster tests run their own nginx processes with their own config
# on free loopback ports; the nginx package's system service is not needed (and is not started).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# /usr/sbin is not on a non-root user's PATH everywhere.
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
command -v node >/dev/null 2>&1 || need+=(nodejs)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing missing packages: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  # policy-rc.d exit 101 keeps package scripts from starting services (nginx would take port 80).
  # An existing policy is left as it is.
  policy_rc=/usr/sbin/policy-rc.d
  added_policy=""
  if [ ! -e "$policy_rc" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy_rc" >/dev/null
    $SUDO chmod +x "$policy_rc"
    added_policy=1
    trap '$SUDO rm -f "$policy_rc"' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
  if [ -n "$added_policy" ]; then
    $SUDO rm -f "$policy_rc"
    trap - EXIT
  fi
fi

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets "$@"

# The deterministic simulator: a million operations with faults, then each historical bug put
# back (the `mutants` feature) must be caught.
./scripts/simulate.sh --ops 1000000 --seeds 500
for mutant in $(./scripts/simulate.sh --list-mutants); do
  if ./scripts/simulate.sh --mutant "$mutant" --ops 300000 --seeds 300 --stop-at-first >/dev/null 2>&1; then
    echo "the simulator did not catch mutant $mutant" >&2
    exit 1
  fi
  echo "mutant $mutant: caught"
done

# The client libraries, against the server binary the Rust suite just built.
cargo build --bin matchd
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$PWD/$target_dir" ;; esac
bin="$target_dir/debug/matchd"
MATCHD_BIN="$bin" ./scripts/test-js.sh
MATCHD_BIN="$bin" ./scripts/test-python.sh
