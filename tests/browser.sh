#!/usr/bin/env bash
# The demo report as people see it: rendered by a real browser (headless
# Chromium, Debian's `chromium`) to PNG and to PDF. Checks that the page is
# not blank (the PNG has many colours) and that every section heading is on
# the rendered page (the PDF's text, via pdftotext). Installs what it needs
# (chromium, poppler-utils; Pillow in a virtualenv under the cache dir) and
# fails loudly, never skips. Writes docs/report.png when DOCS=1.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${CHATLAKE_CACHE:-$HOME/.cache/chatlake}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chatlake-target}"
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
# The binary as `cargo test` builds it (same features: no second build of
# datafusion after `cargo test`).
cargo test --no-run -q 2>/dev/null || cargo test --no-run
bin="$CARGO_TARGET_DIR/debug/chatlake"
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

pdftotext -layout "$work/report.pdf" "$work/report.txt"
pages=$(pdfinfo "$work/report.pdf" | awk '/^Pages:/ {print $2}')
echo "report.pdf: $pages page(s)"
missing=0
for h in "Chat report" "Data health" "Key figures" "Daily chats" "First-response time" \
         "Chats by weekday and hour" "Agents" "Channels" "Top companies" "Failed syncs"; do
  grep -q "$h" "$work/report.txt" || { echo "FAIL: heading '$h' is not on the rendered page"; missing=1; }
done
[ "$missing" -eq 0 ] || exit 1
if [ "${DOCS:-0}" = 1 ]; then
  cp "$work/report-1280.png" docs/report.png
  echo "docs/report.png updated"
fi
echo "browser test: ok"
