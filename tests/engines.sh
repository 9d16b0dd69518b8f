#!/usr/bin/env bash
# The warehouse outside chatlake: runs the demo, then tests/engines.py, which
# checks that every reporting view gives the same rows in DataFusion
# (`chatlake query`), DuckDB and Spark (local mode) from the scripts
# `chatlake views --dialect duckdb|spark` prints, and that every table reads
# in DuckDB, Spark, pyarrow and Polars with chatlake's row counts and types.
# Then tests/engines_s3.py puts the same warehouse on an S3-compatible server
# (moto) and reads it with the README's S3 forms: chatlake, the DuckDB script
# (httpfs), pyarrow, Polars, and the Spark script over s3a:// with
# hadoop-aws from Maven Central (tests/engines_spark_s3.py).
# Installs what it needs (Java from Debian's openjdk-17-jre-headless; duckdb,
# pyarrow, polars and pyspark in a virtualenv under the cache dir; for S3 a
# second one with DuckDB 1.5.5, its httpfs wheel and moto) and fails loudly,
# never skips.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${CHATLAKE_CACHE:-$HOME/.cache/chatlake}"
mkdir -p "$CACHE"

if ! command -v java >/dev/null; then
  echo "engines test: installing openjdk-17-jre-headless"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openjdk-17-jre-headless
fi
if [ ! -x "$CACHE/venv/bin/python" ]; then
  python3 -m venv "$CACHE/venv"
fi
# The versions the comparison was written against.
pkgs=(duckdb==2.0.1 pyarrow==26.0.1 polars==2.1.0 pyspark==4.3.0)
"$CACHE/venv/bin/python" -c "import duckdb, pyarrow, polars, pyspark" 2>/dev/null \
  || "$CACHE/venv/bin/pip" install -q "${pkgs[@]}"

# DuckDB's httpfs and aws extensions as wheels (no extension download): published for 1.5.5.
# The DuckDB CLI of the same version (duckdb-cli) runs the README's `duckdb -init`.
s3pkgs=(duckdb==1.5.5 duckdb-cli==1.5.5 duckdb-extension-httpfs==1.5.5 duckdb-extension-aws==1.5.5 "moto[server]==5.2.5" pytz==2025.2 pyarrow==26.0.1 polars==2.1.0)
if [ ! -x "$CACHE/venv-s3/bin/python" ]; then
  python3 -m venv "$CACHE/venv-s3"
fi
"$CACHE/venv-s3/bin/python" -c "import duckdb, duckdb_extension_httpfs, duckdb_extension_aws, moto, boto3, pytz, pyarrow, polars" 2>/dev/null \
  && [ -x "$CACHE/venv-s3/bin/duckdb" ] \
  || "$CACHE/venv-s3/bin/pip" install -q "${s3pkgs[@]}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
. tests/cargo-bin.sh
# A warehouse path with a quote, a semicolon and a space: the scripts must
# quote it as each engine reads literals (issue 24.1; it was pasted raw).
wh="$work/o'brien; wh"
(cd "$work" && "$bin" demo --warehouse "$wh" > "$work/demo.out")
# Spark's logs go to stderr; the comparison's figures to stdout.
"$CACHE/venv/bin/python" tests/engines.py "$bin" "$wh" "$work" 2> "$work/spark.log" \
  || { echo "--- last lines of the engines' stderr:"; tail -20 "$work/spark.log"; exit 1; }
# Spark's Ivy cache (hadoop-aws and the AWS SDK bundle, about 700 MB from
# Maven Central): downloaded by the first run only.
"$CACHE/venv-s3/bin/python" tests/engines_s3.py "$bin" "$wh" "$work" "$CACHE/venv/bin/python" "$CACHE/ivy" 2> "$work/s3.log" \
  || { echo "--- last lines of the S3 test's stderr:"; tail -20 "$work/s3.log"; exit 1; }
# Every shell block of the README, exactly as printed (tests/readme.py).
"$CACHE/venv-s3/bin/python" tests/readme.py "$bin" "$PWD" "$work" "$CACHE/venv/bin" "$CACHE/ivy" \
  || { echo "FAIL: a README command did not work as printed"; exit 1; }
echo "engines test: ok"
