"""The live dashboard at GET / (issue 14, acceptance 2), loaded in Debian's
headless Chromium as an operator's browser would load it.

- A farm of 64 demo sectors is plotted about half way (the encode workers
  are then frozen with SIGSTOP, so the count holds still while the page is
  read): the DOM shows the farm, its plotted count, and a sector map canvas
  that the page drew from the sectors document; the screenshot, saved as
  BUILD/dashboard.png, decodes to 1280x900 and holds the map's colours.
- The browser makes no request outside 127.0.0.1 for the page.  Chromium
  runs with its NetLog on (--log-net-log): every URL request it made, with
  its initiator; each request the page made (initiator: the page's
  origin) must be for 127.0.0.1.  As a fence, Chromium also gets
  --proxy-server pointing at a proxy in this test that records what
  reaches it and answers 502 (loopback bypasses the proxy), and host
  resolution mapped to NOTFOUND for all but 127.0.0.1, so nothing leaves
  the machine; what the proxy saw must be Chromium's own services (network
  time, component updates, account checks: NetLog lists them with no page
  initiator).  A control page served from 127.0.0.1 that loads an image
  from another host is caught by both.  The served HTML is also checked
  for any absolute URL (http:, https:, ws:, protocol-relative //host).
- With the JSON endpoints failing, the page says "farmd unreachable".
- A farm of 100,000 sectors renders within the virtual time budget with a
  few hundred DOM elements (one canvas, no node per sector); its plot.bin
  (25 GiB with 4 KiB pieces) is preallocated on a sparse loop-mounted
  ext4 image when this runs as root, else in the temporary directory when
  the disk has room for it, else the test skips with a message.

Chromium comes from Debian's `chromium` package (scripts/deps installs it);
without it these tests fail, they do not skip.

    FARMD_BUILD=build python3 tests/integration/test_dashboard.py [test_name ...]
"""
import html.parser
import json
import http.server
import os
import re
import shutil
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from harness import BUILD, FARMCTL, SLOW, farmd, run_tests, wait_for  # noqa: E402

KIB = 1 << 10
GIB = 1 << 30

# Legend colours the page draws (supervisor/dashboard.html, STATES).
PLOTTED_RGB = (0x3a, 0x9b, 0x6b)
EMPTY_RGB = (0xdd, 0xe1, 0xe6)


def config(**history):
    out = ("[daemon]\nmetrics_listen = 127.0.0.1:0\n"
           "[workers]\nencode = 2\nrestart_backoff_max = 1s\njob_timeout = 10m\n"
           "[plotting]\nmax_sectors_per_farm = 2\n")
    if history:
        out += "[history]\n" + "".join(f"{k} = {v}\n" for k, v in history.items())
    return out


def listen_addr(f):
    """HOST:PORT farmd's HTTP listener bound (`status` field http_listen)."""
    addr = f.status().get("http_listen")
    assert addr and re.fullmatch(r"127\.0\.0\.1:\d+", addr) and not addr.endswith(":0"), addr
    return addr


def http_get(url):
    with urllib.request.urlopen(url, timeout=30 * SLOW) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read()


# ---- the recording proxy -------------------------------------------------------

class RecordingProxy:
    """Accepts whatever Chromium sends a proxy, records its request line
    (GET http://host/…, CONNECT host:443) and answers 502."""

    def __init__(self):
        self.requests = []
        lock = threading.Lock()
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                try:
                    line = self.rfile.readline(8192).decode(errors="replace").strip()
                except OSError:
                    return
                if line:
                    with lock:
                        outer.requests.append(line)
                try:
                    self.wfile.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n"
                                     b"Connection: close\r\n\r\n")
                except OSError:
                    pass

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# ---- headless Chromium -----------------------------------------------------------

