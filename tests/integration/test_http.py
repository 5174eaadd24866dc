"""The HTTP listener (issue 14): `[daemon] metrics_listen` serves /metrics,
the JSON documents of `farmctl --json` under /api/v1/ and the dashboard
at /, read-only, with limits that keep a slow or hostile client from
stalling farmd.  DESIGN.md section 10.

    FARMD_BUILD=build python3 tests/integration/test_http.py [test_name ...]
"""
import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from harness import FARMD, SLOW, farmd, run_tests, wait_for  # noqa: E402
from test_ops_output import chain, ingest_all, lost_block, plot_done, promtool  # noqa: E402

KIB = 1 << 10
CONFIG = ("[workers]\nencode = 1\nrestart_backoff_max = 1s\n[plotting]\nmax_sectors_per_farm = 2\n"
          "[daemon]\nmetrics_listen = 127.0.0.1:0\n")
IDLE_TIMEOUT_S = 10                 # http.c's HTTP_IDLE_TIMEOUT_S
MAX_CONNECTIONS = 64                # http.c's HTTP_MAX_CONNECTIONS


def address(f):
    """(host, port) farmd says it bound: status's http_listen."""
    a = f.status()["http_listen"]
    m = re.match(r"^\[?([^\]]+)\]?:(\d+)$", a)
    assert m and int(m.group(2)) > 0, a
    return m.group(1), int(m.group(2))


def get(f, path, method="GET", headers=None, body=None, addr=None):
    """(status, headers, body) of one request on a new connection."""
    host, port = addr or address(f)
    c = http.client.HTTPConnection(host, port, timeout=10 * SLOW)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def raw(addr, data, timeout=5.0):
    """Sends data on a new connection, half-closes it and returns all the
    server sent until it closed (or the timeout)."""
    s = socket.create_connection(addr, timeout=timeout * SLOW)
    out = b""
    try:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass                    # the server answered and closed first
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
    except (socket.timeout, ConnectionError):
        pass
    finally:
        s.close()
    return out


