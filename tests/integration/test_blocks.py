"""Block store acceptance tests: content-addressed put/get, inline and zstd
storage, corruption and loss detection, the resync error table and its
back-off, GC of unreferenced blocks, scrub, the blocks budget and crash
safety under kill -9.  DESIGN.md sections 3, 5, 8, 9 and 11.

Driven from the outside as an operator would: farmctl, the files under
<state>/blocks, `farmctl metrics`, and the sqlite3 CLI on state.db.

    FARMD_BUILD=/tmp/build-btest python3 tests/integration/test_blocks.py [test_name ...]
"""
import concurrent.futures
import hashlib
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))

from adminwire import Client  # noqa: E402
from harness import PACE, CRASH_ROUNDS, bulk_put, ctl_bin, block_stat as stat, FARMCTL, SANITIZED, SLOW, CtlError, farmd, metric, run_tests, slow_now, wait_for, _live  # noqa: E402

INLINE_MAX = 3072                      # blocks below this live in state.db
MIB = 1 << 20
CFG = "[workers]\nencode = 1\n"


def cfg(**blocks):
    """CFG plus a [blocks] section, e.g. cfg(gc_delay="1s")."""
    return CFG + "[blocks]\n" + "".join(f"{k} = {v}\n" for k, v in blocks.items())


# ---- helpers ----------------------------------------------------------------

def sha(b):
    return hashlib.sha256(b).hexdigest()


def write(tmp, name, data):
    path = os.path.join(tmp, name)
    with open(path, "wb") as fh:
        fh.write(data)
    return path


def read(path):
    with open(path, "rb") as fh:
        return fh.read()


def put(f, tmp, data, name="in"):
    """`block put` of data; checks the printed hash and returns it."""
    path = write(tmp, name, data)
    out = f.ctl("block", "put", path).strip()
    assert out == sha(data), f"block put printed {out!r}, sha256 is {sha(data)}"
    return out


def get(f, tmp, h, name="out"):
    """`block get H -o FILE`; returns the bytes (CtlError on failure)."""
    path = os.path.join(tmp, name)
    if os.path.exists(path):
        os.unlink(path)
    f.ctl("block", "get", h, "-o", path)
    return read(path)




def errors(f):
    """`block list-errors --json` as {hash: entry}."""
    return {e["hash"]: e for e in f.ctl_json("block", "list-errors")}




def block_path(f, h, compressed=False):
    return os.path.join(f.state_dir, "blocks", h[:2], h[2:4], h + (".zst" if compressed else ""))


def block_files(f):
    """Every file under <state>/blocks except blocks/tmp, relative paths."""
    root = os.path.join(f.state_dir, "blocks")
    out = []
    for d, dirs, files in os.walk(root):
        if os.path.relpath(d, root).split(os.sep)[0] == "tmp":
            continue
        out += [os.path.relpath(os.path.join(d, n), root) for n in files]
    return sorted(out)


def tmp_files(f):
    d = os.path.join(f.state_dir, "blocks", "tmp")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def sql(f, query):
    """One query through the sqlite3 CLI, read-only (no checkpoint, no writes)."""
    p = subprocess.run(["sqlite3", "-readonly", "-bail", os.path.join(f.state_dir, "state.db"),
                        query], capture_output=True, text=True, timeout=30 * SLOW)
    assert p.returncode == 0, (query, p.returncode, p.stderr)
    return p.stdout.strip()


def flip_byte(path, offset=None):
    with open(path, "r+b") as fh:
        size = os.fstat(fh.fileno()).st_size
        off = size // 2 if offset is None else offset
        fh.seek(off)
        b = fh.read(1)
        fh.seek(off)
        fh.write(bytes([b[0] ^ 0x5A]))
    return off


