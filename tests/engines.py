"""The demo warehouse outside chatlake: every reporting view gives the same
rows in DataFusion (`chatlake query`), DuckDB and Spark (local mode), from the
scripts `chatlake views --dialect duckdb|spark` prints; every table reads in
DuckDB, Spark, pyarrow's dataset API and Polars with the same row count as in
chatlake and with the types the README promises.

Usage: engines.py CHATLAKE_BINARY WAREHOUSE WORKDIR. Exits 1 with every
difference listed; prints the figures it compared.
"""

import os
import sys
import time

import duckdb
import polars as pl
import pyarrow as pa

import engine_compare as ec
from engine_compare import chatlake, fail, statements

ec.BIN = sys.argv[1]
WH, WORK = os.path.abspath(sys.argv[2]), sys.argv[3]


def chatlake_rows(sql):
    return ec.chatlake_rows(WH, sql)


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

views, tables = ec.views_and_tables(WH)

# --- every reporting view, row by row --------------------------------------
print(f"views ({len(views)}):")
for v in views:
    header, expected = ec.expected_view(WH, v)
    d = duck.sql(f"SELECT * FROM {v}")
    ec.compare_view(v, "duckdb", header, expected, d.columns, d.fetchall())
    s = spark.sql(f"SELECT * FROM {v}")
    ec.compare_view(v, "spark", header, expected, s.columns, [list(r) for r in s.collect()])

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
        data_files = ec.data_file_name(schema_name, table_name)
        dataset = ec.pyarrow_dataset(path, partitioned, data_files)
        counts["pyarrow"] = dataset.count_rows()
        lf = ec.polars_frame(path, partitioned, data_files)
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
    ec.check_counts(t, n, counts, "")

spark.stop()
ec.finish(f"all {len(views)} views equal in DataFusion, DuckDB and Spark; all {len(tables)} tables read with equal counts")