def listening_ports(pid):
    """The TCP ports process pid listens on (its sockets in /proc/net/tcp*)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            m = re.match(r"socket:\[(\d+)\]", os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
        if m:
            inodes.add(m.group(1))
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for line in fh.readlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and cols[9] in inodes:
                    ports.append(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


# The JSON endpoints and the farmctl commands whose --json they equal.
ENDPOINTS = [
    ("/api/v1/status", ("status",)),
    ("/api/v1/farms", ("farm", "list")),
    ("/api/v1/farms/0/sectors", ("sectors", "0")),
    ("/api/v1/history", ("history", "status")),
    ("/api/v1/plot", ("plot",)),
    ("/api/v1/blocks/errors", ("block", "list-errors")),
]
# Fields that change by themselves between two reads: status's uptime in
# whole seconds.  Nothing else may differ.
MOVING = {"/api/v1/status": ("uptime_s",)}


def same_moment(f, path, cmd):
    """The HTTP document and `farmctl --json CMD`, read between two farmctl
    reads that agree (so nothing changed meanwhile), moving fields
    dropped."""
    def strip(doc):
        for k in MOVING.get(path, ()):
            assert k in doc, (path, k)
            doc.pop(k)
        return doc
    for _ in range(5):
        before = strip(f.ctl_json(*cmd))
        status, hdrs, body = get(f, path)
        assert status == 200, (path, status, body)
        assert hdrs["content-type"] == "application/json", (path, hdrs)
        after = strip(f.ctl_json(*cmd))
        if before == after:
            return strip(json.loads(body)), before
    raise AssertionError(f"`farmctl --json {' '.join(cmd)}` kept changing")


# ---- tests --------------------------------------------------------------------------

def test_metrics_pass_promtool_and_json_equals_farmctl(tmp):
    """Acceptance 1: after a farm add, plotting, a history ingest and a
    block put (whose file is lost, so list-errors has an entry), /metrics
    passes promtool with no output and is `farmctl metrics`' exposition;
    every JSON endpoint equals `farmctl --json` of its command."""
    d, blocks = chain(tmp)
    f = farmd(tmp, config=CONFIG)
    f.ctl_json("farm", "add", os.path.join(tmp, "farm"), "--sectors", 2, "--profile", "demo")
    ingest_all(f, d, blocks)
    plot_done(f, 2)
    h = lost_block(f, tmp, 16 * KIB)

    status, hdrs, body = get(f, "/metrics")
    assert status == 200 and hdrs["content-type"] == "text/plain; version=0.0.4", (status, hdrs)
    text = body.decode()
    promtool(text)
    assert 'farmd_farm_plot_seconds_count{farm="0",phase="total"} 2' in text, text
    # The same families as farmctl's (values move: request counters, ages).
    fams = lambda t: sorted(set(re.findall(r"^# TYPE (\S+)", t, re.M)))  # noqa: E731
    assert fams(text) == fams(f.ctl("metrics")), "HTTP and farmctl expositions differ"
    # HEAD: the headers of GET, no body.
    status, hdrs, body = get(f, "/metrics", method="HEAD")
    assert status == 200 and body == b"" and int(hdrs["content-length"]) > 1000, (status, hdrs)

    for path, cmd in ENDPOINTS:
        got, want = same_moment(f, path, cmd)
        assert got == want, f"{path} differs from farmctl --json {' '.join(cmd)}:\n{got}\n{want}"
    st = f.status()
    assert st["http_listen"] == "127.0.0.1:%d" % address(f)[1], st
    assert st["plotting"]["plotted"] == 2 and len(json.loads(get(f, ENDPOINTS[2][0])[2])) == 2
    assert json.loads(get(f, "/api/v1/blocks/errors")[2])[0]["hash"] == h
    line = [ln for ln in f.ctl("status").splitlines() if ln.startswith("http ")]
    assert line == ["http         " + st["http_listen"]], line
    status, hdrs, body = get(f, "/")
    assert status == 200 and hdrs["content-type"].startswith("text/html"), (status, hdrs)
    assert b"<title>farmd" in body and b"sector-map" in body, body[:200]
    assert f.stop() == 0, f.log()[-2000:]


def test_methods_paths_and_sizes_refused(tmp):
    """405 (with Allow) for any method but GET and HEAD, 404 with a JSON
    error for an unknown path or farm, 413 or 400 for an oversized header
    or body; none of them changes anything."""
    f = farmd(tmp, config=CONFIG)
    addr = address(f)
    farms = f.ctl_json("farm", "list")
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        for path in ("/metrics", "/api/v1/farms", "/nowhere"):
            status, hdrs, body = get(f, path, method=method, body=b"x" if method != "OPTIONS"
                                     else None, addr=addr)
            assert status == 405, (method, path, status, body)
            assert hdrs["allow"] == "GET, HEAD", hdrs
            assert "read-only" in json.loads(body)["error"], body
    for path in ("/nowhere", "/api/v1", "/api/v1/farms/", "/api/v1/farms/0/sectorsx",
                 "/metrics/x", "/api/v1/status/"):
        status, hdrs, body = get(f, path, addr=addr)
        assert status == 404 and hdrs["content-type"] == "application/json", (path, status)
        assert json.loads(body)["error"].startswith("no such path: "), body
    for farm in ("0", "7", "x"):
        status, hdrs, body = get(f, f"/api/v1/farms/{farm}/sectors", addr=addr)
        assert status == 404, (farm, status, body)
        assert json.loads(body) == {"error": f"no farm '{farm}' (farm list shows the ids "
                                             "and directories)"}, body
    # An 8 KiB header limit, a 1 KiB body limit.
    out = raw(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"a" * 9000 + b"\r\n\r\n")
    assert re.match(rb"HTTP/1\.1 (413|400) ", out), out[:100]
    # The body's announced length is refused before the body comes.
    out = raw(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 413 "), out[:100]
    # A small header still passes.
    status, _, _ = get(f, "/metrics", headers={"X-Junk": "a" * 1000}, addr=addr)
    assert status == 200
    assert f.ctl_json("farm", "list") == farms
    assert f.stop() == 0, f.log()[-2000:]


def test_idle_and_garbage_clients_do_not_stall_status(tmp):
    """Acceptance 3: 50 clients hold connections open and one sends
    garbage while 100 `farmctl status` calls run: all succeed (p99
    printed, asserted loosely); after the idle timeout the server closes
    the held connections."""
    f = farmd(tmp, config=CONFIG)
    addr = address(f)
    held = [socket.create_connection(addr, timeout=5 * SLOW) for _ in range(50)]
    # Half of them sent part of a request and stopped.
    for s in held[:25]:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-")
    stop = threading.Event()
    sent = [0]

    def garbage():
        rnd = random.Random(3)
        while not stop.is_set():
            try:
                s = socket.create_connection(addr, timeout=2 * SLOW)
                for _ in range(20):
                    s.sendall(bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 512))))
                    sent[0] += 1
                s.close()
            except OSError:
                pass                # the server closed it: garbage is refused
    g = threading.Thread(target=garbage, daemon=True)
    g.start()
    times = []
    try:
        for _ in range(100):
            t = time.monotonic()
            p = f.ctl_raw("status")
            times.append(time.monotonic() - t)
            assert p.returncode == 0, p.stderr
    finally:
        stop.set()
        g.join(10 * SLOW)
    times.sort()
    p99 = times[98]
    print(f"farmctl status with 50 idle HTTP clients and a garbage client: p50 "
          f"{times[49] * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {times[-1] * 1000:.1f} ms "
          f"({sent[0]} garbage writes)", flush=True)
    assert sent[0] > 0
    # The listener itself still answers, among the held connections.
    assert get(f, "/api/v1/status", addr=addr)[0] == 200
    # The idle timeout: every held connection gets EOF from the server.
    t0 = time.monotonic()
    for s in held:
        s.settimeout((IDLE_TIMEOUT_S + 10) * SLOW)
        try:
            rest = s.recv(4096)
        except ConnectionResetError:
            rest = b""
        assert rest == b"", rest[:100]
        s.close()
    waited = time.monotonic() - t0
    assert f.stop() == 0, f.log()[-2000:]
    print(f"idle connections closed by the server {waited:.1f} s after the status calls",
          flush=True)


def test_connections_capped(tmp):
    """64 open connections at most: the next one is not served until one
    of them closes; then it is."""
    f = farmd(tmp, config=CONFIG)
    addr = address(f)
    held = [socket.create_connection(addr, timeout=5 * SLOW) for _ in range(MAX_CONNECTIONS)]
    # Each is accepted: a request on the first is answered.
    held[0].sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert held[0].recv(12).startswith(b"HTTP/1.1 200"), "held connection not served"
    extra = socket.create_connection(addr, timeout=5 * SLOW)   # in the kernel's backlog
    extra.sendall(b"GET /api/v1/status HTTP/1.0\r\n\r\n")
    extra.settimeout(1.0)
    try:
        early = extra.recv(100)
    except socket.timeout:
        early = None
    assert early is None, f"connection {MAX_CONNECTIONS + 1} was served: {early!r}"
    assert f.ctl_json("status")["state"] == "running"
    held.pop().close()
    extra.settimeout(10 * SLOW)
    assert extra.recv(12).startswith(b"HTTP/1.0 200"), "not served after a slot freed"
    assert "http: 64 connections open; accepting more when one closes" in f.log()
    # A clean stop with 64 connections open and one more in the backlog:
    # exit 0, and under ASan no leak.
    held.append(socket.create_connection(addr, timeout=5 * SLOW))
    assert f.stop() == 0, f.log()[-2000:]
    for s in held + [extra]:
        s.close()


METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT",
           "get", "FOO", "", "G\x00T", "GET GET"]
PATHS = ["/", "/metrics", "/api/v1/status", "/api/v1/farms", "/api/v1/farms/0/sectors",
         "/api/v1/farms/99999999999999999999/sectors", "/api/v1/history",
         "/api/v1/blocks/errors", "/api/v1/farms/%2F/sectors", "*", "", "//", "/..%2f..",
         "http://x/metrics", "/metrics?x=1#y", "/" + "a" * 5000, "/\xff\xfe", "/%00"]


def fuzz_request(rnd):
    """One random request: mostly HTTP-shaped, with junk headers, bad
    versions, wrong lengths, truncation and raw binary."""
    kind = rnd.random()
    if kind < 0.1:
        return bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 2000)))
    line = "%s %s %s" % (rnd.choice(METHODS), rnd.choice(PATHS),
                         rnd.choice(["HTTP/1.1", "HTTP/1.0", "HTTP/2", "HTTP/1.1x", "", "HTTP/9.9"]))
    hdrs = []
    for _ in range(rnd.randrange(6)):
        hdrs.append(rnd.choice([
            "Host: x", "Connection: keep-alive", "Connection: close",
            "Content-Length: %d" % rnd.choice([0, 1, 10, -1, 99999999999]),
            "Transfer-Encoding: chunked", "X-%d: %s" % (rnd.randrange(99), "v" * rnd.randrange(300)),
            ":", "NoColon", " leading: space", "X: \x01\x02\x7f",
        ]))
    req = (line + "\r\n" + "".join(h + "\r\n" for h in hdrs) + "\r\n").encode("latin-1")
    if rnd.random() < 0.2:
        req += bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 100)))
    if rnd.random() < 0.2:
        req = req[:rnd.randrange(len(req))]
    return req


def test_fuzz_10000_requests(tmp):
    """Acceptance 3: 10,000 random requests over many connections, 16 at a
    time; farmd is alive after them, /metrics and `farmctl status` work,
    and the connection count came back down (64 new connections are
    served)."""
    f = farmd(tmp, config=CONFIG)
    f.ctl_json("farm", "add", os.path.join(tmp, "farm"), "--sectors", 3, "--profile", "demo")
    addr = address(f)
    total, threads, done = 10000, 16, [0]
    lock = threading.Lock()

    def worker(seed):
        rnd = random.Random(seed)
        while True:
            with lock:
                if done[0] >= total:
                    return
                n = min(rnd.choice((1, 1, 1, 2, 3, 5)), total - done[0])
                done[0] += n
            data = b"".join(fuzz_request(rnd) for _ in range(n))
            try:
                s = socket.create_connection(addr, timeout=5 * SLOW)
                s.sendall(data)
                if rnd.random() < 0.7:
                    s.shutdown(socket.SHUT_WR)
                    while s.recv(65536):
                        pass
                s.close()
            except OSError:
                pass                # refused or reset: fine for junk
    t0 = time.monotonic()
    ts = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120 * SLOW)
    assert done[0] == total and not any(t.is_alive() for t in ts), done
    print(f"{total} random requests in {time.monotonic() - t0:.1f} s", flush=True)
    assert f.proc.poll() is None, f"farmd exited {f.proc.returncode}"
    status, _, body = get(f, "/metrics", addr=addr)
    assert status == 200 and b"farmd_up 1" in body
    assert f.status()["state"] == "running"
    # Every fuzz connection is gone (after the idle timeout at the latest):
    # 63 held and one more are all served.
    def served():
        held = [socket.create_connection(addr, timeout=5 * SLOW) for _ in range(MAX_CONNECTIONS)]
        try:
            for s in held:
                s.sendall(b"GET /api/v1/farms HTTP/1.1\r\nHost: x\r\n\r\n")
            for s in held:
                s.settimeout(2 * SLOW)
                if not s.recv(12).startswith(b"HTTP/1.1 200"):
                    return False
            return True
        except OSError:
            return False
        finally:
            for s in held:
                s.close()
    wait_for(served, IDLE_TIMEOUT_S + 10, interval=0.5, what="64 connections served")
    assert f.stop() == 0, f.log()[-2000:]


def test_off_by_default_bad_address_and_reload(tmp):
    """Without metrics_listen nothing listens and status says off; a port
    in use or a foreign address is a one-line error and exit 1; an IPv6
    address works and shows the port bound; a reload that changes
    metrics_listen is refused and the listener keeps serving."""
    f = farmd(tmp, config="[workers]\nencode = 1\n")
    st = f.status()
    assert "http_listen" in st and st["http_listen"] is None, st
    assert "http         off" in f.ctl("status").splitlines(), f.ctl("status")
    assert listening_ports(f.proc.pid) == [], listening_ports(f.proc.pid)
    assert f.stop() == 0, f.log()[-2000:]

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    for listen, why in ((f"127.0.0.1:{port}", "Address already in use"),
                        ("192.0.2.1:9616", "Cannot assign requested address")):
        cfg = os.path.join(tmp, "bad.ini")
        with open(cfg, "w") as fh:
            fh.write(f"[workers]\nencode = 1\n[daemon]\nmetrics_listen = {listen}\n")
        p = subprocess.run([FARMD, "--state-dir", os.path.join(tmp, "s2"), "--config", cfg],
                           capture_output=True, text=True, timeout=30 * SLOW)
        assert p.returncode == 1, (p.returncode, p.stderr)
        last = p.stderr.strip().splitlines()[-1]
        assert last == f"farmd: metrics_listen {listen}: cannot listen: {why}", p.stderr
    busy.close()

    g = farmd(os.path.join(tmp), config="[workers]\nencode = 1\n[daemon]\nmetrics_listen = [::1]:0\n",
              name="farmd6")
    a = g.status()["http_listen"]
    m = re.match(r"^\[::1\]:(\d+)$", a)
    assert m and int(m.group(1)) > 0, a
    assert int(m.group(1)) in listening_ports(g.proc.pid)
    status, _, body = get(g, "/api/v1/status", addr=("::1", int(m.group(1))))
    assert status == 200 and json.loads(body)["http_listen"] == a
    g.write_config("[workers]\nencode = 1\n[daemon]\nmetrics_listen = 127.0.0.1:0\n")
    g.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload refused" in g.log(), 10, what="reload refused")
    assert "not reloadable without restart: [daemon] metrics_listen" in g.log(), g.log()
    assert g.status()["http_listen"] == a
    assert get(g, "/metrics", addr=("::1", int(m.group(1))))[0] == 200
    assert g.stop() == 0, g.log()[-2000:]


if __name__ == "__main__":
    run_tests(globals())
