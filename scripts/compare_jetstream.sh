#!/usr/bin/env bash
# Herald against NATS JetStream on Herald's own job, on this machine, in
# alternating rounds on fresh servers:
#
#   scripts/compare_jetstream.sh [--bin DIR] [--rounds N] [--events N] [--processors N]
#
# The job: a producer with 64 calls in flight, each awaiting its durable
# accept; a worker that writes the notification line, records the status
# durably and acknowledges the event. Herald does it with its logger, Redis
# (AOF, appendfsync everysec: the durable setting the README recommends)
# and N processors, driven by `herald bench e2e`; JetStream with a
# nats-server -js of its own (free port, own store folder, file storage;
# never the machine's on 4222) and `jetstream-bench` (bench/jetstream) as
# producer and consumer. Each round runs Herald, then JetStream, each after
# a warm-up of a quarter of the events, and reports per system: the
# end-to-end rate (from the first create to the last event handled), each
# process's CPU per event (from /proc, user and system), the producer's
# (the benchmark client's) CPU per event, and the bytes stored per event
# (Redis's used_memory growth; the streams' bytes). The last lines compare
# the systems' means. DIR holds herald-logger, herald-processor, herald
# and jetstream-bench (default target/dist: `cargo build --profile dist
# --workspace --bins`). Defaults: 3 rounds of 20,000 events, 2 processors.
# Exits non-zero if a run loses an event.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

usage() {
  echo "usage: $0 [--bin DIR] [--rounds N] [--events N] [--processors N]" >&2
  exit 2
}
BIN=target/dist
ROUNDS=3
EVENTS=20000
PROCESSORS=2
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN="$2"; shift ;;
    --rounds) ROUNDS="$2"; shift ;;
    --events) EVENTS="$2"; shift ;;
    --processors) PROCESSORS="$2"; shift ;;
    *) usage ;;
  esac
  shift
done
check_counts "$ROUNDS" "$EVENTS" "$PROCESSORS"
for bin in herald-logger herald-processor herald jetstream-bench; do
  [ -x "$BIN/$bin" ] || { echo "$BIN/$bin: no such program (cargo build --profile dist --workspace --bins, or give --bin)" >&2; exit 2; }
done
need_redis_server
command -v nats-server >/dev/null || { echo "nats-server is needed (apt-get install nats-server)" >&2; exit 1; }
start_work
export RUST_LOG=warn HERALD_METRICS_LISTEN=off HERALD_CONSOLE_LISTEN=off
WARM=$((EVENTS / 4 + 1))
TICK=$(getconf CLK_TCK)

now() { date +%s.%N; }

# per_event TICKS: CPU µs per measured event of TICKS clock ticks.
per_event() { echo $(( $1 * 1000000 / TICK / EVENTS )); }

# client_per_event FILE: the CPU seconds in FILE as µs per measured event.
client_per_event() {
  python3 -c 'import sys; print(round(float(open(sys.argv[1]).read()) * 1e6 / int(sys.argv[2])))' "$1" "$EVENTS"
}

