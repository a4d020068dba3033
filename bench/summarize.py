#!/usr/bin/env python3
"""bench/summarize.py OUT_DIR [OUT_DIR...]: the markdown summary of bench/run.sh runs.

Reads each OUT_DIR's results.tsv (one line per measurement and round), memory.tsv and
machine.txt; prints medians over all rounds of all the runs given, per server and benchmark,
the ours/C++ ratios, and RSS per idle connection.
"""
import csv
import os
import statistics
import sys

SERVERS = [("ours", "ours"), ("cpp", "grpc C++"), ("go", "grpc-go")]
TESTS = [
    ("ghz-health", "ghz Health/Check (c=50, 4 conns)"),
    ("ghz-unary1k", "ghz UnaryCall 1 KiB echo (c=50, 4 conns)"),
    ("h2load-health", "h2load Health/Check (c=4, m=100)"),
    ("h2load-unary1k", "h2load UnaryCall 1 KiB echo (c=4, m=100)"),
    ("h2load-empty", "h2load EmptyCall (c=4, m=100)"),
    ("stream-w1", "FullDuplexCall, 1 stream, ping-pong 1 KiB (msgs/s)"),
    ("stream-w64", "FullDuplexCall, 1 stream, 64 in flight 1 KiB (msgs/s)"),
]


def med(xs):
    return statistics.median(xs) if xs else None


def load(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return list(csv.DictReader(f, delimiter="\t"))


def main():
    outs = sys.argv[1:]
    rows = [r for o in outs for r in load(os.path.join(o, "results.tsv"))]
    mem = [r for o in outs for r in load(os.path.join(o, "memory.tsv"))]
    max_other = float(os.environ.get("BENCH_MAX_OTHER", "0.3"))

    def other(r):
        return max(0.0, float(r["machine_busy_s"]) - float(r["server_cpu_s"]) -
                   float(r["client_cpu_s"])) / float(r["wall_s"])

    # Per (server, test): the rounds in which other work stayed under max_other CPUs, or all
    # rounds (flagged) when none did.
    groups = {}
    for r in rows:
        groups.setdefault((r["server"], r["test"]), []).append(r)
    agg = {}
    for k, rs in groups.items():
        quiet = [r for r in rs if other(r) <= max_other]
        a = agg[k] = {"qps": [], "p50": [], "p99": [], "cpu_us": [], "cpu_pct": [],
                      "client_pct": [], "other": [], "errors": 0, "rounds": len(rs),
                      "used": len(quiet) or len(rs), "disturbed": not quiet}
        for r in quiet or rs:
            qps = float(r["qps"])
            a["errors"] += max(0, int(r["errors"]))
            if qps <= 0:
                continue
            wall = float(r["wall_s"])
            server, client = float(r["server_cpu_s"]), float(r["client_cpu_s"])
            a["qps"].append(qps)
            a["p50"].append(float(r["p50_ms"]))
            a["p99"].append(float(r["p99_ms"]))
            a["cpu_pct"].append(server / wall * 100)
            a["client_pct"].append(client / wall * 100)
            a["other"].append(other(r))
            # CPU per request assumes the server was as busy over the whole wall time (tool
            # start-up included) as while the tool counted requests: approximate, same for all.
            a["cpu_us"].append(server / wall / qps * 1e6)
    for out in outs:
        if os.path.exists(os.path.join(out, "machine.txt")):
            with open(os.path.join(out, "machine.txt")) as f:
                print("## Machine and setup (%s)\n\n```\n%s\n```\n" % (
                    os.path.basename(os.path.normpath(out)), f.read().rstrip()))

    def m(server, test, key):
        a = agg.get((server, test))
        return med(a[key]) if a else None

    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    print("## Throughput and latency (median of rounds)\n")
    print("Server CPU % is of the one CPU it is pinned to; client CPU % likewise; other = CPUs")
    print("busy with work that is neither (the machine is shared). Capacity = 1 s / server CPU")
    print("per request: the QPS one fully used core would give at that cost (derived, not measured).")
    print("Rounds: used/run; only rounds in which other work stayed under %.2f CPUs are used, and"
          % max_other)
    print("a row marked * had none (all its rounds were disturbed).")
    print()
    print("| benchmark | server | QPS | p50 ms | p99 ms | server CPU % | server CPU µs/req |"
          " capacity QPS | client CPU % | other CPUs | rounds | errors |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for test, title in TESTS:
        for server, name in SERVERS:
            a = agg.get((server, test))
            if not a:
                continue
            cpu_us = m(server, test, "cpu_us")
            print("| %s | %s%s | %s | %s | %s | %s | %s | %s | %s | %s | %d/%d | %d |" % (
                title, name, " *" if a["disturbed"] else "", fmt(m(server, test, "qps"), ",.0f"),
                fmt(m(server, test, "p50"), ".3f"), fmt(m(server, test, "p99"), ".3f"),
                fmt(m(server, test, "cpu_pct"), ".0f"), fmt(cpu_us, ".1f"),
                fmt(1e6 / cpu_us if cpu_us else None, ",.0f"),
                fmt(m(server, test, "client_pct"), ".0f"), fmt(m(server, test, "other"), ".2f"),
                a["used"], a["rounds"], a["errors"]))
    print()

    print("## Ours / grpc C++\n")
    print("| benchmark | QPS ratio (target >= 1.5) | p99 ratio (target <= 1.0) |"
          " capacity ratio (C++ CPU/req ÷ ours) |")
    print("|---|---:|---:|---:|")
    for test, title in TESTS:
        q1, q2 = m("ours", test, "qps"), m("cpp", test, "qps")
        if q1 is None or q2 is None:
            continue
        p1, p2 = m("ours", test, "p99"), m("cpp", test, "p99")
        c1, c2 = m("ours", test, "cpu_us"), m("cpp", test, "cpu_us")
        print("| %s | %.2fx | %s | %s |" % (
            title, q1 / q2, "%.2fx" % (p1 / p2) if p2 else "-",
            "%.2fx" % (c2 / c1) if c1 and c2 else "-"))
    print()

    if mem:
        print("## RSS per idle HTTP/2 connection (target <= 16 KiB)\n")
        print("| server | connections | ready | RSS before KiB | RSS after KiB |"
              " bytes per connection |")
        print("|---|---:|---:|---:|---:|---:|")
        names = dict(SERVERS)
        for r in mem:
            print("| %s | %s | %s | %s | %s | %s (%.1f KiB) |" % (
                names.get(r["server"], r["server"]), format(int(r["conns"]), ","), r["ready"],
                format(int(r["rss_before_kib"]), ","), format(int(r["rss_after_kib"]), ","),
                format(int(r["bytes_per_conn"]), ","), int(r["bytes_per_conn"]) / 1024))
        print()


if __name__ == "__main__":
    main()
