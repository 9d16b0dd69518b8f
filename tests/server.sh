#!/usr/bin/env bash
# `chatlake serve` through clients nobody here wrote (issue 21): psql
# (Debian's postgresql-client) for queries and meta-commands; pgjdbc (Maven
# Central) for DatabaseMetaData; psycopg for the simple and extended
# protocol with parameters and prepared statements; SQLAlchemy's inspector
# and pandas.read_sql; every reporting view through each compared value by
# value with `chatlake query`. Over the demo warehouse, with SCRAM-SHA-256;
# TLS; a failed query's log. Installs what it needs (postgresql-client,
# openssl, a JDK and maven with apt-get when missing; the Python clients in
# the virtualenv under the cache dir) and fails loudly, never skips.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${CHATLAKE_CACHE:-$HOME/.cache/chatlake}"
mkdir -p "$CACHE"

need=()
command -v psql >/dev/null || need+=(postgresql-client)
command -v openssl >/dev/null || need+=(openssl)
command -v java >/dev/null || need+=(default-jdk-headless)
command -v mvn >/dev/null || need+=(maven)
if ((${#need[@]})); then
  echo "server test: installing ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
[ -x "$CACHE/venv/bin/python" ] || python3 -m venv "$CACHE/venv"
"$CACHE/venv/bin/python" -c "import psycopg, psycopg2, sqlalchemy, pandas" 2>/dev/null \
  || "$CACHE/venv/bin/pip" install -q "psycopg[binary]" psycopg2-binary sqlalchemy pandas
# pgjdbc from Maven Central (kept in ~/.m2 between runs).
PGJDBC=42.7.14
jdbc_jar="$HOME/.m2/repository/org/postgresql/postgresql/$PGJDBC/postgresql-$PGJDBC.jar"
[ -f "$jdbc_jar" ] || mvn -q dependency:get -Dartifact="org.postgresql:postgresql:$PGJDBC"
[ -f "$jdbc_jar" ] || { echo "FAIL: pgjdbc $PGJDBC is not at $jdbc_jar after mvn dependency:get"; exit 1; }

work="$(mktemp -d)"
. tests/cargo-bin.sh
(cd "$work" && "$bin" demo --warehouse "$work/wh" > "$work/demo.out" 2>&1) \
  || { echo "FAIL: the demo failed"; tail "$work/demo.out"; exit 1; }

port="$(free_port)"
export CHATLAKE_SERVE_PASSWORD="server-test-$RANDOM-pw"
"$bin" serve --warehouse "$work/wh" --listen "127.0.0.1:$port" > "$work/serve.out" 2> "$work/serve.err" &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$work"' EXIT
wait_port "$port" "chatlake serve"
export PGHOST=127.0.0.1 PGPORT="$port" PGUSER=chatlake PGDATABASE=datafusion PGPASSWORD="$CHATLAKE_SERVE_PASSWORD"

fail() { echo "FAIL: $*"; echo "--- server log"; tail -20 "$work/serve.err"; exit 1; }

# psql: a query, then the meta-commands people type.
want="$("$bin" query --warehouse "$work/wh" --format csv "SELECT COUNT(*) AS n FROM reporting.chats" | tail -1)"
got="$(psql -XAt -c "SELECT COUNT(*) FROM reporting.chats")" || fail "psql could not query"
[ "$got" = "$want" ] || fail "psql: reporting.chats has $got rows, chatlake query says $want"
echo "psql: reporting.chats $got rows, as chatlake query"
psql -X -c '\dn' > "$work/dn.txt" 2>&1 || fail "psql \\dn: $(cat "$work/dn.txt")"
for s in socialintents social25 crm meta reporting; do
  grep -q " $s " "$work/dn.txt" || fail "psql \\dn does not list schema $s: $(cat "$work/dn.txt")"
done
psql -X -c '\dt socialintents.*' > "$work/dt.txt" 2>&1 || fail "psql \\dt: $(cat "$work/dt.txt")"
for t in chats chat_messages contacts offline_messages widgets; do
  grep -Eq "socialintents \| $t +\| table" "$work/dt.txt" || fail "psql \\dt socialintents.* does not list $t: $(cat "$work/dt.txt")"
done
psql -X -c '\dv reporting.*' > "$work/dv.txt" 2>&1 || fail "psql \\dv: $(cat "$work/dv.txt")"
for f in sql/reporting.*.sql; do
  v="$(basename "$f" .sql)"; v="${v#reporting.}"
  grep -Eq "reporting +\| $v +\| view" "$work/dv.txt" || fail "psql \\dv reporting.* does not list $v: $(cat "$work/dv.txt")"
done
psql -X -c '\d reporting.chats' > "$work/d.txt" 2>&1 || fail "psql \\d: $(cat "$work/d.txt")"
grep -Eq "started_at +\| timestamp with time zone" "$work/d.txt" && grep -Eq " dt +\| date " "$work/d.txt" \
  || fail "psql \\d reporting.chats: started_at is not timestamptz or dt not date: $(cat "$work/d.txt")"
echo "psql: \\dn lists every schema, \\dt socialintents.* every table, \\dv reporting.* every view; \\d reporting.chats: started_at timestamptz, dt date"

# A wrong password is refused.
if PGPASSWORD=wrong psql -XAt -c "SELECT 1" > "$work/wrong.txt" 2>&1; then
  fail "a wrong password was accepted"
fi
grep -qi "password" "$work/wrong.txt" || fail "a wrong password: $(cat "$work/wrong.txt")"
echo "psql: a wrong password is refused ($(head -1 "$work/wrong.txt"))"
grep -q "login attempt" "$work/serve.err" || fail "login attempts are not logged"
if grep -q "$CHATLAKE_SERVE_PASSWORD" "$work/serve.err" "$work/serve.out"; then
  fail "the password is in the server's output"
fi

# A failing query that quotes a person's email address: the client gets the
# error, the server's log its SQLSTATE, never the address.
email="jane.roe.$RANDOM@example.org"
if psql -XAt -c "SELECT no_such_column FROM socialintents.chats WHERE visitor_email = '$email'" > "$work/bad.txt" 2>&1; then
  fail "a query of a column that does not exist succeeded"
fi
grep -q "no_such_column" "$work/bad.txt" || fail "the failing query's error: $(cat "$work/bad.txt")"
grep -q "answered with an error.*sqlstate=XX000" "$work/serve.err" || fail "the failed query is not logged"
if grep -q "$email" "$work/serve.err" "$work/serve.out"; then
  fail "the email address of a failed query is in the server's log"
fi
echo "psql: a failed query's error reaches the client; the server logs its SQLSTATE, not the email in it"

# pgjdbc (the driver of DBeaver, Metabase and Tableau): DatabaseMetaData,
# then every reporting view, its rows to a file; then the Python clients
# (psycopg, SQLAlchemy's inspector, pandas) and a comparison of every view
# through every client with `chatlake query` (tests/server_clients.py).
views=(); for f in sql/reporting.*.sql; do views+=("$(basename "$f" .sql)"); done
java -Dnavigator="$work/catalog.txt" -cp "$jdbc_jar" tests/JdbcCheck.java "jdbc:postgresql://127.0.0.1:$port/datafusion" chatlake \
  "$CHATLAKE_SERVE_PASSWORD" "$work/jdbc.jsonl" "${views[@]}" || fail "pgjdbc"
# The catalog as a database navigator shows it through pgjdbc: the README
# shows docs/bi-catalog.txt, so it must be what the server gives.
diff -u docs/bi-catalog.txt "$work/catalog.txt" \
  || fail "docs/bi-catalog.txt is not the catalog pgjdbc reads: the diff above, + lines as the server gives them"
echo "pgjdbc: the catalog's navigator tree ($(wc -l < "$work/catalog.txt") lines) is docs/bi-catalog.txt"
CHATLAKE_BIN="$bin" WH="$work/wh" "$CACHE/venv/bin/python" tests/server_clients.py \
  "$port" "$CHATLAKE_SERVE_PASSWORD" "$work/jdbc.jsonl" || fail "the clients"

# TLS: a second server with a self-signed certificate; psql with
# sslmode=require is served over TLS (\conninfo says so), and the
# certificate is the one given (sslmode=verify-full against it as the CA).
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost -addext subjectAltName=DNS:localhost \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
tport="$(free_port)"
"$bin" serve --warehouse "$work/wh" --listen "127.0.0.1:$tport" --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" \
  > "$work/tls.out" 2> "$work/tls.err" &
tls_server=$!
trap 'kill $server $tls_server 2>/dev/null; rm -rf "$work"' EXIT
wait_port "$tport" "chatlake serve --tls-cert"
info="$(psql "host=localhost port=$tport sslmode=verify-full sslrootcert=$work/cert.pem" -X -c '\conninfo' 2>&1)" \
  || fail "psql over TLS: $info; $(tail -3 "$work/tls.err")"
grep -q "SSL connection" <<< "$info" || fail "psql with sslmode=verify-full is not over TLS: $info"
got="$(psql "host=localhost port=$tport sslmode=require" -XAt -c "SELECT COUNT(*) FROM reporting.chats")" || fail "a query over TLS"
[ "$got" = "$want" ] || fail "over TLS reporting.chats has $got rows, not $want"
echo "psql over TLS: $(grep -o 'SSL connection ([^)]*)' <<< "$info"); the certificate verified; reporting.chats $got rows"
echo "server test: ok"
