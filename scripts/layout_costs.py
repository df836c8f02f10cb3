#!/usr/bin/env python3
"""What candidate Redis layouts cost per stored event, measured in a fresh
redis-server of their own (free port, no persistence) for each case:
BENCHMARKS.md §34's tables come from here.

  scripts/layout_costs.py [--entries N] [records|indexes|scripted|windows ...]

- records: a 100-byte record as a string per event (Herald's layout), and
  as fields of hashes of 100 (Redis's default limits, then with
  hash-max-listpack-value 512), and of 1 to 40,000 (default limits).
- indexes: 16-byte members scored by micros in one sorted set, in users'
  sorted sets of several sizes, and in sorted sets of at most 128 entries.
- scripted: an index kept in buckets of at most 128 with a directory by a
  Lua script (finds the bucket, splits a full one before adding): Redis's
  µs per insert against a plain ZADD.
- windows: buckets the writer computes from the score's window
  (floor(score / W)) with the window added to a directory by ZADD NX, all
  plain commands, at several rates and windows.

Bytes are `used_memory` growth per entry; µs are the commands' own time
from INFO commandstats. Needs redis-server and the `redis` Python package
(pip install redis). Default: all four, 100,000 entries each.
"""

import argparse
import os
import socket
import subprocess
import tempfile
import time

import redis

RECORD = os.urandom(100)
T0 = 1_765_000_000_000_000  # micros, the scores' start

# Keeps an index in sorted sets of at most 128 entries: KEYS[1] is the
# directory (bucket number -> lowest score), ARGV the score, the member and
# the buckets' key prefix.
BUCKETED_INSERT = """
local score, member, prefix = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local found = redis.call('ZRANGE', KEYS[1], ARGV[1], '-inf', 'BYSCORE', 'REV', 'LIMIT', 0, 1)
local bucket = found[1]
if not bucket then
  bucket = redis.call('ZRANGE', KEYS[1], 0, 0)[1] or '0'
  redis.call('ZADD', KEYS[1], ARGV[1], bucket)
end
local key = prefix .. bucket
if redis.call('ZCARD', key) >= 128 then
  -- Split before adding: a sorted set past 128 stays a skip list when it
  -- shrinks. The upper half moves to a new bucket.
  local n = redis.call('INCR', prefix .. 'next')
  local upper = redis.call('ZRANGE', key, 64, -1, 'WITHSCORES')
  local args = {}
  for i = 1, #upper, 2 do args[#args + 1] = upper[i + 1]; args[#args + 1] = upper[i] end
  redis.call('ZADD', prefix .. n, unpack(args))
  redis.call('ZREMRANGEBYRANK', key, 64, -1)
  redis.call('ZADD', KEYS[1], upper[2], tostring(n))
  if score >= tonumber(upper[2]) then key = prefix .. n end
end
redis.call('ZADD', key, ARGV[1], member)
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(name, entries, write, config=(), timed=("zadd",)):
    """Runs `write(pipe, i, id, sha)` for each entry in a fresh redis-server
    started with `config`; prints bytes (and the `timed` commands' µs) per entry."""
    port = free_port()
    folder = tempfile.mkdtemp()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", folder, *config],
        stdout=subprocess.DEVNULL,
    )
    try:
        r = redis.Redis(port=port)
        for _ in range(200):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        sha = r.script_load(BUCKETED_INSERT)
        r.config_resetstat()
        before = r.info("memory")["used_memory"]
        pipe = r.pipeline(transaction=False)
        for i in range(entries):
            write(pipe, i, os.urandom(16), sha)
            if i % 1000 == 999:
                pipe.execute()
        pipe.execute()
        grown = r.info("memory")["used_memory"] - before
        stats = r.info("commandstats")
        usec = sum(stats.get(f"cmdstat_{c}", {}).get("usec", 0) for c in timed)
        print(f"{name:<66} {grown / entries:7.1f} B  {usec / entries:6.2f} µs")
    finally:
        server.terminate()
        server.wait()


def records(n):
    measure("record: a string per event (Herald's layout)", n,
            lambda p, i, id_, _: p.set(b"herald:{p07}:event:" + id_.hex().encode(), RECORD), timed=("set",))
    for config in ((), ("--hash-max-listpack-value", "512")):
        measure(f"record: fields of hashes of 100 {' '.join(config) or '(default limits)'}", n,
                lambda p, i, id_, _: p.hset(b"herald:{p07}:ev:%d" % (i // 100), id_, RECORD),
                config, timed=("hset",))
    # Hashes named by a window of the id's time hold as many records as the
    # window sees: few at a slow rate, tens of thousands at a fast one.
    for size in (1, 4, 16, 1000, 40000):
        measure(f"record: fields of hashes of {size} (default limits)", n,
                lambda p, i, id_, _, s=size: p.hset(b"herald:{p07}:rec:%d" % (i // s), id_, RECORD),
                timed=("hset",))


def indexes(n):
    measure("index: one sorted set", n, lambda p, i, id_, _: p.zadd("idx:status", {id_: T0 + i}))
    for users in (32, 1000, 10000):
        measure(f"index: {users} users' sorted sets of {n // users} entries", n,
                lambda p, i, id_, _, u=users: p.zadd(b"idx:user:%d" % (i % u), {id_: T0 + i}))
    measure("index: sorted sets of at most 128 entries", n,
            lambda p, i, id_, _: p.zadd(b"idx:status:%d" % (i // 128), {id_: T0 + i}))


def scripted(n):
    measure("one sorted set, plain ZADD (rising scores)", n,
            lambda p, i, id_, _: p.zadd("idx", {id_: T0 + i * 10}))
    measure("buckets of at most 128 with a directory, by script", n,
            lambda p, i, id_, sha: p.evalsha(sha, 1, "dir", T0 + i * 10, id_, "b:"), timed=("evalsha",))


def windows(n):
    for rate in (625, 62, 6):
        step = 1_000_000 / rate
        measure(f"{rate}/s: one sorted set", n, lambda p, i, id_, _, s=step: p.zadd("idx", {id_: int(T0 + i * s)}))
        for window in (100_000, 1_000_000, 10_000_000):
            last = [None]

            def write(p, i, id_, _, s=step, w=window, last=last):
                score = int(T0 + i * s)
                bucket = score // w
                p.zadd(b"idx:%d" % bucket, {id_: score})
                if bucket != last[0]:  # a batch adds each window it touches once
                    p.zadd("idx:dir", {str(bucket): bucket * w}, nx=True)
                    last[0] = bucket

            measure(f"{rate}/s: windows of {window / 1e6:g} s, directory by ZADD NX", n, write)


def main():
    cases = {"records": records, "indexes": indexes, "scripted": scripted, "windows": windows}
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("cases", nargs="*", metavar="CASE", help=" | ".join(cases))
    args = parser.parse_args()
    unknown = [c for c in args.cases if c not in cases]
    if unknown:
        parser.error(f"unknown case {unknown[0]!r}: use {', '.join(cases)}")
    print(f"{'layout':<66} {'per entry':>9}  {'Redis':>8}")
    for case in args.cases or cases:
        cases[case](args.entries)


if __name__ == "__main__":
    main()
