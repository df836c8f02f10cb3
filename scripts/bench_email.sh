#!/usr/bin/env bash
# Emails per second through one processor against a local SMTP server, and
# what each costs, on fresh servers of its own (free ports, a scratch
# folder): a redis-server, a logger, scripts/smtp_sink.py (aiosmtpd) and,
# once the events are queued, one herald-processor with an email channel.
#
# 1. `herald bench ingest --cpu-of logger=PID` queues the events (no
#    processor runs yet), and its Health/Check loop gives the logger's CPU
#    per health check on a quiet server: the unit of the costs below.
# 2. The processor starts and drains the queue through the email channel
#    (a template per message, one SMTP transaction each, a pool of
#    connections), settling through the logger as always.
# 3. Reported: emails a second (first to last message the SMTP server
#    accepted), and the CPU per email of the processor, the logger and the
#    SMTP server (from /proc over the drain), each also in Health/Checks.
#
# Usage: scripts/bench_email.sh [--bin DIR] [--duration 3s] [--users N] [--pool N]
set -euo pipefail

bin=target/release
duration=3s
users=1000
pool=4
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --users) users=$2; shift 2 ;;
    --pool) pool=$2; shift 2 ;;
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
smtp=$(free_port)
redis-server --port "$redis_port" --save '' --appendonly no --dir "$work" >/dev/null &
PIDS+=($!)
wait_for_port "$redis_port"
python3 "$root/scripts/smtp_sink.py" --port "$smtp" --out "$work/mail.jsonl" >"$work/sink.log" &
sink=$!
PIDS+=("$sink")
wait_for_port "$smtp"

mkdir "$work/templates"
printf '{{ event.description }}\n' >"$work/templates/default.subject"
printf 'Hello {{ recipient.name }},\n\n{{ event.description }}\n' >"$work/templates/default.txt"
printf '<p>Hello {{ recipient.name }},</p><p>{{ event.description }}</p>\n' >"$work/templates/default.html"
cat >"$work/channels.toml" <<TOML
[channels.email]
kind = "email"
server = "127.0.0.1:$smtp"
tls = "none"
from = "Herald <bench@example.com>"
templates = "$work/templates"
pool = $pool

[[routes]]
channels = ["email"]
TOML

url="redis://127.0.0.1:$redis_port/"
"$bin/herald-logger" --listen "127.0.0.1:$grpc" --redis-url "$url" --metrics-listen 127.0.0.1:0 \
  --console-listen 127.0.0.1:0 >"$work/logger.log" 2>&1 &
logger=$!
PIDS+=("$logger")
wait_for_port "$grpc"
herald=("$bin/herald" --server "http://127.0.0.1:$grpc")

for i in $(seq 0 $((users - 1))); do
  printf '{"user_id": "bench-user-%d", "email": "user%d@example.com", "name": "User %d"}\n' "$i" "$i" "$i"
done >"$work/recipients.jsonl"
"${herald[@]}" recipients import "$work/recipients.jsonl" >/dev/null

echo "== queueing: herald bench ingest --users $users --duration $duration (no processor yet)"
"${herald[@]}" bench ingest --users "$users" --duration "$duration" --warmup 1s \
  --cpu-of "logger=$logger" | tee "$work/ingest.txt"
health_us=$(python3 -c '
import re, sys
lines = open(sys.argv[1]).read().splitlines()
for i, line in enumerate(lines):
    if line.startswith("health"):
        print(re.search(r"logger ([0-9.]+)", lines[i + 1]).group(1))
' "$work/ingest.txt")
queued=$("${herald[@]}" --json stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["pending_events"])')
echo "queued: $queued events; the logger's CPU per Health/Check: ${health_us:-?} µs"

"$bin/herald-processor" --redis-url "$url" --logger-url "http://127.0.0.1:$grpc" \
  --channels "$work/channels.toml" --consumer-name bench --metrics-listen 127.0.0.1:0 \
  >"$work/processor.log" 2>&1 &
processor=$!
PIDS+=("$processor")
p0=$(cpu_seconds "$processor"); l0=$(cpu_seconds "$logger"); s0=$(cpu_seconds "$sink")
while :; do
  sent=0
  [ -f "$work/mail.jsonl" ] && sent=$(wc -l <"$work/mail.jsonl")
  [ "$sent" -ge "$queued" ] && break
  if ! kill -0 "$processor" 2>/dev/null; then
    echo "the processor stopped" >&2
    tail "$work/processor.log" >&2
    exit 1
  fi
  sleep 0.2
done
p1=$(cpu_seconds "$processor"); l1=$(cpu_seconds "$logger"); s1=$(cpu_seconds "$sink")
python3 - "$work/mail.jsonl" "$queued" "$p0" "$p1" "$l0" "$l1" "$s0" "$s1" "${health_us:-0}" <<'PY'
import json, sys
path, n = sys.argv[1], int(sys.argv[2])
p0, p1, l0, l1, s0, s1, health = map(float, sys.argv[3:])
times = [json.loads(line)["received_at"] for line in open(path)]
span = max(times) - min(times)
rate = (len(times) - 1) / span if span > 0 else float("nan")
print(f"emails: {len(times)} in {span:.2f} s: {rate:,.0f} emails/s")
for name, a, b in (("processor", p0, p1), ("logger", l0, l1), ("smtp sink", s0, s1)):
    us = (b - a) * 1e6 / len(times)
    ratio = f" = {us / health:.1f} Health/Checks" if health > 0 else ""
    print(f"{name:10} CPU per email: {us:.1f} µs{ratio}")
PY
