"""The demo warehouse outside chatlake: every reporting view gives the same
rows in DataFusion (`chatlake query`), DuckDB and Spark (local mode), from the
scripts `chatlake views --dialect duckdb|spark` prints; every table reads in
DuckDB, Spark, pyarrow's dataset API and Polars with the same row count as in
chatlake and with the types the README promises.

Usage: engines.py CHATLAKE_BINARY WAREHOUSE WORKDIR. Exits 1 with every
difference listed; prints the figures it compared.
"""

import csv
import datetime as dt
import decimal
import io
import math
import os
import re
import subprocess
import sys
import time

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds

BIN, WH, WORK = sys.argv[1], os.path.abspath(sys.argv[2]), sys.argv[3]
REL_TOL = 1e-9
failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL:", msg)


def chatlake(*args):
    r = subprocess.run([BIN, *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"chatlake {' '.join(args)} failed: {r.stderr}")
    return r.stdout


def chatlake_rows(sql):
    out = chatlake("query", "--warehouse", WH, "--format", "csv", sql)
    reader = csv.reader(io.StringIO(out))
    header = next(reader, None)
    return header, [[parse_csv(v) for v in row] for row in reader]


def parse_csv(v):
    if v == "":
        return None
    if v in ("true", "false"):
        return v == "true"
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return v


TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def norm(v):
    """One comparable form for every engine's values."""
    if isinstance(v, decimal.Decimal):
        v = float(v)
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return v  # compared numerically below
    if isinstance(v, str) and TIMESTAMP.match(v):
        v = dt.datetime.fromisoformat(v)
    if isinstance(v, dt.datetime):
        # chatlake prints UTC with Z, DuckDB gives aware datetimes, Spark
        # naive ones in its session time zone (UTC in the script).
        if v.tzinfo is not None:
            v = v.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return v.isoformat()
    if isinstance(v, dt.date):
        return v.isoformat()
    return v


def sort_key(row):
    key = []
    for v in row:
        if v is None:
            key.append((2, 0, ""))
        elif isinstance(v, bool):
            key.append((1, 0, str(v)))
        elif isinstance(v, (int, float)):
            key.append((0, round(float(v), 6), ""))
        else:
            key.append((1, 0, str(v)))
    return key


def same(a, b):
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if isinstance(a, int) and isinstance(b, int):
            return a == b
        return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-12)
    return str(a) == str(b)


def compare(view, engine, expected, got):
    expected = sorted(([norm(v) for v in r] for r in expected), key=sort_key)
    got = sorted(([norm(v) for v in r] for r in got), key=sort_key)
    if len(expected) != len(got):
        fail(f"{view}: chatlake has {len(expected)} rows, {engine} {len(got)}")
        return
    bad = [(e, g) for e, g in zip(expected, got) if len(e) != len(g) or not all(same(x, y) for x, y in zip(e, g))]
    if bad:
        fail(f"{view}: {len(bad)} of {len(got)} rows differ in {engine}; first: chatlake {bad[0][0]} vs {bad[0][1]}")
    else:
        print(f"  {view}: {len(got)} rows equal in {engine}")


def statements(script):
    """A generated script split into statements (no ';' inside them)."""
    lines = [l for l in script.splitlines() if not l.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";\n") if s.strip().rstrip(";")]


# --- the scripts -----------------------------------------------------------
duck_sql = chatlake("views", "--warehouse", WH, "--dialect", "duckdb")
spark_sql = chatlake("views", "--warehouse", WH, "--dialect", "spark")
for name, text in (("duckdb", duck_sql), ("spark", spark_sql)):
    with open(os.path.join(WORK, f"views.{name}.sql"), "w") as f:
        f.write(text)

duck = duckdb.connect()
duck.execute(duck_sql)

os.chdir(WORK)  # Spark's in-memory catalog writes spark-warehouse/ here
from pyspark.sql import SparkSession  # noqa: E402

t0 = time.time()
spark = (
    SparkSession.builder.master("local[2]")
    .config("spark.ui.enabled", "false")
    .config("spark.sql.shuffle.partitions", "4")
    .config("spark.ui.showConsoleProgress", "false")
    .getOrCreate()
)
spark.sparkContext.setLogLevel("ERROR")
for stmt in statements(spark_sql):
    spark.sql(stmt.rstrip(";"))
print(f"spark: started and defined the views in {time.time() - t0:.1f} s")

