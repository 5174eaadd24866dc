"""The admin protocol by hand: 4-byte big-endian length + one packed
AdminMsg (proto/admin.proto), for tests that must send what farmctl never
would, and for the block benchmark, which must not pay for process start-up.
"""
import os
import socket
import struct
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
    """A length-delimited field."""
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def frame(body):
    return struct.pack(">I", len(body)) + body


def hello(version=1):
    return frame(field(1, b"\x08" + varint(version)))


def request(*argv, nfds=0, json=False):
    req = b"".join(field(1, a.encode()) for a in argv)
    if json:
        req += varint(2 << 3) + varint(1)
    if nfds:
        req += varint(3 << 3) + varint(nfds)
    return frame(field(2, req))


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
    """Top-level fields of a message: {number: int or bytes}."""
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


def recv_exact(s, n):
    """n bytes, or None at EOF."""
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def recv_frame(s):
    hdr = recv_exact(s, 4)
    if hdr is None:
        return None
    return recv_exact(s, struct.unpack(">I", hdr)[0])


class Client:
    """One admin connection: hello, then request() per command."""

    def __init__(self, path, timeout=None):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)
        self.s.sendall(hello())
        recv_frame(self.s)

    def put(self, path):
        """`block put PATH`, the file passed as a descriptor as farmctl does."""
        fd = os.open(path, os.O_RDONLY)
        try:
            return self.request(["block", "put", path], [fd])
        finally:
            os.close(fd)

    def call(self, argv, fds=(), json=False):
        """The AdminResponse's fields ({1: ok, 2: error, 3: text, 4: json,
        5: warning, 6: data}), whether ok or not."""
        msg = request(*argv, nfds=len(fds), json=json)
        if fds:
            socket.send_fds(self.s, [msg], list(fds))
        else:
            self.s.sendall(msg)
        body = recv_frame(self.s)
        if body is None:
            raise EOFError("farmd closed the connection")
        return fields(fields(body)[3])

    def request(self, argv, fds=(), json=False):
        resp = self.call(argv, fds, json)
        if not resp.get(1):
            raise RuntimeError(resp.get(2, b"").decode())
        return resp


class StatusSampler:
    """Times `status` on its own connection, in a thread, until stop():
    the admin latency figure of the benches and tests."""

    def __init__(self, path, interval=0.01):
        self.lat = []
        self._done = threading.Event()
        self._t = threading.Thread(target=self._run, args=(path, interval))

    def _run(self, path, interval):
        c = Client(path)
        while not self._done.is_set():
            t = time.monotonic()
            c.request(["status"])
            self.lat.append(time.monotonic() - t)
            time.sleep(interval)

    def start(self):
        self._t.start()
        return self

    def stop(self):
        self._done.set()
        self._t.join()
        self.lat.sort()
        return self.lat

    def summary(self):
        lat = self.lat
        return "p50 %.2f ms, p99 %.2f ms, max %.2f ms (%d samples)" % (
            lat[len(lat) // 2] * 1e3, lat[len(lat) * 99 // 100] * 1e3, lat[-1] * 1e3, len(lat))