def chromium(tmp, url, proxy, budget_ms=5000, screenshot=None, dump=True):
    """Runs headless Chromium on url and returns (the DOM it dumps, the URL
    requests its NetLog lists); the browser gets its own HOME and profile
    under tmp, the recording proxy, and no name resolution but 127.0.0.1.
    Killed (its process group) if it does not finish."""
    exe = shutil.which("chromium")
    assert exe, "chromium is not installed (Debian package chromium; run scripts/deps)"
    home = os.path.join(tmp, "chromium-home")
    os.makedirs(home, exist_ok=True)
    netlog = os.path.join(home, "netlog.json")
    if os.path.exists(netlog):
        os.unlink(netlog)
    args = [exe, "--headless", "--no-sandbox", "--disable-gpu",
            f"--user-data-dir={os.path.join(home, 'profile')}",
            "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-default-apps",
            "--disable-extensions", "--disable-domain-reliability", "--disable-breakpad",
            f"--proxy-server=http://127.0.0.1:{proxy.port}",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            f"--log-net-log={netlog}", "--net-log-capture-mode=Default",
            f"--virtual-time-budget={budget_ms}", "--window-size=1280,900"]
    if screenshot:
        args.append(f"--screenshot={screenshot}")
    if dump:
        args.append("--dump-dom")
    args.append(url)
    env = {"HOME": home, "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "XDG_CONFIG_HOME": os.path.join(home, ".config"),
           "XDG_CACHE_HOME": os.path.join(home, ".cache")}
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                         cwd=home, start_new_session=True)
    try:
        out, err = p.communicate(timeout=60 * SLOW)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        raise AssertionError(f"chromium did not finish within {60 * SLOW:.0f} s on {url}")
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)          # leftover renderer or GPU processes
        except ProcessLookupError:
            pass
    assert p.returncode == 0, (p.returncode, err.decode(errors="replace")[-2000:])
    return out.decode(errors="replace"), url_requests(netlog)


def url_requests(path):
    """[(method, url, initiator)] of every URL request in a Chromium NetLog;
    initiator is None for the browser's own (no page origin)."""
    with open(path) as fh:
        text = fh.read()
    try:
        log = json.loads(text)
    except ValueError:                       # not closed: cut at the last event
        log = json.loads(text[:text.rstrip().rstrip(",").rfind("}") + 1] + "]}")
    kinds = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    out = []
    for ev in log["events"]:
        if kinds.get(ev.get("type")) == "URL_REQUEST_START_JOB":
            prm = ev.get("params", {})
            if "url" not in prm:                 # the event's end, no request
                continue
            ini = prm.get("initiator")
            out.append((prm.get("method"), prm.get("url"),
                        None if ini in (None, "not an origin") else ini))
    assert out, f"no URL requests in the NetLog {path}"
    return out


LOOPBACK = re.compile(r"^(?:https?|wss?)://127\.0\.0\.1(?::\d+)?/")


def page_requests_outside(requests):
    """Requests a page made (with an initiator) for anything but 127.0.0.1."""
    return [(m, u, i) for m, u, i in requests if i is not None and not LOOPBACK.match(u)]


def host_of(line):
    """The host of a proxy request line: CONNECT host:443, GET http://host/…"""
    target = line.split()[1] if len(line.split()) > 1 else ""
    return re.sub(r"^\w+://", "", target).split("/")[0].split(":")[0]


def assert_nothing_outside(requests, proxy, origin):
    """The page's requests all went to 127.0.0.1, it made some, and what
    reached the proxy was the browser's own (hosts NetLog lists with no
    page initiator)."""
    assert page_requests_outside(requests) == [], page_requests_outside(requests)
    mine = [u for _, u, i in requests if i == origin]
    assert any("/api/v1/status" in u for u in mine), requests
    own = {re.sub(r"^\w+://", "", u).split("/")[0].split(":")[0] for _, u, i in requests if i is None}
    assert all(host_of(r) in own for r in proxy.requests), (proxy.requests, own)


# ---- reading the dumped DOM -------------------------------------------------------

class Node:
    def __init__(self, tag, attrs, parent):
        self.tag, self.attrs, self.parent, self.children, self.text = tag, dict(attrs), parent, [], []

    def all_text(self):
        return "".join(t if isinstance(t, str) else t.all_text() for t in self.text)

    def walk(self):
        yield self
        for c in self.children:
            yield from c.walk()

    def classes(self):
        return (self.attrs.get("class") or "").split()


class Dom(html.parser.HTMLParser):
    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
            "source", "track", "wbr"}

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {}, None)
        self.cur = self.root
        self.elements = 0
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.elements += 1
        n = Node(tag, attrs, self.cur)
        self.cur.children.append(n)
        self.cur.text.append(n)
        if tag not in self.VOID:
            self.cur = n

    def handle_startendtag(self, tag, attrs):
        self.elements += 1
        n = Node(tag, attrs, self.cur)
        self.cur.children.append(n)
        self.cur.text.append(n)

    def handle_endtag(self, tag):
        n = self.cur
        while n is not self.root and n.tag != tag:
            n = n.parent
        if n is not self.root:
            self.cur = n.parent

    def handle_data(self, data):
        self.cur.text.append(data)

    def by_id(self, ident):
        return next((n for n in self.root.walk() if n.attrs.get("id") == ident), None)

    def by_class(self, cls, root=None):
        return [n for n in (root or self.root).walk() if cls in n.classes()]


