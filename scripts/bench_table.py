#!/usr/bin/env python3
"""Prints the summary table of scripts/bench.sh from its results.jsonl; exits 1
if any run lost a notification or a call failed."""

import json
import sys


def cpu_bound(floor, ingest):
    """The ratio an ingest run's two loops would have if both kept every
    core busy: the floor's CPU per call (every process together) over the
    create's; None without figures."""
    per_floor, per_ingest = (sum(s.get("cpu_us_per_op", {}).values()) for s in (floor, ingest))
    return per_floor / per_ingest if per_ingest > 0 else None


def ingest_cpu(backend, r, problems):
    """Prints each process's CPU per call in the two ingest loops, and the
    ratio the loops' rates would have if both kept every core busy: the sum
    of the floor's CPU per call over the ingest's."""
    floor, ingest = r["series"]
    for s in (floor, ingest):
        name = "health" if s is floor else "create"
        for process, us in s.get("cpu_us_per_op", {}).items():
            print(f"{backend:<8} {'ingest CPU, ' + name + ': ' + process:<34} {us:>11.1f} us")
    bound = cpu_bound(floor, ingest)
    if "logger" not in floor.get("cpu_us_per_op", {}) or "logger" not in ingest.get("cpu_us_per_op", {}):
        problems.append(f"{backend} ingest: no CPU per call for the logger")
    elif bound is not None:
        print(f"{backend:<8} {'ingest / floor in CPU per call':<34} {bound:>14.3f}")


def main():
    path, cores, processors = sys.argv[1], sys.argv[2], sys.argv[3]
    rows = [json.loads(line) for line in open(path) if line.strip()]
    problems = []
    print(f"\nHerald benchmarks: {cores} cores, Redis runs with {processors} processors\n")
    print(f"{'backend':<8} {'benchmark':<34} {'result':>14} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9}")
    for r in rows:
        backend, bench = r["backend"], r["benchmark"]
        if bench == "rss":
            print(f"{backend:<8} {'logger peak RSS':<34} {str(r['logger_peak_rss_mb']) + ' MB':>14}")
            continue
        if bench == "cpu":
            each = r["us_per_event"]
            # Runs through the Publisher are marked (P): batched creates.
            e2e = "e2e(P)" if r.get("via") == "publisher" else "e2e"
            for name, us in each.items():
                print(f"{backend:<8} {e2e + ' CPU per event: ' + name:<34} {str(us) + ' us':>14}")
            print(f"{backend:<8} {e2e + ' CPU per event: servers':<34} {str(sum(each.values())) + ' us':>14}")
            print(f"{backend:<8} {e2e + ' CPU per event: bench client':<34} {str(r['client_us_per_event']) + ' us':>14}")
            continue
        if bench == "memory":
            print(f"{backend:<8} {'Redis memory per stored event':<34} {str(r['bytes_per_event']) + ' B':>14}")
            continue
        for s in r["series"]:
            name = f"{bench}: {s['name']}"
            if bench == "e2e" and r.get("via") == "publisher":
                name = f"e2e(P): {s['name']}"
            if bench == "e2e" and r.get("rate"):
                name = f"e2e @{r['rate']:.0f}/s: {s['name']}"
            result = f"{s['ops_per_sec']:,.0f}/s"
            if bench == "fanout":
                result = f"{s['ops']}/{r['expected_messages']} msgs"
                if r.get("transport") == "sse":
                    name = f"fanout(SSE): {s['name']}"
            print(f"{backend:<8} {name:<34} {result:>14} {s['p50_ms']:>8.2f} {s['p99_ms']:>8.2f} {s['p999_ms']:>9.2f}")
        if bench == "ingest":
            print(f"{backend:<8} {'ingest / health floor':<34} {r['ingest_over_floor']:>14.3f}")
            ingest_cpu(backend, r, problems)
        if bench == "e2e" and r["missing"]:
            print(f"{backend:<8} {'e2e: MISSING notifications':<34} {r['missing']:>14}")
            problems.append(f"{backend} e2e lost {r['missing']} notifications")
        if bench == "fanout" and "logger_bytes_per_idle_stream" in r:
            label = "fanout(SSE)" if r.get("transport") == "sse" else "fanout"
            print(f"{backend:<8} {label + ': logger bytes per idle stream':<34} {r['logger_bytes_per_idle_stream']:>14}")
        if bench == "fanout" and not r["all_arrived"]:
            problems.append(f"{backend} fanout: {r['arrived_messages']} of {r['expected_messages']} arrived")
        if bench != "fanout":
            problems += [f"{backend} {bench}: {s['errors']} failed calls" for s in r["series"] if s["errors"]]
    for p in problems:
        print(f"FAILED: {p}", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