def text_data(n, seed=0):
    """n bytes of repetitive text: compresses very well."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += f"block {seed} line {i % 997}: lorem ipsum dolor sit amet, farmd\n".encode()
        i += 1
    return bytes(out[:n])


def restart(f):
    """A clean stop (exit 0) and a fresh start of the same state dir."""
    assert f.stop() == 0, f.log()[-2000:]
    f.start()


def parallel(fn, items, jobs=8):
    with concurrent.futures.ThreadPoolExecutor(jobs) as ex:
        return list(ex.map(fn, items))


def put_files(f, paths, jobs=8):
    """Concurrent `block put` of many files; returns their hashes in order."""
    def one(path):
        p = f.ctl_raw("block", "put", path)
        if p.returncode != 0:
            raise CtlError(p)
        return p.stdout.strip()
    return parallel(one, paths, jobs)


# ---- 1. put / get -----------------------------------------------------------

def test_put_get_roundtrip_sizes(tmp):
    f = farmd(tmp, config=CFG)
    sizes = [0, 1, INLINE_MAX - 1, INLINE_MAX, MIB, 64 * MIB]
    blobs = {n: os.urandom(n) for n in sizes}
    hashes = {}
    for n in sizes:
        h = put(f, tmp, blobs[n], name=f"in{n}")
        hashes[n] = h
        assert get(f, tmp, h) == blobs[n], f"{n}-byte block did not round-trip via -o"
        if n <= MIB:
            p = ctl_bin(f, "block", "get", h)
            assert p.returncode == 0, (n, p.stderr)
            assert p.stdout == blobs[n], f"{n}-byte block did not round-trip via stdout"
        st = stat(f, h)
        assert st == {"hash": h, "size": n, "stored": n, "refcount": 1, "inline": n < INLINE_MAX,
                      "compressed": False, "state": "ok"}, (n, st)
    assert hashes[0] == sha(b"")
    # Inline blocks have no file; the others exactly one, with the bytes.
    want = sorted(os.path.relpath(block_path(f, hashes[n]), os.path.join(f.state_dir, "blocks"))
                  for n in sizes if n >= INLINE_MAX)
    assert block_files(f) == want, (block_files(f), want)
    for n in (INLINE_MAX, MIB):
        assert read(block_path(f, hashes[n])) == blobs[n]
    assert os.path.getsize(block_path(f, hashes[64 * MIB])) == 64 * MIB
    assert tmp_files(f) == [], tmp_files(f)
    assert metric(f, "farmd_blocks") == len(sizes)
    assert metric(f, "farmd_block_bytes") == sum(sizes)
    assert metric(f, "farmd_block_stored_bytes") == sum(sizes)
    assert metric(f, "farmd_block_reserved_bytes") == 0
    assert metric(f, "farmd_block_written_bytes_total") == sum(sizes)
    # --json put
    p = f.ctl_raw("block", "put", os.path.join(tmp, "in1"), json_out=True)
    assert p.returncode == 0 and json.loads(p.stdout) == {"hash": hashes[1]}, p

    # A second put of a stored block takes a reference and leaves the file alone.
    path = block_path(f, hashes[MIB])
    before = os.stat(path)
    written = metric(f, "farmd_block_written_bytes_total")
    assert put(f, tmp, blobs[MIB], name="again") == hashes[MIB]
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), \
        "a put of an existing block rewrote its file"
    assert metric(f, "farmd_block_written_bytes_total") == written
    assert stat(f, hashes[MIB])["refcount"] == 2
    assert stat(f, hashes[1])["refcount"] == 2          # the --json put above
    assert metric(f, "farmd_blocks") == len(sizes)

    # Prefix lookups (>= 8 hex digits), and refusals.
    h = hashes[MIB]
    assert stat(f, h[:8])["hash"] == h
    assert get(f, tmp, h[:10]) == blobs[MIB]
    p = f.ctl_raw("block", "get", h[:7], "-o", os.path.join(tmp, "x"))
    assert p.returncode == 1, (p.returncode, p.stderr)
    unknown = "0" * 64 if not any(v.startswith("00000000") for v in hashes.values()) else "f" * 64
    for arg in (unknown, unknown[:8], "not-a-hash"):
        p = f.ctl_raw("block", "get", arg, "-o", os.path.join(tmp, "x"))
        assert p.returncode == 1, (arg, p.returncode, p.stderr)
        assert p.stderr.strip(), arg
    p = f.ctl_raw("block", "get", unknown, "-o", os.path.join(tmp, "x"))
    assert "no such block" in p.stderr, p.stderr
    p = f.ctl_raw("block", "stat", unknown)
    assert p.returncode == 1 and "no such block" in p.stderr, (p.returncode, p.stderr)
    # Asking for a block that never existed is not a storage error.
    assert errors(f) == {}
    assert metric(f, "farmd_block_missing_total") == 0

    # Durable across a restart.
    restart(f)
    for n in sizes:
        assert get(f, tmp, hashes[n]) == blobs[n], f"{n}-byte block lost by a restart"
    assert metric(f, "farmd_blocks") == len(sizes)
    assert metric(f, "farmd_block_stored_bytes") == sum(sizes)


def test_zstd_compression(tmp):
    f = farmd(tmp, config=cfg(compression="zstd:3"))
    text = text_data(4 * MIB)
    h = put(f, tmp, text)
    zst = block_path(f, h, compressed=True)
    assert os.path.exists(zst), block_files(f)
    assert not os.path.exists(block_path(f, h)), "uncompressed copy stored as well"
    disk = os.path.getsize(zst)
    assert disk < len(text) // 4, f"4 MiB of text took {disk} bytes compressed"
    st = stat(f, h)
    assert st["compressed"] is True and st["inline"] is False, st
    assert st["size"] == len(text) and st["stored"] == disk < len(text), (st, disk)
    # It really is a zstd frame of the bytes, not the bytes.
    assert read(zst)[:4] == b"\x28\xb5\x2f\xfd", read(zst)[:4]
    assert get(f, tmp, h) == text
    p = ctl_bin(f, "block", "get", h)
    assert p.returncode == 0 and p.stdout == text, p.stderr
    # Incompressible data still round-trips.
    rnd = os.urandom(200 * 1024)
    hr = put(f, tmp, rnd, name="rnd")
    assert get(f, tmp, hr) == rnd
    assert metric(f, "farmd_block_stored_bytes") == disk + stat(f, hr)["stored"]
    assert metric(f, "farmd_block_bytes") == len(text) + len(rnd)

    # Blocks stored before compression was turned on stay readable, and
    # vice versa.
    f.write_config(CFG)
    restart(f)
    plain = text_data(64 * 1024, seed=1)
    hp = put(f, tmp, plain, name="plain")
    assert os.path.exists(block_path(f, hp)) and not os.path.exists(block_path(f, hp, True))
    assert stat(f, hp)["compressed"] is False and stat(f, hp)["stored"] == len(plain)
    assert get(f, tmp, h) == text, "zstd block unreadable once compression is off"
    f.write_config(cfg(compression="zstd:3"))
    restart(f)
    assert get(f, tmp, hp) == plain, "plain block unreadable once compression is on"
    assert get(f, tmp, h) == text


# ---- 2. corruption ----------------------------------------------------------

def check_corruption_and_repair(f, tmp, data, compressed):
    h = put(f, tmp, data)
    path = block_path(f, h, compressed)
    assert os.path.exists(path), block_files(f)
    flip_byte(path)
    t0 = time.time() * 1000
    p = f.ctl_raw("block", "get", h, "-o", os.path.join(tmp, "out"))
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert re.search(rf"block {h} is corrupt: .*; moved to {re.escape(path)}\.corrupted and "
                     r"queued for resync", p.stderr), p.stderr
    assert not os.path.exists(path), "corrupt file left under its name"
    assert os.path.exists(path + ".corrupted")
    errs = errors(f)
    assert list(errs) == [h], errs
    e = errs[h]
    assert e["errors"] == 1 and "corrupt" in e["reason"], e
    assert t0 - 1000 <= e["last_try_ms"] <= time.time() * 1000 + 1000, (e, t0)
    assert stat(f, h)["state"] == "error"
    assert metric(f, "farmd_block_corruptions_total") == 1
    assert metric(f, "farmd_block_errors") == 1
    # No bad byte ever reaches the client.
    out = os.path.join(tmp, "out")
    assert not os.path.exists(out) or read(out) == b"", "corrupt bytes written to -o FILE"
    # Reading again: the file is gone now; still an error, still one entry.
    p = f.ctl_raw("block", "get", h, "-o", out)
    assert p.returncode == 1 and "missing" in p.stderr, (p.returncode, p.stderr)
    assert list(errors(f)) == [h] and errors(f)[h]["errors"] == 1, errors(f)
    # Putting the same bytes again repairs it.
    assert put(f, tmp, data, name="again") == h
    assert errors(f) == {}, errors(f)
    st = stat(f, h)
    assert st["state"] == "ok" and st["refcount"] == 2 and st["compressed"] == compressed, st
    assert get(f, tmp, h) == data
    assert os.path.exists(path)
    assert metric(f, "farmd_block_errors") == 0
    assert re.search(rf"block {h} repaired", f.log()), f.log()[-2000:]
    return h


def test_corrupt_block_detected_and_repaired(tmp):
    f = farmd(tmp, config=CFG)
    data = os.urandom(64 * 1024)
    h = check_corruption_and_repair(f, tmp, data, compressed=False)
    assert read(block_path(f, h)) == data
    # Repaired for good: survives a restart, no error comes back.
    restart(f)
    assert get(f, tmp, h) == data and errors(f) == {}


def test_corrupt_compressed_block_detected_and_repaired(tmp):
    f = farmd(tmp, config=cfg(compression="zstd:3"))
    # Hex text: zstd compresses it (Huffman literals), every byte matters.
    data = os.urandom(128 * 1024).hex().encode()
    check_corruption_and_repair(f, tmp, data, compressed=True)


def test_corrupt_inline_block_detected_and_repaired(tmp):
    f = farmd(tmp, config=CFG)
    data = os.urandom(1000)
    h = put(f, tmp, data)
    assert f.stop() == 0
    p = subprocess.run(["sqlite3", os.path.join(f.state_dir, "state.db"),
                        f"update blocks set data = zeroblob(1000) where hash = x'{h}'"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    f.start()
    p = f.ctl_raw("block", "get", h, "-o", os.path.join(tmp, "out"))
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert re.search(rf"block {h} is corrupt", p.stderr), p.stderr
    # There is no file to move: the message must not claim one was moved.
    assert ".corrupted" not in p.stderr, f"inline corruption names a moved file: {p.stderr}"
    assert list(errors(f)) == [h] and stat(f, h)["state"] == "error"
    assert put(f, tmp, data, name="again") == h
    assert errors(f) == {} and get(f, tmp, h) == data


# ---- 3. missing file, error table, back-off ---------------------------------

def test_missing_block_backoff(tmp):
    # The back-off base scales with the machine as it is when farmd starts:
    # the error table is first looked at right after the failed read, and
    # the first retry must not have come by then (on a busy machine under
    # ASan three farmctl calls took longer than a 1 s base).
    base = 1000 * min(10, max(1, math.ceil(slow_now())))
    f = farmd(tmp, config=cfg(resync_retry_base="%ds" % (base // 1000)))
    data = os.urandom(32 * 1024)
    h = put(f, tmp, data)
    other = put(f, tmp, os.urandom(32 * 1024), name="other")
    os.unlink(block_path(f, h))

    seen = []                               # entries, one per error count

    def entry_with(n):
        e = errors(f).get(h)
        assert e is not None, "block left the error table"
        assert e["errors"] <= n, f"errors jumped to {e['errors']} (waiting for {n}): {seen}"
        return e if e["errors"] == n else None

    p = f.ctl_raw("block", "get", h, "-o", os.path.join(tmp, "out"))
    e1 = wait_for(lambda: entry_with(1), 2, what="errors = 1")
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert re.search(rf"block {h} is missing", p.stderr), p.stderr
    assert metric(f, "farmd_block_missing_total") == 1
    assert stat(f, h)["state"] == "error"
    assert stat(f, other)["state"] == "ok"
    assert list(errors(f)) == [h]
    assert "missing" in e1["reason"], e1
    assert e1["next_try_ms"] - e1["last_try_ms"] == base, e1
    seen.append(e1)
    # Natural retries: each one no earlier than its next_try, promptly after it.
    for n, gap in ((2, 2 * base), (3, 4 * base)):
        prev = seen[-1]
        e = wait_for(lambda: entry_with(n), (prev["next_try_ms"] - prev["last_try_ms"]) / 1000 + 10,
                     interval=0.05, what=f"errors = {n}")
        assert e["last_try_ms"] >= prev["next_try_ms"], f"retried before its back-off: {prev} {e}"
        assert e["next_try_ms"] - e["last_try_ms"] == gap, (n, e)
        assert "missing" in e["reason"], e
        seen.append(e)
    assert metric(f, "farmd_resync_failures_total") >= 2
    assert metric(f, "farmd_block_errors") == 1
    assert stat(f, other)["state"] == "ok" and list(errors(f)) == [h]

    # retry-now: due at once, long before the 4-base back-off.
    e3 = seen[-1]
    assert f.ctl_json("block", "retry-now", h[:12]) == {"queued": 1}
    e4 = wait_for(lambda: entry_with(4), 10, interval=0.02, what="errors = 4 after retry-now")
    # By farmd's own clock: retried before its back-off had passed.
    assert e4["last_try_ms"] < e3["next_try_ms"], (e3, e4)
    assert e4["next_try_ms"] - e4["last_try_ms"] == 8 * base, e4
    assert f.ctl_json("block", "retry-now", "--all") == {"queued": 1}
    e5 = wait_for(lambda: entry_with(5), 2, interval=0.02, what="errors = 5 after retry-now --all")
    assert e5["next_try_ms"] - e5["last_try_ms"] == 16 * base, e5
    # The table is persistent: the count and back-off survive a restart.
    restart(f)
    e = errors(f)[h]
    assert e["errors"] == 5 and e["next_try_ms"] == e5["next_try_ms"], (e, e5)
    assert stat(f, h)["state"] == "error"
    # And the missing block can still be repaired by a put.
    assert put(f, tmp, data, name="again") == h
    assert errors(f) == {} and stat(f, h)["state"] == "ok"
    assert get(f, tmp, h) == data


# ---- 4. refcounts and GC ------------------------------------------------------

def test_gc_after_rm(tmp):
    # gc_delay scales with the machine as it is when farmd starts: "a put
    # during the delay keeps the block" needs an rm and a put within one
    # delay, and under ASan on a busy machine two farmctl calls took longer
    # than 1 s.
    delay = min(10, max(1, math.ceil(slow_now())))
    f = farmd(tmp, config=cfg(gc_delay="%ds" % delay))
    a = os.urandom(40 * 1024)
    ha = put(f, tmp, a)
    path = block_path(f, ha)
    t0 = time.monotonic()
    out = f.ctl_json("block", "rm", ha)
    assert out == {"hash": ha, "refcount": 0}, out
    st = stat(f, ha)
    assert st["refcount"] == 0 and st["state"] == "unreferenced", st
    wait_for(lambda: not os.path.exists(path), 5, interval=0.02, what="collected file gone")
    assert time.monotonic() - t0 >= delay, "collected before gc_delay passed"
    wait_for(lambda: stat(f, ha) is None, 2, what="stat: no such block")
    p = f.ctl_raw("block", "get", ha, "-o", os.path.join(tmp, "out"))
    assert p.returncode == 1 and "no such block" in p.stderr, p.stderr
    # Counted on the loop when the I/O thread's completion arrives, which
    # on a loaded machine may be after the row is gone (seen under ASan).
    wait_for(lambda: metric(f, "farmd_blocks_collected_total") == 1, 5,
             what="the collection counted")
    assert metric(f, "farmd_blocks") == 0 and metric(f, "farmd_block_stored_bytes") == 0
    assert errors(f) == {}

    # rm with references left: nothing is collected.
    b = os.urandom(40 * 1024)
    hb = put(f, tmp, b, name="b")
    put(f, tmp, b, name="b2")
    assert f.ctl_json("block", "rm", hb)["refcount"] == 1
    # A put during the delay keeps the block.
    c = os.urandom(40 * 1024)
    hc = put(f, tmp, c, name="c")
    assert f.ctl_json("block", "rm", hc)["refcount"] == 0
    assert put(f, tmp, c, name="c2") == hc
    # Inline blocks are collected too.
    s = os.urandom(100)
    hs = put(f, tmp, s, name="s")
    assert f.ctl_json("block", "rm", hs)["refcount"] == 0
    # The GC queue runs in due order and hs was queued last: once hs is
    # collected, the items of hb and hc have been looked at too.
    wait_for(lambda: stat(f, hs) is None, 5 + 3 * delay, interval=0.05,
             what="unreferenced inline block collected")
    for h, data in ((hb, b), (hc, c)):
        assert os.path.exists(block_path(f, h)), f"block {h} collected while referenced"
        st = stat(f, h)
        assert st["refcount"] == 1 and st["state"] == "ok", st
        assert get(f, tmp, h) == data
    assert stat(f, hs) is None, "unreferenced inline block not collected"
    assert metric(f, "farmd_blocks_collected_total") == 2
    # rm below zero and rm of an unknown block are errors.
    assert f.ctl_json("block", "rm", hc)["refcount"] == 0
    p = f.ctl_raw("block", "rm", hc)
    assert p.returncode == 1, (p.returncode, p.stderr)
    p = f.ctl_raw("block", "rm", "ab" * 32)
    assert p.returncode == 1 and "no such block" in p.stderr, (p.returncode, p.stderr)

    # The GC queue is persistent: kill -9 during the delay, it still happens.
    f.kill9()
    f.start()
    wait_for(lambda: not os.path.exists(block_path(f, hc)), 5, what="GC after a kill -9")
    wait_for(lambda: stat(f, hc) is None, 2, what="row gone after a kill -9")
    assert get(f, tmp, hb) == b


def test_collected_block_leaves_error_table(tmp):
    f = farmd(tmp, config=cfg(gc_delay="1s"))
    # A referenced block goes bad, then is no longer needed.
    a = os.urandom(20 * 1024)
    ha = put(f, tmp, a, name="a")
    flip_byte(block_path(f, ha))
    assert f.ctl_raw("block", "get", ha, "-o", os.path.join(tmp, "o")).returncode == 1
    assert list(errors(f)) == [ha]
    f.ctl("block", "rm", ha)
    # An unreferenced block waiting for GC is found missing by a read.
    b = os.urandom(20 * 1024)
    hb = put(f, tmp, b, name="b")
    f.ctl("block", "rm", hb)
    os.unlink(block_path(f, hb))
    assert f.ctl_raw("block", "get", hb, "-o", os.path.join(tmp, "o")).returncode == 1
    wait_for(lambda: stat(f, ha) is None and stat(f, hb) is None, 5, what="both collected")
    # Nothing is left to repair: neither may stay listed as a block error.
    try:
        wait_for(lambda: errors(f) == {}, 3, what="error table empty after GC")
    except AssertionError:
        left = {h: (e["errors"], e["reason"], e["next_try_ms"]) for h, e in errors(f).items()}
        raise AssertionError(f"collected blocks still listed as errors (a = {ha[:16]}, rm'd while "
                             f"listed; b = {hb[:16]}, found missing while unreferenced): {left}, "
                             f"resync queue {metric(f, 'farmd_resync_queue_length'):.0f}")
    assert metric(f, "farmd_block_errors") == 0


def test_repaired_block_collected_after_rm(tmp):
    # Regression: the resync item left by a corruption (due at its 60 s
    # back-off) must not shadow the GC item of a later rm: refcount 0
    # always brings collection within gc_delay plus one queue pass.
    f = farmd(tmp, config=cfg(gc_delay="1s", resync_retry_base="60s"))
    data = os.urandom(20 * 1024)
    h = put(f, tmp, data)
    path = block_path(f, h)
    flip_byte(path)
    assert f.ctl_raw("block", "get", h, "-o", os.path.join(tmp, "o")).returncode == 1
    assert list(errors(f)) == [h]
    # The queue has taken the item and put it back at its back-off.
    wait_for(lambda: sql(f, f"select count(*) from resync_queue where hash = x'{h}' and "
                         f"due_ms >= {errors(f)[h]['next_try_ms']}") == "1", 10,
             what="the corruption's item requeued at its back-off")
    assert put(f, tmp, data, name="again") == h            # repaired
    assert errors(f) == {} and stat(f, h)["state"] == "ok"
    # The repair reschedules the item: nothing is left waiting for a
    # back-off that no longer applies.
    wait_for(lambda: metric(f, "farmd_resync_queue_length") == 0, 10,
             what="the corruption's resync item gone after the repair")
    assert f.ctl_json("block", "rm", h)["refcount"] == 1
    assert f.ctl_json("block", "rm", h)["refcount"] == 0
    # 1 s of delay; the limit is for progress on a busy machine, far below
    # the 60 s back-off that shadowed it.
    wait_for(lambda: not os.path.exists(path) and stat(f, h) is None, 20,
             what="repaired, then unreferenced block collected")
    assert not os.path.exists(path + ".corrupted")
    # Counted when the unlink's completion reaches the loop, which may be
    # after the row is gone (seen in CI: the counter read 0 here).
    wait_for(lambda: metric(f, "farmd_blocks_collected_total") == 1, 10,
             what="the collection counted")
    # Same with a repair by a put while the block was unreferenced: the
    # put takes a reference, a later rm starts the delay afresh.
    h2 = put(f, tmp, os.urandom(20 * 1024), name="b")
    os.unlink(block_path(f, h2))
    assert f.ctl_raw("block", "get", h2, "-o", os.path.join(tmp, "o")).returncode == 1
    # Its error goes with its row: with the unlink slowed (fault
    # injection: 100 ms), no answer lists an error for a block stat no
    # longer knows.
    f.ctl("debug", "fault", "block", "slow-delete")
    f.ctl("block", "rm", h2)
    wait_for(lambda: stat(f, h2) is None, 20, what="missing, unreferenced block collected")
    assert errors(f) == {}


def test_concurrent_purge_and_put_same_hashes(tmp):
    # Regression: work on one hash that changes its file is serialised (a
    # put that meets its hash being deleted waits for the delete).  Past 64
    # deletes in flight that promise silently stopped holding: a put of a
    # hash just purged renamed its fresh file into place while the queued
    # unlink was still to come, and the unlink removed it: an acknowledged
    # block with a row and no file.  Deletes are slowed down (fault
    # injection: 100 ms each) so that 80 are in flight; then blocks are
    # purged and put straight back, alone and 20 at once.
    f = farmd(tmp, config=CFG)
    f.ctl("debug", "fault", "block", "slow-delete")
    d = os.path.join(tmp, "in")
    os.makedirs(d)
    fill = [write(d, f"fill{i}", os.urandom(8 * 1024)) for i in range(80)]
    blobs = [os.urandom(64 * 1024) for _ in range(22)]
    paths = [write(d, str(i), b) for i, b in enumerate(blobs)]
    hashes = put_files(f, paths)
    fill_hashes = put_files(f, fill)
    admin = Client(f.socket, timeout=120 * SLOW)

    def purge_put(i):
        c = Client(f.socket, timeout=120 * SLOW)
        c.request(["block", "purge", hashes[i]])
        out = c.put(paths[i])
        c.s.close()
        assert out[3].decode().strip() == hashes[i], out
    def refill():
        for path in fill:
            admin.put(path)
    singles = 3 if SANITIZED else 8
    for batch in [[i] for i in range(singles)] + [list(range(singles, 22))]:
        for h in fill_hashes:                       # 80 deletes in flight
            admin.request(["block", "purge", h])
        parallel(purge_put, batch, jobs=len(batch))
        wait_for(lambda: not any(os.path.exists(block_path(f, h)) for h in fill_hashes), 120,
                 what="the slowed deletes drained")
        lost = [hashes[i][:16] for i in batch if not os.path.exists(block_path(f, hashes[i]))]
        assert not lost, f"acknowledged puts lost their file to a racing purge: {lost}"
        for i in batch:
            st = stat(f, hashes[i])
            assert st["state"] == "ok" and st["refcount"] == 1, st
            assert get(f, tmp, hashes[i]) == blobs[i]
        refill()
    admin.s.close()
    assert errors(f) == {}
    assert metric(f, "farmd_blocks") == len(hashes) + len(fill_hashes)


def test_full_disk_says_no_space(tmp):
    # Regression: a short write() does not set errno, and a put on a full
    # disk was reported as "...: Success".  The state dir sits on a small
    # tmpfs; the put that does not fit says why, nothing stored is lost,
    # and once the failed put's bytes are returned the store works on.
    assert os.geteuid() == 0, "this test mounts a tmpfs: run it as root (scripts/test does)"
    mnt = os.path.join(tmp, "small")
    os.makedirs(mnt)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", mnt], check=True)
    try:
        for compression in ("none", "zstd:3"):
            sub = os.path.join(mnt, compression.replace(":", ""))
            os.makedirs(sub)
            f = farmd(sub, config=cfg(compression=compression))
            kept = os.urandom(256 * 1024)           # random: zstd cannot shrink it
            hk = put(f, tmp, kept, name="kept")
            big = write(tmp, "big", os.urandom(16 * MIB))
            p = f.ctl_raw("block", "put", big)
            assert p.returncode == 1, (compression, p.returncode, p.stderr)
            assert "No space left on device" in p.stderr, (compression, p.stderr)
            assert "Success" not in p.stderr, (compression, p.stderr)
            assert p.stderr.count("\n") == 1, p.stderr
            assert tmp_files(f) == [], tmp_files(f)
            assert metric(f, "farmd_block_reserved_bytes") == 0
            assert get(f, tmp, hk) == kept
            assert put(f, tmp, os.urandom(64 * 1024), name="after")
            assert f.stop() == 0, f.log()[-2000:]
            f.cleanup()
    finally:
        for obj in list(_live):
            obj.cleanup()
        subprocess.run(["umount", "-l", mnt], check=False)


def test_put_killed_between_rename_and_commit(tmp):
    # Regression: a put killed after its file was renamed into blocks/ab/cd/
    # but before its row committed left a file that nothing ever removed
    # and no budget counted.  Its reservation names the hash; the next
    # start removes the file (the put was never acknowledged).
    for compression in ("none", "zstd:3"):
        sub = os.path.join(tmp, compression.replace(":", ""))
        os.makedirs(sub)
        f = farmd(sub, config=cfg(compression=compression))
        kept = os.urandom(64 * 1024)
        hk = put(f, tmp, kept, name="kept")
        f.ctl("debug", "fault", "block", "commit")
        data = os.urandom(96 * 1024)
        h = sha(data)
        p = f.ctl_raw("block", "put", write(tmp, "doomed", data))
        assert p.returncode != 0, "the put was acknowledged although farmd was killed"
        assert f.proc.wait(30 * SLOW) == -signal.SIGKILL, f.proc.returncode
        f.logf.close()
        z = compression != "none"
        assert os.path.exists(block_path(f, h, z)), "the fault did not leave the renamed file"
        assert sql(f, f"select count(*) from blocks where hash = x'{h}'") == "0"
        f.start()
        assert not os.path.exists(block_path(f, h, z)), "orphan block file kept after restart"
        assert re.search(rf"removed {re.escape(block_path(f, h, z))}, left without its row",
                         f.log()), f.log()[-2000:]
        assert stat(f, h) is None and get(f, tmp, hk) == kept
        assert metric(f, "farmd_block_stored_bytes") == \
            int(sql(f, "select coalesce(sum(stored), 0) from blocks"))
        # The same bytes can be stored afterwards; and the file of a block
        # that has a row (a repair killed before its commit) is the
        # block's own copy: the clean-up leaves it.
        assert put(f, tmp, data, name="again") == h and get(f, tmp, h) == data
        os.unlink(block_path(f, hk, z))
        assert f.ctl_raw("block", "get", hk, "-o", os.path.join(tmp, "o")).returncode == 1
        f.ctl("debug", "fault", "block", "commit")
        f.ctl_raw("block", "put", write(tmp, "repair", kept))
        assert f.proc.wait(30 * SLOW) == -signal.SIGKILL, f.proc.returncode
        f.logf.close()
        f.start()
        assert os.path.exists(block_path(f, hk, z)), "the clean-up removed a stored block's file"
        assert get(f, tmp, hk) == kept and get(f, tmp, h) == data
        assert stat(f, hk)["refcount"] == 1, stat(f, hk)
        assert f.stop() == 0


def test_purge(tmp):
    f = farmd(tmp, config=cfg(gc_delay="1h"))
    a = os.urandom(20 * 1024)
    ha = put(f, tmp, a)
    put(f, tmp, a, name="a2")
    p = f.ctl_raw("block", "purge", ha)
    assert p.returncode == 0, p.stderr
    assert "warning" in p.stderr and "2 references" in p.stderr, p.stderr
    wait_for(lambda: not os.path.exists(block_path(f, ha)), 2, what="purged file gone")
    assert stat(f, ha) is None
    # An unreferenced block: purged at once (no GC delay), no warning.
    b = os.urandom(20 * 1024)
    hb = put(f, tmp, b, name="b")
    f.ctl("block", "rm", hb)
    p = f.ctl_raw("block", "purge", hb)
    assert p.returncode == 0 and p.stderr == "", (p.returncode, p.stderr)
    wait_for(lambda: not os.path.exists(block_path(f, hb)), 2, what="purged file gone")
    # A block in the error table leaves it when purged.
    c = os.urandom(20 * 1024)
    hc = put(f, tmp, c, name="c")
    os.unlink(block_path(f, hc))
    assert f.ctl_raw("block", "get", hc, "-o", os.path.join(tmp, "o")).returncode == 1
    assert list(errors(f)) == [hc]
    f.ctl("block", "purge", hc)
    assert errors(f) == {} and stat(f, hc) is None
    assert metric(f, "farmd_blocks") == 0 and metric(f, "farmd_block_stored_bytes") == 0
    p = f.ctl_raw("block", "purge", hc)
    assert p.returncode == 1, (p.returncode, p.stderr)
    # Purged blocks can be stored again.
    assert put(f, tmp, a, name="a3") == ha and get(f, tmp, ha) == a


def test_tmp_files_removed_at_start(tmp):
    f = farmd(tmp, config=CFG)
    data = os.urandom(10 * 1024)
    h = put(f, tmp, data)
    assert f.stop() == 0
    for name in ("123-1.tmp", "123-2.tmp", "junk"):
        write(os.path.join(f.state_dir, "blocks", "tmp"), name, os.urandom(5000))
    f.start()
    assert tmp_files(f) == [], tmp_files(f)
    assert re.search(r"removed 3 temp files", f.log()), f.log()[-2000:]
    assert get(f, tmp, h) == data


# ---- 5. scrub ---------------------------------------------------------------

def scrub_status(f):
    return f.ctl_json("scrub", "status")


def scrub_finished(f):
    st = scrub_status(f)
    return st["state"] in ("idle", "done") and st["checked"] > 0 and st


def make_blocks(f, tmp, n, size=4096):
    d = os.path.join(tmp, "blocks-in")
    os.makedirs(d, exist_ok=True)
    blobs = [os.urandom(size) for _ in range(n)]
    paths = [write(d, str(i), b) for i, b in enumerate(blobs)]
    hashes = parallel(lambda p: bulk_put(f, p), paths, 4)
    assert hashes == [sha(b) for b in blobs]
    return hashes


def test_status_answers_during_1gib_put_stream(tmp):
    # Hashing, writing and fsync of large blocks happen off the event loop:
    # status and metrics keep answering, over one admin connection, while
    # 1 GiB of 64 MiB blocks streams in, and the answers show puts in
    # flight.  How fast they answer is a scripts/bench figure; here each
    # answer only has a generous limit for progress.
    f = farmd(tmp)
    chunk = os.urandom(MIB)
    paths = []
    for i in range(16):
        p = os.path.join(tmp, "big%02d" % i)
        with open(p, "wb") as fh:
            fh.write(i.to_bytes(8, "big"))         # 16 distinct blocks
            for _ in range(64):
                fh.write(chunk)
        paths.append(p)
    answers, in_flight, done = [], [], threading.Event()
    client = Client(f.socket, timeout=60 * SLOW)

    def poll():
        while not done.is_set():
            st = json.loads(client.request(["status"], json=True)[4])
            assert st["state"] == "running", st
            text = client.request(["metrics"])[3].decode()
            m = re.search(r"^farmd_block_reserved_bytes (\d+)$", text, re.M)
            assert m, "farmd_block_reserved_bytes missing from metrics"
            answers.append(1)
            if int(m.group(1)) > 0:
                in_flight.append(int(m.group(1)))
            time.sleep(0.005)
    errs = []

    def poll_safe():
        try:
            poll()
        except Exception as e:  # noqa: BLE001 - reported below
            errs.append(e)
    t = threading.Thread(target=poll_safe)
    t.start()
    try:
        hashes = put_files(f, paths, jobs=4)
    finally:
        done.set()
        t.join()
    assert not errs, errs
    print(f"     {len(answers)} status+metrics answers during 1 GiB of puts, "
          f"{len(in_flight)} with puts in flight", flush=True)
    assert len(answers) >= 20, f"only {len(answers)} answers during the put stream"
    assert len(in_flight) >= 10, f"only {len(in_flight)} answers saw a put in flight"
    for p, h in zip(paths, hashes):
        assert h == hashlib.sha256(read(p)).hexdigest()
        os.unlink(p)


def test_scrub_finds_corruptions(tmp):
    f = farmd(tmp, config=cfg(scrub_tranquility="0"))
    hashes = make_blocks(f, tmp, 1000)
    bad = random.sample(hashes, 3)
    for h in bad:
        flip_byte(block_path(f, h))
    assert errors(f) == {}
    f.ctl("scrub", "start")
    st = wait_for(lambda: scrub_finished(f), 60, interval=0.1, what="scrub finished")
    assert st["checked"] == 1000, st
    assert st["corruptions"] == 3, st
    assert set(errors(f)) == set(bad), (sorted(errors(f)), sorted(bad))
    for h in bad:
        assert stat(f, h)["state"] == "error"
        assert os.path.exists(block_path(f, h) + ".corrupted"), h
    good = [h for h in hashes if h not in bad]
    assert all(os.path.exists(block_path(f, h)) for h in good), "scrub moved good blocks"
    # The run shows in metrics, with its duration.
    assert metric(f, "farmd_scrub_running") == 0
    assert metric(f, "farmd_scrub_checked_blocks") == 1000
    assert metric(f, "farmd_scrub_corruptions") == 3
    assert metric(f, "farmd_scrub_last_run_seconds") == \
        (st["last_done_ms"] - st["started_ms"]) / 1000 > 0, st


def test_scrub_finds_a_longer_file(tmp):
    # Plotting reads a block straight into its room of the recorded size
    # and checks those bytes (blockfile.c): bytes appended to the file are
    # never read there, so it is the scrub, reading whole files, that
    # must find the file's length wrong.
    f = farmd(tmp, config=cfg(scrub_tranquility="0"))
    hashes = make_blocks(f, tmp, 20)
    longer = hashes[7]
    with open(block_path(f, longer), "ab") as fh:
        fh.write(b"\0")
    f.ctl("scrub", "start")
    st = wait_for(lambda: scrub_finished(f), 60, interval=0.1, what="scrub finished")
    assert st["checked"] == 20 and st["corruptions"] == 1, st
    assert set(errors(f)) == {longer}, errors(f)
    assert stat(f, longer)["state"] == "error"


def test_scrub_resumes_after_kill9(tmp):
    # The slow fault makes the scrub sleep at least 5 ms per block, so
    # 1000 blocks take over 5 s on any machine, well over the 3 s this
    # test lets it run before the kill (tranquility alone is relative to
    # the machine: on a fast one 1000 blocks at 40 took 2.2 s).  Busy
    # machines still go by tranquility, which bounds the sleep from above.
    # The fault does not survive the restart: the resumed run goes fast.
    f = farmd(tmp, config=cfg(scrub_tranquility="10"))
    make_blocks(f, tmp, 1000)
    f.ctl("debug", "fault", "scrub", "slow")
    f.ctl("scrub", "start")
    t0 = time.monotonic()
    samples = []                            # (seconds since start, checked)

    def far_enough():
        s = scrub_status(f)
        samples.append((time.monotonic() - t0, s["checked"]))
        assert s["state"] == "running", \
            f"scrub ended before it could be killed: {s}"
        return samples[-1][0] >= 3.0 and s["checked"] >= 200
    wait_for(far_enough, 60, interval=0.05, what="scrub 3 s under way")
    f.kill9()
    killed_t, killed_at = samples[-1]
    # Blocks the scrub could check between that last answer and the kill
    # landing (on a busy machine the kill can take a few blocks' time).
    t_kill = time.monotonic() - t0
    t_prev, c_prev = samples[0]
    for t, c in samples:
        if t <= killed_t - 1.0:
            t_prev, c_prev = t, c
    rate = (killed_at - c_prev) / max(killed_t - t_prev, 0.001)
    slack = 5 + math.ceil(rate * (t_kill - killed_t))
    # Progress is saved as it goes (every 500 ms, at the next block): what
    # was checked 2.5 s before the kill must not be checked again.  (The
    # margin is for a busy machine, where one block can take long.)
    floor = max(c for t, c in samples if t <= killed_t - 2.5)
    f.start()
    st = scrub_status(f)
    assert st["state"] in ("running", "paused"), f"scrub did not survive the restart: {st}"
    assert st["checked"] > 0 and st["position"], st
    if st["state"] == "paused":
        f.ctl("scrub", "resume")
    st = wait_for(lambda: scrub_finished(f), 120, interval=0.1, what="resumed scrub finished")
    assert 1000 <= st["checked"] <= 1005 and st["corruptions"] == 0, st
    # Blocks verified in this run (the counter starts at 0 with the process):
    # what the count includes beyond them was carried over from before the
    # kill, and it skipped that many blocks instead of starting over.
    read_blocks = metric(f, "farmd_block_read_bytes_total") / 4096
    carried = st["checked"] - read_blocks
    assert max(floor, 1) <= carried <= killed_at + slack, \
        f"scrub started over or lost its place: {read_blocks:.0f} blocks read after the " \
        f"restart, checked {st['checked']}; before the kill {killed_at} checked, " \
        f"{floor} 2.5 s earlier, up to {slack - 5} more while the kill landed"


def test_scrub_pause_resume_cancel(tmp):
    # The slow fault holds the run to 5 ms a block or more: 1000 blocks
    # last over 5 s on any machine, well past the commands below.  (At
    # tranquility 20 alone, 300 blocks were checked before the pause on a
    # fast host whose scrub ran at about 1 ms a block.)
    f = farmd(tmp, config=cfg(scrub_tranquility="20"))
    make_blocks(f, tmp, 1000)
    f.ctl("debug", "fault", "scrub", "slow")
    f.ctl("scrub", "start")
    wait_for(lambda: scrub_status(f)["checked"] >= 20, 30, what="scrub under way")
    p = f.ctl_raw("scrub", "start")
    assert p.returncode == 1 and "running" in p.stderr, (p.returncode, p.stderr)
    f.ctl("scrub", "pause")
    st = wait_for(lambda: (lambda s: s["state"] == "paused" and s)(scrub_status(f)), 5,
                  what="scrub paused")
    time.sleep(0.5)
    assert scrub_status(f)["checked"] == st["checked"], "a paused scrub kept checking"
    f.ctl("scrub", "resume")
    wait_for(lambda: scrub_status(f)["checked"] > st["checked"], 10, what="scrub resumed")
    f.ctl("scrub", "cancel")
    st = wait_for(lambda: (lambda s: s["state"] in ("idle", "done", "cancelled") and s)(
        scrub_status(f)), 5, what="scrub cancelled")
    time.sleep(0.5)
    assert scrub_status(f)["checked"] == st["checked"] < 1000, scrub_status(f)


def test_scrub_runs_on_schedule(tmp):
    # scrub_interval 3s: the first run is due 2.5-3.5 s after the first
    # start, each next one 2.5-3.5 s after the last ended (farmd's own
    # clock).  On a busy machine the setup may still be going on when the
    # first run starts; a run that starts after it sees all of it.
    t0 = time.time() * 1000
    f = farmd(tmp, config=cfg(scrub_interval="3s", scrub_tranquility="0"))
    st = scrub_status(f)
    assert t0 + 2500 <= st["next_run_ms"] <= time.time() * 1000 + 3500, (t0, st)
    hashes = make_blocks(f, tmp, 20)
    flip_byte(block_path(f, hashes[7]))
    setup_done = time.time() * 1000
    first = wait_for(lambda: (lambda s: s["last_done_ms"] > 0 and s)(scrub_status(f)), 10,
                     interval=0.1, what="the first scheduled scrub run")
    assert first["started_ms"] >= t0 + 2500, (t0, first)
    assert first["last_done_ms"] + 2500 <= first["next_run_ms"] <= first["last_done_ms"] + 3500, \
        first
    st = wait_for(lambda: (lambda s: s["last_done_ms"] > s["started_ms"] > setup_done and s)(
        scrub_status(f)), 10, interval=0.1, what="a scheduled run after the setup")
    assert st["state"] == "idle" and st["checked"] == 20 and st["corruptions"] == 1, st
    assert list(errors(f)) == [hashes[7]]
    assert "scrub: scheduled run starting" in f.log()


# ---- 6. budget ----------------------------------------------------------------

BUDGET_RE = (r"blocks budget exhausted: (\d+) bytes used \+ (\d+) reserved \+ (\d+) requested "
             r"exceeds the limit of (\d+) bytes")


def test_budget_refuses_and_recovers(tmp):
    f = farmd(tmp, config=cfg(budget="2M", gc_delay="1s"))
    a, b, c, d = (os.urandom(MIB) for _ in range(4))
    ha = put(f, tmp, a, name="a")
    put(f, tmp, b, name="b")
    path_c = write(tmp, "c", c)
    p = f.ctl_raw("block", "put", path_c)
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    m = re.search(BUDGET_RE, p.stderr)
    assert m, p.stderr
    assert tuple(int(x) for x in m.groups()) == (2 * MIB, 0, MIB, 2 * MIB), p.stderr
    assert stat(f, sha(c)) is None
    assert tmp_files(f) == [] and sql(f, "select count(*) from reservations") == "0"
    assert metric(f, "farmd_block_reserved_bytes") == 0
    assert metric(f, "farmd_block_stored_bytes") == 2 * MIB
    # Refused puts do not eat the budget: free one block, then it fits.
    f.ctl("block", "rm", ha)
    wait_for(lambda: stat(f, ha) is None, 5, what="a collected")
    assert metric(f, "farmd_block_stored_bytes") == MIB
    assert put(f, tmp, c, name="c") == sha(c)
    assert get(f, tmp, sha(c)) == c
    p = f.ctl_raw("block", "put", write(tmp, "d", d))
    assert p.returncode == 1 and re.search(BUDGET_RE, p.stderr), p.stderr
    # Concurrent puts into room for one: reservations make exactly one win.
    f.ctl("block", "rm", sha(c))
    wait_for(lambda: stat(f, sha(c)) is None, 5, what="c collected")
    paths = [write(tmp, f"e{i}", os.urandom(MIB)) for i in range(4)]
    procs = [subprocess.Popen([FARMCTL, "-s", f.socket, "block", "put", pth],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for pth in paths]
    results = [(pr.wait(30 * SLOW), pr.stderr.read()) for pr in procs]
    for pr in procs:
        pr.stdout.close()
        pr.stderr.close()
    assert sum(rc == 0 for rc, _ in results) == 1, results
    assert all(re.search(BUDGET_RE, err) for rc, err in results if rc != 0), results
    assert metric(f, "farmd_block_reserved_bytes") == 0
    assert metric(f, "farmd_block_stored_bytes") == 2 * MIB


def test_reservations_returned_after_kill9(tmp):
    f = farmd(tmp, config=cfg(budget="1G"))
    files = [write(tmp, f"big{i}", os.urandom(32 * MIB)) for i in range(8)]
    stale = 0
    for attempt in range(5):
        stop = threading.Event()

        def stream(i):
            k = i
            while not stop.is_set():
                f.ctl_raw("block", "put", files[k % len(files)])
                k += 4
        threads = [threading.Thread(target=stream, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: metric(f, "farmd_block_reserved_bytes") > 0, 10, interval=0.005,
                     what="a reservation in flight")
        finally:
            f.kill9()
            stop.set()
            for t in threads:
                t.join()
        stale = int(sql(f, "select coalesce(sum(bytes), 0) from reservations"))
        mark = len(f.log())
        f.start()
        if stale > 0:
            break
    assert stale > 0, "never caught a reservation in state.db at the kill"
    assert sql(f, "select count(*) from reservations") == "0"
    assert metric(f, "farmd_block_reserved_bytes") == 0
    assert f"returned {stale} bytes of reservations left by the previous run" in f.log()[mark:], \
        f.log()[mark:]
    assert tmp_files(f) == []
    # What the budget counts as used matches what is stored.
    stored = int(sql(f, "select coalesce(sum(stored), 0) from blocks"))
    assert metric(f, "farmd_block_stored_bytes") == stored
    h = put(f, tmp, os.urandom(MIB), name="after")
    assert stat(f, h)["state"] == "ok"
    assert metric(f, "farmd_block_reserved_bytes") == 0


# ---- 7. kill -9 during concurrent puts ------------------------------------------

def test_kill9_during_concurrent_puts(tmp):
    seed = int(os.environ.get("FARMD_TEST_SEED", random.randrange(1 << 30)))
    print(f"     seed {seed}", flush=True)
    rng = random.Random(seed)
    d = os.path.join(tmp, "payloads")
    os.makedirs(d)
    sizes = ([rng.randrange(0, INLINE_MAX) for _ in range(100)] +
             [rng.randrange(INLINE_MAX, 128 * 1024) for _ in range(100)] +
             [rng.randrange(256 * 1024, 2 * MIB) for _ in range(20)])
    payloads = []                       # (path, hash)
    for i, n in enumerate(sizes):
        data = os.urandom(n)
        payloads.append((write(d, str(i), data), sha(data)))
    by_hash = {h: p for p, h in payloads}
    f = farmd(tmp, config=CFG)
    lock = threading.Lock()
    attempts, successes = {}, {}
    rounds, per_round, nthreads = CRASH_ROUNDS, 500, 16
    # A round counts only when it acknowledged at least this many inline
    # and file-backed puts before the kill; one that did not (a busy
    # machine starts farmctl slowly) is run again, never waved through.
    min_acked = 3
    tmp_seen = 0
    counted, tries, acked = 0, 0, {"inline": 0, "plain": 0, "zstd": 0}
    zstd_now = False
    while counted < rounds:
        assert tries < 3 * rounds, f"only {counted} of {tries} rounds acknowledged " \
            f"{min_acked} inline and {min_acked} file puts before the kill"
        rnd, tries = tries, tries + 1
        stop = threading.Event()
        ok, bad, wrong = [], [], []

        def worker(i):
            r = random.Random(seed * 1000 + rnd * nthreads + i)
            for _ in range(per_round // nthreads + 1):
                if stop.is_set():
                    return
                path, h = payloads[r.randrange(len(payloads))]
                with lock:
                    attempts[h] = attempts.get(h, 0) + 1
                p = subprocess.run([FARMCTL, "-s", f.socket, "block", "put", path],
                                   capture_output=True, text=True)
                done = time.monotonic()
                with lock:
                    if p.returncode == 0 and p.stdout.strip() != h:
                        wrong.append((path, h, p.stdout))
                    elif p.returncode == 0:
                        ok.append(h)
                    else:
                        bad.append((done, p.returncode, p.stderr.strip()))
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(nthreads)]
        for t in threads:
            t.start()
        # A random moment after the round has the acknowledgements it
        # counts on, so the kill lands among puts, not among farmctl
        # processes starting up (at load 16 a fixed 0-0.5 s after the first
        # answer let only 14 of 60 rounds count).
        def enough():
            with lock:
                if bad:
                    return True
                n_in = sum(1 for h in ok if os.path.getsize(by_hash[h]) < INLINE_MAX)
                return n_in >= min_acked and len(ok) - n_in >= min_acked
        wait_for(enough, 30, interval=0.005, what=f"round {rnd}: {min_acked} inline and file puts answered")
        time.sleep(rng.uniform(0, 0.5) * PACE)
        killed = time.monotonic()
        f.kill9()
        stop.set()
        for t in threads:
            t.join()
        assert not wrong, f"round {rnd}: put printed the wrong hash: {wrong[:3]}"
        early = [b for b in bad if b[0] < killed]
        assert not early, f"round {rnd}: puts failed while farmd was up: {early[:5]}"
        for h in ok:
            successes[h] = successes.get(h, 0) + 1
        n_inline = sum(1 for h in ok if os.path.getsize(by_hash[h]) < INLINE_MAX)
        n_file = len(ok) - n_inline
        if n_inline >= min_acked and n_file >= min_acked:
            counted += 1
            acked["inline"] += n_inline
            acked["zstd" if zstd_now else "plain"] += n_file
            # Each counted round flips compression: both kinds of files
            # get interrupted.
            zstd_now = not zstd_now
        tmp_seen += len(tmp_files(f))
        f.write_config(cfg(compression="zstd:3") if zstd_now else CFG)
        f.start()
        assert tmp_files(f) == [], f"round {rnd}: temp files left after start: {tmp_files(f)}"
        assert sql(f, "PRAGMA integrity_check") == "ok"
        # A file the kill left behind without its row is reconciled at start.
        named = {h + (".zst" if z == "1" else "") for h, z in
                 (line.split("|") for line in sql(f, "select lower(hex(hash)), compressed "
                                                   "from blocks where data is null").splitlines())}
        orphans = [p for p in block_files(f) if os.path.basename(p) not in named]
        assert not orphans, f"round {rnd}: block files without a row after start: {orphans[:5]}"
        # Every acknowledged put reads back verified.
        def check(h):
            out = os.path.join(tmp, "get-" + h)
            p = f.ctl_raw("block", "get", h, "-o", out)
            assert p.returncode == 0, f"round {rnd}: acknowledged block {h} lost: {p.stderr}"
            assert read(out) == read(by_hash[h]), f"round {rnd}: block {h} reads back wrong"
            os.unlink(out)
        parallel(check, sorted(set(ok)), jobs=4)
    # Refcounts: every acknowledged put counted, none counted that never ran.
    rows = dict(line.split("|") for line in
                sql(f, "select lower(hex(hash)), refcount from blocks").splitlines())
    for h, n in successes.items():
        assert int(rows.get(h, 0)) >= n, f"block {h}: {n} puts acknowledged, refcount {rows.get(h)}"
    for h, n in rows.items():
        assert h in attempts and int(n) <= attempts[h], f"block {h}: refcount {n}, " \
            f"{attempts.get(h, 0)} puts attempted"
    # Every row without inline data names an existing file.
    for line in sql(f, "select lower(hex(hash)), compressed from blocks "
                    "where data is null").splitlines():
        h, z = line.split("|")
        assert os.path.exists(block_path(f, h, z == "1")), f"row for {h} but no file"
    kinds = sql(f, "select count(*) from blocks where data is null group by compressed "
                "order by compressed").split()
    assert len(kinds) == 2, f"expected plain and zstd block files: {kinds}"
    assert errors(f) == {}
    assert metric(f, "farmd_blocks") == len(rows)
    assert min(acked.values()) >= rounds // 2 * min_acked, acked
    print(f"     {sum(successes.values())} puts acknowledged over {tries} kills "
          f"({counted} rounds counted; {acked}), {len(successes)} distinct blocks, "
          f"{tmp_seen} temp files cleaned", flush=True)


if __name__ == "__main__":
    run_tests(globals())