def kv_pairs(dl):
    """{dt text: dd text} of a <dl>."""
    items = [c for c in dl.children if c.tag in ("dt", "dd")]
    return {a.all_text(): b.all_text() for a, b in zip(items[::2], items[1::2])}


# ---- reading the screenshot --------------------------------------------------------

def png_decode(data):
    """(width, height, rows of (r, g, b) tuples' bytes, bytes per pixel) of an
    8-bit RGB or RGBA non-interlaced PNG, with the five scanline filters."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:8]
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    w, h, depth, ctype, _, _, interlace = ihdr
    assert depth == 8 and ctype in (2, 6) and interlace == 0, ihdr
    bpp = 3 if ctype == 2 else 4
    raw, stride, rows, prev = zlib.decompress(idat), w * bpp, [], bytearray(w * bpp)
    for y in range(h):
        ft, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if ft == 1:
                line[i] = (line[i] + a) & 255
            elif ft == 2:
                line[i] = (line[i] + b) & 255
            elif ft == 3:
                line[i] = (line[i] + ((a + b) >> 1)) & 255
            elif ft == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return w, h, rows, bpp


def count_color(rows, bpp, rgb):
    want = bytes(rgb)
    n = 0
    for row in rows:
        for x in range(0, len(row), bpp):
            if row[x:x + 3] == want:
                n += 1
    return n


# ---- the page's own HTML ---------------------------------------------------------------

ABSOLUTE_URL = re.compile(r"(?i)\b(?:https?|wss?|ftp):|(?<![:\w/])//[a-z0-9.-]+\.[a-z]{2,}")


def assert_self_contained(page):
    """No absolute URL anywhere in the page, no external script, style, image,
    font or frame, and every fetch() of a relative path."""
    assert b"\0" not in page
    text = page.decode()
    bad = ABSOLUTE_URL.findall(text)
    assert not bad, f"absolute URLs in the dashboard: {bad[:5]}"
    for pat in (r"<script[^>]+src\s*=", r"<link[^>]+href\s*=\s*\"(?!data:)", r"<img\b", r"<iframe\b",
                r"@import", r"url\(", r"@font-face", r"<base\b"):
        assert not re.search(pat, text, re.I), f"dashboard has {pat}"
    for m in re.finditer(r"fetch\(\s*([^,)]+)", text):
        assert not m.group(1).strip().startswith(("'/", '"/')) or "api/v1" in m.group(1), m.group(0)


# ---- the test ------------------------------------------------------------------------------

def chain(tmp, blocks, body=64 * KIB):
    d = os.path.join(tmp, "chain")
    p = subprocess.run([FARMCTL, "chain", "generate", "--blocks", str(blocks), "--body-size",
                        str(body), "--seed", "dashboard", "--out", d],
                       capture_output=True, text=True, timeout=120 * SLOW)
    assert p.returncode == 0, p.stderr
    return [os.path.join(d, f"{h:06d}.blk") for h in range(1, blocks + 1)]


def farm_of(f, fid):
    return next(x for x in f.ctl_json("farm", "list") if x["id"] == fid)


def freeze_plotting(f, fid):
    """Stops plotting where it is: the encode workers get SIGSTOP (the
    sectors in flight stay in flight, job_timeout is long), and once the
    farm's plotted count holds still for 0.5 s it is returned.  Returns
    also a function that lets the workers go on."""
    pids = [w["pid"] for w in f.status()["workers"] if w["kind"] == "encode"]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    seen = []

    def still():
        seen.append(farm_of(f, fid)["plotted"])
        time.sleep(0.5)
        return farm_of(f, fid)["plotted"] == seen[-1]
    wait_for(still, 20, what="the plotted count to hold still")

    def thaw():
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    return seen[-1], thaw


def state_counts(text):
    """{state label: count} from a map's caption, "29 empty · 2 plotting · 33 plotted"."""
    return {label: int(n.replace(",", "")) for n, label in
            (re.fullmatch(r"([\d,]+) (.+)", p).groups() for p in text.split(" · "))}


