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
import socket
import struct
import subprocess
import sys
import threading
import time


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(num, payload):
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def read_varint(buf, i):
    shift = n = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def fields(buf):
    i, out = 0, {}
    while i < len(buf):
        key, i = read_varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = read_varint(buf, i)
        elif wt == 2:
            ln, i = read_varint(buf, i)
            v, i = buf[i:i + ln], i + ln
        else:
            raise ValueError("wire type %d" % wt)
        out[num] = v
    return out


class Client:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.send(field(1, b"\x08\x01"))
        self.recv()

    def send(self, body, fds=()):
        frame = struct.pack(">I", len(body)) + body
        if fds:
            socket.send_fds(self.s, [frame], list(fds))
        else:
            self.s.sendall(frame)

    def recv_exact(self, n):
        b = bytearray()
        while len(b) < n:
            chunk = self.s.recv(n - len(b))
            if not chunk:
                raise EOFError
            b += chunk
        return bytes(b)

    def recv(self):
        (n,) = struct.unpack(">I", self.recv_exact(4))
        return fields(self.recv_exact(n))

    def request(self, argv, fds=()):
        req = b"".join(field(1, a.encode()) for a in argv)
        if fds:
            req += varint(3 << 3) + varint(len(fds))
        self.send(field(2, req), fds)
        resp = fields(self.recv()[3])
        if not resp.get(1):
            raise RuntimeError(resp.get(2, b"").decode())
        return resp


def put_files(sock, files, conns):
    def worker(chunk):
        c = Client(sock)
        for f in chunk:
            fd = os.open(f, os.O_RDONLY)
            try:
                c.request(["block", "put", f], [fd])
            finally:
                os.close(fd)
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
    lat = []
    done = threading.Event()

    def poll():
        c = Client(sock)
        while not done.is_set():
            t = time.monotonic()
            c.request(["status"])
            lat.append(time.monotonic() - t)
            time.sleep(0.002)
    t = threading.Thread(target=poll)
    t.start()
    dt = put_files(sock, stream, 4)
    done.set()
    t.join()
    lat.sort()
    print("status during a put stream (%.0f MB/s of 1 MiB puts): p50 %.2f ms, p99 %.2f ms, max %.2f ms (%d samples)"
          % (len(stream) * (1 << 20) / dt / 1e6, lat[len(lat) // 2] * 1e3,
             lat[len(lat) * 99 // 100] * 1e3, lat[-1] * 1e3, len(lat)))


if __name__ == "__main__":
    main()
