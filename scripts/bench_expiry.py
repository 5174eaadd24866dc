#!/usr/bin/env python3
"""Expiry check at scale (called by scripts/bench): a million sectors.

A farm of 1,000,000 plotted sectors cannot be plotted on this machine, so
its rows are written straight into state.db (a farm whose plot.bin does
not exist: farmd keeps it in state "error" and does not plot it, but its
sectors still take part in the expiry check).  All were plotted at history
size 1, so all of their expiries become known at the same segment: the
worst case.  Prints the loop time of the check when nothing changes, the
loop time of the worst case (done in steps), and `status` latency while
it runs.
usage: bench_expiry.py BUILD_DIR
"""
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "tests", "integration"))
from adminwire import StatusSampler  # noqa: E402

SECTORS = 1000000


def main():
    build = sys.argv[1]
    tmp = tempfile.mkdtemp(prefix="bench-expiry-")
    ctl = os.path.join(build, "farmctl")
    sock = os.path.join(tmp, "s", "farmd.sock")
    ini = os.path.join(tmp, "farmd.ini")
    log = os.path.join(tmp, "log")
    with open(ini, "w") as f:
        f.write("[daemon]\nlog_level = debug\n[workers]\nencode = 1\ncompile = 0\nexecute = 0\n")
    subprocess.run([ctl, "chain", "generate", "--blocks", "100", "--body-size", "65536",
                    "--out", os.path.join(tmp, "chain")], check=True, capture_output=True)
    blocks = sorted(os.path.join(tmp, "chain", n) for n in os.listdir(os.path.join(tmp, "chain")))

    def start():
        p = subprocess.Popen([os.path.join(build, "farmd"), "--state-dir",
                              os.path.join(tmp, "s"), "--config", ini], stderr=open(log, "a"))
        for _ in range(200):
            if subprocess.run([ctl, "-s", sock, "status"], capture_output=True).returncode == 0:
                return p
            time.sleep(0.05)
        raise SystemExit("farmd did not start")

    def ingest(first, last):
        subprocess.run([ctl, "-s", sock, "history", "ingest"] + blocks[first:last],
                       check=True, capture_output=True)

    p = start()
    ingest(0, 50)                       # 3 segments
    time.sleep(2)
    subprocess.run([ctl, "-s", sock, "shutdown"], capture_output=True)
    p.wait()
    db = sqlite3.connect(os.path.join(tmp, "s", "state.db"))
    db.execute("BEGIN")
    db.execute("INSERT INTO farms VALUES (0, '/nonexistent/farm', ?, 'demo', 64, 4194304, 4, 2, "
               "0.1, 1024, 8, 1, ?, 0)", (SECTORS, os.urandom(32)))
    db.executemany("INSERT INTO sectors VALUES (0, ?, 'plotted', 1, 64, 1, ?, NULL, 0, 0)",
                   ((i, os.urandom(32)) for i in range(SECTORS)))
    db.execute("COMMIT")
    db.close()
    p = start()
    ingest(50, 64)                      # segment 3: nothing becomes known yet
    time.sleep(1)
    sampler = StatusSampler(sock, 0.005).start()
    ingest(64, 100)                     # segments 4, 5: a million expiries
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:
        with open(log) as f:
            if re.search(r"expiry check at history size 6 took", f.read()):
                break
        time.sleep(0.2)
    sampler.stop()
    subprocess.run([ctl, "-s", sock, "shutdown"], capture_output=True)
    p.wait()
    with open(log) as f:
        text = f.read()
    quiet = re.findall(r"expiry check at history size 4 took (\d+) us", text)
    storm = re.findall(r"expiry check at history size [56] took (\d+) us", text)
    print("expiry check, %d sectors, nothing becomes known: %.1f ms of loop time"
          % (SECTORS, int(quiet[-1]) / 1e3 if quiet else -1))
    print("expiry check, %d sectors all learning their expiry at once: %.1f s of loop time "
          "in steps" % (SECTORS, sum(int(x) for x in storm) / 1e6))
    print("status meanwhile: " + sampler.summary())
    subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
