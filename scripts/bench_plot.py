#!/usr/bin/env python3
"""Plotting figures (called by scripts/bench and scripts/bench-compare).

For W = 1 and W = nproc encode workers (each the best of ROUNDS fresh
runs, every round printed): a release farmd with one segment of history
plots a fresh farm of SECTORS demo sectors.  Printed per W, each figure
beside the limit it is measured against in the same run and issue 12's
acceptance limit:
  - the rate (MiB/s, sectors/min) and its ratio to W × the bare kernel's
    single-core rate (DESIGN §13; the kernel is named, and checked against
    the one farmd's workers report).  The plotting span runs from just
    before `farm add` to the moment farmd committed the last sector
    (plotted_at_ms of its row, read from state.db afterwards), not to the
    poll that saw it: the poll comes up to 100 ms later, which in a 24-
    sector round of 1.5-3 s was 2-6 % of the span;
  - the supervisor's CPU (the run time of its threads, /proc/PID/task/*/
    schedstat, to the nanosecond: utime + stime of /proc/PID/stat count
    10 ms ticks, 5 % of a round's 0.2 s), from just before `farm add` to
    the poll that saw the last sector plotted, in % of one core per busy
    worker over the plotting wall time;
  - minor page faults (/proc/PID/stat field 10, minflt) of the supervisor
    and of every encode worker over the same span, per plotted sector and
    in % of the sector's pages (sector bytes / page size).
Then, in one more run with W = nproc, `status` latency is sampled while
plotting runs at full speed, and SIGTERM is sent mid-plot to time the exit
(that run is not a rate round: the sampler takes CPU from the plot).
usage: bench_plot.py BUILD_DIR (KERNEL_PIECES_PER_SECOND [KERNEL_NAME] | measure)
With `measure`, the limit is measured here: `bench_kernel KERNEL_SECONDS
encode` (with the FARMD_KERNEL that farmd gets, so the same kernel as its
workers) before every round, the limit being the best of those
measurements.  On a shared machine a single measurement of the kernel can
land in someone else's burst and make the plotting ratio look better than
it is (one run read a portable ratio of 1.29); the best of the run's
eleven is close to the kernel's rate on a quiet core, which is the limit
the issue means.
Each measurement lasts KERNEL_SECONDS, about as long as a plotting round,
so that the two bests are taken over windows of one length: on a host
whose speed moves from second to second (one run here: 453, 584 and 495
pieces/s in three 1-second measurements in a row), the best of short
windows is higher than any long window can be.

The same host also changes speed for tens of seconds at a time (one run:
the kernel at 411-416 pieces/s in two measurements, 532-546 in the other
five; the plotting rounds between them moved the same way), so each round
is also given a paired ratio: its rate against the kernel measured just
before and just after it, the higher of the two.  Both ratios are
printed beside the limit.  The paired one compares the round with the
kernel in the same state only when that state outlasts the round: one
run read a paired ratio of 1.05, its two measurements in a slow stretch
and the round not, so the best of the run is the stricter figure.
"""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "tests", "integration"))
from adminwire import Client, StatusSampler  # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pagefaults import machine_busy, proc_stat, task_cpu  # noqa: E402

SECTORS = 24
ROUNDS = 5
PIECES = 64                      # demo profile
SECTOR_BYTES = PIECES * 65536
SECTOR_MIB = SECTOR_BYTES / (1 << 20)
PAGE = os.sysconf("SC_PAGE_SIZE")
KERNEL_SECONDS = 2
# Issue 12's acceptance (2 workers: on a 2-core machine).
LIMIT_RATIO = {1: 0.92}
LIMIT_RATIO_MANY = 0.85
LIMIT_CPU_PCT = 8.0
LIMIT_FAULTS_PCT = 5.0


def ctl(build, sock, *args):
    p = subprocess.run([os.path.join(build, "farmctl"), "-s", sock, "--json", *args],
                       capture_output=True, text=True, check=True)
    return json.loads(p.stdout) if p.stdout.strip() else None


def wait(pred, timeout=120, step=0.02):
    t = time.monotonic() + timeout
    while time.monotonic() < t:
        if pred():
            return
        time.sleep(step)
    raise SystemExit("bench_plot: timed out")


