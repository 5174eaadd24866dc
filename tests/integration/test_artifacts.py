"""Validation-code acceptance tests (issue 11; DESIGN.md sections 7, 8, 9):
code in force from the next height, rejected blocks and their replacement,
compile errors, hostile code, compile-worker death and one compile per id,
a corrupted artifact file, the prune rule, kill -9 mid-prepare and
mid-validation, and the artifacts budget.  One test per acceptance item.

    FARMD_BUILD=build python3 tests/integration/test_artifacts.py [test_name ...]
"""
import json
import os
import random
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

from harness import CRASH_ROUNDS, FARMCTL, PACE, SANITIZED, SLOW, farmd, metric, run_tests, wait_for  # noqa: E402
from test_history import (check_segments, expected, hstatus, ingest, ingest_paths,  # noqa: E402
                          parse_block, sha, hexsha, wait_archived, wait_settled, ZERO32)

KIB = 1 << 10
GEO = "[history]\npiece_size = 4K\npieces_per_segment = 4\n"
CFG = "[workers]\nencode = 1\njob_timeout = 10s\n" + GEO

REJECT_FF = """-- rejects a body whose first byte is 0xFF
function validate(block)
  if string.byte(block.body, 1) == 255 then
    return false, "first byte is 0xFF at height " .. block.height
  end
  return true
end
"""
ACCEPT = "function validate(block) return true end\n"


def art_cfg(**keys):
    return CFG + "[artifacts]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())


# ---- chains ----------------------------------------------------------------------

def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def encode_block(height, parent, body, code=""):
    """A packed ChainBlock (the field order of chain.proto)."""
    out = b"\x08" + _varint(height) + b"\x12" + _varint(len(parent)) + parent
    if body:
        out += b"\x1a" + _varint(len(body)) + body
    if code:
        c = code.encode()
        out += b"\x22" + _varint(len(c)) + c
    return out


def write_blk(d, h, data):
    os.makedirs(d, exist_ok=True)
    p = os.path.join(d, f"{h:06d}.blk")
    with open(p, "wb") as f:
        f.write(data)
    return p


def generate(tmp, n, code_src=None, code_height=None, body_size=KIB, seed="a", name="chain"):
    """`farmctl chain generate` (with --code FILE@HEIGHT): {height: bytes}, dir."""
    d = os.path.join(tmp, name)
    args = [FARMCTL, "chain", "generate", "--blocks", str(n), "--body-size", str(body_size),
            "--seed", seed, "--out", d]
    if code_src is not None:
        cf = os.path.join(tmp, name + ".lua")
        with open(cf, "w") as f:
            f.write(code_src)
        args += ["--code", f"{cf}@{code_height}"]
    p = subprocess.run(args, capture_output=True, text=True, timeout=60 * SLOW)
    assert p.returncode == 0, (args, p.stderr)
    blocks = {}
    for h in range(1, n + 1):
        with open(os.path.join(d, f"{h:06d}.blk"), "rb") as f:
            blocks[h] = f.read()
        b = parse_block(blocks[h])
        assert b["code"] == (code_src if h == code_height else ""), h
    return blocks, d


def build_chain(n, codes=None, body=lambda h: b"body %d" % h + bytes(200)):
    """A chain built here: {height: bytes}, codes = {height: source}."""
    blocks, parent = {}, ZERO32
    for h in range(1, n + 1):
        blocks[h] = encode_block(h, parent, body(h), (codes or {}).get(h, ""))
        parent = sha(blocks[h])
    return blocks


def ingest_blocks(f, tmp, blocks, name="in"):
    d = os.path.join(tmp, name)
    ingest_paths(f, [write_blk(d, h, b) for h, b in sorted(blocks.items())], procs=2)


def artifacts(f):
    return f.ctl_json("artifact", "list")


def compile_jobs(f):
    return metric(f, "farmd_artifact_compile_jobs_total")