def test_dashboard_half_plotted(tmp):
    """Half of a 64-sector farm plotted: the page shows the farm, its count,
    its sector map (in the DOM and in the screenshot), and fetches nothing
    from outside 127.0.0.1."""
    proxy = RecordingProxy()
    try:
        f = farmd(tmp, config=config())
        base = f"http://{listen_addr(f)}/"
        status, ctype, page = http_get(base)
        assert status == 200 and ctype.startswith("text/html"), (status, ctype)
        assert_self_contained(page)

        farm_dir = os.path.join(tmp, "farm-64")
        farm = f.ctl_json("farm", "add", farm_dir, "--sectors", 64, "--profile", "demo")
        fid = farm["id"]
        # 40 blocks of 64 KiB: two segments and more, so every sector can plot.
        f.ctl("history", "ingest", *chain(tmp, 40))
        wait_for(lambda: farm_of(f, fid)["plotted"] >= 32, 60, interval=0.01,
                 what="32 of 64 sectors plotted")
        plotted, thaw = freeze_plotting(f, fid)
        assert 32 <= plotted < 64, plotted

        shot = os.path.join(os.path.abspath(BUILD), "dashboard.png")
        if os.path.exists(shot):
            os.unlink(shot)
        dom_text, requests = chromium(tmp, base, proxy, budget_ms=5000, screenshot=shot)
        dom = Dom(dom_text)

        # The farm, its directory, its plotted count.
        sec = dom.by_id(f"farm-{fid}")
        assert sec is not None, dom_text[-3000:]
        assert [n.all_text() for n in dom.by_class("farm-dir", sec)] == [farm_dir]
        assert dom.by_id(f"farm-{fid}-plotted").all_text() == f"{plotted}/64 plotted"
        # The sector map: a canvas the page sized for 64 cells, drawn from
        # the sectors document (the state counts under it add up to 64).
        maps = [n for n in dom.by_class("sector-map", sec) if n.tag == "canvas"]
        assert len(maps) == 1, [n.tag for n in dom.by_class("sector-map", sec)]
        assert int(maps[0].attrs.get("width", 0)) > 0 and int(maps[0].attrs.get("height", 0)) > 0, \
            maps[0].attrs
        counts = dom.by_class("farm-counts", sec)[0].all_text()
        parts = state_counts(counts)
        assert parts.get("plotted") == plotted and sum(parts.values()) == 64, counts
        assert parts.get("empty", 0) > 0, counts
        # Connected, not the unreachable state; the other cards are filled.
        assert dom.by_id("conn").attrs.get("data-state") == "live", dom.by_id("conn").attrs
        assert "hidden" in dom.by_id("banner").attrs
        assert "encode" in dom.by_id("pools").all_text()
        hist = kv_pairs(dom.by_id("history-kv"))
        assert hist["archived height"] == "40" and hist["ingested"] == "40 blocks", hist

        # The screenshot: a 1280x900 PNG with plotted and empty cells in it.
        data = open(shot, "rb").read()
        assert len(data) > 20 * KIB, len(data)
        w, h, rows, bpp = png_decode(data)
        assert (w, h) == (1280, 900), (w, h)
        green, grey = count_color(rows, bpp, PLOTTED_RGB), count_color(rows, bpp, EMPTY_RGB)
        assert green >= 30 * 25 and grey >= 10 * 25, (green, grey)

        # Nothing outside 127.0.0.1 (the control is in test_dashboard_unreachable).
        assert_nothing_outside(requests, proxy, base.rstrip("/"))
        # Refreshed every second; the large sectors document fetched once,
        # since nothing in the farm changed while the page was open.
        mine = [u for _, u, i in requests if i == base.rstrip("/")]
        status_n = sum(u.endswith("/api/v1/status") for u in mine)
        sectors_n = sum(u.endswith(f"/api/v1/farms/{fid}/sectors") for u in mine)
        assert status_n >= 4 and sectors_n == 1, (status_n, sectors_n, mine)

        # Hovering sector 0 shows its index, state, history size and expiry
        # (the page in a same-origin frame, through a forwarding server).
        s0 = next(x for x in f.ctl_json("sectors", fid) if x["index"] == 0)
        Forward.target = base.rstrip("/")
        fwd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forward)
        threading.Thread(target=fwd.serve_forever, daemon=True).start()
        try:
            dom, _ = chromium(tmp, f"http://127.0.0.1:{fwd.server_address[1]}/hover", proxy,
                              budget_ms=3000)
        finally:
            fwd.shutdown()
            fwd.server_close()
        tip = Dom(dom).by_id("tip-seen").all_text().splitlines()
        print("     tooltip: " + " | ".join(tip), flush=True)
        assert tip[0] == f"Sector 0 of farm {fid}: plotted", tip
        assert f"history size: {s0['history_size']}" in tip, (tip, s0)
        assert (f"expires at history size {s0['expires_at']}" in "\n".join(tip)
                if s0["expires_at"] is not None else "expiry: not known yet" in tip), (tip, s0)
        assert any(t.startswith("plotted 20") for t in tip), tip
        thaw()
        assert f.stop() == 0, f.log()[-2000:]
    finally:
        proxy.close()


