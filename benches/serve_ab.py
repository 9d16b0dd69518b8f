"""The reporting views through `chatlake serve`, A against B, beside DuckDB.

Two servers over warehouses (the same one, or two), each started with its
own binary and environment, are queried in turn, one query at a time, so a
busy machine slows both alike; then DuckDB runs the same queries in one
process over `chatlake views --dialect duckdb` of the first warehouse. For
each query: the median wall time of N runs (every row fetched) and the
median CPU time the server spent on it (from /proc/PID/stat).

    python benches/serve_ab.py --runs 10 \\
        A=target/release/chatlake:/tmp/wh \\
        B=target/release/chatlake:/tmp/wh:DATAFUSION_OPTIMIZER_HASH_JOIN_SINGLE_PARTITION_THRESHOLD=1048576

Needs psycopg and duckdb (the virtualenv tests/engines.sh makes, plus
`pip install psycopg[binary]`). BENCHMARKS.md's server figures since
2026-12-05 (stop 39) come from it.
"""

import argparse
import math
import os
import socket
import statistics
import subprocess
import sys
import time

import psycopg

QUERIES = [
    "SELECT COUNT(*), SUM(first_response_business_seconds) FROM reporting.chats",
    "SELECT COUNT(*), SUM(missed_chats) FROM reporting.missed_chat_rate",
    "SELECT COUNT(*), AVG(avg_first_response_seconds), AVG(p90_first_response_seconds) FROM reporting.response_times",
    # the last 30 days of `cargo bench --bench backfill`'s default year
    "SELECT COUNT(*), AVG(avg_first_response_seconds), AVG(p90_first_response_seconds) FROM reporting.response_times WHERE dt BETWEEN DATE '2025-12-02' AND DATE '2025-12-31'",
    "SELECT COUNT(*), SUM(within_target_business) FROM reporting.first_response_sla",
    "SELECT COUNT(*), SUM(chats) FROM reporting.chats_by_hour",
    "SELECT COUNT(*), SUM(chats) FROM reporting.first_response_buckets",
    "SELECT COUNT(*), AVG(p90_first_response_seconds) FROM reporting.agent_performance",
]
PASSWORD = "serve-ab-password-1"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, name, spec):
        binary, warehouse, *env = spec.split(":")
        self.name, self.warehouse = name, warehouse
        port = free_port()
        extra = dict(e.split("=", 1) for e in env)
        self.label = f"{binary} {warehouse} {' '.join(env)}".strip()
        self.proc = subprocess.Popen(
            [binary, "serve", "--warehouse", warehouse, "--listen", f"127.0.0.1:{port}"],
            env={**os.environ, "CHATLAKE_SERVE_PASSWORD": PASSWORD, **extra},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 30
        while True:
            try:
                self.conn = psycopg.connect(
                    host="127.0.0.1", port=port, user="chatlake", password=PASSWORD,
                    dbname="datafusion", autocommit=True,
                )
                break
            except psycopg.OperationalError:
                if time.time() > deadline or self.proc.poll() is not None:
                    sys.exit(f"{name}: the server did not answer ({self.label})")
                time.sleep(0.1)

    def run(self, sql):
        before, t = cpu_seconds(self.proc.pid), time.perf_counter()
        rows = self.conn.execute(sql, prepare=False).fetchall()
        return time.perf_counter() - t, cpu_seconds(self.proc.pid) - before, rows

    def stop(self):
        self.conn.close()
        self.proc.terminate()
        self.proc.wait()


def same(a, b):
    """Rows equal, floats to 12 significant digits (a sum's last bits
    depend on the order it was added in)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def duckdb_times(warehouse, binary, runs):
    import duckdb

    script = subprocess.run(
        [binary, "views", "--warehouse", warehouse, "--dialect", "duckdb"],
        check=True, capture_output=True, text=True,
    ).stdout
    c = duckdb.connect()
    c.execute(script)
    out = []
    for q in QUERIES:
        c.sql(q).fetchall()
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            c.sql(q).fetchall()
            times.append(time.perf_counter() - t)
        out.append(statistics.median(times))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--no-duckdb", action="store_true")
    ap.add_argument("-q", "--query", action="append", help="run this SQL instead of the reporting views (repeatable)")
    ap.add_argument("servers", nargs="+", help="NAME=BINARY:WAREHOUSE[:VAR=VALUE...]")
    args = ap.parse_args()
    if args.query:
        QUERIES[:] = args.query
    servers = [Server(*s.split("=", 1)) for s in args.servers]
    for s in servers:
        print(f"{s.name}: {s.label}")
    results = {}
    for q in QUERIES:
        answers = {s.name: s.run(q)[2] for s in servers}  # warm-up, and the rows agree
        first = next(iter(answers.values()))
        if not all(same(a, first) for a in answers.values()):
            print(f"note: the servers' rows differ on {q}: {answers}")
        samples = {s.name: [] for s in servers}
        for _ in range(args.runs):
            for s in servers:
                wall, cpu, _ = s.run(q)
                samples[s.name].append((wall, cpu))
        results[q] = {
            n: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
            for n, v in samples.items()
        }
    for s in servers:
        s.stop()
    duck = None
    if not args.no_duckdb:
        binary, warehouse = args.servers[0].split("=", 1)[1].split(":")[:2]
        duck = duckdb_times(warehouse, binary, args.runs)
    names = [s.name for s in servers]
    head = "".join(f"{n + ' wall':>10} {n + ' cpu':>9}" for n in names)
    if duck:
        head += f"{'duckdb':>9}" + "".join(f"{n + '/duck':>9}" for n in names)
    print(f"median of {args.runs}\n{head}  query")
    for i, q in enumerate(QUERIES):
        line = "".join(f"{results[q][n][0]:>9.3f}s {results[q][n][1]:>8.3f}s" for n in names)
        if duck:
            line += f"{duck[i]:>8.3f}s" + "".join(f"{results[q][n][0] / duck[i]:>9.2f}" for n in names)
        print(f"{line}  {' '.join(q.split())[:100]}")


if __name__ == "__main__":
    main()
