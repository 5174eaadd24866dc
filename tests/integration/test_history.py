"""History acceptance tests: ingest of chain blocks, the ordered archiver,
the history stream cut into segments of pieces, Merkle roots and segment
headers, refusals and parent-hash rejections, crash safety under kill -9,
fixed geometry, keep_archived_blocks and the history metrics.
DESIGN.md sections 4, 9 and 11.

Every segment farmd reports is checked against one computed here, from the
.blk files that `farmctl chain generate` wrote, with hashlib only: the
stream, the pieces, the Merkle trees and the header hashes.

    FARMD_BUILD=/tmp/build-htest python3 tests/integration/test_history.py [test_name ...]
"""
import concurrent.futures
import hashlib
import json
import os
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

import adminwire  # noqa: E402
from harness import PACE, CRASH_ROUNDS, bulk_get, bulk_stat, block_stat as stat, FARMCTL, SLOW, farmd, metric, run_tests, wait_for  # noqa: E402

KIB = 1 << 10
CFG = "[workers]\nencode = 1\n"
ZERO32 = bytes(32)


def cfg(history=None, blocks=None):
    """CFG plus [history] and [blocks] sections from dicts."""
    out = CFG
    for name, keys in (("history", history), ("blocks", blocks)):
        if keys:
            out += f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())
    return out


# ---- ChainBlock wire format (independent of farmd) -----------------------------

class BadProto(Exception):
    pass


def _varint(buf, i):
    n = shift = 0
    while True:
        if i >= len(buf):
            raise BadProto("truncated varint")
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i
        if shift >= 64:
            raise BadProto("varint too long")


def parse_block(buf):
    """A strict reading of a packed ChainBlock: {height, parent_hash, body, code}.
    Raises BadProto on bytes that cannot unpack under any protobuf reader."""
    out = {"height": 0, "parent_hash": b"", "body": b"", "code": ""}
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wt = key >> 3, key & 7
        if field == 0:
            raise BadProto("field number 0")
        if wt == 0:
            v, i = _varint(buf, i)
        elif wt == 1:
            if i + 8 > len(buf):
                raise BadProto("truncated fixed64")
            v, i = buf[i:i + 8], i + 8
        elif wt == 5:
            if i + 4 > len(buf):
                raise BadProto("truncated fixed32")
            v, i = buf[i:i + 4], i + 4
        elif wt == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise BadProto("truncated length-delimited field")
            v, i = bytes(buf[i:i + n]), i + n
        else:
            raise BadProto(f"wire type {wt}")
        expect = {1: 0, 2: 2, 3: 2, 4: 2}.get(field)
        if expect is not None and wt != expect:
            raise BadProto(f"field {field} with wire type {wt}")
        if field == 1:
            out["height"] = v
        elif field == 2:
            out["parent_hash"] = v
        elif field == 3:
            out["body"] = v
        elif field == 4:
            out["code"] = v.decode()
    return out


# ---- the history stream, computed here ---------------------------------------

def sha(b):
    return hashlib.sha256(b).digest()


def hexsha(b):
    return hashlib.sha256(b).hexdigest()


def be64(n):
    return n.to_bytes(8, "big")