HOVER_PAGE = b"""<!doctype html>
<iframe id="dash" src="/" width="1200" height="800"></iframe><pre id="tip-seen"></pre>
<script>
// After the dashboard has loaded, move the pointer onto sector 0 of farm 0
// and copy the tooltip the page shows.
setTimeout(function () {
  var d = document.getElementById("dash").contentDocument;
  var c = d.getElementById("farm-0-map"), r = c.getBoundingClientRect();
  c.dispatchEvent(new d.defaultView.MouseEvent("mousemove",
    { clientX: r.left + 2, clientY: r.top + 2, bubbles: true }));
  var tip = d.getElementById("tip");
  document.getElementById("tip-seen").textContent = tip.hidden ? "(hidden)" : tip.textContent;
}, 2000);
</script>"""


class Forward(http.server.BaseHTTPRequestHandler):
    """Serves HOVER_PAGE at /hover and forwards every other GET to farmd."""
    target = ""

    def do_GET(self):
        if self.path == "/hover":
            code, ctype, body = 200, "text/html", HOVER_PAGE
        else:
            try:
                code, ctype, body = http_get(self.target + self.path)
            except urllib.error.HTTPError as e:
                code, ctype, body = e.code, "text/plain", e.read()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


PROBE = "http://dashboard-probe.example/x.png"


class FailingApi(http.server.BaseHTTPRequestHandler):
    """Serves the dashboard page at /, a control page that loads an image
    from another host at /probe, and fails every other path with 503."""
    page = b""

    def do_GET(self):
        if self.path == "/":
            body, code = self.page, 200
        elif self.path == "/probe":
            body, code = f"<!doctype html><p>probe</p><img src='{PROBE}'>".encode(), 200
        else:
            body, code = b"farmd is gone", 503
        self.send_response(code)
        self.send_header("Content-Type", "text/html" if code == 200 else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def test_dashboard_unreachable(tmp):
    """The page farmd served, with its JSON endpoints failing afterwards,
    says "farmd unreachable" instead of showing a blank page.  And the
    control for the no-request-outside check: a page on 127.0.0.1 that
    loads an image from another host is caught by NetLog and proxy."""
    f = farmd(tmp, config=config())
    _, _, page = http_get(f"http://{listen_addr(f)}/")
    assert f.stop() == 0
    FailingApi.page = page
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FailingApi)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{srv.server_address[1]}"
    proxy = RecordingProxy()
    try:
        dom_text, requests = chromium(tmp, origin + "/", proxy, budget_ms=3000)
        dom = Dom(dom_text)
        conn, banner = dom.by_id("conn"), dom.by_id("banner")
        assert conn.attrs.get("data-state") == "down" and conn.all_text() == "farmd unreachable", \
            (conn.attrs, conn.all_text())
        assert "hidden" not in banner.attrs and "farmd unreachable" in banner.all_text(), \
            (banner.attrs, banner.all_text())
        assert "503" in banner.all_text(), banner.all_text()
        assert_nothing_outside(requests, proxy, origin)

        _, requests = chromium(tmp, origin + "/probe", proxy, budget_ms=1000, dump=False)
        assert [u for _, u, _ in page_requests_outside(requests)] == [PROBE], requests
        assert any(host_of(r) == "dashboard-probe.example" for r in proxy.requests), proxy.requests
    finally:
        proxy.close()
        srv.shutdown()
        srv.server_close()


def big_disk(tmp, need):
    """A directory with room for a preallocated file of `need` bytes: a
    sparse ext4 image loop-mounted under tmp (root), else tmp itself when
    its disk has twice the room.  Returns (dir, cleanup) or (None, reason)."""
    mnt = os.path.join(tmp, "big")
    os.makedirs(mnt)
    if os.geteuid() == 0 and shutil.which("mkfs.ext4"):
        img = os.path.join(tmp, "big.img")
        with open(img, "wb") as fh:
            fh.truncate(need + 2 * GIB)
        mk = subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", img], capture_output=True, text=True)
        if mk.returncode == 0:
            mo = subprocess.run(["mount", "-o", "loop", img, mnt], capture_output=True, text=True)
            if mo.returncode == 0:
                def cleanup():
                    if subprocess.run(["umount", mnt], capture_output=True).returncode != 0:
                        subprocess.run(["umount", "-l", mnt], capture_output=True)
                    os.unlink(img)
                return mnt, cleanup
        os.unlink(img)
    st = os.statvfs(tmp)
    if st.f_bavail * st.f_frsize >= 2 * need:
        return mnt, lambda: shutil.rmtree(mnt, ignore_errors=True)
    return None, f"no loop mount and less than {2 * need / GIB:.0f} GiB free under {tmp}"


