#!/usr/bin/env bash
# The demo report as people see it: rendered by a real browser (headless
# Chromium, Debian's `chromium`) to PNG and to PDF. Checks that the page is
# not blank (the PNG has many colours) and that every section heading is on
# the rendered page (the PDF's text, via pdftotext); then the report by
# email through aiosmtpd, its HTML body rendered too. Installs what it needs
# (chromium, poppler-utils; Pillow and aiosmtpd in a virtualenv under the
# cache dir) and fails loudly, never skips. Writes docs/report.png and
# docs/email.png when DOCS=1.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${CHATLAKE_CACHE:-$HOME/.cache/chatlake}"
mkdir -p "$CACHE"

need=()
command -v chromium >/dev/null || need+=(chromium)
command -v pdftotext >/dev/null || need+=(poppler-utils)
if ((${#need[@]})); then
  echo "browser test: installing ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
if [ ! -x "$CACHE/venv/bin/python" ]; then
  python3 -m venv "$CACHE/venv"
fi
"$CACHE/venv/bin/python" -c "import PIL" 2>/dev/null || "$CACHE/venv/bin/pip" install -q pillow

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
. tests/cargo-bin.sh
(cd "$work" && "$bin" demo --warehouse "$work/wh" > "$work/demo.out")
report="$work/wh/_reports/latest.html"
test -s "$report" || { echo "FAIL: the demo wrote no report at $report"; cat "$work/demo.out"; exit 1; }
grep -q "Report (28 days): file://$work/wh/_reports/latest.html" "$work/demo.out" || { echo "FAIL: the demo did not print the report's path"; tail -3 "$work/demo.out"; exit 1; }
# The demo's closing hint works exactly as printed (with `chatlake` on the
# PATH, as after `cargo install --path .`).
hint="$(sed -n 's/^More: //p' "$work/demo.out")"
case "$hint" in "chatlake query "*) ;; *) echo "FAIL: the demo's hint is not a chatlake command: $hint"; exit 1;; esac
(cd "$work" && PATH="$(dirname "$bin"):$PATH" bash -c "$hint" > "$work/hint.out") || { echo "FAIL: the demo's hint failed as printed: $hint"; exit 1; }
test "$(wc -l < "$work/hint.out")" -gt 10 || { echo "FAIL: the demo's hint printed too little: $hint"; cat "$work/hint.out"; exit 1; }

chrome=(chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run
        --disable-background-networking --disable-component-update --disable-sync
        --user-data-dir="$work/profile")
for width in 1280 390; do
  "${chrome[@]}" --window-size=$width,2600 --hide-scrollbars --screenshot="$work/report-$width.png" "file://$report" 2>/dev/null
done
"${chrome[@]}" --no-pdf-header-footer --print-to-pdf="$work/report.pdf" "file://$report" 2>/dev/null

"$CACHE/venv/bin/python" - "$work" <<'PY'
import sys
from PIL import Image
work = sys.argv[1]
for width in (1280, 390):
    img = Image.open(f"{work}/report-{width}.png").convert("RGB")
    small = img.resize((img.width // 4, img.height // 4))
    colours = len(set(small.getdata()))
    non_white = sum(1 for p in small.getdata() if p != (255, 255, 255))
    share = non_white / (small.width * small.height)
    print(f"report at {width}px: {img.width}x{img.height}, {colours} colours, {share:.1%} non-white")
    if colours < 50 or share < 0.03:
        sys.exit(f"FAIL: the report rendered blank at {width}px")
PY

# Read on a phone (issue 25): at 390 px and at 1280 px the page is no wider
# than the screen (a wide table or chart scrolls inside its own box), and no
# chart text renders under 11 px. Measured by the browser, on the report in
# an iframe of exactly that width (headless windows are at least 500 px
# wide), with a measuring script added to that copy (the report has none).
for width in 390 1280; do
  python3 - "$report" "$work/measure-$width.html" "$width" <<'PY'
import html, sys
page = open(sys.argv[1], encoding="utf-8").read()
script = """<script>
addEventListener('load', () => {
  const vw = document.documentElement.clientWidth, sw = document.documentElement.scrollWidth;
  let min = 1e9, where = '';
  for (const t of document.querySelectorAll('svg text')) {
    const svg = t.ownerSVGElement;
    const px = parseFloat(getComputedStyle(t).fontSize) * svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
    if (px < min) { min = px; where = t.textContent; }
  }
  parent.document.getElementById('measure').textContent = JSON.stringify({vw, sw, min: Math.round(min * 10) / 10, where});
});
</script>"""
width = int(sys.argv[3])
host = (f'<!DOCTYPE html><html><body style="margin:0"><pre id="measure"></pre>'
        f'<iframe style="width:{width}px;height:2000px;border:0" '
        f'srcdoc="{html.escape(page.replace("</body>", script + "</body>"), quote=True)}"></iframe></body></html>')
open(sys.argv[2], "w", encoding="utf-8").write(host)
PY
  "${chrome[@]}" --window-size=1400,2200 --virtual-time-budget=5000 --dump-dom "file://$work/measure-$width.html" 2>/dev/null > "$work/dom-$width.html"
  python3 - "$work/dom-$width.html" "$width" <<'PY'
import html, json, re, sys
m = re.search(r'<pre id="measure">(.+?)</pre>', open(sys.argv[1], encoding="utf-8").read(), re.S)
if not m:
    sys.exit(f"FAIL: the measuring script did not run at {sys.argv[2]} px")
r = json.loads(html.unescape(m.group(1)))
print(f"report at {sys.argv[2]} px: page {r['sw']} px wide in a {r['vw']} px viewport; smallest chart text {r['min']} px ({r['where']!r})")
if r["vw"] > int(sys.argv[2]) or r["vw"] < int(sys.argv[2]) - 20:
    sys.exit(f"FAIL: measured in a {r['vw']} px viewport, not {sys.argv[2]} px")
if r["sw"] > r["vw"]:
    sys.exit(f"FAIL: at {sys.argv[2]} px the page overflows the screen ({r['sw']} > {r['vw']})")
if r["min"] < 11:
    sys.exit(f"FAIL: at {sys.argv[2]} px chart text renders at {r['min']} px ({r['where']!r}), under 11 px")
PY
done

pdftotext -layout "$work/report.pdf" "$work/report.txt"
pages=$(pdfinfo "$work/report.pdf" | awk '/^Pages:/ {print $2}')
echo "report.pdf: $pages page(s)"
missing=0
for h in "Chat report" "Data health" "Key figures" "Daily chats" "First-response time" \
         "Chats by weekday and hour" "Agents" "Channels" "Top companies" "Failed syncs"; do
  grep -q "$h" "$work/report.txt" || { echo "FAIL: heading '$h' is not on the rendered page"; missing=1; }
done
# Every table's column headers and every chart's axis titles, as the HTML
# has them, are on the printed page: a column clipped by the page or hidden
# behind a scrollbar fails here.
"$CACHE/venv/bin/python" - "$report" "$work/report.txt" <<'PY' || missing=1
import html.parser, re, sys
class Collect(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(); self.stack = []; self.found = []; self.text = ""
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "th" or (tag == "text" and "axis" in (a.get("class") or "").split()):
            self.stack.append(tag); self.text = ""
    def handle_endtag(self, tag):
        if self.stack and tag == self.stack[-1]:
            self.stack.pop()
            t = " ".join(self.text.split())
            if t: self.found.append(t)
    def handle_data(self, data):
        if self.stack: self.text += data
c = Collect(); c.feed(open(sys.argv[1], encoding="utf-8").read())
pdf = " ".join(open(sys.argv[2], encoding="utf-8").read().split())
missing = sorted({t for t in c.found if t not in pdf})
print(f"report.pdf: {len(set(c.found))} column headers and axis titles checked")
if len(set(c.found)) < 20:
    sys.exit(f"FAIL: only {len(set(c.found))} column headers and axis titles in the report: {sorted(set(c.found))}")
if missing:
    sys.exit(f"FAIL: not on the printed page: {missing}")
PY
[ "$missing" -eq 0 ] || exit 1

# The report by email (issue 25): sent by `chatlake report --send` to a real
# SMTP server nobody here wrote (Python's aiosmtpd, writing a Maildir),
# parsed with Python's MIME parser (tests/email_check.py), and its HTML body
# opened in Chromium at 390 and 1280 px with the cid: images as data: URLs.
"$CACHE/venv/bin/python" -c "import aiosmtpd" 2>/dev/null || "$CACHE/venv/bin/pip" install -q aiosmtpd
port="$(free_port)"
"$CACHE/venv/bin/python" -m aiosmtpd -n -l "127.0.0.1:$port" -c aiosmtpd.handlers.Mailbox "$work/maildir" 2> "$work/smtpd.err" &
smtpd=$!
trap 'kill $smtpd 2>/dev/null; rm -rf "$work"' EXIT
wait_port "$port" "the SMTP server (aiosmtpd)"
{ cat pipelines/demo.toml
  printf '\n[channels.leads]\ntype = "smtp"\nhost = "127.0.0.1"\nport = %s\nsecurity = "none"\n' "$port"
  printf 'from = "chatlake <reports@example.com>"\nto = ["lead@example.com"]\n\n[report]\ndeliver_to = ["leads"]\n'
} > "$work/mail.toml"
"$bin" report --pipeline "$work/mail.toml" --warehouse "$work/wh" --days 28 --out "$work/sent.html" --send \
  || { echo "FAIL: report --send to aiosmtpd failed"; cat "$work/smtpd.err"; exit 1; }
"$CACHE/venv/bin/python" tests/email_check.py prepare "$work/maildir" "$work"
for width in 390 1280; do
  "${chrome[@]}" --window-size=1400,3200 --virtual-time-budget=5000 --dump-dom "file://$work/email-measure-$width.html" 2>/dev/null > "$work/email-dom-$width.html"
  python3 tests/email_check.py verify "$work/email-dom-$width.html" "$width"
done
"${chrome[@]}" --window-size=640,2600 --hide-scrollbars --screenshot="$work/email.png" "file://$work/email.html" 2>/dev/null
"$CACHE/venv/bin/python" - "$work/email.png" <<'PY'
import sys
from PIL import Image, ImageChops
img = Image.open(sys.argv[1]).convert("RGB")
# Cut the empty background below the message.
bg = Image.new("RGB", img.size, img.getpixel((2, img.height - 2)))
box = ImageChops.difference(img, bg).getbbox()
if not box:
    sys.exit("FAIL: the email rendered blank")
img = img.crop((0, 0, img.width, min(img.height, box[3] + 12)))
small = img.resize((img.width // 4, img.height // 4))
colours = len(set(small.getdata()))
print(f"email at 640px: {img.width}x{img.height}, {colours} colours")
if colours < 50:
    sys.exit("FAIL: the email rendered blank")
img.save(sys.argv[1])
PY
if [ "${DOCS:-0}" = 1 ]; then
  cp "$work/report-1280.png" docs/report.png
  cp "$work/email.png" docs/email.png
  echo "docs/report.png and docs/email.png updated"
fi
echo "browser test: ok"
