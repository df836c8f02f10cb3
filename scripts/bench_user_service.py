#!/usr/bin/env python3
"""Measures the user service's GET /metrics: paced at RATE calls a second over
one keep-alive connection for SECONDS, the latency percentiles and the
service's CPU per call (from /proc), with 1,000 users in its database.

Usage: scripts/bench_user_service.py [USER_SERVICE_BINARY] [RATE] [SECONDS]
  (default target/dist/user-service, 1000 calls/s, 10 s)
No Herald is needed: the events wait in the Publisher's buffer.
"""

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/dist/user-service"
    rate = float(sys.argv[2]) if len(sys.argv) > 2 else 1000.0
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
    port = free_port()
    with tempfile.TemporaryDirectory() as work:
        service = subprocess.Popen(
            [binary, "--listen", f"127.0.0.1:{port}", "--database", f"{work}/users.db",
             "--herald-url", f"http://127.0.0.1:{free_port()}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, RUST_LOG="error"))
        try:
            conn = None
            for _ in range(100):
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    conn.request("GET", "/metrics")
                    conn.getresponse().read()
                    break
                except OSError:
                    time.sleep(0.1)
            for i in range(1000):
                body = json.dumps({"email": f"user{i}@example.com", "name": f"User {i}"})
                conn.request("POST", "/users", body, {"content-type": "application/json"})
                assert conn.getresponse().read()
            calls = int(rate * seconds)
            latencies = []
            cpu_before = cpu_seconds(service.pid)
            start = time.perf_counter()
            for k in range(calls):
                due = start + k / rate
                now = time.perf_counter()
                if due > now:
                    time.sleep(due - now)
                t0 = time.perf_counter()
                conn.request("GET", "/metrics")
                response = conn.getresponse()
                body = response.read()
                latencies.append(time.perf_counter() - t0)
                assert response.status == 200 and b"user_service_users_active 1000" in body
            elapsed = time.perf_counter() - start
            cpu = cpu_seconds(service.pid) - cpu_before
        finally:
            service.terminate()
            service.wait()
    latencies.sort()
    q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000
    print(json.dumps({
        "benchmark": "user-service /metrics",
        "cores": os.cpu_count(),
        "calls": calls,
        "calls_per_sec": round(calls / elapsed),
        "p50_ms": round(q(0.50), 3),
        "p99_ms": round(q(0.99), 3),
        "service_cpu_us_per_call": round(cpu * 1e6 / calls, 1),
        "service_cpu_share_of_one_core": round(cpu / elapsed, 3),
    }))


if __name__ == "__main__":
    main()
