"""Remote plotting over NATS (issue 15, acceptance 3 and 4's plotting part,
and the overflow mode; DESIGN §15).

One nats-server of the test's own on 127.0.0.1 and four farmd nodes:
B farms (16 sectors) with `[workers] encode = 0` and `remote_plotting =
prefer`, so every sector it plots was encoded by a plotter; C, D and E
are plotters started without blocks (they archive the history by gap
repair like any node, and fetch a piece they lack with block.get).  C is killed with -9 while it encodes a sector for B: the
sector is retried elsewhere.  E answers with wrong pieces (fault
injection, `debug fault plotter wrong-piece`): B's spot check fails, E is
marked bad (cluster peers, metrics) and the sector is replotted.  D then
finishes.  Every sector of B must equal the encoding computed here (the
check of test_plotting: tests/vectors/gen_vectors.py, hashlib.scrypt),
byte for byte.

Needs a build with -Dfault_injection=true and nats-server.

    FARMD_BUILD=build python3 tests/integration/test_cluster_plot.py [test_name ...]
"""
import os
import re
import shutil
import signal
import socket
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "vectors"))

import gen_vectors as v1  # noqa: E402
import random  # noqa: E402

from adminwire import fields  # noqa: E402
from harness import farmd, metric, nats_server, run_tests, wait_for  # noqa: E402
from test_cluster import RawNats, pb_field  # noqa: E402
from test_plotting import (PIECE_SIZE, PIECES_IN_SECTOR, PPS, RECENT_FRACTION,  # noqa: E402
                           RECENT_SEGMENTS, SCRYPT, SECTOR_SIZE, History, add_farm,
                           sector_bytes, verify_all, wait_plot_idle)

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms  # noqa: E402


def node_config(nats, name, encode, plotter=False, remote="off"):
    return (f"[workers]\nencode = {encode}\nrestart_backoff_max = 1s\n"
            f"[plotting]\nmax_sectors_per_farm = 2\nretry_delay = 1s\n"
            f"[cluster]\n{nats.config_line()}node = {name}\n"
            f"plotter = {'true' if plotter else 'false'}\nremote_plotting = {remote}\n")


def node(tmp, name, nats, **kw):
    d = os.path.join(tmp, name)
    os.makedirs(d, exist_ok=True)
    return farmd(d, config=node_config(nats, name, **kw), name="farmd")


def remote(f):
    """The farmer side of `cluster status --json`."""
    return f.ctl_json("cluster", "status")["remote_plotting"]


def arm(f, kind, fault):
    f.ctl("debug", "fault", kind, fault)


def keystream(seed, n):
    """ChaCha20, key = seed, counter 0, nonce 0 (OpenSSL's 16-byte nonce is
    u32le counter || 96-bit nonce); checked against gen_vectors' own
    ChaCha20 once per run."""
    enc = Cipher(algorithms.ChaCha20(seed, bytes(16)), mode=None).encryptor()
    return enc.update(bytes(n))


def expected_sector(hist, pkh, index, history_size):
    """Format v1 computed here: sector id, piece choice and seed from
    gen_vectors (hashlib.scrypt), the keystream from the ChaCha20 above."""
    sid = v1.sector_id(pkh, index, history_size)
    out = bytearray()
    for off in range(PIECES_IN_SECTOR):
        idx, _ = v1.piece_index(sid, off, history_size, PPS, RECENT_SEGMENTS, RECENT_FRACTION)
        piece = hist.piece(idx)
        out += v1.xor(piece, keystream(v1.seed(sid, off, *SCRYPT), PIECE_SIZE))
    assert len(out) == SECTOR_SIZE
    return bytes(out)


def check_against_encoding(hist, pkh, farm_dir, secs):
    """Every sector's bytes in plot.bin equal the encoding computed here."""
    sid = v1.sector_id(pkh, 0, secs[0]["history_size"])
    s = v1.seed(sid, 0, *SCRYPT)
    assert keystream(s, 4096) == v1.chacha20_keystream(s, bytes(12), 0, 4096)
    for s in secs:
        want = expected_sector(hist, pkh, s["index"], s["history_size"])
        got = sector_bytes(farm_dir, s["index"])
        assert got == want, f"sector {s['index']} (history size {s['history_size']}) differs " \
                            f"from the independent encoding"


def in_flight_on(f, plotter):
    """Sectors a plotter accepted and works on now."""
    return [j for j in remote(f)["in_flight"] if j["plotter"] == plotter and
            j["state"] == "receiving"]


