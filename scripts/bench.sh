#!/usr/bin/env bash
# Runs Herald's benchmark suite on this machine, on the memory and the Redis
# backends, and prints one table. Starts everything it needs on free ports
# (a private redis-server, the logger, the processors) and stops it all at the end.
#
#   scripts/bench.sh [--quick | --smoke] [--processors N] [--only memory|redis] [--cluster]
#
# --cluster: the Redis runs on a private Redis Cluster of 3 masters (started
# with redis-server --cluster-enabled and joined with redis-cli) instead of
# one redis-server; its CPU and memory are the three nodes' sums.
# --quick: smaller runs (about 40 s in all); --smoke: tiny runs on the debug
# build, for CI to check that the suite works and loses nothing (its figures
# mean nothing). Exits non-zero if any notification was lost.
# Results also go to target/bench/results.jsonl (one JSON object per run).
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE=full
PROCESSORS=2
ONLY=""
CLUSTER=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) SIZE=quick ;;
    --smoke) SIZE=smoke ;;
    --processors) PROCESSORS="$2"; shift ;;
    --only) ONLY="$2"; shift ;;
    --cluster) CLUSTER=yes ;;
    *) echo "usage: $0 [--quick | --smoke] [--processors N] [--only memory|redis] [--cluster]" >&2; exit 2 ;;
  esac
  shift
done

# The dist profile (fat LTO, one codegen unit), as the Dockerfile ships.
BIN=target/dist
case "$SIZE" in
  full) DURATION=10s; E2E_EVENTS=100000; RATE_EVENTS=10000; SUBSCRIBERS=10000; FANOUT_EVENTS=20 ;;
  quick) DURATION=3s; E2E_EVENTS=20000; RATE_EVENTS=3000; SUBSCRIBERS=1000; FANOUT_EVENTS=10 ;;
  smoke) DURATION=1s; E2E_EVENTS=2000; RATE_EVENTS=500; SUBSCRIBERS=50; FANOUT_EVENTS=5; BIN=target/debug ;;
esac

. scripts/lib.sh
need_redis_server
if [ "$BIN" = target/dist ]; then
  cargo build --profile dist --workspace --bins --quiet
else
  cargo build --workspace --bins --quiet
fi
OUT=target/bench
mkdir -p "$OUT"
: > "$OUT/results.jsonl"
start_work

# Waits until the processors have taken and settled every queued entry, in
# every partition's queue (herald:{p00}:events ...; redis-cli -c follows a
# cluster's redirects).
wait_for_drain() {
  for _ in $(seq 1 600); do
    local left=0 p groups
    for p in $(seq 0 $(( ${HERALD_PARTITIONS:-16} - 1 ))); do
      groups=$(redis-cli -c -p "$1" XINFO GROUPS "herald:{p$(printf %02d "$p")}:events" 2>/dev/null || true)
      if ! grep -q '^pending$' <<< "$groups"; then
        left=$((left + 1))
        continue
      fi
      left=$((left + $(awk 'prev == "pending" || prev == "lag" { s += $1 } { prev = $1 } END { print s + 0 }' <<< "$groups")))
    done
    if [ "$left" = 0 ]; then
      return 0
    fi
    sleep 1
  done
  echo "the processors did not drain the queue in 10 minutes" >&2
  exit 1
}

# Bytes Redis uses, summed over the nodes on the given ports.
redis_used_memory() {
  local port total=0
  for port in "$@"; do
    total=$((total + $(redis-cli -p "$port" INFO memory | awk -F: '/^used_memory:/ { print $2 + 0 }')))
  done
  echo "$total"
}

# A free port whose cluster bus port (+10000) is free too.
free_cluster_port() {
  python3 -c '
import random, socket
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
while True:
    p = random.randint(20000, 45535)
    if free(p) and free(p + 10000):
        print(p); break'
}

# Events stored, as the logger at $1 counts them.
events_stored() {
  "$BIN/herald" --server "$1" --json stats | python3 -c 'import json, sys; print(json.load(sys.stdin)["total_events"])'
}

