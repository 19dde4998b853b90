#!/usr/bin/env bash
# Same-run comparison for BENCHMARKS.md section 9: one Redis, then
#   single  one single-active Redis node (no --cluster)
#   c1      a one-node cluster (--cluster)
#   c3      a three-node cluster, the load tool pointed at the three nodes (the two users of every
#           pair on different nodes, so every deciding swipe or its match crosses nodes)
#   c3lb    the same three nodes behind nginx (round robin), if nginx is installed
# Each gets `swipes` (throughput, swipe latency) and `delivery` (swipe -> both users' `match`,
# at 16 and at 2 pairs in flight), with the Redis round trips and forwarded calls from /metrics
# and the CPU time of the nodes, redis-server and nginx.
# Loopback only; redis-server with AOF (`appendfsync everysec`) as in section 7. Needs
# `cargo build --release`, redis-server, curl and python3. Bounded: every load has --timeout-secs.
# Usage: scripts/bench-cluster.sh [case ...]   (default: single c1 c3 c3lb)
set -u
cd "$(dirname "$0")/.."
PAIRS=${PAIRS:-10000}
USERS=${USERS:-2000}
CASES=${*:-single c1 c3 c3lb}
BIN=target/release/matchd
LOAD=target/release/matchd-load
NGINX=${MATCHD_NGINX_BIN:-/usr/sbin/nginx}
DIR=$(mktemp -d)
PIDS=()

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# utime + stime of a process, in clock ticks.
ticks() {
  awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0
}

stop_all() {
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null
  done
  PIDS=()
}

cleanup() {
  stop_all
  redis-cli -p "$REDIS_PORT" shutdown nosave > /dev/null 2>&1
  rm -rf "$DIR"
}

REDIS_PORT=$(free_port)
trap cleanup EXIT
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly yes --appendfsync everysec \
  --dir "$DIR" --daemonize yes --logfile "$DIR/redis.log" --pidfile "$DIR/redis.pid"
sleep 0.5
REDIS_PID=$(cat "$DIR/redis.pid")
printf '[limits]\nactions_per_second = 1000000.0\naction_burst = 1000000\n\n[timeouts]\nlease_ms = 3000\n' \
  > "$DIR/bench.toml"
echo "redis-server $(redis-server --version | grep -o 'v=[0-9.]*') on port $REDIS_PORT (AOF, everysec)"

# Sum of a metric family over the nodes (all label sets), optionally filtered by a label substring.
metric_sum() {
  local name=$1 filter=${2:-}
  for port in "${NODE_PORTS[@]}"; do
    curl -s -m 5 "127.0.0.1:$port/metrics"
  done | awk -v n="$name" -v f="$filter" '
    $1 !~ /^#/ && (index($1, n "{") == 1 || $1 == n) && (f == "" || index($1, f) > 0) { s += $2 }
    END { printf "%d\n", s }'
}

redis_calls() {
  redis-cli -p "$REDIS_PORT" info commandstats | awk -F'[=,:]' '/^cmdstat_/ { s += $3 } END { print s + 0 }'
}

start_nodes() {
  local n=$1 cluster=$2 i port extra
  NODE_PORTS=()
  NODE_PIDS=()
  for ((i = 1; i <= n; i++)); do
    port=$(free_port)
    extra=()
    [ "$cluster" = yes ] && extra=(--cluster --advertise "http://127.0.0.1:$port" --node-id "n$i")
    $BIN --listen "127.0.0.1:$port" --redis "redis://127.0.0.1:$REDIS_PORT" --config "$DIR/bench.toml" \
      "${extra[@]}" > "$DIR/node-$port.log" 2>&1 &
    PIDS+=($!)
    NODE_PIDS+=($!)
    NODE_PORTS+=("$port")
  done
}

# Every node answers /readyz 200 (and, in a cluster, reports `"members":N`), within 30 s.
wait_ready() {
  local n=$1 cluster=$2 port body ok
  for ((t = 0; t < 300; t++)); do
    ok=yes
    for port in "${NODE_PORTS[@]}"; do
      body=$(curl -s -m 2 -f "127.0.0.1:$port/readyz") || { ok=no; break; }
      if [ "$cluster" = yes ] && ! grep -q "\"members\":$n[,}]" <<< "$body"; then
        ok=no
        break
      fi
    done
    [ $ok = yes ] && return 0
    sleep 0.1
  done
  echo "nodes not ready within 30 s" >&2
  return 1
}