def sector_job(pkh, index, hs, sid, pieces, version=1, piece_size=PIECE_SIZE,
               reply=b"_INBOX.garbage.x", claim=None):
    """A SectorJob (proto/rplot.proto) as a hostile farmer would send it."""
    return (pb_field(1, version) + pb_field(2, 7) + pb_field(3, reply) + pb_field(4, b"evil") +
            pb_field(5, pkh) + pb_field(6, index) + pb_field(7, hs) + pb_field(8, sid) +
            pb_field(9, piece_size) + pb_field(10, claim or pieces) + pb_field(11, SCRYPT[0]) +
            pb_field(12, SCRYPT[1]) + pb_field(13, SCRYPT[2]) + pb_field(14, 65536) +
            b"".join(pb_field(15, pb_field(1, i) + pb_field(2, bytes(32))) for i in range(pieces)))


def plotter_garbage(port, node_name, rng):
    """400 malformed messages on a plotter's subjects; returns how many went
    to its sector subject (plotter.free reaches it only while it is free)."""
    raw = RawNats(port)
    sid = v1.sector_id(bytes(32), 0, 1)
    kinds = [
        lambda: rng.randbytes(rng.randrange(1, 300)),                     # random bytes
        lambda: sector_job(bytes(32), 0, 1, sid, 64, version=2),          # another version
        lambda: sector_job(bytes(32), 0, 1, bytes(32), 64),               # a wrong sector id
        lambda: sector_job(bytes(32), 0, 1, sid, 64, piece_size=3000),    # a bad geometry
        lambda: sector_job(bytes(32), 0, 1, sid, 10, claim=1 << 30),      # claims 2^30 pieces
        lambda: sector_job(bytes(32), 0, 1, sid, 64, reply=b"evil.>"),    # no usable reply
        lambda: pb_field(1, 1)[:2] + b"\x1a" + bytes([0xff] * 9) + b"ab",  # length past the end
        lambda: pb_field(1, 9) + pb_field(2, b"x"),                      # an ask of version 9
    ]
    n = 0
    for i in range(400):
        data = kinds[i % len(kinds)]()
        subj = "farmd.v1.plotter.free" if i % 8 in (0, 6, 7) else f"farmd.v1.plotter.{node_name}.sector"
        raw.pub(subj, data, reply="_INBOX.garbage.y")
        n += subj.endswith(".sector")
    raw.flush()
    return n


def peer(f, name):
    return next((p for p in f.ctl_json("cluster", "peers") if p["node"] == name), None)


def wait_free_plotter(farmer, plotter, name):
    """Until the plotter has a free encode worker and the farmer has heard so."""
    wait_for(lambda: (peer(farmer, name) or {}).get("free_encode", 0) >= 1 and
             plotter.ctl_json("cluster", "status")["plotter"]["free"] >= 1, 30,
             what=f"{name} a free plotter, as the farmer sees it")


def assert_encoded(f, hist, farm, farm_dir, secs, n):
    """n sectors, each verified by farmd and equal to the independent encoding."""
    assert len(secs) == n and verify_all(f, secs) == n, (len(secs), n)
    check_against_encoding(hist, bytes.fromhex(farm["public_key_hash"]), farm_dir, secs)


def stop_all(*nodes):
    """A clean stop of each node: exit 0 (under ASan: no leak, no error)."""
    for f in nodes:
        rc = f.stop()
        assert rc == 0, (rc, f.log()[-2000:])