# Peak resident memory (VmHWM) of a process, in MB.
peak_rss_mb() {
  awk '/VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"
}

# bench LABEL SERVER ARGS...: one benchmark, its JSON tagged with the backend;
# the CPU seconds the benchmark client used go to $WORK/client-cpu.
bench() {
  local backend="$1" server="$2"
  shift 2
  echo "== $backend: herald bench $*" >&2
  run_counting_cpu "$WORK/client-cpu" "$BIN/herald" --server "$server" --json bench "$@" \
    | python3 -c 'import json, sys; r = json.load(sys.stdin); r["backend"] = sys.argv[1]; print(json.dumps(r))' "$backend" \
    >> "$OUT/results.jsonl"
}

# e2e_with_cpu LABEL SERVER VIA NAME=PID...: the unpaced end-to-end run,
# creating with one call per event (VIA call) or through the client's
# Publisher (VIA publisher), and the CPU each named process (and the
# benchmark client) spent on it, per event.
e2e_with_cpu() {
  local backend="$1" server="$2" via="$3"
  shift 3
  local before=() flags=()
  [ "$via" = publisher ] && flags=(--publisher)
  for named in "$@"; do before+=("$(cpu_ticks "${named#*=}")"); done
  bench "$backend" "$server" e2e --events "$E2E_EVENTS" "${flags[@]}"
  local tick i=0 parts=()
  tick=$(getconf CLK_TCK)
  for named in "$@"; do
    parts+=("\"${named%%=*}\": $(( ($(cpu_ticks "${named#*=}") - before[i]) * 1000000 / tick / E2E_EVENTS ))")
    i=$((i + 1))
  done
  local client
  client=$(python3 -c 'import sys; print(round(float(open(sys.argv[1]).read()) * 1e6 / int(sys.argv[2])))' "$WORK/client-cpu" "$E2E_EVENTS")
  local joined
  joined=$(IFS=,; echo "${parts[*]}")
  echo "{\"benchmark\": \"cpu\", \"backend\": \"$backend\", \"via\": \"$via\", \"events\": $E2E_EVENTS, \"us_per_event\": {$joined}, \"client_us_per_event\": $client}" >> "$OUT/results.jsonl"
}

# ingest LABEL SERVER NAME=PID...: the ingest run, with the CPU per call of
# each named process (and of the benchmark client) in each of its loops.
ingest() {
  local backend="$1" server="$2"
  shift 2
  ingest_flags "$DURATION" "$@"
  bench "$backend" "$server" ingest "${INGEST_FLAGS[@]}"
}

# rest_of_suite LABEL SERVER LOGGER_PID NAME=PID...: the end-to-end runs
# (the first with the CPU of the named processes) and fan-out.
rest_of_suite() {
  local backend="$1" server="$2" logger_pid="$3"
  shift 3
  e2e_with_cpu "$backend" "$server" call "$@"
  e2e_with_cpu "$backend" "$server" publisher "$@"
  bench "$backend" "$server" e2e --events "$RATE_EVENTS" --rate 1000 --concurrency 16
  bench "$backend" "$server" fanout --subscribers "$SUBSCRIBERS" --events "$FANOUT_EVENTS" --logger-pid "$logger_pid"
  bench "$backend" "$server" stats --duration "$DURATION" --warmup 1s
  echo "{\"benchmark\": \"rss\", \"backend\": \"$backend\", \"logger_peak_rss_mb\": $(peak_rss_mb "$logger_pid")}" >> "$OUT/results.jsonl"
}

export RUST_LOG=warn
# Several servers run side by side here; none needs a metrics port or a console.
export HERALD_METRICS_LISTEN=off HERALD_CONSOLE_LISTEN=off

# Every Server-Sent Events stream is a connection of its own, two file
# descriptors (the logger's and the client's) on this machine.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if [ "$ONLY" != redis ]; then
  port=$(free_port)
  web=$(free_port)
  "$BIN/herald-logger" --listen "127.0.0.1:$port" --web-listen "127.0.0.1:$web" > /dev/null 2> "$WORK/memory-logger.log" &
  logger=$!
  PIDS+=("$logger")
  wait_for_port "$port"
  ingest memory "127.0.0.1:$port" "logger=$logger"
  rest_of_suite memory "127.0.0.1:$port" "$logger" "logger=$logger"
  # The same fan-out to browsers: each stream Server-Sent Events over HTTP/1.1.
  bench memory "127.0.0.1:$port" fanout --subscribers "$SUBSCRIBERS" --events "$FANOUT_EVENTS" --logger-pid "$logger" --sse "http://127.0.0.1:$web"
  kill "$logger"
  wait "$logger" 2>/dev/null || true
fi

if [ "$ONLY" != memory ]; then
  named=()
  rports=()
  if [ -n "$CLUSTER" ]; then
    label=cluster
    for i in 1 2 3; do
      p=$(free_cluster_port)
      mkdir -p "$WORK/node-$i"
      redis-server --port "$p" --bind 127.0.0.1 --dir "$WORK/node-$i" --save "" --appendonly no \
        --cluster-enabled yes --cluster-node-timeout 2000 --daemonize no --logfile "$WORK/node-$i.log" &
      PIDS+=("$!")
      named+=("redis-$i=$!")
      rports+=("$p")
      wait_for_port "$p"
    done
    redis-cli --cluster create $(printf '127.0.0.1:%s ' "${rports[@]}") --cluster-yes > /dev/null
    for p in "${rports[@]}"; do
      until redis-cli -p "$p" CLUSTER INFO | grep -q 'cluster_state:ok'; do sleep 0.1; done
    done
    target=(--redis-cluster "$(printf 'redis://127.0.0.1:%s,' "${rports[@]}" | sed 's/,$//')")
  else
    label=redis
    p=$(free_port)
    redis-server --port "$p" --bind 127.0.0.1 --dir "$WORK" --save "" --appendonly no \
      --daemonize no --logfile "$WORK/redis.log" &
    PIDS+=("$!")
    named+=("redis=$!")
    rports+=("$p")
    wait_for_port "$p"
    target=(--redis-url "redis://127.0.0.1:$p/")
  fi
  port=$(free_port)
  "$BIN/herald-logger" --listen "127.0.0.1:$port" "${target[@]}" \
    > /dev/null 2> "$WORK/redis-logger.log" &
  logger=$!
  PIDS+=("$logger")
  named+=("logger=$logger")
  wait_for_port "$port"
  # Ingest measures the front door (logger and Redis) before processors start;
  # they then drain what it queued before the end-to-end runs. What Redis
  # holds per stored (PENDING) event is read over the ingest.
  memory_before=$(redis_used_memory "${rports[@]}")
  stored_before=$(events_stored "127.0.0.1:$port")
  ingest "$label" "127.0.0.1:$port" "${named[@]}"
  memory_after=$(redis_used_memory "${rports[@]}")
  stored_after=$(events_stored "127.0.0.1:$port")
  echo "{\"benchmark\": \"memory\", \"backend\": \"$label\", \"events\": $((stored_after - stored_before)), \"bytes_per_event\": $(( (memory_after - memory_before) / (stored_after - stored_before) ))}" >> "$OUT/results.jsonl"
  for i in $(seq 1 "$PROCESSORS"); do
    "$BIN/herald-processor" "${target[@]}" --logger-url "http://127.0.0.1:$port" \
      --consumer-name "bench-$i" > /dev/null 2> "$WORK/processor-$i.log" &
    PIDS+=("$!")
    named+=("processor-$i=$!")
  done
  wait_for_drain "${rports[0]}"
  rest_of_suite "$label" "127.0.0.1:$port" "$logger" "${named[@]}"
fi

python3 scripts/bench_table.py "$OUT/results.jsonl" "$(nproc)" "$PROCESSORS"