# herald_round ROUND: one run of Herald; appends its line to $WORK/runs.
herald_round() {
  local round="$1" dir="$WORK/herald-$round" rport lport i before=() named=()
  mkdir -p "$dir"
  rport=$(free_port)
  redis-server --port "$rport" --bind 127.0.0.1 --dir "$dir" --save "" \
    --appendonly yes --appendfsync everysec --daemonize no --logfile "$dir/redis.log" &
  PIDS+=("$!")
  named+=("redis=$!")
  wait_for_port "$rport"
  local used_before
  used_before=$(redis-cli -p "$rport" info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p')
  lport=$(free_port)
  "$BIN/herald-logger" --listen "127.0.0.1:$lport" --redis-url "redis://127.0.0.1:$rport/" \
    > /dev/null 2> "$dir/logger.log" &
  PIDS+=("$!")
  named+=("logger=$!")
  wait_for_port "$lport"
  NAMED=("${named[@]}")
  start_processors "$BIN" "$PROCESSORS" "$rport" "$lport" "$dir"
  named=("${NAMED[@]}")
  "$BIN/herald" --server "127.0.0.1:$lport" bench e2e --events "$WARM" --concurrency 64 > /dev/null
  for i in "${!named[@]}"; do before[i]=$(cpu_ticks "${named[i]#*=}"); done
  local start end
  start=$(now)
  run_counting_cpu "$WORK/client-cpu" "$BIN/herald" --server "127.0.0.1:$lport" --json \
    bench e2e --events "$EVENTS" --concurrency 64 > "$dir/e2e.json"
  end=$(now)
  python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); sys.exit(1 if r.get("missing") else 0)' "$dir/e2e.json" \
    || { echo "herald, round $round: notifications were lost" >&2; exit 1; }
  local line="herald $round rate=$(python3 -c "print(round($EVENTS / ($end - $start)))")"
  for i in "${!named[@]}"; do
    line="$line ${named[i]%%=*}=$(per_event $(( $(cpu_ticks "${named[i]#*=}") - before[i] )))"
  done
  local used_after
  used_after=$(redis-cli -p "$rport" info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p')
  line="$line producer=$(client_per_event "$WORK/client-cpu") stored=$(( (used_after - used_before) / (EVENTS + WARM) ))"
  echo "$line" >> "$WORK/runs"
  echo "$line" >&2
  stop_all
}

# jetstream_round ROUND: one run of JetStream; appends its line to $WORK/runs.
jetstream_round() {
  local round="$1" dir="$WORK/jetstream-$round" port url server
  mkdir -p "$dir/store"
  port=$(free_port)
  nats-server -js -a 127.0.0.1 -p "$port" -sd "$dir/store" > "$dir/nats.log" 2>&1 &
  server=$!
  PIDS+=("$server")
  wait_for_port "$port"
  url="nats://127.0.0.1:$port"
  "$BIN/jetstream-bench" --url "$url" setup
  # The warm-up.
  "$BIN/jetstream-bench" --url "$url" consume --events "$WARM" > /dev/null 2>&1 &
  local warm=$!
  "$BIN/jetstream-bench" --url "$url" produce --events "$WARM" > /dev/null
  wait "$warm"
  # The measured run: the consumer's CPU counted as the producer's is.
  local before start end
  before=$(cpu_ticks "$server")
  start=$(now)
  run_counting_cpu "$WORK/consumer-cpu" "$BIN/jetstream-bench" --url "$url" consume --events "$EVENTS" \
    > /dev/null 2> "$dir/consume.json" &
  local consumer=$!
  run_counting_cpu "$WORK/client-cpu" "$BIN/jetstream-bench" --url "$url" produce --events "$EVENTS" > "$dir/produce.json"
  wait "$consumer" || { echo "jetstream, round $round: the consumer failed" >&2; exit 1; }
  end=$(now)
  local handled stored
  handled=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["handled"])' "$dir/consume.json")
  [ "$handled" = "$EVENTS" ] || { echo "jetstream, round $round: $handled of $EVENTS handled" >&2; exit 1; }
  stored=$("$BIN/jetstream-bench" --url "$url" stored | python3 -c 'import json, sys; print(json.load(sys.stdin)["bytes"])')
  local line="jetstream $round rate=$(python3 -c "print(round($EVENTS / ($end - $start)))")"
  line="$line nats-server=$(per_event $(( $(cpu_ticks "$server") - before )))"
  line="$line consumer=$(client_per_event "$WORK/consumer-cpu")"
  line="$line producer=$(client_per_event "$WORK/client-cpu") stored=$(( stored / (EVENTS + WARM) ))"
  echo "$line" >> "$WORK/runs"
  echo "$line" >&2
  stop_all
}

for round in $(seq 1 "$ROUNDS"); do
  herald_round "$round"
  jetstream_round "$round"
done

python3 - "$WORK/runs" "$(nproc)" "$EVENTS" "$PROCESSORS" <<'PY'
import sys
from statistics import mean

runs, cores, events, processors = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
rows = {"herald": [], "jetstream": []}
for line in open(runs):
    system, _round, *fields = line.split()
    rows[system].append({k: int(v) for k, v in (f.split("=") for f in fields)})
servers = {
    "herald": lambda r: r["redis"] + r["logger"] + sum(v for k, v in r.items() if k.startswith("processor-")),
    "jetstream": lambda r: r["nats-server"] + r["consumer"],
}
print(f"\nHerald (Redis AOF everysec, {processors} processors) against JetStream (file store), "
      f"{events} events a round, {cores} cores; CPU in µs per event, stored in bytes per event\n")
print(f"{'system':<10} {'round':>5} {'events/s':>9} {'servers':>8} {'producer':>9} {'stored':>7}  processes")
means = {}
for system, rs in rows.items():
    for i, r in enumerate(rs, 1):
        detail = " ".join(f"{k}={v}" for k, v in r.items() if k not in ("rate", "producer", "stored"))
        print(f"{system:<10} {i:>5} {r['rate']:>9} {servers[system](r):>8} {r['producer']:>9} {r['stored']:>7}  {detail}")
    means[system] = {
        "rate": mean(r["rate"] for r in rs),
        "servers": mean(servers[system](r) for r in rs),
        "producer": mean(r["producer"] for r in rs),
        "stored": mean(r["stored"] for r in rs),
    }
print()
h, j = means["herald"], means["jetstream"]
print(f"herald / jetstream, means: events/s {h['rate'] / j['rate']:.2f}, server CPU per event "
      f"{h['servers'] / max(j['servers'], 1):.2f}, producer CPU per event {h['producer'] / max(j['producer'], 1):.2f}, "
      f"stored per event {h['stored'] / max(j['stored'], 1):.2f}")
PY