def art_files(f):
    d = os.path.join(f.state_dir, "artifacts")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def tmp_ids(f):
    """{name: (inode, mtime_ns)} of the *.tmp files in artifacts/."""
    d = os.path.join(f.state_dir, "artifacts")
    out = {}
    for n in art_files(f):
        if n.endswith(".tmp"):
            try:
                st = os.stat(os.path.join(d, n))
            except FileNotFoundError:
                continue
            out[n] = (st.st_ino, st.st_mtime_ns)
    return out


def wait_rejected(f, height, timeout=30):
    return wait_for(lambda: (lambda s: s if [r["height"] for r in s["rejected"]] == [height]
                             else None)(hstatus(f)), timeout, interval=0.05,
                    what=f"a rejection at {height}")


def prepare(f, path):
    return f.ctl("artifact", "prepare", path).strip()


# ---- 1. code from the next height; a rejected block and its replacement ------------

def test_code_rejects_block_until_replaced(tmp):
    blocks, d = generate(tmp, 100, REJECT_FF, 50)
    assert all(parse_block(blocks[h])["body"][0] != 0xFF for h in blocks)
    good80 = blocks[80]
    body = parse_block(good80)["body"]
    bad80 = encode_block(80, sha(blocks[79]), b"\xff" + body[1:])
    f = farmd(tmp, config=CFG)
    paths = [os.path.join(d, f"{h:06d}.blk") for h in range(1, 101) if h != 80]
    ingest_paths(f, paths + [write_blk(os.path.join(tmp, "bad"), 80, bad80)], procs=2)
    st = wait_rejected(f, 80)
    st = wait_settled(f)
    assert st["archived_height"] == 79, st
    r = st["rejected"][0]
    assert r["hash"] == hexsha(bad80), (r, hexsha(bad80))
    assert "first byte is 0xFF at height 80" in r["reason"], r
    assert "first byte is 0xFF at height 80" in f.log()
    assert metric(f, "farmd_history_rejections_total") == 1
    # Heights 51..80 ran the code (50 itself was archived unvalidated).
    assert metric(f, "farmd_artifact_execute_seconds_count") >= 30
    [a] = artifacts(f)
    assert a["state"] == "prepared" and a["code_hash"] == hexsha(REJECT_FF.encode()), a
    # A good block 80 replaces the rejected one: archiving reaches the tip.
    ingest(f, 80, os.path.join(d, "000080.blk"))
    wait_archived(f, 100)
    st = wait_settled(f)
    assert st["archived_height"] == 100 and st["rejected"] == [], st
    want, fill = expected([blocks[h] for h in range(1, 101)], 4 * KIB, 4)
    check_segments(f, want, "validated chain")
    assert st["segment_fill_bytes"] == fill
    # The same bytes archive to the same segments as without code: the
    # blocks before the code's block give the segments a code-less chain
    # of the same seed gives.
    plain, _ = generate(tmp, 49, seed="a", name="plain")
    assert all(plain[h] == blocks[h] for h in range(1, 50))
    assert compile_jobs(f) == 1
    # The artifact families (histograms, by-kind and by-state) are valid
    # exposition.
    p = subprocess.run(["promtool", "check", "metrics"], input=f.ctl("metrics"),
                       capture_output=True, text=True, timeout=30 * SLOW)
    assert p.returncode == 0, p.stdout + p.stderr


# ---- 2. code that does not compile -------------------------------------------------