start_nginx() {
  local port=$1 d=$DIR/nginx servers=""
  mkdir -p "$d"
  for p in "${NODE_PORTS[@]}"; do
    servers+="        server 127.0.0.1:$p max_fails=1 fail_timeout=1s;"$'\n'
  done
  cat > "$d/nginx.conf" <<EOF
daemon off;
master_process off;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    client_body_temp_path $d/client_body;
    proxy_temp_path $d/proxy;
    fastcgi_temp_path $d/fastcgi;
    uwsgi_temp_path $d/uwsgi;
    scgi_temp_path $d/scgi;
    keepalive_requests 100000;
    map \$http_upgrade \$connection_upgrade { default upgrade; '' ''; }
    upstream matchd {
$servers        keepalive 256;
        keepalive_requests 100000;
    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://matchd;
            proxy_http_version 1.1;
            proxy_set_header Host \$host;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 3600s;
        }
    }
}
EOF
  "$NGINX" -p "$d" -c "$d/nginx.conf" -e "$d/error.log" > "$d/stderr.log" 2>&1 &
  NGINX_PID=$!
  PIDS+=("$NGINX_PID")
  for ((t = 0; t < 100; t++)); do
    curl -s -m 1 -o /dev/null "127.0.0.1:$port/healthz" && return 0
    sleep 0.1
  done
  echo "nginx did not start:" >&2
  cat "$d/stderr.log" "$d/error.log" >&2
  return 1
}

# One load against the current nodes; writes $DIR/<case>.<label>.json and one line of counters.
measure() {
  local case=$1 label=$2
  shift 2
  local rt0 fw0 fws0 rc0 rt1 fw1 fws1 rc1 red0 red1 ng0=0 ng1=0 pids
  pids=$(IFS=,; echo "${NODE_PIDS[*]}")
  rt0=$(metric_sum matchd_persist_round_trips_total)
  fw0=$(metric_sum matchd_forwarded_total)
  fws0=$(metric_sum matchd_forwarded_total 'kind="swipe"')
  rc0=$(redis_calls)
  red0=$(ticks "$REDIS_PID")
  [ -n "${NGINX_PID:-}" ] && ng0=$(ticks "$NGINX_PID")
  $LOAD --json --url "$URLS" --server-pid "$pids" --threads 2 --timeout-secs 120 "$@" > "$DIR/$case.$label.json"
  echo "   $label: exit $?"
  rt1=$(metric_sum matchd_persist_round_trips_total)
  fw1=$(metric_sum matchd_forwarded_total)
  fws1=$(metric_sum matchd_forwarded_total 'kind="swipe"')
  rc1=$(redis_calls)
  red1=$(ticks "$REDIS_PID")
  [ -n "${NGINX_PID:-}" ] && ng1=$(ticks "$NGINX_PID")
  echo "$case $label $((rt1 - rt0)) $((fw1 - fw0)) $((fws1 - fws0)) $((rc1 - rc0)) $((red1 - red0)) $((ng1 - ng0))" \
    >> "$DIR/counters"
}

run_case() {
  local case=$1 n cluster=yes
  case $case in
    single) n=1 cluster=no ;;
    c1) n=1 ;;
    c3 | c3lb) n=3 ;;
    *) echo "unknown case $case" >&2; return 1 ;;
  esac
  if [ "$case" = c3lb ] && [ ! -x "$NGINX" ]; then
    echo "== $case: skipped ($NGINX not found)"
    return 0
  fi
  echo "== $case ($n node(s), cluster=$cluster)"
  NGINX_PID=
  start_nodes $n $cluster
  wait_ready $n $cluster || { stop_all; return 1; }
  URLS=$(printf 'http://127.0.0.1:%s,' "${NODE_PORTS[@]}")
  URLS=${URLS%,}
  if [ "$case" = c3lb ]; then
    local lb
    lb=$(free_port)
    start_nginx "$lb" || { stop_all; return 1; }
    URLS=http://127.0.0.1:$lb
  fi
  measure "$case" swipes --concurrency 128 swipes --pairs "$PAIRS"
  measure "$case" delivery16 delivery --users "$USERS" --pairs-in-flight 8
  measure "$case" delivery2 delivery --users "$USERS" --pairs-in-flight 1
  for port in "${NODE_PORTS[@]}"; do
    curl -s -m 5 "127.0.0.1:$port/metrics" |
      grep -E '^matchd_(forwarded_total|ownership_changes_total|cluster_members|persist_round_trips_total)[ {]' |
      sed "s/^/   node $port: /"
  done
  stop_all
  sleep 1
}

