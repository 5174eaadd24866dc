"""Cluster acceptance tests (issue 15, items 1, 2, 4, 5 and 6; DESIGN §15,
doc/CLUSTER.md): gap repair between two farmds over a real nats-server,
block resync from peers with a lying peer, a server that dies and comes
back, a block larger than the server's max_payload, and garbage on the
subjects.  Each test starts its own nats-server on a free loopback port
(harness.NatsServer) and stops it.

    FARMD_BUILD=build python3 tests/integration/test_cluster.py [test_name ...]
"""
import hashlib
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))

from adminwire import field, varint  # noqa: E402
from harness import FARMCTL, FARMD, SANITIZED, SLOW, farmd, free_port, metric, nats_server, run_tests, wait_for  # noqa: E402

KIB = 1 << 10
MIB = 1 << 20


def node_cfg(server, name, extra=""):
    return (f"[workers]\nencode = 1\n[cluster]\n{server.config_line()}node = {name}\n" + extra)


def node(tmp, server, name, extra="", start=True):
    d = os.path.join(tmp, name)
    os.makedirs(d, exist_ok=True)
    return farmd(d, config=node_cfg(server, name, extra), start=start, name=name)


def chain(tmp, blocks, body):
    out = os.path.join(tmp, f"chain-{blocks}-{body}")
    subprocess.run([FARMCTL, "chain", "generate", "--blocks", str(blocks), "--body-size",
                    str(body), "--out", out], check=True, capture_output=True)
    return out


def ingest(f, path):
    """Ingests the .blk files of path; returns {height: hash}."""
    out = f.ctl("history", "ingest", path, timeout=300)
    return {int(h): x for h, x in (line.split()[:2] for line in out.splitlines() if line.strip())}


def archived(f):
    return f.ctl_json("history", "status")["archived_height"]


def wait_archived(f, n, timeout=60):
    wait_for(lambda: archived(f) >= n, timeout, interval=0.2, what=f"{f.log_path}: archived {n}")


def segments(f):
    return f.ctl_json("history", "segments")


def cluster(f):
    return f.ctl_json("cluster", "status")


def wait_peer(f, name, timeout=15):
    wait_for(lambda: any(p["node"] == name for p in f.ctl_json("cluster", "peers")), timeout,
             what=f"peer {name} seen")


def block_path(f, h):
    return os.path.join(f.state_dir, "blocks", h[:2], h[2:4], h)


# ---- config --------------------------------------------------------------------

def test_cluster_config(tmp):
    """[cluster] keys: bad values are refused with file and line (exit 78); without
    nats the cluster is disabled and says so; a server that is down does not stop
    farmd from starting; SIGHUP reloads plotter and refuses a new nats."""
    cases = [
        ("[cluster]\nremote_plotting = sometimes\n", 2, "remote_plotting"),
        ("[cluster]\n\nnode = a.b\n", 3, "node"),
        ("[cluster]\nnats = http://x:1\n", 2, "nats"),
        ("[cluster]\ncreds = /no/such/file\n", 2, "creds"),
        ("[cluster]\nverify_pieces = 0\n", 2, "verify_pieces"),
    ]
    for i, (text, line, word) in enumerate(cases):
        path = os.path.join(tmp, f"bad{i}.ini")
        with open(path, "w") as fh:
            fh.write(text)
        p = subprocess.run([FARMD, "--state-dir", os.path.join(tmp, "s"), "--config", path],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 78 and f"{path}:{line}: [cluster] {word}" in p.stderr, (text, p.stderr)
    os.makedirs(os.path.join(tmp, "alone"))
    alone = farmd(os.path.join(tmp, "alone"), config="[workers]\nencode = 1\n")
    st = alone.status()["cluster"]
    assert st["state"] == "disabled" and st["peers"] == [], st
    assert alone.ctl_raw("debug", "fault", "cluster", "nosuch").returncode == 1
    assert alone.stop() == 0
    # Nothing listens on this port: farmd starts anyway and keeps trying.
    port = free_port()
    d = os.path.join(tmp, "down")
    os.makedirs(d)
    f = farmd(d, config=f"[workers]\nencode = 1\n[cluster]\nnats = nats://127.0.0.1:{port}\n")
    assert f.status()["cluster"]["state"] in ("connecting", "reconnecting")
    assert f.status()["cluster"]["node"].endswith("-" + hashlib.sha256(
        os.path.realpath(f.state_dir).encode()).hexdigest()[:8])
    f.write_config(f"[workers]\nencode = 1\n[cluster]\nnats = nats://127.0.0.1:{port}\n"
                   "plotter = true\n")
    f.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in f.log(), 10, what="reload")
    f.write_config("[workers]\nencode = 1\n[cluster]\nnats = nats://127.0.0.1:1\n")
    f.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload refused" in f.log(), 10, what="reload refused")
    assert "[cluster] nats" in f.log()
    # The server comes up late: f connects by itself, and what it subscribed
    # to before (announcements) works: a peer and f see each other.
    srv = nats_server(tmp, port=port)
    wait_for(lambda: cluster(f)["state"] == "connected", 10, what="late connect")
    g = node(tmp, srv, "nodeg")
    wait_peer(g, cluster(f)["node"])
    wait_peer(f, "nodeg")
    # The reloaded plotter = true is in f's announcements.
    peer = next(p for p in g.ctl_json("cluster", "peers") if p["node"] == cluster(f)["node"])
    assert "plotter" in peer["roles"], peer
    assert f.stop() == 0 and g.stop() == 0, f.log()[-2000:]