def test_remote_plotting_through_plotters(tmp):
    if shutil.which("nats-server") is None:
        raise AssertionError("nats-server is not installed (scripts/deps)")
    nats = nats_server(tmp)
    hist = History(tmp, 48, seed="cluster-plot")
    b = node(tmp, "B", nats, encode=0, remote="prefer")
    hist.ingest_to(b, 3)
    farm_dir = os.path.join(tmp, "farm")
    farm = add_farm(b, farm_dir, 16)

    # C plots for B: pieces it has not archived yet (by gap repair) it
    # fetches from B with block.get.
    c = node(tmp, "C", nats, encode=1, plotter=True)
    # Garbage on the plotter's subjects while it works: dropped and
    # counted (or refused with a reason), nothing else changes.
    m0 = c.ctl_json("cluster", "status")["counters"]["malformed"]
    sent = plotter_garbage(nats.port, "C", random.Random(15))
    wait_for(lambda: c.ctl_json("cluster", "status")["counters"]["malformed"] - m0 >= sent * 0.9,
             30, what="C counting the garbage as malformed")
    wait_for(lambda: remote(b)["plotted"] >= 2, 60, what="two sectors plotted by C")
    assert c.proc.poll() is None and c.ctl_json("cluster", "status")["plotter"]["accepted"] <= 16

    # kill -9 of C mid-sector: the next encode job on C sleeps 2 s first.
    arm(c, "encode", "slow")
    wait_for(lambda: in_flight_on(b, "C"), 30, interval=0.02, what="a sector in flight on C")
    c.kill9()

    # E lies: started as no plotter, armed, then made one by a reload.
    e = node(tmp, "E", nats, encode=1)
    arm(e, "plotter", "wrong-piece")
    e.write_config(node_config(nats, "E", 1, plotter=True))
    e.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: remote(b)["spot_checks_failed"] >= 1, 60, what="E's sector failing B's spot check")
    bad = wait_for(lambda: (peer(b, "E") or {}).get("bad") and peer(b, "E"), 20,
                   what="E marked bad in cluster peers")
    assert bad["bad"], bad
    assert metric(b, "farmd_cluster_remote_spot_checks_failed_total") >= 1
    assert metric(b, "farmd_cluster_peers_bad") >= 1

    # D finishes; the sector C was killed in and E's are retried.
    d = node(tmp, "D", nats, encode=1, plotter=True)
    secs = wait_plot_idle(b, 180)
    assert_encoded(b, hist, farm, farm_dir, secs, 16)

    log = b.log()
    killed = set(re.findall(r"sector 0/(\d+): remote plotting on C failed: plotter C sent "
                            r"nothing for 15 s", log))
    assert killed, "no sector of B was lost with C (kill -9 mid-sector)"
    lied = set(re.findall(r"sector 0/(\d+): remote plotting on E failed: spot check failed", log))
    assert lied, "no sector failed its spot check on E"
    st = remote(b)
    assert st["plotted"] >= 16 and st["in_flight"] == [], st
    assert metric(b, "farmd_cluster_remote_sectors_total{result=\"plotted\"}") == st["plotted"]
    stop_all(d, e, b)     # every node left stops cleanly (under ASan: no leak, no error)
    print(f"  killed mid-sector on C: {sorted(killed)}; wrong pieces from E: {sorted(lied)}; "
          f"bytes received per sector: {st['bytes_received'] / st['plotted']:.0f}")


def test_server_lost_while_plotting_remotely(tmp):
    """Acceptance 4's plotting part: B (1 local encode worker, remote_plotting
    = prefer) plots through plotter C when nats-server is killed with -9, a
    sector in flight on C.  B says `reconnecting`, plots the rest of its farm
    locally (the sector lost with C is retried here), and every sector equals
    the independent encoding.  With the server back B reconnects within 10 s
    and plots through C again: a second farm's sectors come from C.  (About
    one run in thirty, C heard nothing after its reconnect: the server had
    died in the middle of a message to C, and cnats kept the parser inside
    it; test_cluster.py's test_connection_cut_mid_message drives that case.)"""
    nats = nats_server(tmp)
    hist = History(tmp, 48, seed="cluster-lost")
    b = node(tmp, "B", nats, encode=1, remote="prefer")
    hist.ingest_to(b, 3)
    c = node(tmp, "C", nats, encode=1, plotter=True)
    wait_free_plotter(b, c, "C")
    # C's first sector takes 2 s more: in flight at the kill.  (Armed before
    # the farm exists: B's other sectors go to its own worker at once, since
    # a busy C is not subscribed and the server says so, so on a loaded
    # machine B could finish the farm before C took a second one.)
    arm(c, "encode", "slow")
    farm_dir = os.path.join(tmp, "farm")
    farm = add_farm(b, farm_dir, 8)
    wait_for(lambda: in_flight_on(b, "C"), 30, interval=0.02, what="a sector in flight on C")
    plotted_remotely = remote(b)["plotted"]
    nats.stop()
    wait_for(lambda: b.ctl_json("cluster", "status")["state"] == "reconnecting", 10,
             what="B reconnecting")
    secs = wait_plot_idle(b, 120)
    assert b.ctl_json("cluster", "status")["state"] == "reconnecting"
    assert_encoded(b, hist, farm, farm_dir, secs, 8)
    assert remote(b)["plotted"] == plotted_remotely, "a sector arrived over a dead server"
    assert re.search(r"sector 0/\d+: remote plotting on C failed", b.log()), \
        "the sector in flight on C was not given up"
    assert metric(b, 'farmd_cluster_state{state="reconnecting"}') == 1

    nats.start()
    wait_for(lambda: b.ctl_json("cluster", "status")["state"] == "connected", 10,
             interval=0.1, what="B reconnected within 10 s")
    wait_for(lambda: peer(b, "C") and not peer(b, "C")["bad"] and
             c.ctl_json("cluster", "status")["state"] == "connected", 30,
             what="C back and announced")
    farm2_dir = os.path.join(tmp, "farm2")
    farm2 = add_farm(b, farm2_dir, 4)
    wait_for(lambda: remote(b)["plotted"] > plotted_remotely, 60,
             what="remote plotting through C again")
    secs2 = [x for x in wait_plot_idle(b, 120) if x["farm"] == farm2["id"]]
    assert_encoded(b, hist, farm2, farm2_dir, secs2, 4)
    stop_all(b, c)