views = [f"reporting.{r[0]}" for r in chatlake_rows(
    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'reporting' ORDER BY table_name")[1]]
tables = [f"{s}.{t}" for s, t in chatlake_rows(
    "SELECT table_schema, table_name FROM information_schema.tables "
    "WHERE table_schema NOT IN ('reporting', 'information_schema') ORDER BY 1, 2")[1]]
if len(views) < 10:
    fail(f"only {len(views)} reporting views: {views}")

# --- every reporting view, row by row --------------------------------------
print(f"views ({len(views)}):")
for v in views:
    header, expected = chatlake_rows(f"SELECT * FROM {v}")
    if not expected and v not in ("reporting.chats_by_company",):
        fail(f"{v}: no rows in the demo warehouse, nothing to compare")
    d = duck.sql(f"SELECT * FROM {v}")
    if [c.lower() for c in d.columns] != [c.lower() for c in header]:
        fail(f"{v}: DuckDB columns {d.columns} != chatlake {header}")
    compare(v, "duckdb", expected, d.fetchall())
    s = spark.sql(f"SELECT * FROM {v}")
    if [c.lower() for c in s.columns] != [c.lower() for c in header]:
        fail(f"{v}: Spark columns {s.columns} != chatlake {header}")
    compare(v, "spark", expected, [list(r) for r in s.collect()])

# --- every table: counts and types -----------------------------------------
print(f"tables ({len(tables)}):")
for t in tables:
    n = chatlake_rows(f"SELECT COUNT(*) FROM {t}")[1][0][0]
    counts = {
        "duckdb": duck.sql(f"SELECT COUNT(*) FROM {t}").fetchall()[0][0],
        "spark": spark.sql(f"SELECT COUNT(*) FROM {t}").collect()[0][0],
    }
    schema_name, table_name = t.split(".")
    path = os.path.join(WH, schema_name, table_name)
    if n > 0:
        partitioned = any(e.startswith("dt=") for e in os.listdir(path))
        part = ds.partitioning(pa.schema([("dt", pa.date32())]), flavor="hive") if partitioned else None
        data_files = "data.parquet" if schema_name != "meta" or table_name in ("business_hours", "calendar", "reporting_settings") else None
        dataset = ds.dataset(path, format="parquet", partitioning=part,
                             exclude_invalid_files=False,
                             ignore_prefixes=[".", "_"])
        if data_files:
            dataset = ds.dataset([f for f in dataset.files if os.path.basename(f) == data_files],
                                 format="parquet", partitioning=part, partition_base_dir=path)
        counts["pyarrow"] = dataset.count_rows()
        pattern = f"{path}/dt=*/{data_files or '*.parquet'}" if partitioned else f"{path}/{data_files or '*.parquet'}"
        lf = pl.scan_parquet(pattern, hive_partitioning=partitioned)
        counts["polars"] = lf.select(pl.len()).collect().item()
        # Types as other engines see them.
        for field in dataset.schema:
            ty = field.type
            if pa.types.is_duration(ty):
                fail(f"{t}.{field.name} is a Parquet duration ({ty}): Spark cannot read it")
            if pa.types.is_timestamp(ty) and (ty.tz != "UTC" or ty.unit != "us"):
                fail(f"{t}.{field.name} is {ty}, expected timestamp[us, tz=UTC]")
            if pa.types.is_list(ty) and not pa.types.is_string(ty.value_type):
                fail(f"{t}.{field.name} is {ty}, expected list<string>")
        if partitioned:
            if dataset.schema.field("dt").type != pa.date32():
                fail(f"{t}.dt reads as {dataset.schema.field('dt').type} in pyarrow")
            pdt = lf.collect_schema()["dt"]
            if pdt != pl.Date:
                fail(f"{t}.dt reads as {pdt} in Polars")
            sdt = dict(spark.table(t).dtypes)["dt"]
            if sdt != "date":
                fail(f"{t}.dt reads as {sdt} in Spark")
        for name, pty in lf.collect_schema().items():
            if isinstance(pty, pl.Datetime) and (pty.time_zone != "UTC" or pty.time_unit != "us"):
                fail(f"{t}.{name} reads as {pty} in Polars")
    wrong = {k: c for k, c in counts.items() if c != n}
    if wrong:
        fail(f"{t}: chatlake counts {n}, but {wrong}")
    else:
        print(f"  {t}: {n} rows in chatlake, {', '.join(counts)}")

spark.stop()
if failures:
    print(f"\n{len(failures)} difference(s)")
    sys.exit(1)
print(f"\nall {len(views)} views equal in DataFusion, DuckDB and Spark; all {len(tables)} tables read with equal counts")