def test_cluster_user_password(tmp):
    """[cluster] user and password reach a server that wants them; with a wrong
    password (the server refuses, cnats closes the connection for good) farmd
    runs on alone and keeps making new connections."""
    srv = nats_server(tmp, extra="authorization { user: farm, password: s3cret }\n")
    good = node(tmp, srv, "nodea", "user = farm\npassword = s3cret\n")
    # Connected at start, or (a first attempt that timed out on a busy
    # machine) by a retry in the background.
    wait_for(lambda: cluster(good)["state"] == "connected", 10, what="nodea connected")
    bad = node(tmp, srv, "nodeb", "user = farm\npassword = wrong\n")
    wait_for(lambda: "trying a new one every 2 s" in bad.log(), 10, what="redial logged")
    assert cluster(bad)["state"] != "connected"
    # The server's side: one refused attempt per redial, so more than one.
    wait_for(lambda: open(srv.log_path).read().count("authentication error") >= 2, 10,
             what="a second attempt")
    assert bad.status()["state"] == "running"
    assert good.stop() == 0 and bad.stop() == 0


# ---- 1. gap repair alone --------------------------------------------------------

def test_gap_repair_whole_chain(tmp):
    """A ingests a 600-block chain (120 under ASan); B, with no blocks, archives all of
    it by gap repair alone, and its segment headers equal A's."""
    n = 120 if SANITIZED else 600
    srv = nats_server(tmp)
    path = chain(tmp, n, 24 * KIB if SANITIZED else 6 * KIB)
    a = node(tmp, srv, "nodea")
    hashes = ingest(a, path)
    assert len(hashes) == n
    wait_archived(a, n)
    b = node(tmp, srv, "nodeb")
    started = time.monotonic()
    wait_archived(b, n, timeout=120)
    took = time.monotonic() - started
    sa, sb = segments(a), segments(b)
    assert len(sa) >= 2 and sa == sb, (len(sa), len(sb))
    # Every block came from a peer: B ingested nothing from an operator.
    assert metric(b, "farmd_gap_repair_heights_total") == n
    assert metric(b, "farmd_history_blocks_ingested_total") == n
    # Membership and the commands an operator reads it with.
    wait_peer(b, "nodea")
    wait_peer(a, "nodeb")
    st = cluster(b)
    assert st["state"] == "connected" and st["node"] == "nodeb", st
    peer = next(p for p in st["peers"] if p["node"] == "nodea")
    assert "archive" in peer["roles"] and peer["bad"] is False, peer
    assert b.status()["cluster"]["state"] == "connected"
    text = b.ctl("cluster", "peers")
    assert "nodea" in text and "archive" in text, text
    assert "connected" in b.ctl("cluster", "status")
    assert metric(b, 'farmd_cluster_state{state="connected"}') == 1
    print(f"    gap repair: {n} blocks in {took:.2f}s ({n / took:.0f} blocks/s)")
    assert a.stop() == 0 and b.stop() == 0


# ---- 2. resync from peers, with a liar -----------------------------------------