class Faults:
    """Minor faults of the encode workers over the plotting span.  A worker
    present at the start counts from its first reading; one that appears
    later (a replacement) counts from 0, its start-up included; one that is
    gone at the end counts up to its last reading (the poll loop reads
    every worker 10 times a second, so little is lost).  Both are noted."""

    def __init__(self):
        self.first, self.last, self.kernels = {}, {}, set()
        self.cpu_first, self.cpu_last = {}, {}
        self.start_pids = self.end_pids = None

    def sample(self, workers, initial=False):
        pids = set()
        for w in workers:
            if w["kind"] != "encode":
                continue
            pids.add(w["pid"])
            if w.get("kernel"):
                self.kernels.add(w["kernel"])
            st = proc_stat(w["pid"])
            if st is None:
                continue
            self.first.setdefault(w["pid"], st[0] if initial else 0)
            self.last[w["pid"]] = st[0]
            self.cpu_first.setdefault(w["pid"], st[1] if initial else 0)
            self.cpu_last[w["pid"]] = st[1]
        # A worker gone since keeps its last reading in self.last.
        return pids

    def total(self):
        return sum(self.last[p] - self.first[p] for p in self.last)

    def cpu(self):
        return sum(self.cpu_last[p] - self.cpu_first[p] for p in self.cpu_last)

    def note(self):
        new = set(self.last) - self.start_pids
        gone = self.start_pids - self.end_pids
        if not new and not gone:
            return "the same %d worker%s from start to end" % (
                len(self.start_pids), "s" if len(self.start_pids) != 1 else "")
        return ("workers replaced: %d at the start, %d gone by the end (counted to their "
                "last reading), %d new (counted from 0)" % (len(self.start_pids), len(gone),
                                                            len(new)))


