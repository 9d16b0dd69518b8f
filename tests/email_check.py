"""The report email as a mail server received it (tests/browser.sh).

`prepare MAILDIR WORK`: parses the one message in the Maildir that aiosmtpd
wrote with Python's own MIME parser (email, policy=default) and checks it:
multipart/mixed holding multipart/related (text/plain and text/html
alternatives, then the PNG charts by Content-ID) and the full report as an
HTML attachment; no <svg>, <script> or <style> in the HTML body; every
cid: image is a PNG part; the subject's figures are the text's and the
attached report's. Writes WORK/email.html (cid: turned into data: URLs) and,
per width, WORK/email-measure-<width>.html: the email in an iframe of
exactly that width, with a script that measures it as the browser laid it
out.

`verify DOM WIDTH`: reads what that script wrote into the dumped DOM and
fails unless the page is no wider than the screen, every image loaded, and
there is text on it.
"""
import base64
import email
import email.policy
import html
import json
import mailbox
import re
import sys


def fail(msg):
    sys.exit(f"FAIL: {msg}")


def prepare(maildir, work):
    box = mailbox.Maildir(maildir, factory=None, create=False)
    keys = list(box.keys())
    if len(keys) != 1:
        fail(f"the SMTP server received {len(keys)} messages, not 1")
    msg = email.message_from_bytes(box.get_bytes(keys[0]), policy=email.policy.default)
    subject = str(msg["subject"])
    print(f"email: {subject!r}, to {msg['to']}")
    if msg.get_content_type() != "multipart/mixed":
        fail(f"top part is {msg.get_content_type()}, not multipart/mixed")
    related, *attachments = msg.iter_parts()
    if related.get_content_type() != "multipart/related":
        fail(f"first part is {related.get_content_type()}, not multipart/related")
    alternative, *images = related.iter_parts()
    kinds = [p.get_content_type() for p in alternative.iter_parts()]
    if kinds != ["text/plain", "text/html"]:
        fail(f"the alternatives are {kinds}")
    text, body = (p.get_content() for p in alternative.iter_parts())
    low = body.lower()
    for tag in ("<svg", "<script", "<style"):
        if tag in low:
            fail(f"the HTML body holds {tag}>")
    by_cid = {}
    for p in images:
        if p.get_content_type() != "image/png":
            fail(f"an inline part is {p.get_content_type()}")
        data = p.get_content()
        if data[:8] != b"\x89PNG\r\n\x1a\n":
            fail(f"{p['content-id']} is not a PNG")
        by_cid[p["content-id"].strip("<>")] = data
    cids = re.findall(r'src="cid:([^"]+)"', body)
    if len(cids) < 3 or set(cids) != set(by_cid):
        fail(f"the HTML names images {cids}, the message has {sorted(by_cid)}")
    if len(attachments) != 1 or attachments[0].get_content_type() != "text/html":
        fail(f"attachments: {[a.get_content_type() for a in attachments]}")
    name = attachments[0].get_filename()
    report = attachments[0].get_content()
    if not re.fullmatch(r"chat-report-\d{4}-\d\d-\d\d-to-\d{4}-\d\d-\d\d\.html", name or ""):
        fail(f"the attachment is named {name!r}")
    if "<svg" not in report or "<h1>Chat report</h1>" not in report:
        fail("the attachment is not the full report")
    # The headline figures agree everywhere they are shown.
    m = re.search(r": Chats ([\d,]+) \(.*· missed ([\d.]+%|–) ", subject)
    if not m:
        fail(f"the subject has no headline figures: {subject!r}")
    chats, rate = m.group(1), m.group(2)
    if f"Chats: {chats} (" not in text or f"Missed rate: {rate} (" not in text:
        fail(f"the text does not repeat the subject's figures {chats}, {rate}:\n{text}")
    value = re.search(r'data-kpi="chats" data-value="([\d.]+)"', report)
    if not value or float(value.group(1)) != int(chats.replace(",", "")):
        fail(f"the attached report's chats ({value and value.group(1)}) differ from the subject's {chats}")
    if rate not in body:
        fail(f"the HTML body does not show the missed rate {rate}")
    print(f"email: {len(by_cid)} PNG charts {sorted(by_cid)}, attachment {name} "
          f"({len(report)} bytes); chats {chats}, missed {rate} in subject, text, body and report")

    for cid, data in by_cid.items():
        body = body.replace(f"cid:{cid}", "data:image/png;base64," + base64.b64encode(data).decode())
    open(f"{work}/email.html", "w", encoding="utf-8").write(body)
    script = """<script>
addEventListener('load', () => {
  const d = document.documentElement;
  const imgs = [...document.images];
  parent.document.getElementById('measure').textContent = JSON.stringify({
    vw: d.clientWidth, sw: d.scrollWidth, images: imgs.length,
    loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
    widest: Math.max(0, ...imgs.map(i => i.getBoundingClientRect().right)),
    text: document.body.innerText.trim().length });
});
</script>"""
    for width in (390, 1280):
        host = (f'<!DOCTYPE html><html><body style="margin:0"><pre id="measure"></pre>'
                f'<iframe style="width:{width}px;height:3000px;border:0" '
                f'srcdoc="{html.escape(body.replace("</body>", script + "</body>"), quote=True)}"></iframe></body></html>')
        open(f"{work}/email-measure-{width}.html", "w", encoding="utf-8").write(host)


def verify(dom, width):
    m = re.search(r'<pre id="measure">(.+?)</pre>', open(dom, encoding="utf-8").read(), re.S)
    if not m:
        fail(f"the measuring script did not run on the email at {width} px")
    r = json.loads(html.unescape(m.group(1)))
    print(f"email at {width} px: page {r['sw']} px wide in a {r['vw']} px viewport; "
          f"{r['loaded']}/{r['images']} images loaded, rightmost image edge {r['widest']:.0f} px; {r['text']} characters of text")
    if r["vw"] > width or r["vw"] < width - 20:
        fail(f"measured in a {r['vw']} px viewport, not {width} px")
    if r["sw"] > r["vw"] or r["widest"] > r["vw"]:
        fail(f"at {width} px the email overflows the screen ({r['sw']} > {r['vw']})")
    if r["images"] < 3 or r["loaded"] != r["images"]:
        fail(f"at {width} px only {r['loaded']} of {r['images']} images loaded")
    if r["text"] < 200:
        fail(f"at {width} px the email is blank ({r['text']} characters)")


if __name__ == "__main__":
    if sys.argv[1] == "prepare":
        prepare(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "verify":
        verify(sys.argv[2], int(sys.argv[3]))
    else:
        fail(f"unknown command {sys.argv[1]}")
