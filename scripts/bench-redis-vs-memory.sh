#!/usr/bin/env bash
# Same-run comparison for BENCHMARKS.md section 7: HTTP swipes against an in-memory node, then a
# Redis-backed node (AOF, fsync every second), with the load tool and the persistence counters.
# Loopback only. Needs `cargo build --release` and redis-server.
set -u
cd "$(dirname "$0")/.."
PORT=18300
REDIS_PORT=16401
DIR=$(mktemp -d)
redis-server --port $REDIS_PORT --bind 127.0.0.1 --save "" --appendonly yes --appendfsync everysec \
  --dir "$DIR" --daemonize yes --logfile "$DIR/redis.log"
sleep 0.5
printf '[limits]\nactions_per_second = 1000000.0\naction_burst = 1000000\n' > "$DIR/bench.toml"
for mode in memory redis; do
  extra=()
  [ $mode = redis ] && extra=(--redis "redis://127.0.0.1:$REDIS_PORT")
  target/release/matchd --listen 127.0.0.1:$PORT --config "$DIR/bench.toml" "${extra[@]}" > "$DIR/$mode.log" 2>&1 &
  PID=$!
  sleep 1.5
  echo "== $mode"
  target/release/matchd-load --url http://127.0.0.1:$PORT --threads 2 --concurrency 128 --server-pid $PID \
    swipes --pairs 10000 | grep -E "figures|swipe_http|invariants"
  curl -s -m 5 localhost:$PORT/metrics | grep -E "^matchd_persist_(round_trips|commands)_total |^matchd_persist_batch_size_(sum|count) "
  kill $PID
  wait $PID 2>/dev/null
  sleep 1.5
done
redis-cli -p $REDIS_PORT shutdown nosave > /dev/null
rm -rf "$DIR"
