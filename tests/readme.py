"""Every shell block of the README, run exactly as printed.

The blocks are read from README.md (```sh fences), so the commands cannot
drift from what the test runs. Each block is matched to one case below by a
command it contains; a block no case knows fails the test, as does a case
whose block is gone. A case prepares what the block assumes (a warehouse, a
pipeline file named as in the README, a simulator, an S3 server), runs the
block's text with bash unchanged, and checks its result against a figure
computed another way (`chatlake query` over the same data, or the simulator).

Runs in a virtualenv with moto, boto3, the DuckDB CLI (duckdb-cli) and
DuckDB's httpfs/aws extension wheels; spark-sql comes from the pyspark
virtualenv.

Usage: readme.py CHATLAKE_BINARY REPO WORKDIR SPARK_BIN_DIR IVY_DIR
"""

import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import boto3
import duckdb
import duckdb_extension_aws
import duckdb_extension_httpfs
from moto.server import ThreadedMotoServer

import spark_ivy

logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
BIN, REPO, WORK, SPARK_BIN, IVY = (os.path.abspath(a) for a in sys.argv[1:6])
HERE = os.path.join(WORK, "readme")
os.makedirs(os.path.join(HERE, "home"), exist_ok=True)
os.makedirs(os.path.join(HERE, "pipelines"), exist_ok=True)
failures = []


def fail(msg):
    failures.append(msg)
    print(f"FAIL: {msg}")


def readme_blocks():
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    return [m.group(1) for m in re.finditer(r"^```(?:sh|bash)\n(.*?)^```", text, re.S | re.M)]


ENV = dict(os.environ)
# HOME moves below: keep rustup and cargo where they are.
ENV.setdefault("RUSTUP_HOME", os.path.join(os.path.expanduser("~"), ".rustup"))
ENV.setdefault("CARGO_HOME", os.path.join(os.path.expanduser("~"), ".cargo"))
ENV.update({
    # `chatlake` as after `cargo install --path .`; duckdb from duckdb-cli;
    # spark-sql from pyspark.
    # (pyspark's first: its spark-sql runs the `python` it finds first)
    "PATH": os.pathsep.join([os.path.dirname(BIN), SPARK_BIN, os.path.dirname(sys.executable), ENV["PATH"]]),
    "HOME": os.path.join(HERE, "home"),  # DuckDB's extensions, the shell's history
    "CHATLAKE_PRIVACY_KEY": "readme-test-privacy-key-0123456789",
})
ENV.pop("CHATLAKE_WAREHOUSE", None)
ENV.pop("CHATLAKE_SIMULATOR_URL", None)


def sh(script, cwd=HERE, env=None, stdin=None, timeout=900, check=True, what=None):
    """Runs `script` with bash -e, as printed; returns (code, stdout, stderr)."""
    p = subprocess.run(["bash", "-e", "-c", script], cwd=cwd, env=env or ENV, input=stdin,
                       capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        fail(f"{what or script.strip()!r} exited {p.returncode}:\n{p.stdout[-1500:]}\n{p.stderr[-3000:]}")
    return p.returncode, p.stdout, p.stderr


def chatlake(*args, env=None):
    p = subprocess.run([BIN, *args], cwd=HERE, env=env or ENV, capture_output=True, text=True)
    if p.returncode != 0:
        fail(f"chatlake {' '.join(args)} exited {p.returncode}: {p.stderr[-2000:]}")
    return p.stdout


def one_number(sql, *extra):
    out = chatlake("query", "--format", "csv", *extra, sql)
    lines = out.strip().splitlines()
    return int(lines[1]) if len(lines) > 1 else None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, what):
    for _ in range(300):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    fail(f"{what} did not listen on {port}")


# --- the cases ---------------------------------------------------------------


