#!/usr/bin/env bash
# What Redis holds per stored event, key by key:
#
#   scripts/stored_bytes.sh [--bin DIR] [--events N] [--users U]
#
# Starts a private redis-server (no persistence), a logger and two
# processors from DIR (default target/dist), sends N events of U users
# through them with `herald bench e2e` (each PROCESSED once it returns),
# then sums `MEMORY USAGE` of every key by kind and prints bytes per event
# for each: records, the status indexes (sorted sets or buckets and their
# directories), the user indexes, the work queue, the notification log,
# and the rest. "kept" is what an event costs once the work queue and the
# log are trimmed (retention keeps records and indexes); used_memory's
# growth over the run, per event, is printed too. Defaults: 25,000
# events, 32 users (the figures in BENCHMARKS.md §34 and §38).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

usage() {
  echo "usage: $0 [--bin DIR] [--events N] [--users U]" >&2
  exit 2
}
BIN=target/dist
EVENTS=25000
USERS=32
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN="$2"; shift ;;
    --events) EVENTS="$2"; shift ;;
    --users) USERS="$2"; shift ;;
    *) usage ;;
  esac
  shift
done
check_counts 1 "$EVENTS" 1
for bin in herald-logger herald-processor herald; do
  [ -x "$BIN/$bin" ] || { echo "$BIN/$bin: no such program (cargo build --profile dist --workspace --bins, or give --bin)" >&2; exit 2; }
done
need_redis_server
start_work
export RUST_LOG=warn HERALD_METRICS_LISTEN=off HERALD_CONSOLE_LISTEN=off

rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --dir "$WORK" --save "" --appendonly no \
  --daemonize no --logfile "$WORK/redis.log" &
PIDS+=("$!")
wait_for_port "$rport"
lport=$(free_port)
"$BIN/herald-logger" --listen "127.0.0.1:$lport" --redis-url "redis://127.0.0.1:$rport/" \
  > /dev/null 2> "$WORK/logger.log" &
PIDS+=("$!")
wait_for_port "$lport"
NAMED=()
start_processors "$BIN" 2 "$rport" "$lport" "$WORK"
used_memory() { redis-cli -p "$rport" info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p'; }
used_before=$(used_memory)
"$BIN/herald" --server "127.0.0.1:$lport" --json bench e2e --events "$EVENTS" --users "$USERS" \
  --concurrency 64 > "$WORK/e2e.json"
python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); sys.exit(1 if r.get("missing") else 0)' "$WORK/e2e.json" \
  || { echo "notifications were lost" >&2; exit 1; }

used_after=$(used_memory)

# Every key's MEMORY USAGE, asked through one redis-cli.
redis-cli -p "$rport" --scan > "$WORK/keys"
python3 - "$WORK/keys" "$rport" "$EVENTS" "$((used_after - used_before))" <<'PY'
import re, subprocess, sys

keys_file, port, events, grown = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
keys = [k for k in open(keys_file).read().split("\n") if k]
def ask(command):
    script = "".join(f'{command} "{k}"\n' for k in keys)
    out = subprocess.run(["redis-cli", "-p", port], input=script, capture_output=True, text=True, check=True)
    return out.stdout.split("\n")[: len(keys)]
usage = [int(v) for v in ask("MEMORY USAGE")]
kinds = [
    ("records", r":event:"),
    ("status index", r":idx:status:"),
    ("user index", r":idx:user:"),
    ("work queue", r"\}:events$"),
    ("notification log", r":notifications$"),
]
totals = {name: 0 for name, _ in kinds}
totals["other"] = 0
for key, used in zip(keys, usage):
    name = next((name for name, pattern in kinds if re.search(pattern, key)), "other")
    totals[name] += used
print(f"{events} events, {len(keys)} keys; MEMORY USAGE in bytes per event")
for name, total in totals.items():
    print(f"  {name:<17} {total / events:8.1f}")
kept = sum(totals[k] for k in ("records", "status index", "user index", "other"))
print(f"  {'kept':<17} {kept / events:8.1f}  (all but the work queue and the log)")
print(f"used_memory grew {grown / events:.1f} bytes per event (the allocator's share and Redis's buffers too)")
PY
