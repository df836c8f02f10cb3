#!/usr/bin/env bash
# What per-user ordering costs: `herald bench e2e` (events created and
# followed until every one is PROCESSED) through one processor whose only
# route sends every event to a notification line, unordered or with
# `ordered = true`, in alternating rounds on the same servers (a
# redis-server and a logger of their own, on free ports, in a scratch
# folder): once with the events spread over many users, once all of one
# hot user. The processor restarts with the other channels file between
# runs; Redis and the logger stay.
#
# Reported per run: events/s until the last was PROCESSED, and the
# processor's CPU per event; then, per shape, ordered / unordered of each
# round (same-run ratios: the machine's speed cancels out).
#
# Usage: scripts/bench_ordering.sh [--bin DIR] [--rounds 2] [--events 20000]
#        [--hot-events 2000] [--users 100]
set -euo pipefail

bin=target/release
rounds=2
events=20000
hot_events=2000
users=100
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --events) events=$2; shift 2 ;;
    --hot-events) hot_events=$2; shift 2 ;;
    --users) users=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/lib.sh"
need_redis_server
start_work
work=$WORK
redis_port=$(free_port)
grpc=$(free_port)
redis-server --port "$redis_port" --save '' --appendonly no --dir "$work" >/dev/null &
PIDS+=($!)
wait_for_port "$redis_port"
url="redis://127.0.0.1:$redis_port/"
"$bin/herald-logger" --listen "127.0.0.1:$grpc" --redis-url "$url" --metrics-listen off \
  --console-listen off >"$work/logger.log" 2>&1 &
PIDS+=($!)
wait_for_port "$grpc"

for ordered in false true; do
  cat >"$work/$ordered.toml" <<TOML
[channels.line]
kind = "line"

[[routes]]
channels = ["line"]
ordered = $ordered
TOML
done

# One run: prints "events/s cpu_us_per_event".
run() {
  local ordered=$1 n=$2 u=$3
  "$bin/herald-processor" --redis-url "$url" --logger-url "http://127.0.0.1:$grpc" \
    --channels "$work/$ordered.toml" --consumer-name "bench-$ordered" --metrics-listen off \
    >/dev/null 2>"$work/processor.log" &
  local processor=$!
  # (This runs in a subshell of its own: its processor stops with it.)
  trap 'kill "$processor" 2>/dev/null || true' EXIT
  sleep 0.5
  local c0 c1 out
  c0=$(cpu_seconds "$processor")
  out=$("$bin/herald" --server "http://127.0.0.1:$grpc" --json bench e2e --events "$n" \
    --users "$u" --publisher --timeout 600s | tail -1)
  c1=$(cpu_seconds "$processor")
  kill "$processor"
  wait "$processor" 2>/dev/null || true
  python3 -c '
import json, sys
report = json.loads(sys.argv[1])
figures = report.get("figures", report)
n, c0, c1 = int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
missing = figures.get("missing")
if missing:
    sys.exit(f"{missing} events were not processed")
print(figures["sustained_events_per_sec"], round((c1 - c0) * 1e6 / n, 1))
' "$out" "$n" "$c0" "$c1"
}

results="$work/results.txt"
for round in $(seq "$rounds"); do
  # Alternate which goes first, so neither always meets a warmer machine.
  if [ $((round % 2)) -eq 1 ]; then order="false true"; else order="true false"; fi
  for shape in many hot; do
    if [ "$shape" = many ]; then n=$events; u=$users; else n=$hot_events; u=1; fi
    for ordered in $order; do
      read -r rate cpu_us < <(run "$ordered" "$n" "$u")
      echo "round $round  $shape ($u users, $n events)  ordered=$ordered: $rate events/s, processor $cpu_us µs/event"
      echo "$round $shape $ordered $rate $cpu_us" >>"$results"
    done
  done
done
python3 - "$results" <<'PY'
import sys
rows = [line.split() for line in open(sys.argv[1])]
by = {(r[0], r[1], r[2]): (float(r[3]), float(r[4])) for r in rows}
print()
print("ordered / unordered, same round:")
for shape in ("many", "hot"):
    for rnd in sorted({r[0] for r in rows}):
        o, u = by[(rnd, shape, "true")], by[(rnd, shape, "false")]
        print(f"  {shape:4} round {rnd}: events/s {o[0] / u[0]:.2f}, processor CPU per event {o[1] / u[1]:.2f}")
PY
