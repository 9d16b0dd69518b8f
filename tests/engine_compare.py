"""What tests/engines.py and tests/engines_s3.py share: running chatlake,
parsing its CSV, comparing rows across engines (integers exact, floats within
1e-9 relative), splitting a generated script, and reading a table's files the
way the README shows for pyarrow and Polars.
"""

import csv
import datetime as dt
import decimal
import io
import math
import re
import subprocess
import sys

import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds

BIN = None  # the chatlake binary; set by the test script
REL_TOL = 1e-9
failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL:", msg)


def chatlake(*args, env=None):
    r = subprocess.run([BIN, *args], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"chatlake {' '.join(args)} failed: {r.stderr}")
    return r.stdout


def chatlake_rows(warehouse, sql, env=None):
    out = chatlake("query", "--warehouse", warehouse, "--format", "csv", sql, env=env)
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


def views_and_tables(warehouse):
    """The reporting views and the tables chatlake shows over `warehouse`."""
    views = [f"reporting.{r[0]}" for r in chatlake_rows(
        warehouse, "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = 'reporting' ORDER BY table_name")[1]]
    tables = [f"{s}.{t}" for s, t in chatlake_rows(
        warehouse, "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_schema NOT IN ('reporting', 'information_schema') ORDER BY 1, 2")[1]]
    if len(views) < 10:
        fail(f"only {len(views)} reporting views: {views}")
    return views, tables


def expected_view(warehouse, view):
    """chatlake's header and rows of `view`; a view with no rows to compare fails."""
    header, expected = chatlake_rows(warehouse, f"SELECT * FROM {view}")
    if not expected and view not in ("reporting.chats_by_company",):
        fail(f"{view}: no rows in the demo warehouse, nothing to compare")
    return header, expected


def compare_view(view, engine, header, expected, columns, rows):
    """Another engine's columns and rows of `view` against chatlake's."""
    if [c.lower() for c in columns] != [c.lower() for c in header]:
        fail(f"{view}: {engine} columns {columns} != chatlake {header}")
    compare(view, engine, expected, rows)


def statements(script):
    """A generated script split into statements (no ';' inside them)."""
    lines = [l for l in script.splitlines() if not l.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";\n") if s.strip().rstrip(";")]



# Tables whose directory holds other files beside the data (meta.runs and
# meta.rejects keep their own names); the rest are read as data.parquet.
SINGLE_FILE_META = ("business_hours", "business_clock", "calendar", "reporting_settings")


def data_file_name(schema_name, table_name):
    return "data.parquet" if schema_name != "meta" or table_name in SINGLE_FILE_META else None


def pyarrow_dataset(path, partitioned, data_files, filesystem=None):
    """A table as pyarrow's dataset API reads it (`dt` typed as a date)."""
    part = ds.partitioning(pa.schema([("dt", pa.date32())]), flavor="hive") if partitioned else None
    dataset = ds.dataset(path, format="parquet", partitioning=part, filesystem=filesystem,
                         exclude_invalid_files=False, ignore_prefixes=[".", "_"])
    if data_files:
        dataset = ds.dataset([f for f in dataset.files if f.rsplit("/", 1)[-1] == data_files],
                             format="parquet", partitioning=part, partition_base_dir=path,
                             filesystem=filesystem)
    return dataset


def polars_frame(path, partitioned, data_files, storage_options=None):
    """A table as Polars scans it with Hive partitioning."""
    name = data_files or "*.parquet"
    pattern = f"{path}/dt=*/{name}" if partitioned else f"{path}/{name}"
    return pl.scan_parquet(pattern, hive_partitioning=partitioned, storage_options=storage_options)


def check_counts(table, n, counts, where=""):
    """Every engine's row count of `table` against chatlake's `n`."""
    wrong = {k: c for k, c in counts.items() if c != n}
    if wrong:
        fail(f"{table}: chatlake counts {n}, but{where} {wrong}")
    else:
        print(f"  {table}: {n} rows in chatlake,{where} {', '.join(counts)}")


def finish(summary):
    """Exit 1 with the differences listed, or print the summary."""
    if failures:
        print(f"\n{len(failures)} difference(s)")
        sys.exit(1)
    print(f"\n{summary}")
