#!/usr/bin/env python3
"""Minor page faults and CPU time of processes, from /proc/PID/stat (used by
scripts/bench and scripts/bench_plot.py for issue 12's figures).

usage: pagefaults.py PID...    prints "PID MINFLT CPU_SECONDS" per process
                               that exists, "total MINFLT CPU_SECONDS", and
                               "machine MONOTONIC BUSY_SECONDS": the clock
                               (CLOCK_MONOTONIC, as farmd's) and the CPU time
                               all processes have used since boot (/proc/stat)

minflt is field 10 of /proc/PID/stat, counted over all the process's
threads since its fork (a worker's start-up included); CPU is utime +
stime (fields 14 and 15), in clock ticks (10 ms here) turned to seconds.
"""
import os
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_stat(pid):
    """(minflt, utime + stime in seconds) of a process, None once it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # After the comm field: st[0] is field 3 (state), so field k is st[k - 3].
    return int(st[10 - 3]), (int(st[14 - 3]) + int(st[15 - 3])) / CLK_TCK


def task_cpu(pid):
    """CPU seconds of a process's live threads, to the nanosecond (the
    first field of /proc/PID/task/TID/schedstat: their run time), where
    /proc/PID/stat counts whole clock ticks (10 ms: 5 % of a 0.2 s
    figure); None once it is gone.  On a kernel without schedstat it is
    proc_stat's figure, always (never one unit at one reading and the
    other at the next).  Threads that ended are not in it: call it over
    spans in which the process starts and ends none."""
    if not os.path.exists("/proc/self/schedstat"):
        st = proc_stat(pid)
        return None if st is None else st[1]
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except (FileNotFoundError, ProcessLookupError):
        return None
    ns = 0
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                ns += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass                        # the thread ended since the listing
    return ns / 1e9


def machine_busy():
    """CPU seconds all processes have used since boot (/proc/stat: every
    state but idle and iowait; guest time is already in user)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / CLK_TCK


def main():
    if len(sys.argv) < 2:
        raise SystemExit("usage: pagefaults.py PID...")
    flt = cpu = 0
    for a in sys.argv[1:]:
        st = proc_stat(int(a))
        if st is None:
            continue
        print("%s %d %.2f" % (a, st[0], st[1]))
        flt, cpu = flt + st[0], cpu + st[1]
    print("total %d %.2f" % (flt, cpu))
    print("machine %.6f %.2f" % (time.monotonic(), machine_busy()))


if __name__ == "__main__":
    main()
