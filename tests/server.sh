#!/usr/bin/env bash
# `chatlake serve` through clients nobody here wrote (issue 21): psql
# (Debian's postgresql-client) for queries and meta-commands, psycopg for the
# simple and extended protocol with parameters and prepared statements, and
# every reporting view compared value by value with `chatlake query`. Over
# the demo warehouse, with SCRAM-SHA-256. Installs what it needs
# (postgresql-client with apt-get, psycopg in the virtualenv under the cache
# dir) and fails loudly, never skips.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${CHATLAKE_CACHE:-$HOME/.cache/chatlake}"
mkdir -p "$CACHE"

need=()
command -v psql >/dev/null || need+=(postgresql-client)
command -v openssl >/dev/null || need+=(openssl)
if ((${#need[@]})); then
  echo "server test: installing ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
[ -x "$CACHE/venv/bin/python" ] || python3 -m venv "$CACHE/venv"
"$CACHE/venv/bin/python" -c "import psycopg" 2>/dev/null \
  || "$CACHE/venv/bin/pip" install -q "psycopg[binary]"

work="$(mktemp -d)"
. tests/cargo-bin.sh
(cd "$work" && "$bin" demo --warehouse "$work/wh" > "$work/demo.out" 2>&1) \
  || { echo "FAIL: the demo failed"; tail "$work/demo.out"; exit 1; }

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export CHATLAKE_SERVE_PASSWORD="server-test-$RANDOM-pw"
"$bin" serve --warehouse "$work/wh" --listen "127.0.0.1:$port" > "$work/serve.out" 2> "$work/serve.err" &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
  sleep 0.1
done
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

# psycopg: simple and extended protocol, parameters, a prepared statement;
# every reporting view.
CHATLAKE_BIN="$bin" WH="$work/wh" "$CACHE/venv/bin/python" - "$port" "$CHATLAKE_SERVE_PASSWORD" <<'PY' || fail "psycopg"
import datetime, sys
import psycopg
port, password = sys.argv[1], sys.argv[2]
dsn = f"host=127.0.0.1 port={port} user=chatlake password={password} dbname=datafusion"
with psycopg.connect(dsn, autocommit=True) as conn:
    days = conn.execute(
        "SELECT CAST(dt AS VARCHAR) AS day, COUNT(*) AS n FROM reporting.chats GROUP BY dt ORDER BY day",
        prepare=False).fetchall()
    assert len(days) > 20, days
    day = datetime.date.fromisoformat(days[5][0])
    with conn.cursor() as cur:
        for _ in range(3):  # the third run uses the server-side prepared statement
            cur.execute("SELECT COUNT(*) FROM reporting.chats WHERE dt = %s", (day,), prepare=True)
            assert cur.fetchone()[0] == days[5][1], (day, days[5])
    try:
        conn.execute("DROP TABLE socialintents.chats")
        sys.exit("FAIL: DROP TABLE was accepted")
    except psycopg.Error as e:
        assert "read-only" in str(e), e
print(f"psycopg: {len(days)} days; the count of {day} with a parameter, prepared, equals the grouped one; DROP refused")

# Every reporting view through the server equals `chatlake query` (its JSON),
# value by value: dates and instants compared as such, doubles to 6 decimals.
import glob, json, math, os, subprocess
def norm(v):
    if v is None or isinstance(v, (bool, int, str)):
        if isinstance(v, str):
            try:
                t = datetime.datetime.fromisoformat(v)
                return t.astimezone(datetime.timezone.utc).isoformat() if t.tzinfo else v
            except ValueError:
                return v
        return v
    if isinstance(v, float):
        return round(v, 6) if math.isfinite(v) else str(v)
    if isinstance(v, datetime.datetime):
        return v.astimezone(datetime.timezone.utc).isoformat()
    if isinstance(v, datetime.date):
        return v.isoformat()
    try:
        return round(float(v), 6)  # Decimal
    except (TypeError, ValueError):
        return json.dumps(v, sort_keys=True, default=str)
def rows(rs):
    return sorted((tuple(norm(x) for x in r) for r in rs), key=repr)
checked = 0
with psycopg.connect(dsn, autocommit=True) as conn:
    for f in sorted(glob.glob("sql/reporting.*.sql")):
        view = os.path.basename(f)[:-4]
        got = conn.execute(f"SELECT * FROM {view}").fetchall()
        out = subprocess.run([os.environ["CHATLAKE_BIN"], "query", "--warehouse", os.environ["WH"],
                              "--format", "json", f"SELECT * FROM {view}"],
                             check=True, capture_output=True, text=True).stdout
        want = [tuple(r.values()) for r in json.loads(out)]
        if rows(got) != rows(want):
            a, b = rows(got), rows(want)
            diff = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            sys.exit(f"FAIL: {view}: {len(a)} rows through the server, {len(b)} from chatlake query; "
                     f"first difference: {a[diff] if diff < len(a) else None} vs {b[diff] if diff < len(b) else None}")
        checked += len(got)
print(f"psycopg: every reporting view equals chatlake query ({checked} rows compared value by value)")
PY

# TLS: a second server with a self-signed certificate; psql with
# sslmode=require is served over TLS (\conninfo says so), and the
# certificate is the one given (sslmode=verify-full against it as the CA).
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost -addext subjectAltName=DNS:localhost \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
tport="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$bin" serve --warehouse "$work/wh" --listen "127.0.0.1:$tport" --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" \
  > "$work/tls.out" 2> "$work/tls.err" &
tls_server=$!
trap 'kill $server $tls_server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $tport), 1)" 2>/dev/null && break
  sleep 0.1
done
info="$(psql "host=localhost port=$tport sslmode=verify-full sslrootcert=$work/cert.pem" -X -c '\conninfo' 2>&1)" \
  || fail "psql over TLS: $info; $(tail -3 "$work/tls.err")"
grep -q "SSL connection" <<< "$info" || fail "psql with sslmode=verify-full is not over TLS: $info"
got="$(psql "host=localhost port=$tport sslmode=require" -XAt -c "SELECT COUNT(*) FROM reporting.chats")" || fail "a query over TLS"
[ "$got" = "$want" ] || fail "over TLS reporting.chats has $got rows, not $want"
echo "psql over TLS: $(grep -o 'SSL connection ([^)]*)' <<< "$info"); the certificate verified; reporting.chats $got rows"
echo "server test: ok"
