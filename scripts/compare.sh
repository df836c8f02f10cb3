#!/usr/bin/env bash
# Compares the CPU two builds of Herald spend per event, on this machine, in
# alternating rounds of the end-to-end run on one Redis:
#
#   scripts/compare.sh BASE NEW [--rounds N] [--events N] [--processors N]
#                      [--client PATH] [--ingest [--duration D]]
#
# BASE and NEW are directories holding a herald-logger and a
# herald-processor (copies of target/dist made at two commits, say; BASE
# also holds the herald that is the benchmark client of both, unless
# --client names another: an old build's herald may lack the flags this
# script passes). Each round runs
# BASE, then NEW, each against a fresh redis-server, logger and processors on
# free ports: a warm-up of a quarter of the events, then `herald bench e2e
# --events N`, reading from /proc the CPU (user and system) each process spent
# on it, and the client's own from getrusage. This machine's speed drifts
# between runs by more than most changes move, so every figure is also given
# as a multiple of the client's CPU in the same run (the client does the same
# work for both builds, so it moves with the machine alone), and the last
# line but one compares the builds in those terms; the last compares them in
# µs, which is what counts when the change alters the client's own work too
# (the client's ratio says whether it did). Defaults: 3 rounds of 20,000
# events, 2 processors. Exits non-zero if a run loses a notification.
#
# --ingest compares the front door instead: each round runs `herald bench
# ingest` (64 callers, 4 connections, D of warm-up then D measured for each
# of its two loops; D 5s by default) against a fresh redis-server and
# logger, with the CPU per call of the logger, Redis and the client in each
# loop (`--cpu-of`), and prints per round and per build the creates/s,
# ingest over the Health/Check floor, each process's CPU per create and the
# ratio's CPU bound (the floor's CPU per call over the create's). Only
# herald-logger is needed in BASE and NEW then. Exits non-zero if a call
# failed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

usage() {
  echo "usage: $0 BASE NEW [--rounds N] [--events N] [--processors N] [--client PATH] [--ingest [--duration D]]" >&2
  exit 2
}
[ $# -ge 2 ] || usage
BASE=$1
NEW=$2
shift 2
ROUNDS=3
EVENTS=20000
PROCESSORS=2
CLIENT="$BASE/herald"
INGEST=""
DURATION=5s
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS="$2"; shift ;;
    --events) EVENTS="$2"; shift ;;
    --processors) PROCESSORS="$2"; shift ;;
    --client) CLIENT="$2"; shift ;;
    --ingest) INGEST=1 ;;
    --duration) DURATION="$2"; shift ;;
    *) usage ;;
  esac
  shift
done
check_counts "$ROUNDS" "$EVENTS" "$PROCESSORS"
[[ "$DURATION" =~ ^[1-9][0-9]*(ms|s|m)$ ]] || { echo "--duration $DURATION: a time such as 5s or 500ms" >&2; usage; }
needed=(herald-logger)
[ -n "$INGEST" ] || needed+=(herald-processor)
for dir in "$BASE" "$NEW"; do
  for bin in "${needed[@]}"; do
    [ -x "$dir/$bin" ] || { echo "$dir/$bin: no such program (copy it from target/dist)" >&2; exit 2; }
  done
done
[ -x "$CLIENT" ] || { echo "$CLIENT: no such program (the benchmark client of both builds; see --client)" >&2; exit 2; }
need_redis_server
start_work
export RUST_LOG=warn HERALD_METRICS_LISTEN=off HERALD_CONSOLE_LISTEN=off

