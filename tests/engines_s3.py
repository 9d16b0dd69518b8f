"""The warehouse on S3, read from outside chatlake with the README's S3 forms.

The demo warehouse is uploaded to an S3-compatible server (moto's, on a local
port). Then:
- `chatlake views --dialect duckdb --warehouse s3://...`, run as written in
  DuckDB (httpfs, credentials from the AWS environment, the endpoint taken
  from AWS_ENDPOINT_URL), gives every reporting view with chatlake's rows;
- pyarrow's dataset API (S3FileSystem) and Polars (scan_parquet with
  storage_options) read every table from S3 with chatlake's row counts;
- Spark reads every view and table over s3a:// (below).

DuckDB cannot download extensions where this runs, so httpfs and aws (the
credential chain) come from the `duckdb-extension-httpfs` and
`duckdb-extension-aws` wheels, installed from their files first; the
script's own `INSTALL httpfs` then finds it installed. Those wheels exist for
DuckDB 1.5.5, so this test runs DuckDB 1.5.5 (tests/engines.py runs 2.0.1).

Then, with the server still up, tests/engines_spark_s3.py runs the Spark
script over `s3a://` in the pyspark virtualenv (hadoop-aws from Maven
Central, cached in IVY_DIR): every view with chatlake's rows, every table
with its counts.

Usage: engines_s3.py CHATLAKE_BINARY WAREHOUSE WORKDIR SPARK_PYTHON IVY_DIR.
Exits 1 with every difference listed.
"""

import os
import subprocess
import sys

import boto3
import duckdb
import duckdb_extension_aws
import duckdb_extension_httpfs
import polars as pl
from moto.server import ThreadedMotoServer
from pyarrow import fs

import engine_compare as ec
from engine_compare import chatlake, fail

ec.BIN = sys.argv[1]
WH, WORK = os.path.abspath(sys.argv[2]), sys.argv[3]
SPARK_PY, IVY = sys.argv[4], sys.argv[5]  # the pyspark virtualenv's Python; Spark's Ivy cache
BUCKET, PREFIX = "lake", "chat"
S3_WH = f"s3://{BUCKET}/{PREFIX}"

server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
host, port = server.get_host_and_port()
ENDPOINT = f"http://{host}:{port}"
# The standard AWS environment: what chatlake, DuckDB's credential chain,
# pyarrow and Polars all read.
os.environ.update({
    "AWS_ACCESS_KEY_ID": "test-key",
    "AWS_SECRET_ACCESS_KEY": "test-secret",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ENDPOINT_URL": ENDPOINT,
    "AWS_ALLOW_HTTP": "true",
})

# --- the demo warehouse, uploaded -------------------------------------------
s3 = boto3.client("s3", endpoint_url=ENDPOINT)
s3.create_bucket(Bucket=BUCKET)
uploaded = 0
for root, _, files in os.walk(WH):
    for name in files:
        local = os.path.join(root, name)
        key = f"{PREFIX}/{os.path.relpath(local, WH)}"
        s3.upload_file(local, BUCKET, key)
        uploaded += 1
print(f"s3: {uploaded} files of the demo warehouse uploaded to {S3_WH} at {ENDPOINT}")

views, tables = ec.views_and_tables(WH)

# --- DuckDB, from the generated script --------------------------------------
script = chatlake("views", "--warehouse", S3_WH, "--dialect", "duckdb")
with open(os.path.join(WORK, "views.duckdb-s3.sql"), "w") as f:
    f.write(script)
for needed in ("INSTALL httpfs", "LOAD httpfs", f"'{S3_WH}/",
               f"ENDPOINT '{host}:{port}'", "URL_STYLE 'path'", "USE_SSL false"):
    if needed not in script:
        fail(f"the DuckDB script over {S3_WH} lacks {needed!r}")
duck = duckdb.connect()
for name, package in (("httpfs", duckdb_extension_httpfs), ("aws", duckdb_extension_aws)):
    ext = os.path.join(os.path.dirname(package.__file__), "extensions",
                       f"v{duckdb.__version__}", f"{name}.duckdb_extension")
    duck.execute(f"INSTALL '{ext}'")
duck.execute(script)

print(f"views ({len(views)}), chatlake over the local copy against DuckDB {duckdb.__version__} over S3:")
for v in views:
    header, expected = ec.expected_view(WH, v)
    d = duck.sql(f"SELECT * FROM {v}")
    ec.compare_view(v, "duckdb over s3", header, expected, d.columns, d.fetchall())

# --- every table in pyarrow and Polars, from S3 -----------------------------
arrow_s3 = fs.S3FileSystem(endpoint_override=ENDPOINT, scheme="http", region="us-east-1",
                           access_key="test-key", secret_key="test-secret")
storage = {"aws_endpoint_url": ENDPOINT, "aws_allow_http": "true", "aws_region": "us-east-1",
           "aws_access_key_id": "test-key", "aws_secret_access_key": "test-secret"}
print(f"tables ({len(tables)}):")
for t in tables:
    n = ec.chatlake_rows(WH, f"SELECT COUNT(*) FROM {t}")[1][0][0]
    counts = {"duckdb": duck.sql(f"SELECT COUNT(*) FROM {t}").fetchall()[0][0]}
    schema_name, table_name = t.split(".")
    if n > 0:
        listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/{schema_name}/{table_name}/")
        partitioned = any("/dt=" in o["Key"] for o in listing.get("Contents", []))
        data_files = ec.data_file_name(schema_name, table_name)
        path = f"{BUCKET}/{PREFIX}/{schema_name}/{table_name}"
        counts["pyarrow"] = ec.pyarrow_dataset(path, partitioned, data_files, arrow_s3).count_rows()
        lf = ec.polars_frame(f"s3://{path}", partitioned, data_files, storage)
        counts["polars"] = lf.select(pl.len()).collect().item()
    ec.check_counts(t, n, counts, " and over S3 in")

# --- Spark over S3, in the pyspark virtualenv, while the server is up -------
spark = subprocess.run([SPARK_PY, os.path.join(os.path.dirname(__file__), "engines_spark_s3.py"),
                        ec.BIN, WH, WORK, S3_WH, IVY], stdout=subprocess.PIPE, text=True)
print(spark.stdout, end="")
if spark.returncode != 0:
    fail(f"Spark over {S3_WH}: exit {spark.returncode} (its stderr is in the log above)")

server.stop()
ec.finish(f"over S3: all {len(views)} views equal in DuckDB; all {len(tables)} tables read with equal counts")
