"""Shared buffers between farmd and its encode workers (issue 12).

Each encode worker gets a sealed memfd at spawn; a sector's pieces travel
in it and the frames carry only offsets.  The worker is untrusted: a worker
that answers with a range outside its buffer is killed and replaced and the
work retried, and a worker that keeps writing into its buffer after
answering cannot change what farmd hashes and writes.  Every sector is
compared with the independent encoding of format v1 (test_plotting's
History and tests/vectors/gen_vectors.py).

The faults need a build with -Dfault_injection=true (skipped otherwise).

    FARMD_BUILD=build python3 tests/integration/test_shared_buffer.py [test_name ...]
"""
import hashlib
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from harness import metric, run_tests, wait_for  # noqa: E402
from test_plotting import (History, add_farm, arm_fault, assert_sector_is, cfg,  # noqa: E402
                           expected_sector, farmd, plot_status, verify_sector, wait_plot_idle)

MIB = 1 << 20


def encode_pids(f):
    return sorted(w["pid"] for w in f.status()["workers"] if w["kind"] == "encode")


def check_sectors(hist, farm, d, secs, n):
    """n sectors, each equal to format v1 computed here, and its checksum."""
    assert len(secs) == n, (len(secs), n, secs)
    pkh = bytes.fromhex(farm["public_key_hash"])
    for s in secs:
        want, _ = expected_sector(hist, pkh, s["index"], s["history_size"])
        assert_sector_is(d, s["index"], want)
        assert s["checksum"] == hashlib.sha256(want).hexdigest(), s


def test_bad_offset_worker_replaced(tmp):
    """An encode worker answers with bytes outside its buffer: a protocol
    error (logged, counted), the worker is killed and replaced, the job is
    retried and every sector equals the independent encoding.  The job
    farmd had sent ahead to that worker goes back to the queue (the
    portable kernel: its first job takes long enough that the second part
    of the sector is read and sent ahead before the bad answer)."""
    hist = History(tmp, 16, seed="shm-badoffset")
    f = farmd(tmp, config=cfg(encode=1, max_sectors=1), env={"FARMD_KERNEL": "portable"})
    hist.ingest_to(f, 1)
    before = encode_pids(f)
    perr0 = metric(f, "farmd_protocol_errors_worker_total")
    if not arm_fault(f, "encode", "badoffset"):
        return
    d = os.path.join(tmp, "farm")
    farm = add_farm(f, d, 2)
    secs = wait_plot_idle(f, 60)
    assert [s["state"] for s in secs] == ["plotted"] * 2, secs
    check_sectors(hist, farm, d, secs, 2)
    log = f.log()
    assert re.search(r"encode worker \d+: protocol error: job \d+: answered with bytes "
                     r"\[\d+, \+\d+\) outside its \d+-byte buffer; killing it", log), log[-3000:]
    assert metric(f, "farmd_protocol_errors_worker_total") == perr0 + 1
    assert metric(f, 'farmd_jobs_retried_total{kind="encode"}') >= 1
    assert re.search(r"encode job \d+ was sent ahead to worker \d+, which ended before "
                     r"starting it; queued again", log), log[-3000:]
    after = wait_for(lambda: (lambda p: p if len(p) == 1 and p != before else None)(
        encode_pids(f)), 10, what="the encode worker replaced")
    assert after != before, (before, after)


def test_scribbling_worker_cannot_change_sectors(tmp):
    """An encode worker keeps writing garbage over its answer in the shared
    buffer after answering: farmd took its copy once (and, if it caught the
    worker at it, killed it and ran the job again on a fresh worker, its
    pieces read from the block store again), so every sector on disk
    equals the independent encoding and its checksum."""
    hist = History(tmp, 16, seed="shm-scribble")
    f = farmd(tmp, config=cfg(encode=1, max_sectors=1))
    hist.ingest_to(f, 1)
    d = os.path.join(tmp, "farm")
    if not arm_fault(f, "encode", "scribble"):
        return
    farm = add_farm(f, d, 2)
    secs = wait_plot_idle(f, 60)
    assert [s["state"] for s in secs] == ["plotted"] * 2, secs
    check_sectors(hist, farm, d, secs, 2)
    log = f.log()
    # Caught at it (killed before it could say so), or it scribbled
    # after farmd had its copy and said how long.
    caught = "wrote into its buffer while answering" in log
    assert caught or "fault injection: scribbled over the answer" in log, log[-3000:]
    if caught:
        assert re.search(r"encode job \d+ attempt 1 failed \(protocol error: job \d+: wrote "
                         r"into its buffer while answering\); retrying", log), log[-3000:]
    print(f"     scribbler {'caught and replaced' if caught else 'wrote after farmd took its copy'}")
    if caught:
        assert metric(f, "farmd_protocol_errors_worker_total") >= 1
    # A second farm with a fresh scribble: still every byte right.
    assert arm_fault(f, "encode", "scribble")
    d2 = os.path.join(tmp, "farm2")
    farm2 = add_farm(f, d2, 1)
    secs2 = [s for s in wait_plot_idle(f, 60) if s["farm"] == farm2["id"]]
    check_sectors(hist, farm2, d2, secs2, 1)
    assert f.proc.poll() is None