def test_dashboard_100000_sectors(tmp):
    """A farm of 100,000 sectors, plotting: the page renders it within the
    virtual time budget, map included, with one canvas and a few hundred
    elements, fetches its sectors document once, and shows a plotting rate."""
    n = 100000
    # 4 KiB pieces: a demo sector is 64 pieces, 256 KiB; the farm 25 GiB.
    d, cleanup = big_disk(tmp, n * 64 * 4 * KIB)
    if d is None:
        print(f"     skipped: {cleanup}", flush=True)
        return
    proxy = RecordingProxy()
    f = None
    try:
        f = farmd(tmp, config=config(piece_size="4K"))
        farm_dir = os.path.join(d, "farm")
        fid = f.ctl_json("farm", "add", farm_dir, "--sectors", n, "--profile", "demo",
                         timeout=120)["id"]
        addr = listen_addr(f)
        started = time.monotonic()
        status, _, body = http_get(f"http://{addr}/api/v1/farms/{fid}/sectors")
        took = time.monotonic() - started
        assert status == 200 and body.count(b'"index"') == n, (status, len(body))
        # Some history (4 KiB pieces: 64 KiB segments); the farm plots on
        # (it has far more sectors than the test waits for).
        f.ctl("history", "ingest", *chain(tmp, 40, body=4 * KIB))
        wait_for(lambda: farm_of(f, fid)["plotted"] >= 10, 60, interval=0.01,
                 what="10 sectors plotted")
        before = farm_of(f, fid)["plotted"]
        shot = os.path.join(os.path.abspath(BUILD), "dashboard-100k.png")
        dom_text, requests = chromium(tmp, f"http://{addr}/", proxy, budget_ms=5000, screenshot=shot)
        after = farm_of(f, fid)["plotted"]
        assert after < n, after
        dom = Dom(dom_text)
        sec = dom.by_id(f"farm-{fid}")
        assert sec is not None, dom_text[-3000:]
        shown = re.fullmatch(r"([\d,]+)/100,000 plotted", dom.by_id(f"farm-{fid}-plotted").all_text())
        assert shown and before <= int(shown.group(1).replace(",", "")) <= after, (before, shown, after)
        assert [x.tag for x in dom.by_class("sector-map", sec)] == ["canvas"]
        # Drawn from the whole sectors document within the budget: the
        # state counts under the map add up to 100,000.
        parts = state_counts(dom.by_class("farm-counts", sec)[0].all_text())
        assert before <= parts.get("plotted", 0) <= after and sum(parts.values()) == n, parts
        assert len([x for x in dom.root.walk() if x.tag == "canvas"]) == 2   # map + rate chart
        assert dom.elements <= 300, dom.elements
        # The rate: sectors are being plotted, so over the samples the page
        # took (one a second) both figures are above zero.
        spm, mib = float(dom.by_id("rate-spm").all_text()), float(dom.by_id("rate-mib").all_text())
        assert spm > 0 and mib > 0, (spm, mib)
        w, h, rows, bpp = png_decode(open(shot, "rb").read())
        assert (w, h) == (1280, 900) and count_color(rows, bpp, PLOTTED_RGB) >= before, (w, h)
        # The sectors document once in 5 s although the farm changed: for
        # 100,000 sectors the page waits at least 30 s between two.
        mine = [u for _, u, i in requests if i == f"http://{addr}"]
        assert sum(u.endswith(f"/api/v1/farms/{fid}/sectors") for u in mine) == 1, mine
        assert_nothing_outside(requests, proxy, f"http://{addr}")
        print(f"     {dom.elements} elements in the DOM; the sectors document is "
              f"{len(body) / 1e6:.1f} MB, served in {took:.2f} s; {spm} sectors/min shown",
              flush=True)
        assert f.stop() == 0, f.log()[-2000:]
    finally:
        proxy.close()
        if f is not None:
            f.cleanup()
        cleanup()


if __name__ == "__main__":
    run_tests(globals())