# start_front_door LABEL ROUND DIR: a fresh redis-server and the logger of
# the build in DIR, on free ports; sets RPORT, LPORT and NAMED (redis=PID
# logger=PID).
start_front_door() {
  local label="$1" round="$2" dir="$3"
  RPORT=$(free_port)
  mkdir -p "$WORK/$label-$round"
  redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$WORK/$label-$round" --save "" \
    --appendonly no --daemonize no --logfile "$WORK/$label-$round/redis.log" &
  PIDS+=("$!")
  NAMED=("redis=$!")
  wait_for_port "$RPORT"
  LPORT=$(free_port)
  "$dir/herald-logger" --listen "127.0.0.1:$LPORT" --redis-url "redis://127.0.0.1:$RPORT/" \
    > /dev/null 2> "$WORK/$label-$round/logger.log" &
  PIDS+=("$!")
  NAMED+=("logger=$!")
  wait_for_port "$LPORT"
}

# run_once LABEL ROUND DIR: one end-to-end run of the build in DIR; appends
# its CPU per event (µs) of each process and of the client to $WORK/runs.
run_once() {
  local label="$1" round="$2" dir="$3"
  local before=() i
  start_front_door "$label" "$round" "$dir"
  start_processors "$dir" "$PROCESSORS" "$RPORT" "$LPORT" "$WORK/$label-$round"
  "$CLIENT" --server "127.0.0.1:$LPORT" bench e2e --events $((EVENTS / 4 + 1)) > /dev/null
  for i in "${!NAMED[@]}"; do before[i]=$(cpu_ticks "${NAMED[i]#*=}"); done
  run_counting_cpu "$WORK/client-cpu" "$CLIENT" --server "127.0.0.1:$LPORT" --json \
    bench e2e --events "$EVENTS" > "$WORK/e2e.json"
  local tick line
  tick=$(getconf CLK_TCK)
  line="$label $round"
  for i in "${!NAMED[@]}"; do
    line="$line ${NAMED[i]%%=*}=$(( ($(cpu_ticks "${NAMED[i]#*=}") - before[i]) * 1000000 / tick / EVENTS ))"
  done
  line="$line client=$(python3 -c 'import sys; print(round(float(open(sys.argv[1]).read()) * 1e6 / int(sys.argv[2])))' "$WORK/client-cpu" "$EVENTS")"
  echo "$line" >> "$WORK/runs"
  echo "$line" >&2
  python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); sys.exit(1 if r.get("missing") else 0)' "$WORK/e2e.json" \
    || { echo "$label, round $round: notifications were lost" >&2; exit 1; }
  stop_all
}

# run_ingest_once LABEL ROUND DIR: one ingest run of the build in DIR, its
# report (with each process's CPU per call) kept as $WORK/LABEL-ROUND.json.
run_ingest_once() {
  local label="$1" round="$2" dir="$3"
  start_front_door "$label" "$round" "$dir"
  ingest_flags "$DURATION" "${NAMED[@]}"
  "$CLIENT" --server "127.0.0.1:$LPORT" --json bench ingest "${INGEST_FLAGS[@]}" > "$WORK/$label-$round.json"
  python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); sys.exit(1 if any(s["errors"] for s in r["series"]) else 0)' \
    "$WORK/$label-$round.json" || { echo "$label, round $round: calls failed" >&2; exit 1; }
  echo "$label $round done" >&2
  stop_all
}

if [ -n "$INGEST" ]; then
  for round in $(seq 1 "$ROUNDS"); do
    run_ingest_once base "$round" "$BASE"
    run_ingest_once new "$round" "$NEW"
  done
  python3 - "$WORK" "$ROUNDS" "$(nproc)" "$DURATION" <<'PY'
import json
import sys
from statistics import mean

sys.path.insert(0, "scripts")
from bench_table import cpu_bound