def test_overflow_mode(tmp):
    """remote_plotting = overflow: B's one local encode worker takes a sector
    first, and a sector that would wait for it goes to plotter C; both kinds
    are written and committed the same way and equal the independent
    encoding."""
    nats = nats_server(tmp)
    hist = History(tmp, 48, seed="cluster-overflow")
    b = node(tmp, "B", nats, encode=1, remote="overflow")
    hist.ingest_to(b, 3)
    c = node(tmp, "C", nats, encode=1, plotter=True)
    wait_free_plotter(b, c, "C")
    assert remote(b)["mode"] == "overflow"
    farm_dir = os.path.join(tmp, "farm")
    farm = add_farm(b, farm_dir, 8)
    secs = wait_plot_idle(b, 120)
    assert_encoded(b, hist, farm, farm_dir, secs, 8)
    st = remote(b)
    assert 1 <= st["plotted"] < 8, f"overflow plotted {st['plotted']} of 8 sectors remotely"
    assert st["failed"] == 0 and st["in_flight"] == [], st
    assert metric(b, 'farmd_cluster_remote_sectors_total{result="plotted"}') == st["plotted"]
    print(f"  overflow: {st['plotted']} of 8 sectors plotted on C, the rest locally")
    stop_all(b, c)


def test_plotter_made_during_outage(tmp):
    """A subscription made while the server is away is made on the server
    when it is back: C becomes a plotter (SIGHUP) during an outage, and after
    the reconnect it takes B's sectors (B has no encode worker)."""
    nats = nats_server(tmp)
    hist = History(tmp, 48, seed="cluster-outage-sub")
    c = node(tmp, "C", nats, encode=1, plotter=False)
    b = node(tmp, "B", nats, encode=0, remote="prefer")
    hist.ingest_to(b, 3)
    nats.stop()
    wait_for(lambda: c.ctl_json("cluster", "status")["state"] == "reconnecting", 10,
             what="C reconnecting")
    c.write_config(node_config(nats, "C", 1, plotter=True))
    c.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in c.log(), 10, what="C's reload")
    nats.start()
    wait_for(lambda: all(f.ctl_json("cluster", "status")["state"] == "connected" for f in (b, c)),
             10, interval=0.1, what="B and C reconnected")
    farm_dir = os.path.join(tmp, "farm")
    farm = add_farm(b, farm_dir, 4)
    secs = wait_plot_idle(b, 120)
    assert_encoded(b, hist, farm, farm_dir, secs, 4)
    assert remote(b)["plotted"] == 4
    stop_all(b, c)


def test_no_plotter_listening(tmp):
    """With no plotter subscribed anywhere, the server answers B's plotter.free
    asks with "no responders": B plots every sector locally, counts each ask
    as a failure, and never counts the server's status answer as a
    malformed message."""
    nats = nats_server(tmp)
    hist = History(tmp, 48, seed="cluster-nobody")
    b = node(tmp, "B", nats, encode=1, remote="prefer")
    hist.ingest_to(b, 3)
    farm_dir = os.path.join(tmp, "farm")
    farm = add_farm(b, farm_dir, 4)
    secs = wait_plot_idle(b, 120)
    assert_encoded(b, hist, farm, farm_dir, secs, 4)
    st = b.ctl_json("cluster", "status")
    assert remote(b)["plotted"] == 0
    assert b.log().count("no free plotter answered; plotting it locally") >= 4
    assert st["counters"]["failures"] >= 4, st["counters"]
    assert st["counters"]["malformed"] == 0, st["counters"]
    assert metric(b, "farmd_cluster_malformed_total") == 0
    stop_all(b)


