#!/usr/bin/env python3
"""Block store figures against a running farmd (called by scripts/bench).

Speaks the admin protocol directly (hand-encoded protobuf, descriptors
over SCM_RIGHTS) so it measures farmd, not process start-up:
  - durable puts/s for 4 KiB and 1 MiB blocks (several connections),
  - verified read MB/s for 1 MiB blocks vs sha256sum over the same files,
  - `status` latency p50/p99 while a put stream runs.
usage: bench_blocks.py SOCKET STATE_DIR WORKDIR
"""
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "tests", "integration"))
from adminwire import Client, StatusSampler  # noqa: E402


def put_files(sock, files, conns):
    def worker(chunk):
        c = Client(sock)
        for f in chunk:
            c.put(f)
    threads = [threading.Thread(target=worker, args=(files[i::conns],)) for i in range(conns)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - t0


def make_files(d, n, size):
    os.makedirs(d, exist_ok=True)
    out = []
    for i in range(n):
        p = os.path.join(d, "%06d" % i)
        with open(p, "wb") as f:
            f.write(os.urandom(size))
        out.append(p)
    return out


def main():
    sock, state, work = sys.argv[1:4]
    small = make_files(os.path.join(work, "4k"), 2000, 4096)
    big = make_files(os.path.join(work, "1m"), 300, 1 << 20)

    dt = put_files(sock, small, 4)
    print("durable puts, 4 KiB:  %.0f puts/s (%d puts, 4 connections)" % (len(small) / dt, len(small)))
    dt = put_files(sock, big, 4)
    print("durable puts, 1 MiB:  %.0f puts/s, %.0f MB/s" % (len(big) / dt, len(big) * (1 << 20) / dt / 1e6))

    hashes = [subprocess.run(["sha256sum", f], capture_output=True, text=True).stdout[:64] for f in big]
    null = os.open("/dev/null", os.O_WRONLY)
    c = Client(sock)
    t0 = time.monotonic()
    for h in hashes:
        c.request(["block", "get", h], [null])
    dt = time.monotonic() - t0
    farmd_mbs = len(hashes) * (1 << 20) / dt / 1e6
    paths = [os.path.join(state, "blocks", h[:2], h[2:4], h) for h in hashes]
    t0 = time.monotonic()
    subprocess.run(["sha256sum"] + paths, stdout=subprocess.DEVNULL, check=True)
    sha_mbs = len(paths) * (1 << 20) / (time.monotonic() - t0) / 1e6
    print("verified reads, 1 MiB: %.0f MB/s; sha256sum over the same files: %.0f MB/s; ratio %.2f"
          % (farmd_mbs, sha_mbs, farmd_mbs / sha_mbs))

    # status latency while 1 MiB puts stream in (fresh content each time).
    stream = make_files(os.path.join(work, "stream"), 400, 1 << 20)
    sampler = StatusSampler(sock, 0.002).start()
    dt = put_files(sock, stream, 4)
    sampler.stop()
    print("status during a put stream (%.0f MB/s of 1 MiB puts): %s"
          % (len(stream) * (1 << 20) / dt / 1e6, sampler.summary()))


if __name__ == "__main__":
    main()
