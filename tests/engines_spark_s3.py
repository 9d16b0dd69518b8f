"""The reporting views in Spark over S3, as the README tells users to run them.

tests/engines_s3.py starts an S3-compatible server (moto), uploads the demo
warehouse and runs this script, with the pyspark virtualenv's Python, while
the server is up. Spark (local mode) starts with the README's settings:
hadoop-aws from Maven Central (`spark.jars.packages`, the Hadoop version
pyspark ships; resolved by Spark's Ivy from Maven Central into the cache
dir, so only the first run downloads it: see spark_ivy.py), credentials from the standard AWS environment, and for an
S3-compatible server the endpoint, its region and path-style access. Then
the script that `chatlake views --dialect spark --warehouse s3a://...`
prints must give every reporting view with chatlake's rows, and every table
must count as in chatlake.

Usage: engines_spark_s3.py CHATLAKE_BINARY WAREHOUSE WORKDIR S3_WAREHOUSE IVY_DIR
(the AWS_* environment set by the caller). Exits 1 with every difference
listed.
"""

import os
import sys
import time

import engine_compare as ec
import spark_ivy
from engine_compare import chatlake, fail, statements

ec.BIN = sys.argv[1]
WH, WORK, S3_WH, IVY = os.path.abspath(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
S3A_WH = S3_WH.replace("s3://", "s3a://", 1)
# What the README's spark-sql command passes as --packages.
HADOOP_AWS = "org.apache.hadoop:hadoop-aws:3.5.0"

script = chatlake("views", "--warehouse", S3A_WH, "--dialect", "spark")
with open(os.path.join(WORK, "views.spark-s3.sql"), "w") as f:
    f.write(script)
if f"'{S3A_WH}/" not in script:
    fail(f"the Spark script over {S3A_WH} does not read {S3A_WH}/ paths")

os.chdir(WORK)  # Spark's in-memory catalog writes spark-warehouse/ here
from pyspark import __version__ as pyspark_version  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402

t0 = time.time()
spark = (
    SparkSession.builder.master("local[2]")
    .appName("chatlake-spark-s3")
    .config("spark.ui.enabled", "false")
    .config("spark.ui.showConsoleProgress", "false")
    .config("spark.sql.shuffle.partitions", "4")
    .config("spark.jars.packages", HADOOP_AWS)
    .config("spark.jars.ivy", IVY)
    .config("spark.jars.ivySettings", spark_ivy.settings(IVY))
    # As in the README: the endpoint of an S3-compatible server (unset for
    # AWS itself), its region, path-style URLs. Credentials: the AWS_*
    # environment, read by hadoop-aws's default provider chain.
    .config("spark.hadoop.fs.s3a.endpoint", os.environ["AWS_ENDPOINT_URL"])
    .config("spark.hadoop.fs.s3a.endpoint.region", os.environ["AWS_REGION"])
    .config("spark.hadoop.fs.s3a.path.style.access", "true")
    .getOrCreate()
)
spark.sparkContext.setLogLevel("ERROR")
for stmt in statements(script):
    spark.sql(stmt.rstrip(";"))
print(f"spark {pyspark_version} with {HADOOP_AWS}: started and defined the views over {S3A_WH} in {time.time() - t0:.1f} s")

views, tables = ec.views_and_tables(WH)
print(f"views ({len(views)}), chatlake over the local copy against Spark over S3:")
for v in views:
    header, expected = ec.expected_view(WH, v)
    s = spark.sql(f"SELECT * FROM {v}")
    ec.compare_view(v, "spark over s3", header, expected, s.columns, [list(r) for r in s.collect()])

print(f"tables ({len(tables)}):")
# Every table's count in one query for each engine: one Spark job lists and
# reads the tables over S3 at once, rather than one job after another.
counts_sql = " UNION ALL ".join(f"SELECT '{t}' AS t, COUNT(*) AS n FROM {t}" for t in tables)
in_chatlake = {t: n for t, n in ec.chatlake_rows(WH, counts_sql)[1]}
in_spark = {r["t"]: r["n"] for r in spark.sql(counts_sql).collect()}
for t in tables:
    ec.check_counts(t, in_chatlake[t], {"spark": in_spark.get(t)}, " and over S3 in")

spark.stop()
ec.finish(f"spark over S3: all {len(views)} views equal; all {len(tables)} tables read with equal counts")