for c in $CASES; do
  run_case "$c"
done
echo "== redis-server over the whole script (INFO commandstats, busiest first)"
redis-cli -p "$REDIS_PORT" info commandstats | tr -d '\r' | grep '^cmdstat_' | sort -t= -k3 -n -r | head -8
redis-cli -p "$REDIS_PORT" info cpu | tr -d '\r' | grep -E '^used_cpu_(user|sys):'

# One table: throughput and latency from the load tool's JSON, counters from /metrics, Redis and nginx.
python3 - "$DIR" "$(getconf CLK_TCK)" <<'EOF'
import json, os, sys
d, hz = sys.argv[1], int(sys.argv[2])
rows = {}
for line in open(os.path.join(d, "counters")):
    case, label, rt, fw, fws, calls, red, ng = line.split()
    rows[(case, label)] = dict(rt=int(rt), fw=int(fw), fws=int(fws), calls=int(calls), red=int(red), ng=int(ng))
def load(case, label):
    try:
        return json.load(open(os.path.join(d, f"{case}.{label}.json")))
    except Exception:
        return None
cases = []
for case, _ in rows:
    if case not in cases:
        cases.append(case)
print()
print("| case | swipes/s | swipe p50 / p99 ms | node CPU us/swipe | Redis round trips/swipe | Redis commands/swipe | Redis CPU us/swipe | nginx CPU us/swipe | forwarded/swipe | violations |")
print("|---|---|---|---|---|---|---|---|---|---|")
for case in cases:
    r, c = load(case, "swipes"), rows[(case, "swipes")]
    if not r:
        print(f"| {case} | run failed |"); continue
    n = r["counts"]["swipe_requests"]
    f, l = r["figures"], r["latencies_ms"]["swipe_http"]
    print(f"| {case} | {f.get('swipes_per_sec', 0):,.0f} | {l['p50_ms']:.1f} / {l['p99_ms']:.1f} | "
          f"{f.get('server_cpu_us_per_swipe', 0):.0f} | {c['rt'] / n:.3f} | {c['calls'] / n:.1f} | "
          f"{c['red'] * 1e6 / hz / n:.1f} | {c['ng'] * 1e6 / hz / n:.1f} | {c['fw'] / n:.2f} ({c['fws'] / n:.2f} swipe calls) | "
          f"{r['violations_total']} |")
print()
print("| case | pairs in flight | pairs/s | swipe -> both users' match p50 / p90 / p99 / max ms | swipe HTTP p99 ms | Redis round trips/swipe | forwarded/swipe | violations |")
print("|---|---|---|---|---|---|---|---|")
for case in cases:
    for label, inflight in (("delivery16", 16), ("delivery2", 2)):
        r, c = load(case, label), rows.get((case, label))
        if not r or not c:
            print(f"| {case} | {inflight} | run failed |"); continue
        n = max(r["counts"]["swipe_requests"], 1)
        m, s = r["latencies_ms"].get("match_event_both_users"), r["latencies_ms"]["swipe_http"]
        ml = f"{m['p50_ms']:.2f} / {m['p90_ms']:.2f} / {m['p99_ms']:.2f} / {m['max_ms']:.2f}" if m else "-"
        print(f"| {case} | {inflight} | {r['figures'].get('pairs_per_sec', 0):,.0f} | {ml} | {s['p99_ms']:.2f} | "
              f"{c['rt'] / n:.3f} | {c['fw'] / n:.2f} | {r['violations_total']} |")
EOF
