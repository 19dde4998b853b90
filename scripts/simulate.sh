#!/usr/bin/env bash
# The deterministic simulator (src/sim): the real pair, outbox and event-log cores across simulated
# nodes, a simulated store with the fenced batch script's semantics, and faults (crashes, pauses
# past the lease, lost/duplicated/reordered messages, lost batch replies, late views), checked
# against I1-I3 and I7 over the whole history.
#
#   scripts/simulate.sh [--ops N] [--seeds K] [--seed S] [--mutant NAME] [--list-mutants] [--no-faults]
#
# Its last line is `simulated N operations over S seeds: V violations`; it exits 1 when V > 0. A
# failing seed replays exactly with --seed S (and the same --ops per seed). Built with the
# `mutants` feature so --mutant can put back a historical bug; none is active unless named.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --features mutants --bin matchd-sim
target_dir="${CARGO_TARGET_DIR:-target}"
exec "$target_dir/debug/matchd-sim" "$@"