def first_screen(block):
    """`cargo run -- demo` in the clone: after `cargo test`, nothing is
    compiled (the two builds share every crate), and the demo writes its
    report. The second line is `.ci/run` itself."""
    lines = [l for l in block.splitlines() if l.strip()]
    demo, tests = lines[0], lines[1]
    had = os.path.exists(os.path.join(REPO, "warehouse"))
    code, out, err = sh(demo, cwd=REPO, what="cargo run -- demo")
    compiled = [l.strip() for l in err.splitlines() if l.strip().startswith("Compiling")]
    if compiled:
        fail(f"`cargo run -- demo` compiled again after `cargo test`: {compiled}")
    if code != 0 or "Report (28 days): file://" not in out:
        fail(f"the demo did not name its report:\n{out[-800:]}")
        return
    ci = open(os.path.join(REPO, ".ci/run"), encoding="utf-8").read()
    for command in tests.split("#")[0].split("&&"):
        if not re.search(rf"^{re.escape(command.strip())}$", ci, re.M):
            fail(f"the README's test command {command.strip()!r} is not a line of .ci/run")
    FIRST["had"] = had
    return (f"first screen: `cargo run -- demo` compiled nothing after `cargo test` and wrote its report; "
            f".ci/run runs {tests.split('#')[0].strip()}")


FIRST = {}


def take_the_demo_warehouse():
    """The demo's ./warehouse (in the clone) becomes the one every later
    block reads as ./warehouse."""
    src = os.path.join(REPO, "warehouse")
    if os.path.isdir(src):
        (shutil.copytree if FIRST.get("had", True) else shutil.move)(src, os.path.join(HERE, "warehouse"))
    else:
        fail("no ./warehouse in the clone after the demo")


def fingerprint(wh):
    """CRM contacts and conversations as the warehouse has them (what the
    demo and a run by hand must agree on)."""
    return chatlake("query", "--format", "csv", "--warehouse", wh,
                    "SELECT contact_id, company_id, name, email, deleted_at IS NULL AS live FROM crm.contacts ORDER BY contact_id; "
                    "SELECT conversation_id, company_id, deleted_at IS NULL AS live FROM crm.conversations ORDER BY conversation_id")


def by_hand(block):
    """In the clone, after the demo, as the README says: `chatlake
    simulator` serves the demo's account, so a run by hand deletes and
    changes no CRM record the demo loaded."""
    wh = os.path.join(REPO, "warehouse")
    before = fingerprint(wh)
    log = open(os.path.join(HERE, "by-hand.log"), "w+")
    # Output to a file: a simulator left running cannot hold a pipe open.
    p = subprocess.Popen(["bash", "-e", "-c", block], cwd=REPO, env=ENV, start_new_session=True,
                         stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        code = p.wait(timeout=600)
    except subprocess.TimeoutExpired:
        code = "timeout"
    finally:
        try:
            os.killpg(p.pid, signal.SIGTERM)  # whatever it left running
        except ProcessLookupError:
            pass
    log.seek(0)
    out = log.read()
    if code != 0:
        fail(f"the by-hand block exited {code}:\n{out[-3000:]}")
    if "crm.contacts                   0 new, 0 changed, 0 gone" not in out:
        fail(f"the run by hand changed CRM contacts the demo loaded:\n{out[-3000:]}")
    after = fingerprint(wh)
    if before != after:
        changed = set(before.splitlines()) ^ set(after.splitlines())
        fail(f"a run by hand against `chatlake simulator` changed {len(changed)} CRM rows of the demo's: {sorted(changed)[:6]}")
    return f"by hand: `chatlake simulator` + `chatlake run` after the demo: {len(before.splitlines()) - 3} CRM rows, none changed"


SIM = {}


def simulator():
    """A `chatlake simulator` for the pipeline files of the other blocks."""
    if not SIM:
        port = free_port()
        SIM["proc"] = subprocess.Popen([BIN, "simulator", "--port", str(port)], cwd=HERE, env=ENV,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port, "chatlake simulator")
        SIM["url"] = f"http://127.0.0.1:{port}"
    return SIM["url"]


def pipeline_file(name, extra="", warehouse=None):
    """pipelines/NAME.toml: the demo pipeline under that name, pointed at
    the test's simulator, starting 14 days ago (a run reads two weeks, not
    the demo's year)."""
    text = open(os.path.join(REPO, "pipelines/demo.toml"), encoding="utf-8").read()
    text = text.replace('name = "demo"', f'name = "{name}"')
    start = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 14 * 86400))
    text = re.sub(r'^start_date = "[0-9-]+"', f'start_date = "{start}"', text, flags=re.M)
    text = text.replace("${CHATLAKE_SIMULATOR_URL:-http://127.0.0.1:8089}", simulator())
    if warehouse:
        text = text.replace('warehouse = "./warehouse"', f'warehouse = "{warehouse}"')
    with open(os.path.join(HERE, "pipelines", f"{name}.toml"), "w", encoding="utf-8") as f:
        f.write(text + extra)


