#!/usr/bin/env python3
"""Remote plotting figures (called by scripts/bench; issue 15).

In one run, on one machine, with a nats-server of its own on loopback:
  local:  a farmer with 1 encode worker plots SECTORS demo sectors itself;
  remote: a farmer with no encode worker (remote_plotting = prefer) plots
          SECTORS demo sectors through one plotter node with 1 encode worker.
Both farmers ingest the same 70-block chain; the plotter holds the history
(gap repair) before the remote farm is added, so its traffic is the
plotting's.  Prints the rates (MiB/s of plotted sectors), their ratio, and
the bytes the remote farmer's NATS connection moved per plotted sector
(sent + received: sector jobs, piece answers to the plotter's block.get,
chunks and their acks) with the plotter's own count beside it.
usage: bench_rplot.py BUILD_DIR
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

SECTORS = 16
SECTOR_MIB = 64 * 65536 / (1 << 20)     # demo profile: 64 pieces of 64 KiB


def wait(pred, what, timeout=300, step=0.05):
    t = time.monotonic() + timeout
    while time.monotonic() < t:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise SystemExit(f"bench_rplot: timed out waiting for {what}")


class Node:
    def __init__(self, build, tmp, name, ini):
        self.build, self.dir = build, os.path.join(tmp, name)
        os.makedirs(self.dir)
        with open(os.path.join(self.dir, "farmd.ini"), "w") as f:
            f.write(ini)
        self.sock = os.path.join(self.dir, "s", "farmd.sock")
        self.log = open(os.path.join(self.dir, "log"), "w")
        self.proc = subprocess.Popen([os.path.join(build, "farmd"), "--state-dir",
                                      os.path.join(self.dir, "s"), "--config",
                                      os.path.join(self.dir, "farmd.ini")], stderr=self.log)
        wait(lambda: os.path.exists(self.sock) and self.run("status").returncode == 0,
             f"farmd {name}")

    def run(self, *args):
        return subprocess.run([os.path.join(self.build, "farmctl"), "-s", self.sock, "--json",
                               *map(str, args)], capture_output=True, text=True)

    def ctl(self, *args):
        p = self.run(*args)
        if p.returncode != 0:
            raise SystemExit(f"bench_rplot: farmctl {' '.join(map(str, args))}: {p.stderr}")
        return json.loads(p.stdout) if p.stdout.strip() else None

    def ingest(self, path):
        p = self.run("history", "ingest", path)
        if p.returncode != 0:
            raise SystemExit(f"bench_rplot: history ingest: {p.stderr}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        self.log.close()


def ini(url, name, encode, extra=""):
    return (f"[workers]\nencode = {encode}\ncompile = 0\nexecute = 0\n"
            f"[plotting]\nmax_sectors_per_farm = 2\n"
            f"[cluster]\nnats = {url}\nnode = {name}\n{extra}")


def plot(node, farm_dir):
    """Seconds from farm add to every sector plotted."""
    t0 = time.monotonic()
    node.ctl("farm", "add", farm_dir, "--sectors", SECTORS, "--profile", "demo")
    wait(lambda: all(s["state"] == "plotted" for s in node.ctl("sectors")), "plotting", 600)
    return time.monotonic() - t0


def main():
    build = sys.argv[1]
    if shutil.which("nats-server") is None:
        raise SystemExit("bench_rplot: nats-server is not installed (scripts/deps)")
    tmp = tempfile.mkdtemp(prefix="bench-rplot-")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"nats://127.0.0.1:{port}"
    nats = subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    nodes = []
    try:
        subprocess.run([os.path.join(build, "farmctl"), "chain", "generate", "--blocks", "70",
                        "--body-size", "16384", "--out", os.path.join(tmp, "chain")],
                       check=True, capture_output=True)
        local = Node(build, tmp, "local", ini(url, "local", 1))
        nodes.append(local)
        local.ingest(os.path.join(tmp, "chain"))
        wait(lambda: local.ctl("history", "status")["archived_height"] == 70, "local archive")
        t_local = plot(local, os.path.join(tmp, "farm-local"))
        local.stop()

        farmer = Node(build, tmp, "farmer", ini(url, "farmer", 0, "remote_plotting = prefer\n"))
        plotter = Node(build, tmp, "plotter", ini(url, "plotter", 1, "plotter = true\n"))
        nodes += [farmer, plotter]
        farmer.ingest(os.path.join(tmp, "chain"))
        for n in (farmer, plotter):
            wait(lambda n=n: n.ctl("history", "status")["archived_height"] == 70,
                 f"{n.dir} archive")
        before = farmer.ctl("cluster", "status")["counters"]
        pbefore = plotter.ctl("cluster", "status")["counters"]
        t_remote = plot(farmer, os.path.join(tmp, "farm-remote"))
        after = farmer.ctl("cluster", "status")["counters"]
        pafter = plotter.ctl("cluster", "status")["counters"]
        rp = farmer.ctl("cluster", "status")["remote_plotting"]
    finally:
        for n in nodes:
            n.stop()
        nats.terminate()
        nats.wait(10)
    mib = SECTORS * SECTOR_MIB
    def per(a, b, k):
        return (a[k] - b[k]) / SECTORS / (1 << 20)
    moved = per(after, before, "bytes_sent") + per(after, before, "bytes_received")
    pmoved = per(pafter, pbefore, "bytes_sent") + per(pafter, pbefore, "bytes_received")
    print(f"local plotting, 1 encode worker: {mib / t_local:.2f} MiB/s "
          f"({SECTORS} sectors in {t_local:.1f} s)")
    print(f"remote plotting, 1 plotter with 1 encode worker: {mib / t_remote:.2f} MiB/s "
          f"({SECTORS} sectors in {t_remote:.1f} s; {rp['plotted']} remote, "
          f"{rp['failed']} failed attempts)")
    print(f"remote_vs_local {t_local / t_remote:.2f} x")
    print(f"bytes moved per plotted sector: {moved:.2f} MiB on the farmer's connection "
          f"({per(after, before, 'bytes_sent'):.2f} sent, "
          f"{per(after, before, 'bytes_received'):.2f} received), {pmoved:.2f} MiB on the "
          f"plotter's ({per(pafter, pbefore, 'bytes_sent'):.2f} sent, "
          f"{per(pafter, pbefore, 'bytes_received'):.2f} received); the encoded data itself: "
          f"{rp['bytes_received'] / rp['plotted'] / (1 << 20):.2f} MiB "
          f"(sector {SECTOR_MIB:.0f} MiB)")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