def test_corrupt_block_repaired_despite_liar(tmp):
    """A block file corrupted on A is repaired from a peer: the .corrupted copy
    appears, the block reads back verified, list-errors empties.  Peer B lies
    (fault injection: flipped bytes): A detects it, counts it, logs B's name,
    never stores its bytes, and takes the block from the honest C."""
    srv = nats_server(tmp)
    path = chain(tmp, 12, 8 * KIB)
    a = node(tmp, srv, "nodea", "[blocks]\nresync_retry_base = 1s\n")
    hashes = ingest(a, path)
    b = node(tmp, srv, "nodeb")
    c = node(tmp, srv, "nodec")
    wait_archived(b, 12)
    wait_archived(c, 12)
    assert c.stop() == 0
    b.ctl("debug", "fault", "cluster", "lie")
    victim = hashes[5]
    with open(os.path.join(path, "000005.blk"), "rb") as fh:
        good = fh.read()
    p = block_path(a, victim)
    with open(p, "r+b") as fh:
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 0xFF]))
    r = a.ctl_raw("block", "get", victim, "-o", os.path.join(tmp, "out"))
    assert r.returncode == 1 and "corrupt" in r.stderr, (r.returncode, r.stderr)
    assert os.path.exists(p + ".corrupted")
    # Only the liar is up: its answer is caught, counted, and never stored.
    wait_for(lambda: metric(a, "farmd_cluster_bad_peer_answers_total") >= 1, 20,
             what="the lie detected")
    assert "peer nodeb answered block " + victim in a.log()
    wait_for(lambda: a.ctl_json("block", "list-errors"), 10, what="resync error recorded")
    assert not os.path.exists(p) or open(p, "rb").read() != good
    # The honest peer comes back: the next retry (B now excluded) repairs it.
    c.start()
    wait_peer(a, "nodec")
    a.ctl("block", "retry-now", "--all")
    wait_for(lambda: a.ctl_json("block", "list-errors") == [], 30, what="list-errors empty")
    out = os.path.join(tmp, "back")
    a.ctl("block", "get", victim, "-o", out)
    assert open(out, "rb").read() == good
    assert f"block {victim} repaired from peer nodec" in a.log()
    assert metric(a, "farmd_cluster_bad_peer_answers_total") == 1
    bad = {x["node"]: x["bad"] for x in a.ctl_json("cluster", "peers")}
    assert bad.get("nodeb") is True and bad.get("nodec") is False, bad
    for f in (a, b, c):
        assert f.stop() == 0, f.log()[-2000:]


# ---- 4. the server goes away and comes back -------------------------------------

def test_server_restart(tmp):
    """kill -9 of nats-server while B catches up by gap repair: B keeps working
    (status answers `reconnecting`, an operator's ingest is archived, its farm
    plots locally), and when
    the server is back on the same port B reconnects within 10 s and gap repair
    resumes: B gets what A ingested meanwhile, and nothing is lost."""
    n = 60 if SANITIZED else 200
    half = n // 2
    srv = nats_server(tmp)
    path = chain(tmp, n, (36 if SANITIZED else 12) * KIB)

    def files(lo, hi):
        return [os.path.join(path, f"{h:06d}.blk") for h in range(lo, hi + 1)]
    a = node(tmp, srv, "nodea")
    a.ctl("history", "ingest", *files(1, half), timeout=120)
    b = node(tmp, srv, "nodeb")
    wait_archived(b, half)
    srv.stop()
    wait_for(lambda: cluster(b)["state"] == "reconnecting", 10, what="B reconnecting")
    assert b.status()["cluster"]["state"] == "reconnecting"
    assert metric(b, 'farmd_cluster_state{state="reconnecting"}') == 1
    assert b.ctl_json("history", "status")["history_size"] >= 1
    b.ctl("farm", "add", os.path.join(tmp, "farm"), "--sectors", "2", "--profile", "demo")
    # Both work alone: A ingests the rest, B five blocks of an operator's.
    a.ctl("history", "ingest", *files(half + 1, n), timeout=120)
    b.ctl("history", "ingest", *files(half + 1, half + 5), timeout=120)
    wait_archived(b, half + 5)
    wait_for(lambda: all(x["state"] == "plotted" for x in b.ctl_json("sectors")), 60,
             what="B's farm plotted while the server is down")
    assert cluster(b)["state"] == "reconnecting"
    srv.start()
    began = time.monotonic()
    wait_for(lambda: cluster(b)["state"] == "connected", 10, interval=0.1, what="B reconnected")
    print(f"    reconnected {time.monotonic() - began:.1f}s after the server came back")
    assert cluster(b)["counters"]["reconnects"] >= 1
    wait_archived(b, n, timeout=60)
    assert segments(a) == segments(b)
    assert metric(b, "farmd_gap_repair_heights_total") == n - 5
    assert a.stop() == 0 and b.stop() == 0