S3 = {}


def s3_server():
    if not S3:
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        S3["endpoint"] = f"http://{host}:{port}"
        S3["env"] = dict(ENV, AWS_ACCESS_KEY_ID="test-key", AWS_SECRET_ACCESS_KEY="test-secret",
                         AWS_ENDPOINT_URL=S3["endpoint"], AWS_ALLOW_HTTP="true")
        boto3.client("s3", endpoint_url=S3["endpoint"], region_name="eu-west-1",
                     aws_access_key_id="test-key", aws_secret_access_key="test-secret").create_bucket(
            Bucket="acme-lake", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    return S3["env"]


def s3_run_and_query(block):
    """The run into S3 and the query over it, as printed."""
    pipeline_file("acme")
    env = s3_server()
    code, out, err = sh(block, env=env)
    rows = [l for l in out.splitlines() if l.startswith("| 20")]
    if len(rows) != 7:
        fail(f"the S3 query printed {len(rows)} rows of dates, not 7:\n{out[-1500:]}")
    return f"s3: the README's run into s3://acme-lake/chat, then its query: 7 days printed"


def schedule_and_runs(block):
    """The daemon starts on every pipeline of the directory and stops
    cleanly on SIGTERM (exit 0); `runs` lists the runs."""
    lines = [l for l in block.splitlines() if l.strip()]
    code, out, err = sh(f"timeout --preserve-status -s TERM 8 {lines[0]}", check=False)
    if code != 0:
        fail(f"{lines[0]!r} did not stop cleanly on SIGTERM (exit {code}):\n{err[-2000:]}")
    for name in ("acme", "prod", "demo"):
        if os.path.exists(os.path.join(HERE, "pipelines", f"{name}.toml")) and name not in err + out:
            fail(f"the daemon did not name pipeline {name}:\n{err[-1500:]}")
    code, out, err = sh(lines[1])
    runs = one_number("SELECT COUNT(DISTINCT run_id) FROM meta.runs")
    listed = [l for l in out.splitlines() if re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d ", l)]
    if len(listed) != min(runs or 0, 20):
        fail(f"`chatlake runs --last 20` listed {len(listed)} runs, meta.runs has {runs}:\n{out}")
    return f"schedule: started on pipelines/ and stopped by SIGTERM with exit 0; runs listed {len(listed)} of {runs} runs"


def forget(block):
    """Both forget commands, against a warehouse written under [privacy]."""
    pipeline_file("prod", extra='\n[privacy]\nkey = "${CHATLAKE_PRIVACY_KEY}"\n', warehouse="./prod-warehouse")
    today = time.strftime("%Y-%m-%d")
    chatlake("run", "--pipeline", "pipelines/prod.toml", "--from", today)
    code, out, err = sh(block)
    if "dry run" not in (out + err).lower():
        fail(f"forget --dry-run did not say it was a dry run:\n{out}\n{err}")
    erasures = one_number("SELECT COUNT(DISTINCT erasure_id) FROM meta.erasures", "--warehouse", "./prod-warehouse")
    if erasures != 1:
        fail(f"meta.erasures holds {erasures} erasures after one forget, not 1")
    if "ann.lee@example.org" in open_all(os.path.join(HERE, "prod-warehouse")):
        fail("the email is in a file of the warehouse after forget")
    return f"forget: dry run, then the erasure recorded once in meta.erasures"


def open_all(root):
    out = ""
    for d, _, files in os.walk(root):
        for f in files:
            out += open(os.path.join(d, f), "rb").read().decode("latin-1")
    return out


def json_query(block):
    """The `_extra` query, as printed: one line per group that SQL counts."""
    code, out, err = sh(block)
    groups = one_number("SELECT COUNT(*) FROM (SELECT json_get_str(_extra, 'user', 'gender') AS g "
                        "FROM social25.conversations GROUP BY 1) t")
    rows = [l for l in out.splitlines() if l.startswith("|")][1:]  # past the header
    if not groups or len(rows) != groups:
        fail(f"the _extra query printed {len(rows)} groups, SQL counts {groups}:\n{out}")
    return f"_extra: the README's json_get_str query printed its {groups} groups"


def install_duckdb_extensions():
    for name, package in (("httpfs", duckdb_extension_httpfs), ("aws", duckdb_extension_aws)):
        ext = os.path.join(os.path.dirname(package.__file__), "extensions", f"v{duckdb.__version__}",
                           f"{name}.duckdb_extension")
        sh(f"duckdb -c \"INSTALL '{ext}'\"", what=f"installing DuckDB's {name} from its wheel")


def views_local(block):
    """The views scripts, then the DuckDB CLI (a query typed at its prompt)
    and spark-sql as printed: DuckDB's count and Spark's newest 7 dates are
    chatlake's."""
    count = one_number("SELECT COUNT(*) FROM reporting.missed_chat_rate")
    newest = chatlake("query", "--format", "csv",
                      "SELECT CAST(dt AS VARCHAR) AS day FROM reporting.missed_chat_rate ORDER BY dt DESC LIMIT 7").split()[1:]
    # The whole block at once: duckdb reads the typed query from stdin,
    # then spark-sql runs.
    code, out, err = sh(block, stdin="SELECT COUNT(*) AS n FROM reporting.missed_chat_rate;\n")
    got = re.findall(r"│\s*(\d+)\s*│", out)
    if not got or int(got[-1]) != count:
        fail(f"duckdb -init views.sql counted {got} rows of reporting.missed_chat_rate, chatlake {count}:\n{out[-1500:]}\n{err[-1500:]}")
    dates = [l.split("\t")[0] for l in out.splitlines() if re.match(r"\d{4}-\d\d-\d\d\t", l)]
    if dates != newest:
        fail(f"spark-sql printed the dates {dates}, chatlake {newest}:\n{out[-1500:]}\n{err[-1500:]}")
    return f"duckdb and spark-sql: {count} rows of reporting.missed_chat_rate in DuckDB's CLI, the newest 7 dates in spark-sql, as chatlake"


def duckdb_s3(block):
    """The DuckDB script over S3, as printed, in the DuckDB CLI."""
    env = s3_server()
    env = dict(env, AWS_REGION="eu-west-1")
    p = subprocess.run([BIN, "query", "--format", "csv", "--warehouse", "s3://acme-lake/chat",
                        "SELECT COUNT(*) FROM reporting.missed_chat_rate"], cwd=HERE, env=env,
                       capture_output=True, text=True)
    expected = int(p.stdout.split()[-1]) if p.returncode == 0 else None
    code, out, err = sh(block, env=env, stdin="SELECT COUNT(*) AS n FROM reporting.missed_chat_rate;\n")
    got = re.findall(r"│\s*(\d+)\s*│", out)
    if expected is None or not got or int(got[-1]) != expected:
        fail(f"duckdb over S3 counted {got}, chatlake {expected}:\n{out[-1500:]}\n{err[-1500:]}")
    return f"duckdb over s3: {expected} rows of reporting.missed_chat_rate, as chatlake over S3"


def spark_s3(block):
    """The Spark script over s3a://, as printed, in spark-sql with hadoop-aws
    from Maven Central (Spark's Ivy cache kept in the cache dir through
    SPARK_CONF_DIR, which the block does not name): its newest 7 dates are
    chatlake's over S3."""
    env = dict(s3_server(), AWS_REGION="eu-west-1")
    conf = os.path.join(HERE, "spark-conf")
    os.makedirs(conf, exist_ok=True)
    with open(os.path.join(conf, "spark-defaults.conf"), "w") as f:
        f.write(f"spark.jars.ivy {IVY}\nspark.jars.ivySettings {spark_ivy.settings(IVY)}\n"
                "spark.ui.enabled false\n")
    env["SPARK_CONF_DIR"] = conf
    p = subprocess.run([BIN, "query", "--format", "csv", "--warehouse", "s3://acme-lake/chat",
                        "SELECT CAST(dt AS VARCHAR) AS day FROM reporting.missed_chat_rate ORDER BY dt DESC LIMIT 7"],
                       cwd=HERE, env=env, capture_output=True, text=True)
    newest = p.stdout.split()[1:] if p.returncode == 0 else None
    code, out, err = sh(block, env=env)
    dates = [l.split("\t")[0] for l in out.splitlines() if re.match(r"\d{4}-\d\d-\d\d\t", l)]
    if not newest or dates != newest:
        fail(f"spark-sql over S3 printed the dates {dates}, chatlake over S3 {newest}:\n{out[-1500:]}\n{err[-3000:]}")
    return f"spark-sql over s3a://: the newest {len(dates)} dates of reporting.missed_chat_rate, as chatlake over S3"


# (a command the block contains, the case). Order: what later blocks read first.
CASES = [
    ("cargo run -- demo", first_screen),
    ("chatlake simulator --port 8089", by_hand),
    ("chatlake run   --pipeline pipelines/acme.toml --warehouse s3://", s3_run_and_query),
    ("chatlake forget --pipeline pipelines/prod.toml", forget),
    ("chatlake schedule --pipeline pipelines/", schedule_and_runs),
    ("json_get_str(_extra, 'user', 'gender')", json_query),
    ("chatlake views --dialect spark --warehouse ./warehouse", views_local),
    ("chatlake views --dialect duckdb --warehouse s3://", duckdb_s3),
    ("chatlake views --dialect spark --warehouse s3a://", spark_s3),
]

blocks = readme_blocks()
claimed = {}
for i, block in enumerate(blocks):
    cases = [c for marker, c in CASES if marker in block]
    if len(cases) != 1:
        fail(f"README shell block {i + 1} matches {len(cases)} test cases (add one to tests/readme.py):\n{block}")
    else:
        claimed[cases[0]] = block
for marker, case in CASES:
    if case not in claimed:
        fail(f"no README shell block contains {marker!r} any more (remove the case or restore the block)")
try:
    for marker, case in CASES:
        if case in claimed:
            if case in (views_local, duckdb_s3) and "ext" not in S3:
                install_duckdb_extensions()
                S3["ext"] = True
            before = len(failures)
            said = case(claimed[case])
            print(f"ok: {said}" if len(failures) == before else f"FAILED: {case.__name__}", flush=True)
            if case is by_hand:
                take_the_demo_warehouse()
finally:
    if SIM:
        SIM["proc"].terminate()
def catalog_excerpt():
    """The README's navigator excerpt is docs/bi-catalog.txt (which
    tests/server.sh checks against pgjdbc), shortened: each of its lines not
    marked as a summary ('...', 'their tables') is a line of the file, tree
    drawing aside, and they come in the file's order."""
    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    m = re.search(r"^\*\*What a BI tool's navigator shows\*\*.*?^```text\n(.*?)^```", readme, re.S | re.M)
    if not m:
        return fail("README: no catalog excerpt after 'What a BI tool's navigator shows'")
    bare = lambda line: " ".join(line.lstrip("│├└─ ").split())
    tree = [bare(l) for l in open(os.path.join(REPO, "docs/bi-catalog.txt"), encoding="utf-8").read().splitlines()]
    at, checked, before = 0, 0, len(failures)
    for line in m.group(1).splitlines():
        if "..." in line or "their tables" in line:
            continue
        try:
            at = tree.index(bare(line), at) + 1
            checked += 1
        except ValueError:
            fail(f"README's catalog excerpt line {line!r} is not in docs/bi-catalog.txt (after line {at})")
    if len(failures) == before:
        print(f"ok: catalog excerpt: {checked} lines found in docs/bi-catalog.txt, in order", flush=True)


catalog_excerpt()
print(f"README: {len(blocks)} shell blocks, {sum(b.count(chr(10)) for b in blocks)} lines, run as printed")
if failures:
    sys.exit(f"{len(failures)} README command(s) failed")