def test_syntax_error_rejects_block_compiled_once(tmp):
    bad = "function validate(block)\n  return true\n"          # no 'end'
    blocks, d = generate(tmp, 60, bad, 50)
    f = farmd(tmp, config=CFG)
    ingest_paths(f, [os.path.join(d, f"{h:06d}.blk") for h in range(1, 61)], procs=2)
    wait_rejected(f, 50)
    st = wait_settled(f)
    assert st["archived_height"] == 49, st
    reason = st["rejected"][0]["reason"]
    assert "does not compile" in reason and "'end' expected" in reason, reason
    [a] = artifacts(f)
    assert a["state"] == "failed" and "'end' expected" in a["error"] and a["failures"] == 1, a
    assert compile_jobs(f) == 1
    # Ten more blocks at 50 with the same code: each is rejected, none compiles.
    for i in range(10):
        alt = encode_block(50, sha(blocks[49]), b"alt %d" % i, bad)
        ingest(f, 50, write_blk(os.path.join(tmp, f"alt{i}"), 50, alt))
        wait_for(lambda: hstatus(f)["rejected"][0]["hash"] == hexsha(alt), 20,
                 what=f"alternative {i} rejected")
    assert compile_jobs(f) == 1
    assert metric(f, 'farmd_artifact_failures_total{kind="deterministic"}') == 1
    assert [x["failures"] for x in artifacts(f)] == [1]


# ---- 3. hostile code ---------------------------------------------------------------

HOSTILE = [
    ("endless loop", "function validate(b) while true do end end"),
    ("memory bomb", "function validate(b) local t, s = {}, 'x'\n"
     " for i = 1, 64 do s = string.rep(s, 2) t[i] = s end return true end"),
    ("deep recursion", "local function f(n) return 1 + f(n + 1) end\n"
     "function validate(b) return f(1) > 0 end"),
    ("os.execute", "function validate(b) os.execute('touch /tmp/farmd-pwned') return true end"),
    ("io.open", "function validate(b) local f = io.open('/etc/passwd') return f ~= nil end"),
    ("load", "function validate(b) return load('return true')() end"),
    ("require", "function validate(b) require('os') return true end"),
    ("debug.sethook", "function validate(b) debug.sethook(print, 'c') return true end"),
]


def test_hostile_code_is_invalid(tmp):
    timeout_s = 10
    for i, (what, src) in enumerate(HOSTILE):
        sub = os.path.join(tmp, f"case{i}")
        os.makedirs(sub)
        f = farmd(sub, config=art_cfg(instruction_limit=1000000, memory_limit="16M")
                  .replace("job_timeout = 10s", f"job_timeout = {timeout_s}s"))
        try:
            blocks = build_chain(3, codes={1: src})
            ingest_blocks(f, sub, blocks)
            st = wait_rejected(f, 2, timeout=timeout_s)
            reason = st["rejected"][0]["reason"]
            assert reason.startswith("validation code: ") and len(reason) > 18, (what, reason)
            assert st["archived_height"] == 1, (what, st)
            # Stopped by the sandbox's limits, not by the job deadline.
            timeouts = [metric(f, f'farmd_worker_timeouts_total{{kind="{k}"}}')
                        for k in ("compile", "execute")]
            assert timeouts == [0, 0], (what, reason, timeouts)
            # The supervisor is unharmed and every pool is whole.
            wait_for(lambda: all(p["alive"] == p["size"] for p in f.status()["pools"]), 10,
                     what=f"{what}: pools whole")
            assert f.proc.poll() is None
        finally:
            assert f.stop() == 0, f.log()[-2000:]
    assert not os.path.exists("/tmp/farmd-pwned")


# ---- 4. compile worker killed mid-compile; one compile for many requests -----------