def test_server_hung(tmp):
    """A server that stops answering without closing anything (SIGSTOP: TCP
    stays up, nothing is read or written) is found dead by cnats' PINGs
    within about 20 s: B says `reconnecting` and goes on alone.  When the
    server runs again B reconnects by itself and gap repair resumes: B gets
    the blocks A ingested during the hang."""
    n = 40
    srv = nats_server(tmp)
    path = chain(tmp, n, 4 * KIB)

    def files(lo, hi):
        return [os.path.join(path, f"{h:06d}.blk") for h in range(lo, hi + 1)]
    a = node(tmp, srv, "nodea")
    a.ctl("history", "ingest", *files(1, n // 2), timeout=120)
    b = node(tmp, srv, "nodeb")
    wait_archived(b, n // 2)
    srv.proc.send_signal(signal.SIGSTOP)
    try:
        began = time.monotonic()
        wait_for(lambda: cluster(b)["state"] == "reconnecting", 60, interval=0.5,
                 what="B finding the hung server dead")
        print(f"    hung server found dead after {time.monotonic() - began:.1f}s")
        a.ctl("history", "ingest", *files(n // 2 + 1, n), timeout=120)
        assert archived(b) == n // 2
    finally:
        srv.proc.send_signal(signal.SIGCONT)
    wait_for(lambda: cluster(b)["state"] == "connected", 30, interval=0.1, what="B reconnected")
    wait_archived(b, n, timeout=60)
    assert segments(a) == segments(b)
    assert cluster(b)["counters"]["reconnects"] >= 1
    assert a.stop() == 0 and b.stop() == 0


class CuttingProxy:
    """A TCP proxy between nodes and nats-server that can end a connection
    in the middle of a message to its node, as a server that dies while it
    sends would.  cut(subject): the next MSG on subject towards a node is
    forwarded only up to half its payload, then both sides are closed; the
    node's next connection is proxied whole."""

    def __init__(self, upstream_port):
        self.upstream = upstream_port
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.url_line = f"nats = nats://127.0.0.1:{self.port}\n"
        self.armed = None
        self.cut_at = None      # (payload bytes, forwarded) once it cut
        self.cut_done = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self, subject):
        self.armed = f"MSG {subject} ".encode()

    def _accept(self):
        while True:
            try:
                cl, _ = self.lsock.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.upstream), 5)
            threading.Thread(target=self._pump, args=(cl, up, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, cl, True), daemon=True).start()

    def _pump(self, src, dst, to_node):
        held = b""
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                if not (to_node and self.armed):
                    dst.sendall(data)
                    continue
                held += data
                i = held.find(self.armed)
                end = held.find(b"\r\n", i) if i >= 0 else -1
                if end < 0:     # keep what may be the start of a split header
                    keep = len(self.armed) + 64 if i < 0 else len(held) - i
                    dst.sendall(held[:max(0, len(held) - keep)])
                    held = held[max(0, len(held) - keep):]
                    continue
                size = int(held[i:end].split()[-1])
                if len(held) < end + 2 + size // 2:
                    continue
                dst.sendall(held[:end + 2 + size // 2])
                self.armed, self.cut_at = None, (size, size // 2)
                self.cut_done.set()
                break
        except OSError:
            pass
        for x in (src, dst):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            x.close()

    def close(self):
        self.lsock.close()


def test_connection_cut_mid_message(tmp):
    """A connection that ends in the middle of a message to C (a proxy cuts
    it halfway through a 512 KiB MSG) does not leave C deaf on the next one:
    cnats keeps a connection's parser across its reconnects in event-loop
    mode, so farmd replaces the reconnected connection with a fresh one.
    After one reconnect C hears A again and archives, by gap repair, what A
    ingested after the cut; it needs no second reconnect (with the parser
    left inside the old message, only the PING check ended the deaf
    connection, about 20 s later)."""
    n = 30
    srv = nats_server(tmp)
    proxy = CuttingProxy(srv.port)
    path = chain(tmp, n, 4 * KIB)
    files = [os.path.join(path, f"{h:06d}.blk") for h in range(1, n + 1)]
    a = node(tmp, srv, "nodea")
    d = os.path.join(tmp, "nodec")
    os.makedirs(d)
    c = farmd(d, config=f"[workers]\nencode = 1\n[cluster]\n{proxy.url_line}node = nodec\n",
              name="nodec")
    wait_peer(c, "nodea")
    wait_peer(a, "nodec")
    raw = RawNats(srv.port)
    proxy.cut("farmd.v1.node.announce")
    raw.pub("farmd.v1.node.announce", bytes(512 * KIB))
    raw.flush()
    assert proxy.cut_done.wait(10 * SLOW), "the proxy saw no message to cut"
    wait_for(lambda: cluster(c)["counters"]["reconnects"] >= 1 and
             cluster(c)["state"] == "connected", 30, interval=0.1, what="C reconnected")
    a.ctl("history", "ingest", *files, timeout=120)
    wait_archived(c, n, timeout=60)
    assert segments(a) == segments(c)
    assert cluster(c)["counters"]["reconnects"] == 1, cluster(c)["counters"]
    assert "replacing the connection" in c.log()
    proxy.close()
    assert a.stop() == 0 and c.stop() == 0


# ---- 5. a block larger than max_payload -----------------------------------------

def test_block_larger_than_max_payload(tmp):
    """With the server's max_payload at 1 MiB, 2 MiB blocks move between nodes
    in acknowledged chunks, and arrive whole and verified."""
    srv = nats_server(tmp, max_payload=MIB)
    path = chain(tmp, 3, 2 * MIB)
    a = node(tmp, srv, "nodea")
    hashes = ingest(a, path)
    assert cluster(a)["max_payload"] == MIB
    b = node(tmp, srv, "nodeb")
    wait_archived(b, 3, timeout=60)
    assert segments(a) == segments(b)
    for h, x in hashes.items():
        st = b.ctl_json("block", "stat", x)
        assert st["size"] > 2 * MIB and st["state"] == "ok", st
    assert cluster(b)["counters"]["bytes_received"] > 6 * MIB
    assert a.stop() == 0 and b.stop() == 0


# ---- 6. garbage on the subjects ----------------------------------------------------

def pb_field(num, value):
    """A protobuf field: a varint for an int, else length-delimited bytes."""
    if isinstance(value, int):
        return varint(num << 3) + varint(value)
    return field(num, value)


class RawNats:
    """The NATS text protocol, enough to publish and to watch a subject."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), 5)
        info = self.s.recv(65536)
        assert info.startswith(b"INFO"), info
        self.s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\n')

    def pub(self, subject, data, reply=None):
        head = f"PUB {subject} {reply + ' ' if reply else ''}{len(data)}\r\n".encode()
        self.s.sendall(head + data + b"\r\n")

    def sub(self, subject, sid):
        self.s.sendall(f"SUB {subject} {sid}\r\n".encode())

    def wait_request(self, height, timeout):
        """The reply subject of a HistoryGet for height seen on our subscription."""
        want = pb_field(2, height)
        buf = b""
        deadline = time.monotonic() + timeout
        self.s.settimeout(1)
        while time.monotonic() < deadline:
            try:
                buf += self.s.recv(65536)
            except TimeoutError:
                continue
            while True:
                head, sep, rest = buf.partition(b"\r\n")
                if not sep:
                    break
                parts = head.split()
                if parts and parts[0] == b"MSG" and len(parts) == 5:
                    n = int(parts[4])
                    if len(rest) < n + 2:
                        break
                    if want in rest[:n]:
                        return parts[3].decode()
                    buf = rest[n + 2:]
                else:
                    if parts and parts[0] == b"PING":
                        self.s.sendall(b"PONG\r\n")
                    buf = rest
        raise AssertionError(f"no request for height {height} seen")

    def flush(self):
        self.s.sendall(b"PING\r\n")
        buf = b""
        while b"PONG" not in buf:
            buf += self.s.recv(65536)
        return buf


def garbage(rng, sent_inbox):
    """1,000 messages of the kinds a hostile or broken peer sends."""
    subjects = ["farmd.v1.node.announce", "farmd.v1.block.get", "farmd.v1.history.get"]
    out = []
    for i in range(1000):
        kind = i % 8
        subj = subjects[i % 3]
        if kind == 0:
            data = rng.randbytes(rng.randrange(1, 200))
        elif kind == 1:      # a valid shape, another version
            data = pb_field(1, 2) + pb_field(2, b"x" * 32)
        elif kind == 2:      # larger than any control message may be
            data = rng.randbytes(64 * KIB)
        elif kind == 3:      # a length that claims more than there is
            data = pb_field(1, 1)[:2] + b"\x12" + varint(1 << 40) + b"ab"
        elif kind == 4:      # version 1, absurd contents
            data = pb_field(1, 1) + pb_field(2, b"y" * 5000)
        elif kind == 5:      # an announce of a node name that is no subject token
            subj = subjects[0]
            data = pb_field(1, 1) + pb_field(2, b"evil node.>*") + pb_field(3, b"9")
        elif kind == 6:      # a request with too many exclusions, no reply subject
            subj = subjects[1]
            data = pb_field(1, 1) + pb_field(2, bytes(32)) + b"".join(
                pb_field(3, b"n%d" % j) for j in range(40))
        else:                # a stream chunk claiming 2^60 bytes, to a receiver's inbox
            subj = sent_inbox or subjects[2]
            data = (pb_field(1, 1) + pb_field(2, b"evil") + pb_field(3, 1 << 60) +
                    pb_field(4, 0) + pb_field(5, b"z" * 100))
        out.append((subj, data))
    return out


def test_garbage_on_subjects(tmp):
    """1,000 malformed messages (random bytes, wrong versions, oversized claims)
    on the subjects and on a receiver's inbox change nothing and crash
    nothing; the malformed counter rises."""
    srv = nats_server(tmp)
    path = chain(tmp, 32, 4 * KIB)
    a = node(tmp, srv, "nodea")
    # A holds 1..30 and 32, not 31: B asks for 31 and nobody answers, so its
    # receiver inbox for that request stays open while the garbage arrives.
    a.ctl("history", "ingest", *[os.path.join(path, f"{h:06d}.blk") for h in range(1, 33)
                                 if h != 31], timeout=120)
    raw = RawNats(srv.port)
    raw.sub("farmd.v1.history.get", 1)
    raw.flush()
    b = node(tmp, srv, "nodeb")
    wait_archived(b, 30)
    before = (segments(b), archived(b))
    m0 = cluster(b)["counters"]["malformed"]
    # B's archiver waits at 31 and asks for it: a live receiver inbox.
    inbox = raw.wait_request(31, timeout=20)
    msgs = garbage(random.Random(15), inbox)
    for subj, data in msgs:
        raw.pub(subj, data, reply="_INBOX.garbage.1" if len(data) % 2 else None)
    raw.flush()
    want = sum(1 for s, _ in msgs if s.startswith("farmd.v1.")) * 0.95
    wait_for(lambda: cluster(b)["counters"]["malformed"] - m0 >= want, 20,
             what="malformed counted")
    for f in (a, b):
        assert f.proc.poll() is None
        assert f.status()["state"] == "running"
    assert (segments(b), archived(b)) == before
    assert all(p["node"] in ("nodea",) for p in b.ctl_json("cluster", "peers"))
    assert metric(b, "farmd_cluster_malformed_total") >= want
    # Still a cluster: height 31 given to A reaches B by gap repair.
    a.ctl("history", "ingest", "31", os.path.join(path, "000031.blk"))
    wait_archived(b, 32, timeout=90)
    assert a.stop() == 0 and b.stop() == 0


def test_shutdown_with_messages_queued(tmp):
    """SIGTERM while a flood of messages is still on its way from cnats'
    threads to the loop: farmd exits 0.  What is still queued is destroyed
    before the NATS library closes; a message destroyed after it crashed
    farmd in cnats' natsMutex_Lock(NULL) (seen once in demo-cluster)."""
    srv = nats_server(tmp)
    raw = RawNats(srv.port)
    junk = bytes(range(256)) * 16
    for r in range(4):
        b = node(tmp, srv, f"node{r}")
        wait_for(lambda: cluster(b)["state"] == "connected", 20, what=f"node{r} connected")
        for _ in range(4000):
            raw.pub("farmd.v1.node.announce", junk)
        raw.flush()
        rc = b.stop()
        assert rc == 0, f"node{r} exited with {rc} at SIGTERM under a flood: {b.log()[-2000:]}"


if __name__ == "__main__":
    run_tests(globals())