class HostilePlotter(threading.Thread):
    """A plotter named EVIL on the raw NATS protocol: it answers every
    plotter.free ask, accepts every sector job, and answers each with one
    chunk that breaks the protocol: job k's chunk is bad(k) = (pos, length)."""

    def __init__(self, port, bad):
        super().__init__(daemon=True)
        self.s = socket.create_connection(("127.0.0.1", port), 5)
        assert self.s.recv(65536).startswith(b"INFO")
        self.s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\n'
                       b"SUB farmd.v1.plotter.free farmd.plotter 1\r\n"
                       b"SUB farmd.v1.plotter.EVIL.sector 2\r\n")
        self.bad = bad
        self.asks = 0
        self.jobs = []
        self.stopping = False

    def pub(self, subject, data, reply=None):
        head = f"PUB {subject} {reply + ' ' if reply else ''}{len(data)}\r\n".encode()
        self.s.sendall(head + data + b"\r\n")

    def on_msg(self, sid, reply, data):
        if sid == b"1":
            self.asks += 1
            self.pub(reply, pb_field(1, 1) + pb_field(2, b"EVIL") +
                     pb_field(3, b"farmd.v1.plotter.EVIL.sector") + pb_field(4, 1))
        elif sid == b"2":
            job = fields(data)
            self.jobs.append(job)
            self.pub(reply, pb_field(1, 1))                  # SectorAccept
            pos, n = self.bad(len(self.jobs))
            self.pub(job[3].decode(), pb_field(1, 1) + pb_field(2, job[2]) + pb_field(4, pos) +
                     pb_field(5, bytes(n)) + pb_field(7, b"EVIL"), reply="EVIL.acks")

    def run(self):
        buf = b""
        self.s.settimeout(0.5)
        while not self.stopping:
            try:
                got = self.s.recv(1 << 20)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            if not got:
                return
            buf += got
            while True:
                head, sep, rest = buf.partition(b"\r\n")
                if not sep:
                    break
                parts = head.split()
                if parts and parts[0] == b"MSG":
                    n = int(parts[-1])
                    if len(rest) < n + 2:
                        break
                    self.on_msg(parts[2], parts[3].decode() if len(parts) == 5 else None,
                                rest[:n])
                    buf = rest[n + 2:]
                else:
                    if parts and parts[0] == b"PING":
                        self.s.sendall(b"PONG\r\n")
                    buf = rest

    def stop(self):
        self.stopping = True
        self.join(5)
        self.s.close()


def test_hostile_plotter_chunks(tmp):
    """A plotter that answers first and then sends a chunk at the wrong
    position, or of the wrong length, fails the attempt and is marked bad: B
    skips its later offers and plots every sector locally, each equal to the
    independent encoding; nothing of the plotter's reaches plot.bin."""
    nats = nats_server(tmp)
    hist = History(tmp, 48, seed="cluster-hostile")
    b = node(tmp, "B", nats, encode=1, remote="prefer")
    hist.ingest_to(b, 3)
    evil = HostilePlotter(nats.port, lambda k: (4096, 65536) if k % 2 else (0, 100))
    evil.start()
    try:
        farm_dir = os.path.join(tmp, "farm")
        farm = add_farm(b, farm_dir, 4)
        secs = wait_plot_idle(b, 120)
        assert_encoded(b, hist, farm, farm_dir, secs, 4)
    finally:
        evil.stop()
    r = remote(b)
    assert r["plotted"] == 0 and r["chunks_refused"] >= 1, r
    # max_sectors_per_farm = 2: at most two jobs went to EVIL before the
    # first refusal marked it bad; its later answers were skipped.
    assert 1 <= len(evil.jobs) <= 2 and evil.asks > len(evil.jobs), (len(evil.jobs), evil.asks)
    log = b.log()
    assert re.search(r"plotter EVIL: sent \d+ bytes at byte \d+ of the sector; expected \d+ "
                     r"bytes at byte 0; the plotter is marked bad for 3600 s", log), log[-3000:]
    stop_all(b)


if __name__ == "__main__":
    run_tests(globals())