def test_compile_worker_killed_mid_compile(tmp):
    """SIGKILL of the compile worker holding the one compile that ten
    prepares wait on: the compile is retried, each prepare gets the
    artifact, and it is compiled once.  The worker hangs in the job
    (`debug fault compile hang`) until it is killed: with `slow` (2 s) a
    kill late on a busy machine could find the compile already done."""
    f = farmd(tmp, config=CFG)
    src = os.path.join(tmp, "v.lua")
    with open(src, "w") as fh:
        fh.write(REJECT_FF)
    f.ctl("debug", "fault", "compile", "hang")
    procs = [subprocess.Popen([FARMCTL, "-s", f.socket, "artifact", "prepare", src],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(10)]
    busy = wait_for(lambda: [w["pid"] for w in f.status()["workers"]
                             if w["kind"] == "compile" and w["state"] == "busy"], 10,
                    what="compile worker busy")
    os.kill(busy[0], signal.SIGKILL)
    outs = [p.communicate(timeout=30 * SLOW) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    ids = {o[0].strip() for o in outs}
    assert len(ids) == 1, ids
    [aid] = ids
    assert len(aid) == 128 and aid.startswith(hexsha(REJECT_FF.encode())), aid
    [a] = artifacts(f)
    assert a["state"] == "prepared" and a["failures"] == 0, a
    assert compile_jobs(f) == 1
    assert metric(f, 'farmd_jobs_retried_total{kind="compile"}') >= 1
    assert art_files(f) == [aid + ".art"]


# ---- 5. a corrupted artifact file ---------------------------------------------------

def test_corrupted_artifact_is_prepared_again(tmp):
    blocks, d = generate(tmp, 60, REJECT_FF, 20)
    f = farmd(tmp, config=CFG)
    ingest_paths(f, [os.path.join(d, f"{h:06d}.blk") for h in range(1, 41)], procs=2)
    wait_archived(f, 40)
    [name] = art_files(f)
    p = os.path.join(f.state_dir, "artifacts", name)
    data = bytearray(open(p, "rb").read())
    for i in range(0, len(data), 7):
        data[i] ^= 0x5A
    with open(p, "wb") as fh:
        fh.write(data)                  # same size, other bytes
    bad61 = encode_block(61, sha(blocks[60]), b"\xff after the corruption")
    ingest_paths(f, [os.path.join(d, f"{h:06d}.blk") for h in range(41, 61)] +
                 [write_blk(os.path.join(tmp, "bad"), 61, bad61)], procs=2)
    wait_rejected(f, 61)
    st = wait_settled(f)
    assert st["archived_height"] == 60, st
    assert "first byte is 0xFF at height 61" in st["rejected"][0]["reason"], st
    assert metric(f, "farmd_artifact_mismatches_total") >= 1
    assert compile_jobs(f) == 2
    with open(p, "rb") as fh:
        assert fh.read() != bytes(data)
    [a] = artifacts(f)
    assert a["state"] == "prepared", a


# ---- 6. prune -----------------------------------------------------------------------

def big_source(i):
    # A long string constant makes the bytecode larger than 1 KiB / 3.
    return f"local pad = '{chr(97 + i) * 600}'\nfunction validate(b) return #pad > 0 end\n"


def test_prune_least_recently_needed(tmp):
    f = farmd(tmp, config=art_cfg(cache_limit="1K", min_stale_time="1h"))
    ids = []
    for i in range(3):
        path = os.path.join(tmp, f"s{i}.lua")
        with open(path, "w") as fh:
            fh.write(big_source(i))
        ids.append(prepare(f, path))
        time.sleep(0.02)
    sizes = {a["code_hash"]: a["size"] for a in artifacts(f)}
    assert len(sizes) == 3 and all(400 < s < 1024 for s in sizes.values()), sizes
    assert sum(sizes.values()) > 1024
    # Needed within min_stale_time: nothing goes.
    out = f.ctl("artifact", "prune")
    assert "nothing" in out, out
    assert len(artifacts(f)) == 3 and len(art_files(f)) == 3
    # min_stale_time = 0: the least recently needed go until 1 KiB holds the rest.
    f.write_config(art_cfg(cache_limit="1K", min_stale_time="0"))
    f.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in f.log(), 10, what="reload")
    res = f.ctl_json("artifact", "prune")
    assert [r["id"] for r in res["removed"]] == ids[:2], (res, ids)
    left = artifacts(f)
    assert [a["code_hash"] + a["params_hash"] for a in left] == [ids[2]], left
    assert art_files(f) == [ids[2] + ".art"]
    assert metric(f, "farmd_artifact_cache_bytes") == left[0]["size"]


# ---- 7. kill -9 mid-prepare and mid-validation --------------------------------------

def db_prepared(f):
    import sqlite3
    db = sqlite3.connect(os.path.join(f.state_dir, "state.db"))
    try:
        return {(c.hex() + p.hex()) for c, p in
                db.execute("SELECT code_hash, params_hash FROM artifacts WHERE state = 'prepared'")}
    finally:
        db.close()


def test_kill9_mid_prepare_and_validation(tmp):
    rounds = max(3, min(5, CRASH_ROUNDS))
    codes = {30: REJECT_FF, 120: REJECT_FF.replace("0xFF", "0xff (v2)")}
    blocks = build_chain(200, codes=codes)
    bad = encode_block(201, sha(blocks[200]), b"\xff" + bytes(10))
    d = os.path.join(tmp, "in")
    paths = [write_blk(d, h, b) for h, b in sorted(blocks.items())] + \
        [write_blk(os.path.join(tmp, "bad"), 201, bad)]
    f = farmd(tmp, config=CFG)
    rng = random.Random(11)
    for rnd in range(rounds):
        if rnd % 2 == 0:
            f.ctl("debug", "fault", "compile", "slow")
        ing = subprocess.Popen([FARMCTL, "-s", f.socket, "history", "ingest"] + paths,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.1, 2.5) * PACE)
        f.kill9()
        ing.wait()
        # What the crash left: the rows that say prepared (a preparing row
        # may be there too; the start removes it).
        prepared = db_prepared(f)
        left = tmp_ids(f)
        f.start()
        files = art_files(f)
        # No temp file the crash left survives the start (the new farmd may
        # already be writing its own, for a prepare the resumed archiver asked
        # for: that one is another file, with another inode or mtime).
        again = tmp_ids(f)
        assert not [n for n, ident in left.items() if again.get(n) == ident], (rnd, left, again)
        listed = artifacts(f)
        assert {a["code_hash"] + a["params_hash"] for a in listed
                if a["state"] == "prepared"} >= prepared, (rnd, listed, prepared)
        # Every .art file is named by a prepared row (one prepared since the
        # start may have joined them).
        now = {a["code_hash"] + a["params_hash"] for a in artifacts(f) if a["state"] == "prepared"}
        arts = [n for n in files if n.endswith(".art")]
        assert {n[:-4] for n in art_files(f) if n.endswith(".art")} <= now | {n[:-4] for n in arts}, \
            (rnd, files)
        assert {n[:-4] for n in arts} <= now, (rnd, files, now)
    ingest_paths(f, paths, procs=1)
    wait_rejected(f, 201, timeout=60)
    st = wait_settled(f)
    assert st["archived_height"] == 200, st
    assert "first byte is 0xFF at height 201" not in st["rejected"][0]["reason"]
    assert "(v2) at height 201" in st["rejected"][0]["reason"], st
    want, _ = expected([blocks[h] for h in range(1, 201)], 4 * KIB, 4)
    check_segments(f, want, "after kill -9 rounds")
    # Already-prepared artifacts were not compiled again in this run.
    assert compile_jobs(f) == 2 - len(prepared), (compile_jobs(f), prepared)
    assert len(artifacts(f)) == 2 and all(a["state"] == "prepared" for a in artifacts(f))
    assert not [n for n in art_files(f) if not n.endswith(".art")]


# ---- 8. the artifacts budget ----------------------------------------------------------

def test_budget_smaller_than_artifact(tmp):
    f = farmd(tmp, config=art_cfg(budget=100))
    path = os.path.join(tmp, "v.lua")
    with open(path, "w") as fh:
        fh.write(big_source(0))
    p = f.ctl_raw("artifact", "prepare", path)
    assert p.returncode == 1, (p.stdout, p.stderr)
    msg = p.stderr
    for word in ("artifacts budget", "used", "requested", "limit of 100 bytes"):
        assert word in msg, (word, msg)
    [a] = artifacts(f)
    assert a["state"] == "failed" and "budget" in a["error"], a
    assert art_files(f) == []
    assert metric(f, 'farmd_artifact_failures_total{kind="transient"}') == 1


if __name__ == "__main__":
    run_tests(globals())