class Kernel:
    """The bare kernel's single-core rate: given, or the best of the
    measurements taken before each round."""

    def __init__(self, build, rate, name):
        self.build, self.rate, self.name, self.seen = build, rate, name, []

    def measure(self):
        """One more measurement (the rate given, when there is no build)."""
        if self.build is None:
            return self.rate
        out = subprocess.run([os.path.join(self.build, "tests", "bench_kernel"),
                              str(KERNEL_SECONDS), "encode"],
                             capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            k, v = line.split()[:2]
            if k == "encode_piece_64KiB_demo":
                self.seen.append(float(v))
            elif k.startswith("encode_kernel_"):
                self.name = k[len("encode_kernel_"):]
        self.rate = max(self.seen)
        return self.seen[-1]

    def describe(self):
        if not self.seen:
            return "given"
        return "best of %d measurements in this run: %s" % (
            len(self.seen), " ".join("%.0f" % x for x in self.seen))


def run(build, workers, measure_status):
    tmp = tempfile.mkdtemp(prefix="bench-plot-")
    with open(os.path.join(tmp, "farmd.ini"), "w") as f:
        f.write("[workers]\nencode = %d\ncompile = 0\nexecute = 0\n" % workers)
        f.write(os.environ.get("BENCH_PLOT_EXTRA", "").replace("\\n", "\n"))
    sock = os.path.join(tmp, "s", "farmd.sock")
    log = open(os.path.join(tmp, "log"), "w")
    proc = subprocess.Popen([os.path.join(build, "farmd"), "--state-dir", os.path.join(tmp, "s"),
                             "--config", os.path.join(tmp, "farmd.ini")], stderr=log)
    try:
        return plot(build, workers, measure_status, tmp, sock, proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait()
        log.close()
        subprocess.run(["rm", "-rf", tmp])


def last_plotted(tmp):
    """When farmd committed its last sector (wall-clock seconds)."""
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(tmp, "s", "state.db"), uri=True)
    try:
        return db.execute("SELECT max(plotted_at_ms) FROM sectors").fetchone()[0] / 1000
    finally:
        db.close()


def plot(build, workers, measure_status, tmp, sock, proc):
    wait(lambda: os.path.exists(sock) and subprocess.run(
        [os.path.join(build, "farmctl"), "-s", sock, "status"], capture_output=True).returncode == 0)
    subprocess.run([os.path.join(build, "farmctl"), "chain", "generate", "--blocks", "70",
                    "--body-size", "16384", "--out", os.path.join(tmp, "chain")],
                   check=True, capture_output=True)
    subprocess.run([os.path.join(build, "farmctl"), "-s", sock, "history", "ingest",
                    os.path.join(tmp, "chain")], check=True, capture_output=True)
    wait(lambda: ctl(build, sock, "history", "status")["history_size"] >= 1)
    # Every worker up before the span starts: its start-up is not plotting.
    wait(lambda: sum(1 for w in ctl(build, sock, "workers")
                     if w["kind"] == "encode" and w["state"] == "idle") == workers)

    sampler = StatusSampler(sock)
    # One connection, 10 polls a second: the bench must not eat the cores
    # it measures.
    c = Client(sock)
    faults = Faults()
    faults.start_pids = faults.sample(ctl(build, sock, "workers"), initial=True)
    sup0 = proc_stat(proc.pid)
    cpu0 = task_cpu(proc.pid)
    busy0 = machine_busy()
    t0 = time.monotonic()
    wall0 = time.time()
    ctl(build, sock, "farm", "add", os.path.join(tmp, "farm"), "--sectors", str(SECTORS))
    if measure_status:
        sampler.start()

    def done():
        plotted = json.loads(c.request(["farm", "list"])[4])[0]["plotted"] == SECTORS
        if not plotted:
            faults.sample(json.loads(c.request(["workers"])[4]))
        return plotted
    wait(done, timeout=600, step=0.1)
    polled = time.monotonic() - t0
    dt = last_plotted(tmp) - wall0
    sup1 = proc_stat(proc.pid)
    cpu1 = task_cpu(proc.pid)
    faults.end_pids = faults.sample(ctl(build, sock, "workers"))
    busy1 = machine_busy()
    if measure_status:
        sampler.stop()
    # CPU and faults are read at the poll: the tail after the last commit
    # (idle but for the polls) counts against farmd.
    r = {"dt": dt, "polled": polled, "cpu": cpu1 - cpu0, "sup_faults": sup1[0] - sup0[0],
         "worker_faults": faults.total(), "note": faults.note(), "kernels": faults.kernels,
         "others": (busy1 - busy0 - (cpu1 - cpu0) - faults.cpu()) / polled * 100}
    if measure_status:
        print("  status-sampled run, %d encode workers: %.1f MiB/s (%.2f s; not a rate round)"
              % (workers, SECTORS * SECTOR_MIB / dt, dt))
        print("status while plotting: " + sampler.summary())
        # SIGTERM mid-plot.
        ctl(build, sock, "farm", "add", os.path.join(tmp, "farm2"), "--sectors", str(SECTORS))
        wait(lambda: any(f["in_flight"] for f in ctl(build, sock, "plot")["farms"]))
        time.sleep(0.3)
        t = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait()
        print("SIGTERM mid-plot to exit: %.0f ms (exit %d)" % ((time.monotonic() - t) * 1e3, rc))
    else:
        print("  round, %d encode worker%s: %.1f MiB/s (%.2f s to the last commit, seen %.2f s "
              "after the start; other processes meanwhile, this script's included: %.0f%% of "
              "one core)" % (workers, "s" if workers > 1 else "", SECTORS * SECTOR_MIB / dt, dt,
                             polled, r["others"]))
    return r


def verdict(value, limit, at_least):
    """Whether a figure meets its limit, said in words: the figures are
    printed to 3 places, so that 0.849 against 0.85 is not shown as 0.85
    beside a limit it misses."""
    ok = value >= limit if at_least else value <= limit
    return "meets the limit" if ok else "MISSES the limit"


def report(workers, k, r):
    kernel, kname = k.rate, k.name
    dt = r["dt"]
    pieces_s = SECTORS * PIECES / dt
    limit = LIMIT_RATIO.get(workers, LIMIT_RATIO_MANY)
    reported = ",".join(sorted(r["kernels"])) or "unknown"
    named = kname or reported
    mismatch = "" if not kname or r["kernels"] == {kname} else \
        " [MISMATCH: farmd's workers report kernel %s]" % reported
    print("plotting, %d encode worker%s: %.1f MiB/s, %.1f sectors/min (%d sectors of %.0f MiB in "
          "%.2f s); bare kernel (%s) %d × %.0f pieces/s → ratio %.3f (issue 12 limit >= %.2f%s: %s)%s"
          % (workers, "s" if workers > 1 else "", SECTORS * SECTOR_MIB / dt, SECTORS / dt * 60,
             SECTORS, SECTOR_MIB, dt, named, workers, kernel, pieces_s / (workers * kernel),
             limit, "" if workers == 1 else ", 2 workers on 2 cores",
             verdict(pieces_s / (workers * kernel), limit, True), mismatch))
    print("  paired: %d × %.0f pieces/s, the kernel just before (%.0f) or after (%.0f) this round, "
          "whichever is higher → ratio %.3f (issue 12 limit >= %.2f: %s); the best paired "
          "ratio of the %d rounds: %.3f" % (workers, max(r["kernel_before"], r["kernel_after"]),
                                           r["kernel_before"], r["kernel_after"], r["paired"],
                                           limit, verdict(r["paired"], limit, True), ROUNDS,
                                           r["best_paired"]))
    print("  bare kernel's rate (64 KiB demo pieces per second on one core): %s" % k.describe())
    cpu_pct = r["cpu"] / dt / workers * 100
    print("  supervisor CPU: %.3f s in %.2f s = %.2f%% of one core per busy worker (%.0f%% of "
          "one core in all; issue 12 limit <= %.0f%%: %s)"
          % (r["cpu"], dt, cpu_pct, r["cpu"] / dt * 100, LIMIT_CPU_PCT,
             verdict(cpu_pct, LIMIT_CPU_PCT, False)))
    per = (r["sup_faults"] + r["worker_faults"]) / SECTORS
    pages = SECTOR_BYTES // PAGE
    print("  page faults per plotted sector: %.0f (supervisor %.0f, workers %.0f) = %.1f%% of the "
          "sector's %d pages (issue 12 limit <= %.0f%%: %s); %s"
          % (per, r["sup_faults"] / SECTORS, r["worker_faults"] / SECTORS, per / pages * 100,
             pages, LIMIT_FAULTS_PCT, verdict(per / pages * 100, LIMIT_FAULTS_PCT, False),
             r["note"]))
    print("  other processes meanwhile (this script's included): %.0f%% of one core" % r["others"])


def nproc():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def main():
    if len(sys.argv) not in (3, 4):
        raise SystemExit("usage: bench_plot.py BUILD_DIR (KERNEL_PIECES_PER_SECOND [KERNEL_NAME] "
                         "| measure)")
    build = sys.argv[1]
    if sys.argv[2] == "measure":
        k = Kernel(build, None, None)
    else:
        k = Kernel(None, float(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None)
    # 24 demo sectors take about a second with a SIMD kernel: one slow
    # fsync or a page-cache hiccup moves a single round by a third, so each
    # figure is the best of ROUNDS fresh runs (each printed).
    many = nproc()
    # The limit is measured before each round, so a burst of other load
    # during one measurement is outvoted by the others.
    rounds = {}
    before = k.measure()
    for w in sorted({1, many}):
        rounds[w] = []
        for i in range(ROUNDS):
            if i:
                before = k.measure()
            r = run(build, w, False)
            r["kernel_before"] = before
            rounds[w].append(r)
        # The next W's first measurement is this round's after.
        before = k.measure()
        for i, r in enumerate(rounds[w]):
            r["kernel_after"] = rounds[w][i + 1]["kernel_before"] if i + 1 < ROUNDS else before
            r["paired"] = SECTORS * PIECES / r["dt"] / (w * max(r["kernel_before"],
                                                                r["kernel_after"]))
    for w in sorted(rounds):
        best = min(rounds[w], key=lambda r: r["dt"])
        best["best_paired"] = max(r["paired"] for r in rounds[w])
        report(w, k, best)
    run(build, many, True)


if __name__ == "__main__":
    main()
