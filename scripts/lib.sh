# Shell helpers shared by the benchmark scripts (bench.sh, compare.sh,
# compare_jetstream.sh, stored_bytes.sh, bench_email.sh, bench_ordering.sh):
# sourced, not run.

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ingest_flags D NAME=PID...: sets INGEST_FLAGS to the flags both scripts
# run `herald bench ingest` with: 64 callers over 4 connections, D of warm-up
# then D measured for each loop, and --cpu-of for each named process.
ingest_flags() {
  local duration="$1" named
  shift
  INGEST_FLAGS=(--concurrency 64 --connections 4 --duration "$duration" --warmup "$duration")
  for named in "$@"; do INGEST_FLAGS+=(--cpu-of "$named"); done
}

# Waits (up to 10 s) until something listens on port $1; exits if nothing does.
wait_for_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  exit 1
}

# CPU time a process has used so far (user and system), in clock ticks.
cpu_ticks() {
  # Fields after the command name, which is in parentheses: utime is the 12th, stime the 13th.
  sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

# CPU seconds (user and system) a process has used so far.
cpu_seconds() {
  awk -v hz="$(getconf CLK_TCK)" -v ticks="$(cpu_ticks "$1")" 'BEGIN { printf "%.4f\n", ticks / hz }'
}

# run_counting_cpu FILE CMD...: runs CMD (its output passes through) and
# writes the CPU seconds it used, user and system, to FILE; exits as CMD did.
run_counting_cpu() {
  python3 -c '
import resource, subprocess, sys
done = subprocess.run(sys.argv[2:])
used = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write(str(used.ru_utime + used.ru_stime))
sys.exit(done.returncode)' "$@"
}

# check_counts N...: each is a whole number above 0, or the caller's usage.
check_counts() {
  local n
  for n in "$@"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "$n: rounds, events and processors are whole numbers above 0" >&2; usage; }
  done
}

# start_processors BIN N RPORT LPORT LOGDIR: N processors of BIN on the
# Redis at RPORT, calling the logger at LPORT, logging into LOGDIR; each
# is added to PIDS and, as processor-I=PID, to NAMED.
start_processors() {
  local bin="$1" count="$2" rport="$3" lport="$4" logs="$5" i
  for i in $(seq 1 "$count"); do
    "$bin/herald-processor" --redis-url "redis://127.0.0.1:$rport/" \
      --logger-url "http://127.0.0.1:$lport" --consumer-name "compare-$i" \
      > /dev/null 2> "$logs/processor-$i.log" &
    PIDS+=("$!")
    NAMED+=("processor-$i=$!")
  done
}

# Exits unless redis-server is installed.
need_redis_server() {
  command -v redis-server >/dev/null || { echo "redis-server is needed (apt-get install redis-server)" >&2; exit 1; }
}

# Makes $WORK, a temporary directory; on exit, the processes whose pids are
# in PIDS are stopped and $WORK is removed.
start_work() {
  WORK=$(mktemp -d)
  PIDS=()
  trap cleanup EXIT
}

# Stops the processes whose pids are in PIDS, and forgets them.
stop_all() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  PIDS=()
}

cleanup() {
  stop_all
  rm -rf "$WORK"
}
