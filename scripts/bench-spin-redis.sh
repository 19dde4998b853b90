#!/usr/bin/env bash
# Spin on a Redis-backed node: 1,000 (or N) users with a WebSocket each join one fresh pool at once,
# then two skip-and-requeue rounds (BENCHMARKS.md sections 6 and 13). Starts its own redis-server
# (AOF, fsync every second) and node on loopback, prints the load tool's latency rows.
# Usage: scripts/bench-spin-redis.sh [MATCHD_BINARY] [USERS]   (needs `cargo build --release`)
# Pass another build's binary to compare two versions in one run, alternating.
set -u
cd "$(dirname "$0")/.."
BIN=${1:-target/release/matchd}
USERS=${2:-1000}
PORT=$((18400 + RANDOM % 500))
REDIS_PORT=$((16500 + RANDOM % 400))
DIR=$(mktemp -d)
redis-server --port $REDIS_PORT --bind 127.0.0.1 --save "" --appendonly yes --appendfsync everysec \
  --dir "$DIR" --daemonize yes --logfile "$DIR/redis.log"
sleep 0.5
printf '[limits]\nactions_per_second = 1000000.0\naction_burst = 1000000\n' > "$DIR/bench.toml"
"$BIN" --listen 127.0.0.1:$PORT --config "$DIR/bench.toml" --redis "redis://127.0.0.1:$REDIS_PORT" > "$DIR/matchd.log" 2>&1 &
PID=$!
sleep 1.5
target/release/matchd-load --url http://127.0.0.1:$PORT --threads 2 --concurrency 128 \
  spin --users "$USERS" --rounds 2 | grep -E "latency|join_to_room|requeue_to_room|skip_to_partner|invariants"
kill $PID
wait $PID 2>/dev/null
redis-cli -p $REDIS_PORT shutdown nosave > /dev/null 2>&1
rm -rf "$DIR"
