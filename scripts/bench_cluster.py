#!/usr/bin/env python3
"""Gap repair between two farmds on loopback (called by scripts/bench).

A nats-server on a free loopback port; node A ingests a generated chain
from files (the operator's path: its rate, blocks ingested and archived per
second, is the limit gap repair is measured against, in the same run);
node B, empty, archives the same chain by gap repair alone.  Prints B's
rate in blocks/s and MB/s (block bytes) and its ratio to A's.
usage: bench_cluster.py BUILD WORKDIR [BLOCKS [BODY_BYTES]]
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time

BUILD, WORK = sys.argv[1], sys.argv[2]
BLOCKS = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
BODY = int(sys.argv[4]) if len(sys.argv) > 4 else 16384
FARMD = os.path.join(BUILD, "farmd")
FARMCTL = os.path.join(BUILD, "farmctl")


def ctl(sock, *args):
    p = subprocess.run([FARMCTL, "-s", sock, "--json"] + list(args), capture_output=True,
                       text=True, timeout=600)
    if p.returncode != 0:
        raise SystemExit(f"farmctl {' '.join(args)}: {p.stderr.strip()}")
    return json.loads(p.stdout)


def wait(pred, what, timeout=600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except (SystemExit, OSError):
            pass
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def start(name, url):
    d = os.path.join(WORK, name)
    os.makedirs(d, exist_ok=True)
    ini = os.path.join(d, "farmd.ini")
    with open(ini, "w") as f:
        f.write(f"[workers]\nencode = 1\ncompile = 0\nexecute = 0\n[cluster]\nnats = {url}\n"
                f"node = {name}\n")
    log = open(os.path.join(d, "log"), "wb")
    p = subprocess.Popen([FARMD, "--state-dir", os.path.join(d, "s"), "--config", ini],
                         stdout=log, stderr=subprocess.STDOUT)
    sock = os.path.join(d, "s", "farmd.sock")
    wait(lambda: ctl(sock, "status")["state"] == "running", f"{name} running", 60)
    return p, sock


def archived(sock):
    return ctl(sock, "history", "status")["archived_height"]


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = os.path.join(WORK, "nats.conf")
    with open(conf, "w") as f:
        f.write(f"listen: 127.0.0.1:{port}\n")
    nats = subprocess.Popen(["nats-server", "-c", conf], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    procs = []
    try:
        wait(lambda: socket.create_connection(("127.0.0.1", port), 0.2).close() or True,
             "nats-server", 10)
        url = f"nats://127.0.0.1:{port}"
        chain = os.path.join(WORK, "chain")
        subprocess.run([FARMCTL, "chain", "generate", "--blocks", str(BLOCKS), "--body-size",
                        str(BODY), "--out", chain], check=True, capture_output=True)
        size = sum(os.path.getsize(os.path.join(chain, n)) for n in os.listdir(chain))
        pa, a = start("nodea", url)
        procs.append(pa)
        t = time.monotonic()
        subprocess.run([FARMCTL, "-s", a, "history", "ingest", chain], check=True,
                       capture_output=True, timeout=600)
        wait(lambda: archived(a) >= BLOCKS, "A archived")
        local = time.monotonic() - t
        pb, b = start("nodeb", url)
        procs.append(pb)
        t = time.monotonic()
        wait(lambda: archived(b) >= BLOCKS, "B archived by gap repair")
        repair = time.monotonic() - t
        assert ctl(a, "history", "segments") == ctl(b, "history", "segments")
        print(f"chain: {BLOCKS} blocks, {size / 1e6:.1f} MB ({BODY} byte bodies), loopback")
        print(f"local_ingest_blocks_per_s {BLOCKS / local:.0f} ({size / local / 1e6:.1f} MB/s)")
        print(f"gap_repair_blocks_per_s {BLOCKS / repair:.0f}")
        print(f"gap_repair_MB_per_s {size / repair / 1e6:.1f}")
        print(f"gap_repair_vs_local_ingest {local / repair:.2f} x")
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=60)
        nats.kill()
        nats.wait()


if __name__ == "__main__":
    main()
