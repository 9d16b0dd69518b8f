"""`chatlake serve` through the Python clients analysts' tools use, run by
tests/server.sh (issue 21):

- psycopg (3): simple and extended protocol, a parameter, a server-side
  prepared statement, a write refused; every reporting view.
- SQLAlchemy's inspector, as Superset runs it (psycopg2, its default
  driver; and psycopg 3 with client-side binding): schemas, tables, views,
  columns with their types; then pandas.read_sql of every reporting view.
- pgjdbc's rows (written by tests/JdbcCheck.java) for every view.

Every view, through every client, must equal `chatlake query` value by
value: instants compared in UTC, dates as dates, doubles to 6 decimals.

usage: server_clients.py PORT PASSWORD JDBC_JSONL  (env: CHATLAKE_BIN, WH)
"""
import datetime
import functools
import glob
import json
import math
import os
import subprocess
import sys

import pandas
import psycopg
import sqlalchemy

port, password, jdbc_rows = sys.argv[1], sys.argv[2], sys.argv[3]
dsn = f"host=127.0.0.1 port={port} user=chatlake password={password} dbname=datafusion"
VIEWS = sorted(os.path.basename(f)[:-4] for f in glob.glob("sql/reporting.*.sql"))


def fail(why):
    sys.exit(f"FAIL: {why}")


def norm(v):
    """A value as every client and chatlake query can agree on it."""
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        v = v.item()  # numpy scalars from pandas
    if v is None or isinstance(v, (bool, int)):
        return v
    if isinstance(v, str):
        try:
            t = datetime.datetime.fromisoformat(v)
            return t.astimezone(datetime.timezone.utc).isoformat() if t.tzinfo else v
        except ValueError:
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


@functools.cache
def chatlake_rows(view):
    out = subprocess.run(
        [os.environ["CHATLAKE_BIN"], "query", "--warehouse", os.environ["WH"],
         "--format", "json", f"SELECT * FROM {view}"],
        check=True, capture_output=True, text=True).stdout
    return rows(tuple(r.values()) for r in json.loads(out))


def same(client, view, got):
    a, b = rows(got), chatlake_rows(view)
    if a != b:
        diff = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        fail(f"{client}: {view}: {len(a)} rows through the server, {len(b)} from chatlake query; "
             f"first difference: {a[diff] if diff < len(a) else None} vs {b[diff] if diff < len(b) else None}")
    return len(a)


# psycopg: simple and extended protocol, parameters, a prepared statement.
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
        fail("DROP TABLE was accepted")
    except psycopg.Error as e:
        assert "read-only" in str(e), e
    print(f"psycopg: {len(days)} days; the count of {day} with a parameter, prepared, "
          "equals the grouped one; DROP refused")
    checked = sum(same("psycopg", v, conn.execute(f"SELECT * FROM {v}").fetchall()) for v in VIEWS)
print(f"psycopg: every reporting view equals chatlake query ({checked} rows compared value by value)")

# SQLAlchemy's inspector, as Superset lists a database, then pandas.
engines = {
    "psycopg2": sqlalchemy.create_engine(
        f"postgresql+psycopg2://chatlake:{password}@127.0.0.1:{port}/datafusion"),
    "psycopg (client-side binding)": sqlalchemy.create_engine(
        f"postgresql+psycopg://chatlake:{password}@127.0.0.1:{port}/datafusion",
        connect_args={"cursor_factory": psycopg.ClientCursor}),
}
for driver, engine in engines.items():
    insp = sqlalchemy.inspect(engine)
    schemas = set(insp.get_schema_names())
    if not {"socialintents", "social25", "crm", "meta", "reporting"} <= schemas:
        fail(f"SQLAlchemy ({driver}) get_schema_names: {sorted(schemas)}")
    tables = set(insp.get_table_names(schema="socialintents"))
    if tables != {"chats", "chat_messages", "contacts", "offline_messages", "widgets"}:
        fail(f"SQLAlchemy ({driver}) get_table_names(socialintents): {sorted(tables)}")
    views = {f"reporting.{v}" for v in insp.get_view_names(schema="reporting")}
    if views != set(VIEWS):
        fail(f"SQLAlchemy ({driver}) get_view_names(reporting): {sorted(views)}, not {VIEWS}")
    columns = {c["name"]: c["type"] for c in insp.get_columns("chats", schema="reporting")}
    started, dt = columns.get("started_at"), columns.get("dt")
    if not (isinstance(started, sqlalchemy.TIMESTAMP) and started.timezone):
        fail(f"SQLAlchemy ({driver}): reporting.chats.started_at is {started!r}, not a timestamp with time zone")
    if not isinstance(dt, sqlalchemy.Date):
        fail(f"SQLAlchemy ({driver}): reporting.chats.dt is {dt!r}, not a date")
    print(f"SQLAlchemy inspector ({driver}): {len(schemas)} schemas, {len(tables)} socialintents tables, "
          f"{len(views)} reporting views, reporting.chats {len(columns)} columns "
          f"(started_at {started!r}, dt {dt!r})")

checked = 0
with engines["psycopg2"].connect() as conn:
    for v in VIEWS:
        frame = pandas.read_sql(f"SELECT * FROM {v}", conn)
        frame = frame.astype(object).where(frame.notna(), None)
        checked += same("pandas.read_sql", v, frame.itertuples(index=False, name=None))
print(f"pandas.read_sql (SQLAlchemy, psycopg2): every reporting view equals chatlake query ({checked} rows)")

# pgjdbc's rows, written by JdbcCheck.java.
by_view = {}
with open(jdbc_rows) as f:
    for line in f:
        r = json.loads(line)
        by_view.setdefault(r["view"], []).append(r["row"])
checked = sum(same("pgjdbc", v, by_view.get(v, [])) for v in VIEWS)
want = [r for r in chatlake_rows("reporting.chats") if r[5] == "2025-10-29"]
if by_view.get("count 2025-10-29") != [[len(want)]]:
    fail(f"pgjdbc: the prepared count of 2025-10-29 is {by_view.get('count 2025-10-29')}, not {len(want)}")
print(f"pgjdbc: every reporting view equals chatlake query ({checked} rows); "
      f"a prepared statement with a date parameter counts {len(want)} chats on 2025-10-29")