def test_scribbling_into_free_slots_quarantines_nothing(tmp):
    """Pieces are read from the block store straight into the worker's
    buffer, where the worker can write at any time.  A worker that keeps
    writing over the rest of its buffer after answering (`debug fault
    encode scribble-free`, until farmd sends the next job, which it does
    only once that job's pieces are in and checked) can make pieces read
    there fail their check: each is then read again privately, found
    sound, and nothing is called corrupt (no error entry, no .corrupted
    file, nothing queued for resync).  Whether the worker's writes land
    between a read and its check depends on how the two processes are
    scheduled, so farms are added, one sector each, until one round has
    seen it (each round checks that nothing was called corrupt).  What
    such a worker encodes is its lie: each sector's checksum still
    describes the bytes on disk, and a sector plotted without the fault
    equals its encoding."""
    hist = History(tmp, 16, seed="shm-scribble-free")
    f = farmd(tmp, config=cfg(encode=1, max_sectors=1), env={"FARMD_KERNEL": "portable"})
    hist.ingest_to(f, 1)
    seen = re.compile(r"block [0-9a-f]{64} did not verify in an encode worker's buffer .* and "
                      r"is sound read again privately")
    rounds = 0
    while not seen.search(f.log()):
        assert rounds < 16, "16 sectors plotted beside a scribbling worker, no piece read " \
            "there failed its check"
        if not arm_fault(f, "encode", "scribble-free"):
            return
        d = os.path.join(tmp, f"farm{rounds}")
        farm = add_farm(f, d, 1)
        rounds += 1
        secs = [s for s in wait_plot_idle(f, 60) if s["farm"] == farm["id"]]
        assert [s["state"] for s in secs] == ["plotted"], secs
        verify_sector(d, secs[0])
        log = f.log()
        assert log.count("fault injection: scribbled over all but the answer") == rounds, \
            log[-3000:]
        assert "is corrupt" not in log, log[-3000:]
        assert f.ctl_json("block", "list-errors") == []
        moved = [n for _, _, names in os.walk(os.path.join(f.state_dir, "blocks"))
                 for n in names if n.endswith(".corrupted")]
        assert moved == [], moved
    print(f"     a piece failed its check in the worker's buffer in round {rounds}; "
          "read again privately, sound", flush=True)
    d2 = os.path.join(tmp, "clean")
    farm2 = add_farm(f, d2, 1)
    secs2 = [s for s in wait_plot_idle(f, 60) if s["farm"] == farm2["id"]]
    check_sectors(hist, farm2, d2, secs2, 1)
    assert f.proc.poll() is None


def test_echo_through_shared_buffer(tmp):
    """`debug echo 1048576` goes through the worker's shared buffer and
    every answer's bytes are checked; small echoes still go in frames."""
    f = farmd(tmp, config=cfg(encode=1))
    r = f.ctl_json("debug", "echo", str(MIB), "50")
    assert r["size"] == MIB and r["count"] == 50 and r["shared_buffer"] is True, r
    small = f.ctl_json("debug", "echo", "4096", "20")
    assert small["shared_buffer"] is False and small["count"] == 20, small
    # An odd size above the threshold, and the largest the buffer holds.
    odd = f.ctl_json("debug", "echo", str(MIB + 7), "3")
    assert odd["shared_buffer"] is True, odd
    full = f.ctl_json("debug", "echo", str(16 * MIB), "2")
    assert full["shared_buffer"] is True, full
    assert "shared buffer" in f.ctl("debug", "echo", str(MIB), "2")


def test_echo_bad_offset_is_a_protocol_error(tmp):
    """The checks are the same for echo answers: a range outside the buffer
    kills the worker; the echo fails (one attempt) and farmd goes on."""
    f = farmd(tmp, config=cfg(encode=1))
    if not arm_fault(f, "encode", "badoffset"):
        return
    p = f.ctl_raw("debug", "echo", str(MIB), "1")
    assert p.returncode == 1 and "outside its" in p.stderr, (p.returncode, p.stderr)
    assert metric(f, "farmd_protocol_errors_worker_total") == 1
    wait_for(lambda: f.status()["pools"][0]["alive"] == 1, 10, what="encode worker replaced")
    r = f.ctl_json("debug", "echo", str(MIB), "5")
    assert r["count"] == 5 and r["shared_buffer"] is True, r


def test_encode_buffer_config(tmp):
    """[workers] encode_buffer sizes the memfd; a buffer smaller than a job
    makes smaller jobs, and the sectors are still right."""
    hist = History(tmp, 16, seed="shm-small-buffer")
    f = farmd(tmp, config=cfg(encode=1, workers={"encode_buffer": "192K"}))
    pid = encode_pids(f)[0]
    link = os.readlink(f"/proc/{pid}/fd/4")
    assert link.startswith("/memfd:farmd-encode-buffer"), link
    with open(f"/proc/{pid}/maps") as fh:
        maps = [line.split() for line in fh if "memfd:farmd-encode-buffer" in line]
    assert len(maps) == 1, maps
    lo, hi = (int(x, 16) for x in maps[0][0].split("-"))
    assert hi - lo == 192 * 1024 and maps[0][1] == "rw-s", maps
    hist.ingest_to(f, 1)
    d = os.path.join(tmp, "farm")
    farm = add_farm(f, d, 1)
    secs = wait_plot_idle(f, 60)
    check_sectors(hist, farm, d, secs, 1)
    p = f.ctl_raw("debug", "echo", str(MIB), "1")
    assert p.returncode == 0 and "shared buffer" not in p.stdout, (p.stdout, p.stderr)
    assert plot_status(f)["idle"]


if __name__ == "__main__":
    run_tests(globals())