def merkle_root(chunks32):
    """RFC 6962 style root over 32-byte chunks (a power of two of them)."""
    level = [sha(b"\x00" + c) for c in chunks32]
    assert level and len(level) & (len(level) - 1) == 0, len(level)
    while len(level) > 1:
        level = [sha(b"\x01" + level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def piece_root(piece):
    return merkle_root([piece[i:i + 32] for i in range(0, len(piece), 32)])


def read(path):
    with open(path, "rb") as fh:
        return fh.read()


def blk(d, h):
    return os.path.join(d, f"{h:06d}.blk")


class Chain:
    """A generated chain on disk and the history it must archive to."""

    def __init__(self, tmp, n, body_size=8 * KIB, seed=None, name="chain"):
        self.dir = os.path.join(tmp, name)
        args = [FARMCTL, "chain", "generate", "--blocks", str(n), "--body-size", str(body_size),
                "--out", self.dir]
        if seed is not None:
            args += ["--seed", seed]
        p = subprocess.run(args, capture_output=True, text=True, timeout=120 * SLOW)
        assert p.returncode == 0, (args, p.returncode, p.stderr)
        self.n = n
        self.blocks = {h: read(blk(self.dir, h)) for h in range(1, n + 1)}
        assert sorted(os.listdir(self.dir)) == [f"{h:06d}.blk" for h in range(1, n + 1)], \
            sorted(os.listdir(self.dir))[:5]
        # The generated files are the chain §4 describes.
        parent = ZERO32
        for h in range(1, n + 1):
            b = parse_block(self.blocks[h])
            assert b["height"] == h and b["parent_hash"] == parent and len(b["body"]) == body_size, \
                (h, b["height"], b["parent_hash"].hex(), len(b["body"]))
            parent = sha(self.blocks[h])

    def path(self, h):
        return blk(self.dir, h)

    def hash(self, h):
        return hexsha(self.blocks[h])

    def records(self, upto=None):
        return records([self.blocks[h] for h in range(1, (upto or self.n) + 1)])

    def expected(self, piece_size, pps, upto=None):
        """The segments farmd must report after archiving heights 1..upto,
        and the number of bytes in the partial segment."""
        return expected([self.blocks[h] for h in range(1, (upto or self.n) + 1)], piece_size, pps)


def records(blocks):
    """[(height, start, end)] of each record in the stream of blocks (heights
    1, 2, ...), and the stream."""
    stream = bytearray()
    spans = []
    for h, data in enumerate(blocks, 1):
        start = len(stream)
        stream += be64(h) + len(data).to_bytes(4, "big") + data
        spans.append((h, start, len(stream)))
    return spans, bytes(stream)


def expected(blocks, piece_size, pps):
    """The segments of the history of blocks (heights 1, 2, ...), and the
    number of bytes in the partial segment."""
    spans, stream = records(blocks)
    seg_size = piece_size * pps
    segs = []
    prev = ZERO32
    for idx in range(len(stream) // seg_size):
        seg = stream[idx * seg_size:(idx + 1) * seg_size]
        pieces = [seg[k * piece_size:(k + 1) * piece_size] for k in range(pps)]
        root = merkle_root([piece_root(p) for p in pieces])
        last_byte = (idx + 1) * seg_size - 1
        last_height = next(h for h, s, e in spans if s <= last_byte < e)
        header = sha(be64(idx) + root + prev + be64(last_height))
        segs.append({"index": idx, "root": root.hex(), "prev_header_hash": prev.hex(),
                     "last_height": last_height, "header_hash": header.hex(),
                     "pieces": [hexsha(p) for p in pieces], "_bytes": pieces})
        prev = header
    return segs, len(stream) - len(segs) * seg_size



def pack_block(height, parent, body, code=""):
    """A packed ChainBlock, as protoc-c packs one."""
    out = b"\x08" + adminwire.varint(height)
    for tag, v in ((0x12, parent), (0x1A, body), (0x22, code.encode())):
        if v:
            out += bytes([tag]) + adminwire.varint(len(v)) + v
    return out


# ---- farmd helpers ------------------------------------------------------------

def hstatus(f):
    return f.ctl_json("history", "status")


def hsegments(f):
    return f.ctl_json("history", "segments")




def parallel(fn, items, jobs=8):
    with concurrent.futures.ThreadPoolExecutor(jobs) as ex:
        return list(ex.map(fn, items))


def chunks(seq, n):
    n = max(1, min(n, len(seq)))
    return [seq[i::n] for i in range(n)]


def spawn_ingest(f, paths, procs=4):
    """Start `history ingest PATH...` in several farmctl processes at once."""
    return [subprocess.Popen([FARMCTL, "-s", f.socket, "history", "ingest"] + part,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for part in chunks(list(paths), procs)]


def reap(ps):
    """Wait for farmctl processes whose farmd went away; kill stragglers."""
    for p in ps:
        try:
            p.communicate(timeout=10 * SLOW)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()


def kill_mid_ingest(f, chain, last, rnd):
    """Ingest what is above `last` in shuffled order from 4 farmctl calls and
    kill -9 farmd after a random 0-0.4 s; reap the clients."""
    todo = [chain.path(h) for h in range(last + 1, chain.n + 1)]
    rnd.shuffle(todo)
    ps = spawn_ingest(f, todo, procs=4) if todo else []
    time.sleep(rnd.uniform(0, 0.4) * PACE)
    f.kill9()
    reap(ps)


def ingest_paths(f, paths, procs=4, waves=1):
    """Ingest many NNNNNN.blk files; every one must be accepted.  farmctl
    sends the files of one call in name order, so the list is cut into waves
    (ingested one after the other) of procs concurrent farmctl calls: a
    shuffled list then arrives out of order."""
    paths = list(paths)
    per = -(-len(paths) // waves) if paths else 0
    for w in range(waves):
        wave = paths[w * per:(w + 1) * per]
        if not wave:
            continue
        ps = spawn_ingest(f, wave, procs)
        fails = []
        for p in ps:
            out, err = p.communicate(timeout=120 * SLOW)
            if p.returncode != 0:
                fails.append((p.args[4:6], p.returncode, err.strip()[-500:]))
        assert not fails, fails


def ingest(f, height, path):
    """`history ingest HEIGHT FILE`, which must be accepted."""
    return f.ctl("history", "ingest", height, path)


def refused(f, *args):
    """`history ingest ARGS` must be refused by farmd: exit 1 and a message."""
    p = f.ctl_raw("history", "ingest", *args)
    assert p.returncode == 1, (args, p.returncode, p.stdout, p.stderr)
    msg = p.stderr.strip()
    assert msg and "usage" not in msg.lower(), (args, msg)
    return msg


def wait_archived(f, height, timeout=60):
    return wait_for(lambda: (lambda s: s if s["archived_height"] >= height else None)(hstatus(f)),
                    timeout, interval=0.05, what=f"archived_height {height}")


def wait_settled(f, timeout=10):
    """Until the history status stops changing (the archiver is waiting)."""
    last = [None]

    def same():
        s = hstatus(f)
        ok = s == last[0]
        last[0] = s
        return s if ok else None
    time.sleep(0.2)
    return wait_for(same, timeout, interval=0.3, what="history status settled")


def strip(segs):
    return [{k: v for k, v in s.items() if not k.startswith("_")} for s in segs]


def norm(segs):
    """farmd's segments with hex lower-cased and only the §11 keys."""
    keys = ("index", "root", "prev_header_hash", "last_height", "header_hash", "pieces")
    out = []
    for s in segs:
        assert set(keys) <= set(s), (sorted(s), keys)
        d = {k: s[k] for k in keys}
        for k in ("root", "prev_header_hash", "header_hash"):
            d[k] = d[k].lower()
        d["pieces"] = [p.lower() for p in d["pieces"]]
        out.append(d)
    return out


def check_segments(f, want, label=""):
    got = norm(hsegments(f))
    want = strip(want)
    assert len(got) == len(want), f"{label}: {len(got)} segments reported, {len(want)} expected"
    for g, w in zip(got, want):
        assert g == w, f"{label}: segment {w['index']} differs:\n got  {g}\n want {w}"


def verify(f, chain, piece_size, pps, upto=None, pieces=True):
    """Status, segments, metrics and (optionally) every piece in the block
    store, against the history computed here for heights 1..upto."""
    upto = upto or chain.n
    want, fill = chain.expected(piece_size, pps, upto)
    st = hstatus(f)
    assert st["archived_height"] == upto, st
    assert st["history_size"] == len(want), (st, len(want))
    assert st["segment_fill_bytes"] == fill, (st, fill)
    assert st["pending"] == 0, st
    assert st["rejected"] == [], st
    assert not [h for h in st["wanted"] if h <= upto], st
    check_segments(f, want, f"after archiving 1..{upto}")
    assert metric(f, "farmd_history_archived_height") == upto
    assert metric(f, "farmd_history_size") == len(want)
    if pieces:
        todo = [(s["pieces"][k], s["_bytes"][k]) for s in want for k in range(pps)]

        def one(item):
            h, data = item
            assert bulk_get(f, h) == data, f"block get {h} returned other bytes than the piece"
            st = bulk_stat(f, h)
            assert st is not None and st["refcount"] >= 1 and st["size"] == piece_size, (h, st)
            return st["refcount"]
        return want, parallel(one, todo)
    return want, None


# ---- 1. archiving and segments -----------------------------------------------

def test_empty_history(tmp):
    f = farmd(tmp, config=CFG)
    st = hstatus(f)
    assert st["archived_height"] == 0 and st["history_size"] == 0, st
    assert st["pending"] == 0 and st["segment_fill_bytes"] == 0 and st["rejected"] == [], st
    assert isinstance(st["wanted"], list), st
    assert hsegments(f) == []
    assert f.ctl("history", "status").strip()           # a human table too
    assert metric(f, "farmd_history_archived_height") == 0
    assert metric(f, "farmd_history_size") == 0
    assert metric(f, "farmd_history_blocks_ingested_total") == 0
    assert metric(f, "farmd_history_rejections_total") == 0


def test_archive_default_geometry(tmp):
    """400 blocks of 8 KiB in shuffled order, 64K x 16 pieces: 3 segments."""
    chain = Chain(tmp, 600)
    f = farmd(tmp, config=CFG)
    blocks0 = metric(f, "farmd_blocks")
    order = list(range(1, 401))
    random.Random(1).shuffle(order)
    ingest_paths(f, [chain.path(h) for h in order], procs=4, waves=5)
    wait_archived(f, 400)
    want, refs = verify(f, chain, 64 * KIB, 16, upto=400)
    assert len(want) == 3, len(want)
    assert metric(f, "farmd_history_blocks_ingested_total") == 400
    # The chain blocks are kept (keep_archived_blocks = true) and each is held once.
    for h in (1, 200, 400):
        st = stat(f, chain.hash(h))
        assert st is not None and st["refcount"] == 1 and st["size"] == len(chain.blocks[h]), (h, st)
    assert metric(f, "farmd_blocks") == blocks0 + 400 + 3 * 16
    assert refs == [1] * 48, refs

    # A clean restart keeps everything, and the partial segment continues
    # exactly where it stopped: 401..600 give the same history as one run.
    assert f.stop() == 0, f.log()[-2000:]
    f.start()
    st = hstatus(f)
    assert st["archived_height"] == 400 and st["history_size"] == 3, st
    check_segments(f, want, "after restart")
    order = list(range(401, 601))
    random.Random(2).shuffle(order)
    ingest_paths(f, [chain.path(h) for h in order], procs=4, waves=3)
    wait_archived(f, 600)
    want, _ = verify(f, chain, 64 * KIB, 16, upto=600, pieces=False)
    assert len(want) == 4, len(want)


def test_archive_small_geometry(tmp):
    """4K pieces, 4 per segment: ~200 segments from 400 blocks, ingested as a
    directory (farmctl sends one request per file)."""
    chain = Chain(tmp, 400, seed="small")
    f = farmd(tmp, config=cfg(history={"piece_size": "4K", "pieces_per_segment": 4}))
    f.ctl("history", "ingest", chain.dir)
    wait_archived(f, 400)
    want, refs = verify(f, chain, 4 * KIB, 4)
    assert len(want) > 190, len(want)
    assert refs == [1] * (4 * len(want)), sorted(set(refs))
    assert metric(f, "farmd_history_blocks_ingested_total") == 400


def test_archive_other_geometry(tmp):
    """Non-default sizes both ways: 8K pieces x 32 per segment (256 KiB)."""
    chain = Chain(tmp, 100, body_size=5000, seed="other")
    f = farmd(tmp, config=cfg(history={"piece_size": "8K", "pieces_per_segment": 32}))
    for h in range(100, 0, -1):                    # backwards, one request each
        ingest(f, h, chain.path(h))
        if h == 50:
            st = hstatus(f)
            assert st["archived_height"] == 0 and st["pending"] == 51 and st["wanted"][:1] == [1], st
    wait_archived(f, 100)
    want, _ = verify(f, chain, 8 * KIB, 32)
    assert len(want) == 1, len(want)


def test_archive_block_sizes(tmp):
    """Records larger than a segment (one block spans several segments, and
    segments that hold no record start), and tiny blocks stored inline."""
    big = Chain(tmp, 12, body_size=40000, seed="big")
    f = farmd(tmp, config=cfg(history={"piece_size": "4K", "pieces_per_segment": 2}))
    ingest_paths(f, [big.path(h) for h in range(12, 0, -1)], procs=1)
    wait_archived(f, 12)
    want, _ = verify(f, big, 4 * KIB, 2)
    assert len(want) == 12 * 40050 // (8 * KIB), len(want)
    assert [s["last_height"] for s in want][:5] == [1, 1, 1, 1, 2], [s["last_height"] for s in want]

    d = os.path.join(tmp, "small")
    os.mkdir(d)
    small = Chain(d, 500, body_size=100, seed="small")
    g = farmd(d, config=cfg(history={"piece_size": "4K", "pieces_per_segment": 4}), name="small")
    ingest_paths(g, [small.path(h) for h in range(1, 501)], procs=4)
    wait_archived(g, 500)
    verify(g, small, 4 * KIB, 4)


def test_concurrent_same_block(tmp):
    """The same blocks ingested by several clients at once: one reference each."""
    chain = Chain(tmp, 60, body_size=8 * KIB, seed="dup")
    f = farmd(tmp, config=cfg(history={"piece_size": "4K", "pieces_per_segment": 4}))
    paths = [chain.path(h) for h in range(2, 61)]
    ps = []
    for i in range(4):
        order = list(paths)
        random.Random(10 + i).shuffle(order)
        ps += spawn_ingest(f, order, procs=1)
    for p in ps:
        out, err = p.communicate(timeout=60 * SLOW)
        assert p.returncode == 0, (p.returncode, err)
    st = wait_settled(f)
    assert st["archived_height"] == 0 and st["pending"] == 59 and 1 in st["wanted"], st
    held = parallel(lambda h: (bulk_stat(f, chain.hash(h)) or {}).get("refcount"), range(2, 61))
    assert held == [1] * 59, held
    ingest(f, 1, chain.path(1))
    wait_archived(f, 60)
    verify(f, chain, 4 * KIB, 4)
    held = parallel(lambda h: (bulk_stat(f, chain.hash(h)) or {}).get("refcount"), range(1, 61))
    assert held == [1] * 60, held


def test_replace_races_archiver(tmp):
    """Two different valid blocks for the next height arrive at once, again and
    again.  Whichever farmd keeps, the history must stay one chain: the block
    recorded at a height (the one with the reference) is the block archived
    there, and the next height's parent must be that block.  A replacement
    that lands while the archiver works on that height must be refused."""
    piece, pps = 4 * KIB, 4
    f = farmd(tmp, config=cfg(history={"piece_size": "4K", "pieces_per_segment": pps}))
    rnd = random.Random(7)
    d = os.path.join(tmp, "race")
    os.mkdir(d)
    winners = []
    parent = ZERO32
    refusals = 0
    for h in range(1, 121):
        pair = [pack_block(h, parent, rnd.randbytes(8 * KIB)) for _ in range(2)]
        paths = []
        for i, data in enumerate(pair):
            paths.append(os.path.join(d, f"{h}-{i}.blk"))
            with open(paths[-1], "wb") as fh:
                fh.write(data)
        ps = [subprocess.Popen([FARMCTL, "-s", f.socket, "history", "ingest", str(h), p],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for p in (paths if h % 2 else paths[::-1])]
        res = [p.communicate(timeout=60 * SLOW) + (p.returncode,) for p in ps]
        assert all(rc in (0, 1) for _, _, rc in res), res
        refusals += sum(rc == 1 for _, _, rc in res)
        st = wait_archived(f, h, timeout=20)
        assert st["rejected"] == [], (h, st)
        held = [(bulk_stat(f, hexsha(b)) or {}).get("refcount", 0) for b in pair]
        assert sorted(held) == [0, 1], (h, held, res)
        win = pair[held.index(1)]
        winners.append(win)
        parent = sha(win)
    st = wait_settled(f)
    assert st["archived_height"] == 120 and st["rejected"] == [], st
    # Which block went into the stream at each height (from the pieces).
    stream = b"".join(bulk_get(f, ph)
                      for s in hsegments(f) for ph in s["pieces"])
    off, wrong = 0, []
    for h in range(1, 121):
        if off + 12 > len(stream):
            break
        assert int.from_bytes(stream[off:off + 8], "big") == h, (h, off)
        n = int.from_bytes(stream[off + 8:off + 12], "big")
        data = stream[off + 12:off + 12 + n]
        if len(data) == n and data != winners[h - 1]:
            wrong.append((h, "archived " + hexsha(data)[:16], "recorded " + hexsha(winners[h - 1])[:16]))
        off += 12 + n
    assert not wrong, ("the block archived at a height is not the block farmd kept for it "
                       f"({refusals} ingests refused)", wrong[:5])
    want, fill = expected(winners, piece, pps)
    assert st["segment_fill_bytes"] == fill and st["history_size"] == len(want), (st, fill, len(want))
    check_segments(f, want, "the blocks farmd recorded")


# ---- 2. gaps --------------------------------------------------------------------

def test_missing_height_waits(tmp):
    chain = Chain(tmp, 200, body_size=4 * KIB, seed="gaps")
    geo = {"piece_size": "4K", "pieces_per_segment": 4}
    f = farmd(tmp, config=cfg(history=geo))
    have = [h for h in range(1, 201) if h not in (101, 151)]
    random.Random(3).shuffle(have)
    ingest_paths(f, [chain.path(h) for h in have], procs=4, waves=4)
    wait_archived(f, 100)
    st = wait_settled(f)
    assert st["archived_height"] == 100, st
    assert 101 in st["wanted"], st
    assert not [h for h in st["wanted"] if h <= 100], st
    assert st["pending"] == 98, st                     # 102..150 and 152..200
    want, fill = chain.expected(4 * KIB, 4, 100)
    assert st["history_size"] == len(want) and st["segment_fill_bytes"] == fill, (st, len(want), fill)
    check_segments(f, want, "waiting at 101")

    # The wait, the pending blocks and the checkpoint survive a restart.
    assert f.stop() == 0, f.log()[-2000:]
    f.start()
    st = wait_settled(f)
    assert st["archived_height"] == 100 and st["pending"] == 98 and 101 in st["wanted"], st

    ingest(f, 101, chain.path(101))
    wait_archived(f, 150)
    st = wait_settled(f)
    assert st["archived_height"] == 150, st
    assert 151 in st["wanted"] and 101 not in st["wanted"], st
    assert st["pending"] == 49, st
    ingest(f, 151, chain.path(151))
    wait_archived(f, 200)
    verify(f, chain, 4 * KIB, 4)


# ---- 3. refusals and rejections -----------------------------------------------

def test_ingest_refusals(tmp):
    chain = Chain(tmp, 30, body_size=8 * KIB, seed="main")
    other = Chain(tmp, 30, body_size=8 * KIB, seed="fork", name="fork")
    f = farmd(tmp, config=CFG)
    ingest_paths(f, [chain.path(h) for h in range(1, 21)], procs=2)
    wait_archived(f, 20)
    before = wait_settled(f)
    segs_before = hsegments(f)
    blocks_before = metric(f, "farmd_blocks")
    ingested_before = metric(f, "farmd_history_blocks_ingested_total")

    bad = os.path.join(tmp, "bad")
    os.mkdir(bad)

    def bad_file(name, data):
        p = os.path.join(bad, name)
        with open(p, "wb") as fh:
            fh.write(data)
        return p

    good = chain.blocks[21]
    cases = {}
    # Corrupt: the first tag byte made an invalid wire type.
    cases["bad tag"] = bytes([good[0] ^ 0xFF]) + good[1:]
    # Truncated in the middle of the body, and one byte short.
    cases["truncated half"] = good[:len(good) // 2]
    cases["truncated by one"] = good[:-1]
    # Random bytes.
    rnd = random.Random(4)
    noise = bytes(rnd.getrandbits(8) for _ in range(8 * KIB))
    cases["random"] = noise
    cases["garbage text"] = b"this is not a chain block at all\n" * 10
    for name, data in cases.items():
        try:
            parse_block(data)
        except BadProto:
            continue
        raise AssertionError(f"test bug: {name} unpacks")

    msgs = {}
    for name, data in cases.items():
        path = bad_file(name.replace(" ", "_"), data)
        msgs[name] = refused(f, 21, path)
        # The same bytes under an NNNNNN.blk name, path form.
        refused(f, bad_file("000021.blk", data))
        assert stat(f, hexsha(data)) is None, name
    # Empty file: unpacks as height 0, which is not 21.
    msgs["empty"] = refused(f, 21, bad_file("empty", b""))
    # Mislabelled: block 22 ingested as height 21, and a file named 000021.blk
    # holding block 22.
    msg = refused(f, 21, chain.path(22))
    assert "21" in msg and "22" in msg, msg
    msg = refused(f, bad_file("000021.blk", chain.blocks[22]))
    assert "21" in msg and "22" in msg, msg
    # A label below the checkpoint with another block's bytes.
    msg = refused(f, 5, chain.path(21))
    assert "5" in msg and "21" in msg, msg
    # Heights start at 1.
    p = f.ctl_raw("history", "ingest", 0, bad_file("zero", b""))
    assert p.returncode in (1, 2) and p.stderr.strip(), (p.returncode, p.stderr)
    # A different block for an archived height (the fork's 10 and 20).
    for h in (10, 20):
        msg = refused(f, h, other.path(h))
        assert str(h) in msg, msg
        msg = refused(f, other.path(h))
        assert str(h) in msg, msg
        assert stat(f, other.hash(h)) is None, h

    # Nothing changed.
    assert hstatus(f) == before, (hstatus(f), before)
    assert hsegments(f) == segs_before
    assert metric(f, "farmd_blocks") == blocks_before, "a refused ingest left a block behind"
    assert metric(f, "farmd_history_blocks_ingested_total") == ingested_before
    assert metric(f, "farmd_history_rejections_total") == 0
    tmpd = os.path.join(f.state_dir, "blocks", "tmp")
    assert not os.path.isdir(tmpd) or os.listdir(tmpd) == [], os.listdir(tmpd)

    # Re-ingesting the very block of an archived height is harmless: accepted
    # (at-least-once delivery) and no second reference, nothing else changed.
    ingest(f, 20, chain.path(20))
    ingest_paths(f, [chain.path(5)], procs=1)
    assert stat(f, chain.hash(20))["refcount"] == 1
    assert stat(f, chain.hash(5))["refcount"] == 1
    assert metric(f, "farmd_blocks") == blocks_before
    assert {k: v for k, v in hstatus(f).items()} == before

    # And the history still continues normally.
    ingest_paths(f, [chain.path(h) for h in range(21, 31)], procs=1)
    wait_archived(f, 30)
    verify(f, chain, 64 * KIB, 16, pieces=False)


def test_parent_hash_break(tmp):
    chain = Chain(tmp, 80, body_size=4 * KIB, seed="main")
    fork = Chain(tmp, 80, body_size=4 * KIB, seed="fork", name="fork")
    geo = {"piece_size": "4K", "pieces_per_segment": 4}
    f = farmd(tmp, config=cfg(history=geo, blocks={"gc_delay": "1s"}))
    paths = [chain.path(h) for h in range(1, 81) if h != 51] + [fork.path(51)]
    random.Random(5).shuffle(paths)
    ingest_paths(f, paths, procs=4, waves=3)
    wait_for(lambda: hstatus(f)["rejected"], 30, what="a rejection")
    st = wait_settled(f)
    assert st["archived_height"] == 50, st
    assert len(st["rejected"]) == 1 and st["rejected"][0]["height"] == 51, st
    reason = st["rejected"][0]["reason"].lower()
    # The hash the block names (fork's 50) and the one it must name (chain's 50).
    for h in (fork.hash(50), chain.hash(50)):
        assert h[:16] in reason, (h, reason)
    assert st["pending"] >= 29, st                     # 52..80 wait behind 51
    assert metric(f, "farmd_history_rejections_total") == 1
    want, fill = chain.expected(4 * KIB, 4, 50)
    check_segments(f, want, "stopped at 50")
    assert st["segment_fill_bytes"] == fill, (st, fill)

    # Still rejected after a restart (it is not silently archived).
    assert f.stop() == 0, f.log()[-2000:]
    f.start()
    st = wait_settled(f)
    assert st["archived_height"] == 50 and [r["height"] for r in st["rejected"]] == [51], st

    # Another wrong block replaces it, and is rejected in turn.
    third = Chain(tmp, 51, body_size=4 * KIB, seed="third", name="third")
    ingest(f, 51, third.path(51))
    wait_for(lambda: third.hash(50)[:16] in json.dumps(hstatus(f)["rejected"]), 20,
             what="the second rejection")
    st = wait_settled(f)
    assert st["archived_height"] == 50 and [r["height"] for r in st["rejected"]] == [51], st
    assert metric(f, "farmd_history_rejections_total") == 1      # counted since the restart

    # The right block replaces it and archiving continues.
    ingest(f, 51, chain.path(51))
    wait_archived(f, 80)
    verify(f, chain, 4 * KIB, 4)
    # The rejected blocks are no longer referenced by history, and are collected.
    for h in (fork.hash(51), third.hash(51)):
        wait_for(lambda: stat(f, h) is None, 10, interval=0.2, what=f"rejected block {h[:12]} collected")
    assert stat(f, chain.hash(51))["refcount"] == 1


def test_parent_hash_break_low_heights(tmp):
    """Block 1 must name 32 zero bytes; block 2 must name block 1."""
    chain = Chain(tmp, 10, body_size=4 * KIB, seed="main")
    fork = Chain(tmp, 10, body_size=4 * KIB, seed="fork", name="fork")
    f = farmd(tmp, config=CFG)
    bad1 = os.path.join(tmp, "bad1")
    with open(bad1, "wb") as fh:
        fh.write(pack_block(1, b"\x01" * 32, parse_block(chain.blocks[1])["body"]))
    ingest(f, 1, bad1)
    wait_for(lambda: hstatus(f)["rejected"], 20, what="a rejection")
    st = wait_settled(f)
    assert st["archived_height"] == 0 and [r["height"] for r in st["rejected"]] == [1], st
    assert "01" * 16 in st["rejected"][0]["reason"].lower(), st
    ingest(f, 1, chain.path(1))
    wait_archived(f, 1)
    ingest(f, 2, fork.path(2))
    wait_for(lambda: hstatus(f)["rejected"], 20, what="a rejection")
    st = wait_settled(f)
    assert st["archived_height"] == 1 and [r["height"] for r in st["rejected"]] == [2], st
    ingest(f, 2, chain.path(2))
    ingest_paths(f, [chain.path(h) for h in range(3, 11)], procs=1)
    wait_archived(f, 10)
    verify(f, chain, 64 * KIB, 16, pieces=False)


# ---- 4. kill -9 -------------------------------------------------------------------

def test_kill9_during_archive(tmp):
    chain = Chain(tmp, 2000, body_size=8 * KIB, seed="crash")
    piece, pps = 16 * KIB, 4
    full, _ = chain.expected(piece, pps)
    f = farmd(tmp, config=cfg(history={"piece_size": "16K", "pieces_per_segment": pps}), start=False)
    rnd = random.Random(6)
    last = 0
    progressed = []
    for rnd_i in range(CRASH_ROUNDS):
        f.start()
        # (The archiver resumes at once, so these only move forward.)
        st = hstatus(f)
        assert st["archived_height"] >= last, ("checkpoint went back", last, st)
        last = st["archived_height"]
        progressed.append(last)
        # Whatever survived is a prefix of the true history.
        got = norm(hsegments(f))
        assert got == strip(full[:len(got)]), f"round {rnd_i}: segments differ from the true history"
        assert len(got) >= st["history_size"], (len(got), st)
        kill_mid_ingest(f, chain, last, rnd)
    f.start()
    st = hstatus(f)
    assert st["archived_height"] >= last, (last, st)
    ingest_paths(f, [chain.path(h) for h in range(st["archived_height"] + 1, chain.n + 1)], procs=4)
    wait_archived(f, chain.n, timeout=120)
    want, refs = verify(f, chain, piece, pps)
    # Exactly-once effect: each piece and each chain block held once.
    assert refs == [1] * len(refs), sorted(set(refs))
    assert metric(f, "farmd_blocks") == chain.n + pps * len(want), \
        (metric(f, "farmd_blocks"), chain.n + pps * len(want))
    # The kills must have landed mid-work for this test to mean anything.
    assert len(set(progressed)) >= 3, ("the kills did not land mid-archive", progressed)
    # A kill between the block store's put and the height's record must not
    # leave a reference nobody holds (the retried ingest takes another one).
    held = parallel(lambda h: (bulk_stat(f, chain.hash(h)) or {}).get("refcount"),
                    range(1, chain.n + 1))
    assert held == [1] * chain.n, \
        ("chain blocks held more than once after kill -9 and re-ingest (height, refcount)",
         [(h + 1, r) for h, r in enumerate(held) if r != 1][:10])


def test_sigterm_mid_archive(tmp):
    """A clean stop while blocks arrive and segments are cut: exit 0 (how
    fast is a scripts/bench figure), and the history carries on exactly
    after a restart."""
    chain = Chain(tmp, 1500, body_size=8 * KIB, seed="term")
    piece, pps = 16 * KIB, 4
    f = farmd(tmp, config=cfg(history={"piece_size": "16K", "pieces_per_segment": pps}))
    ps = spawn_ingest(f, [chain.path(h) for h in range(1, chain.n + 1)], procs=4)
    wait_for(lambda: hstatus(f)["history_size"] >= 5, 20, what="some segments")
    started = time.monotonic()
    assert f.stop(timeout=60) == 0, f.log()[-2000:]
    print(f"     SIGTERM mid-archive: exit after {time.monotonic() - started:.2f}s", flush=True)
    reap(ps)
    f.start()
    st = hstatus(f)
    full, _ = chain.expected(piece, pps)
    got = norm(hsegments(f))
    assert got == strip(full[:len(got)]), "segments after a clean stop differ from the true history"
    assert 0 < st["archived_height"], st
    ingest_paths(f, [chain.path(h) for h in range(st["archived_height"] + 1, chain.n + 1)], procs=4)
    wait_archived(f, chain.n, timeout=60)
    verify(f, chain, piece, pps, pieces=False)


def test_kill9_release_archived_blocks(tmp):
    """kill -9 with keep_archived_blocks = false: each chain block's history
    reference is released exactly once, and only once its bytes are inside
    committed segments (the partial segment is rebuilt from the rest)."""
    chain = Chain(tmp, 1000, body_size=8 * KIB, seed="crash-release")
    piece, pps = 16 * KIB, 4
    f = farmd(tmp, config=cfg(history={"piece_size": "16K", "pieces_per_segment": pps,
                                       "keep_archived_blocks": "false"},
                              blocks={"gc_delay": "1h"}), start=False)
    full, _ = chain.expected(piece, pps)
    rnd = random.Random(8)
    for _ in range(8):
        f.start()
        got = norm(hsegments(f))
        assert got == strip(full[:len(got)]), "segments differ from the true history"
        last = hstatus(f)["archived_height"]
        kill_mid_ingest(f, chain, last, rnd)
    f.start()
    last = hstatus(f)["archived_height"]
    ingest_paths(f, [chain.path(h) for h in range(last + 1, chain.n + 1)], procs=4)
    wait_archived(f, chain.n, timeout=60)
    want, refs = verify(f, chain, piece, pps)
    assert refs == [1] * len(refs), sorted(set(refs))
    spans, _ = chain.records()
    stored = len(want) * piece * pps
    held = parallel(lambda h: (bulk_stat(f, chain.hash(h)) or {}).get("refcount"), range(1, chain.n + 1))
    wrong = [(h, held[h - 1]) for h, s, e in spans if held[h - 1] != (0 if e <= stored else 1)]
    assert not wrong, ("chain block refcounts (height, refcount) after kill -9; want 0 inside "
                       "segments, 1 in the partial one", wrong[:10])


def test_corrupt_block_in_partial_segment(tmp):
    """A block of the partial segment that is corrupt on disk when farmd
    restarts: the archiver must not rebuild the segment from bad bytes; a
    re-ingest of the block repairs it and archiving goes on, exactly."""
    chain = Chain(tmp, 40, body_size=8 * KIB, seed="repair")
    piece, pps = 16 * KIB, 4
    f = farmd(tmp, config=cfg(history={"piece_size": "16K", "pieces_per_segment": pps}))
    ingest_paths(f, [chain.path(h) for h in range(1, 31)], procs=1)
    wait_archived(f, 30)
    spans, _ = chain.records(30)
    want, _ = chain.expected(piece, pps, 30)
    partial = [h for h, s, e in spans if e > len(want) * piece * pps]
    victim = partial[len(partial) // 2]
    assert f.stop() == 0
    path = os.path.join(f.state_dir, "blocks", chain.hash(victim)[:2], chain.hash(victim)[2:4],
                        chain.hash(victim))
    with open(path, "r+b") as fh:
        fh.seek(5000)
        b = fh.read(1)
        fh.seek(5000)
        fh.write(bytes([b[0] ^ 0x5A]))
    f.start()
    ingest_paths(f, [chain.path(h) for h in range(31, 41)], procs=1)
    time.sleep(1.5 * SLOW)
    st = hstatus(f)
    assert st["archived_height"] == 30, st
    got = norm(hsegments(f))
    assert got == strip(chain.expected(piece, pps)[0][:len(got)]), "segments built from corrupt bytes"
    ingest(f, victim, chain.path(victim))             # repairs the stored copy
    wait_archived(f, 40, timeout=30)
    verify(f, chain, piece, pps)
    assert stat(f, chain.hash(victim))["refcount"] == 1


# ---- 5. geometry is fixed -----------------------------------------------------------

def size_forms(n):
    forms = {str(n)}
    for unit, mult in (("K", KIB), ("M", KIB * KIB)):
        if n % mult == 0:
            forms |= {f"{n // mult}{unit}", f"{n // mult} {unit}", f"{n // mult}{unit}iB",
                      f"{n // mult} {unit}iB"}
    return forms


def refused_start(f, what, old, new):
    f.start(wait=False)
    rc = f.proc.wait(20 * SLOW)
    f.logf.close()
    log = f.log()
    assert rc == 78, (rc, log[-2000:])
    line = log.strip().splitlines()[-1] if log.strip() else ""
    assert what in log, (what, log[-1000:])
    assert any(s in log for s in size_forms(old)), (old, log[-1000:])
    assert any(s in log for s in size_forms(new)), (new, log[-1000:])
    return line


def test_geometry_fixed(tmp):
    chain = Chain(tmp, 20, body_size=8 * KIB)
    f = farmd(tmp, config=CFG)
    ingest_paths(f, [chain.path(h) for h in range(1, 21)], procs=1)
    wait_archived(f, 20)
    segs = hsegments(f)
    st = hstatus(f)
    assert f.stop() == 0
    open(f.log_path, "w").close()

    f.write_config(cfg(history={"piece_size": "128K"}))
    refused_start(f, "piece_size", 64 * KIB, 128 * KIB)
    open(f.log_path, "w").close()
    f.write_config(cfg(history={"piece_size": "4K"}))
    refused_start(f, "piece_size", 64 * KIB, 4 * KIB)
    open(f.log_path, "w").close()
    f.write_config(cfg(history={"pieces_per_segment": 32}))
    refused_start(f, "pieces_per_segment", 16, 32)

    # keep_archived_blocks is not geometry; the original config still works
    # and nothing was touched.
    f.write_config(cfg(history={"piece_size": "64K", "pieces_per_segment": 16,
                                "keep_archived_blocks": "true"}))
    f.start()
    assert hsegments(f) == segs and hstatus(f) == st


def test_geometry_fixed_nondefault(tmp):
    """A state dir created with 8K x 8 refuses the defaults later."""
    f = farmd(tmp, config=cfg(history={"piece_size": "8K", "pieces_per_segment": 8}))
    assert f.stop() == 0
    open(f.log_path, "w").close()
    f.write_config(cfg(history={"piece_size": "16K", "pieces_per_segment": 8}))
    refused_start(f, "piece_size", 8 * KIB, 16 * KIB)
    open(f.log_path, "w").close()
    f.write_config(cfg(history={"piece_size": "8K", "pieces_per_segment": 4}))
    refused_start(f, "pieces_per_segment", 8, 4)
    f.write_config(cfg(history={"piece_size": "8K", "pieces_per_segment": 8}))
    f.start()


def test_geometry_bad_values(tmp):
    """Bad geometry in a config is refused at start (78) with file and line."""
    for key, value in (("piece_size", "3000"), ("piece_size", "2K"), ("piece_size", "48K"),
                       ("pieces_per_segment", "3"), ("pieces_per_segment", "0"),
                       ("keep_archived_blocks", "maybe")):
        d = os.path.join(tmp, f"{key}-{value}")
        os.mkdir(d)
        f = farmd(d, config=cfg(history={key: value}), start=False)
        f.start(wait=False)
        rc = f.proc.wait(20 * SLOW)
        f.logf.close()
        log = f.log()
        assert rc == 78, (key, value, rc, log[-1000:])
        assert key in log and "farmd.ini" in log, (key, value, log[-1000:])


# ---- keep_archived_blocks = false --------------------------------------------------

def test_release_archived_blocks(tmp):
    chain = Chain(tmp, 300, body_size=8 * KIB, seed="release")
    piece, pps = 16 * KIB, 4
    seg = piece * pps
    f = farmd(tmp, config=cfg(history={"piece_size": "16K", "pieces_per_segment": pps,
                                       "keep_archived_blocks": "false"},
                              blocks={"gc_delay": "1s"}))

    def check(upto):
        spans, _ = chain.records(upto)
        want, _ = chain.expected(piece, pps, upto)
        stored = len(want) * seg
        inside = [h for h, s, e in spans if e <= stored]
        outside = [h for h, s, e in spans if e > stored]
        assert inside and outside, (len(inside), len(outside))

        def gone():
            return all(stat(f, chain.hash(h)) is None for h in inside)
        wait_for(gone, 20, interval=0.2, what="archived chain blocks collected")
        for h in inside:
            assert not os.path.exists(os.path.join(f.state_dir, "blocks", chain.hash(h)[:2],
                                                   chain.hash(h)[2:4], chain.hash(h)))
        # The blocks of the partial segment are still held.
        for h in outside:
            st = stat(f, chain.hash(h))
            assert st is not None and st["refcount"] >= 1, (h, st)
        # Pieces stay; the history is intact.
        verify(f, chain, piece, pps, upto=upto)
        assert metric(f, "farmd_blocks") == len(outside) + pps * len(want), \
            (metric(f, "farmd_blocks"), len(outside), len(want))

    ingest_paths(f, [chain.path(h) for h in range(1, 201)], procs=4)
    wait_archived(f, 200)
    check(200)
    # A restart, then more history: the partial segment's blocks are still
    # there to finish it, and are released once it is cut.
    assert f.stop() == 0, f.log()[-2000:]
    f.start()
    ingest_paths(f, [chain.path(h) for h in range(201, 301)], procs=4)
    wait_archived(f, 300)
    check(300)


def test_keep_archived_blocks_true(tmp):
    """The default keeps every chain block after archiving, past gc_delay."""
    chain = Chain(tmp, 150, body_size=8 * KIB, seed="keep")
    f = farmd(tmp, config=cfg(history={"piece_size": "16K", "pieces_per_segment": 4},
                              blocks={"gc_delay": "1s"}))
    ingest_paths(f, [chain.path(h) for h in range(1, 151)], procs=4)
    wait_archived(f, 150)
    time.sleep(2.5)
    held = parallel(lambda h: (bulk_stat(f, chain.hash(h)) or {}).get("refcount"), range(1, 151))
    assert held == [1] * 150, [(h + 1, r) for h, r in enumerate(held) if r != 1][:10]


# ---- metrics -----------------------------------------------------------------------

def test_history_metrics(tmp):
    chain = Chain(tmp, 60, body_size=4 * KIB, seed="metrics")
    fork = Chain(tmp, 60, body_size=4 * KIB, seed="fork", name="fork")
    f = farmd(tmp, config=cfg(history={"piece_size": "4K", "pieces_per_segment": 4}))
    text = f.ctl("metrics")
    for name in ("farmd_history_archived_height", "farmd_history_size",
                 "farmd_history_blocks_ingested_total", "farmd_history_rejections_total"):
        assert f"# TYPE {name} " in text, name
    assert "# TYPE farmd_history_blocks_ingested_total counter" in text
    assert "# TYPE farmd_history_rejections_total counter" in text
    assert "# TYPE farmd_history_archived_height gauge" in text
    assert "# TYPE farmd_history_size gauge" in text

    ingest_paths(f, [chain.path(h) for h in range(1, 31)], procs=2)
    assert metric(f, "farmd_history_blocks_ingested_total") == 30
    wait_archived(f, 30)
    want, _ = chain.expected(4 * KIB, 4, 30)
    wait_for(lambda: metric(f, "farmd_history_archived_height") == 30, 5, what="metric")
    assert metric(f, "farmd_history_size") == len(want) == hstatus(f)["history_size"]
    refused(f, 31, chain.path(32))
    assert metric(f, "farmd_history_blocks_ingested_total") == 30
    ingest(f, 31, fork.path(31))
    wait_for(lambda: hstatus(f)["rejected"], 20, what="a rejection")
    assert metric(f, "farmd_history_blocks_ingested_total") == 31
    wait_for(lambda: metric(f, "farmd_history_rejections_total") == 1, 5, what="rejection metric")
    ingest(f, 31, chain.path(31))
    ingest_paths(f, [chain.path(h) for h in range(32, 61)], procs=2)
    wait_archived(f, 60)
    want, _ = chain.expected(4 * KIB, 4, 60)
    assert metric(f, "farmd_history_archived_height") == 60
    assert metric(f, "farmd_history_size") == len(want)
    assert metric(f, "farmd_history_rejections_total") == 1
    assert metric(f, "farmd_history_blocks_ingested_total") == 61
    # Gauges come from the persisted state after a restart.
    assert f.stop() == 0
    f.start()
    assert metric(f, "farmd_history_archived_height") == 60
    assert metric(f, "farmd_history_size") == len(want)


if __name__ == "__main__":
    run_tests(globals())
