#!/usr/bin/env bash
# Runs Herald's benchmark suite on this machine, on the memory and the Redis
# backends, and prints one table. Starts everything it needs on free ports
# (a private redis-server, the logger, the processors) and stops it all at the end.
#
#   scripts/bench.sh [--quick] [--processors N] [--only memory|redis]
#
# Results also go to target/bench/results.jsonl (one JSON object per run).
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
PROCESSORS=2
ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --processors) PROCESSORS="$2"; shift ;;
    --only) ONLY="$2"; shift ;;
    *) echo "usage: $0 [--quick] [--processors N] [--only memory|redis]" >&2; exit 2 ;;
  esac
  shift
done

if [ "$QUICK" = 1 ]; then
  DURATION=3s; E2E_EVENTS=20000; RATE_EVENTS=3000; SUBSCRIBERS=1000; FANOUT_EVENTS=10
else
  DURATION=10s; E2E_EVENTS=100000; RATE_EVENTS=10000; SUBSCRIBERS=10000; FANOUT_EVENTS=20
fi

command -v redis-server >/dev/null || { echo "redis-server is needed (apt-get install redis-server)" >&2; exit 1; }
cargo build --release --workspace --bins --quiet
BIN=target/release
OUT=target/bench
mkdir -p "$OUT"
: > "$OUT/results.jsonl"
WORK=$(mktemp -d)
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  exit 1
}

# Peak resident memory (VmHWM) of a process, in MB.
peak_rss_mb() {
  awk '/VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"
}

# bench LABEL SERVER ARGS...: one benchmark, its JSON tagged with the backend.
bench() {
  local backend="$1" server="$2"
  shift 2
  echo "== $backend: herald bench $*" >&2
  "$BIN/herald" --server "$server" --json bench "$@" \
    | python3 -c 'import json, sys; r = json.load(sys.stdin); r["backend"] = sys.argv[1]; print(json.dumps(r))' "$backend" \
    >> "$OUT/results.jsonl"
}

suite() {
  local backend="$1" server="$2" logger_pid="$3"
  bench "$backend" "$server" ingest --concurrency 64 --connections 4 --duration "$DURATION"
  bench "$backend" "$server" e2e --events "$E2E_EVENTS"
  bench "$backend" "$server" e2e --events "$RATE_EVENTS" --rate 1000 --concurrency 16
  bench "$backend" "$server" fanout --subscribers "$SUBSCRIBERS" --events "$FANOUT_EVENTS"
  echo "{\"benchmark\": \"rss\", \"backend\": \"$backend\", \"logger_peak_rss_mb\": $(peak_rss_mb "$logger_pid")}" >> "$OUT/results.jsonl"
}

export RUST_LOG=warn

if [ "$ONLY" != redis ]; then
  port=$(free_port)
  "$BIN/herald-logger" --listen "127.0.0.1:$port" > /dev/null 2> "$WORK/memory-logger.log" &
  logger=$!
  PIDS+=("$logger")
  wait_for_port "$port"
  suite memory "127.0.0.1:$port" "$logger"
  kill "$logger"
  wait "$logger" 2>/dev/null || true
fi

if [ "$ONLY" != memory ]; then
  rport=$(free_port)
  redis-server --port "$rport" --bind 127.0.0.1 --dir "$WORK" --save "" --appendonly no \
    --daemonize no --logfile "$WORK/redis.log" &
  PIDS+=("$!")
  wait_for_port "$rport"
  port=$(free_port)
  "$BIN/herald-logger" --listen "127.0.0.1:$port" --redis-url "redis://127.0.0.1:$rport/" \
    > /dev/null 2> "$WORK/redis-logger.log" &
  logger=$!
  PIDS+=("$logger")
  wait_for_port "$port"
  for i in $(seq 1 "$PROCESSORS"); do
    "$BIN/herald-processor" --redis-url "redis://127.0.0.1:$rport/" --logger-url "http://127.0.0.1:$port" \
      --consumer-name "bench-$i" > /dev/null 2> "$WORK/processor-$i.log" &
    PIDS+=("$!")
  done
  suite redis "127.0.0.1:$port" "$logger"
fi

python3 scripts/bench_table.py "$OUT/results.jsonl" "$(nproc)" "$PROCESSORS"