work, rounds, cores, duration = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
names = ["bench client", "logger", "redis"]
rows = {"base": [], "new": []}
print(f"\nIngest (64 callers, {duration} measured a loop), {cores} cores: CPU µs per create, ratio to the floor and its CPU bound\n")
print(f"{'build':<6} {'round':>5} {'creates/s':>10} {'ratio':>6} {'bound':>6} " + " ".join(f"{n:>13}" for n in names) + f" {'together':>9}")
for rnd in range(1, rounds + 1):
    for label in ("base", "new"):
        r = json.load(open(f"{work}/{label}-{rnd}.json"))
        floor, ingest = r["series"]
        create = ingest["cpu_us_per_op"]
        row = {
            "rate": ingest["ops_per_sec"],
            "ratio": r["ingest_over_floor"],
            "bound": cpu_bound(floor, ingest) or 0.0,
            "together": sum(create.values()),
            **{n: create.get(n, 0.0) for n in names},
        }
        rows[label].append(row)
        print(f"{label:<6} {rnd:>5} {row['rate']:>10.0f} {row['ratio']:>6.3f} {row['bound']:>6.3f} "
              + " ".join(f"{row[n]:>13.1f}" for n in names) + f" {row['together']:>9.1f}")
print()
means = {label: {k: mean(r[k] for r in rows[label]) for k in rows[label][0]} for label in rows}
for label in ("base", "new"):
    m = means[label]
    print(f"{label:<6} {'mean':>5} {m['rate']:>10.0f} {m['ratio']:>6.3f} {m['bound']:>6.3f} "
          + " ".join(f"{m[n]:>13.1f}" for n in names) + f" {m['together']:>9.1f}")
servers = {label: mean(r["logger"] + r["redis"] for r in rows[label]) for label in rows}
client = {label: means[label]["bench client"] for label in rows}
print(f"\nnew / base, logger and Redis CPU per create in µs: {servers['new'] / servers['base']:.3f}"
      f" (the client's own: {client['new'] / client['base']:.3f});"
      f" ingest over the floor {means['new']['ratio'] / means['base']['ratio']:.3f}")
PY
  exit 0
fi

for round in $(seq 1 "$ROUNDS"); do
  run_once base "$round" "$BASE"
  run_once new "$round" "$NEW"
done

python3 - "$WORK/runs" "$(nproc)" "$EVENTS" <<'PY'
import sys
from statistics import mean

path, cores, events = sys.argv[1], sys.argv[2], sys.argv[3]
runs = []
for line in open(path):
    label, rnd, *fields = line.split()
    cpu = {k: int(v) for k, v in (f.split("=") for f in fields)}
    client = cpu.pop("client")
    runs.append((label, rnd, cpu, client))
names = list(runs[0][2])
print(f"\nCPU per end-to-end event (µs; × the client's CPU), {cores} cores, {events} events a run\n")
print(f"{'build':<6} {'round':>5} " + " ".join(f"{n:>16}" for n in names + ["servers"]) + f" {'client':>8}")
for label, rnd, cpu, client in runs:
    cells = [f"{us} ({us / client:.2f}×)" for us in list(cpu.values()) + [sum(cpu.values())]]
    print(f"{label:<6} {rnd:>5} " + " ".join(f"{c:>16}" for c in cells) + f" {client:>8}")
means = {}
for label in ("base", "new"):
    mine = [r for r in runs if r[0] == label]
    means[label] = {n: mean(r[2][n] / r[3] for r in mine) for n in names}
    means[label]["servers"] = mean(sum(r[2].values()) / r[3] for r in mine)
print()
for label in ("base", "new"):
    print(f"{label:<6} {'mean':>5} " + " ".join(f"{means[label][n]:>15.2f}×" for n in names + ["servers"]))
ratio = means["new"]["servers"] / means["base"]["servers"]
print(f"\nnew / base, servers' CPU per event in multiples of the client's: {ratio:.3f}")
# The same in µs: right where the change also alters the client's own work
# (a server that writes its answers in fewer pieces wakes the client less),
# which the line above reads as a faster machine.
absolute = {label: mean(sum(r[2].values()) for r in runs if r[0] == label) for label in ("base", "new")}
client = {label: mean(r[3] for r in runs if r[0] == label) for label in ("base", "new")}
print(f"new / base, servers' CPU per event in µs: {absolute['new'] / absolute['base']:.3f}"
      f" (the client's own: {client['new'] / client['base']:.3f})")
PY
