#!/usr/bin/env python3
"""Validation-code figures (issue 11), each beside its in-process limit
measured in the same run:
  - compile time per KiB of source: `farmctl artifact prepare` (a compile
    worker, the artifact written and fsynced) vs `luac5.4 -s` on the same
    files; both include a process start, so the slope between a small and
    a large source is the figure;
  - execute latency p50/p99 for a trivial validate and for one that runs
    about 10^6 VM instructions (500,000 iterations of ADD + FORLOOP), from
    farmd's own histogram (bucket bounds) and its mean, vs the same
    function called in one lua5.4 process (os.clock per call);
  - archiving rate of a 2,000-block chain without code, with the trivial
    code and with the 10^6-instruction code.
usage: bench_artifacts.py BUILD WORKDIR
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

BUILD, WORK = sys.argv[1], sys.argv[2]
FARMD = os.path.join(BUILD, "farmd")
FARMCTL = os.path.join(BUILD, "farmctl")
CODES = {
    "trivial": "function validate(b) return true end\n",
    "1e6": "function validate(b) local s = 0 for i = 1, 500000 do s = s + i end return true end\n",
}
BLOCKS = 2000


def ctl(sock, *args, json_out=False):
    p = subprocess.run([FARMCTL, "-s", sock] + (["--json"] if json_out else []) + list(args),
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise SystemExit(f"farmctl {' '.join(args)}: {p.stderr.strip()}")
    return json.loads(p.stdout) if json_out else p.stdout


def start(name):
    state = os.path.join(WORK, name)
    shutil.rmtree(state, ignore_errors=True)
    log = open(os.path.join(WORK, name + ".log"), "wb")
    p = subprocess.Popen([FARMD, "--state-dir", state], stdout=log, stderr=subprocess.STDOUT)
    sock = os.path.join(state, "farmd.sock")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if ctl(sock, "status", json_out=True)["state"] == "running":
                return p, sock
        except SystemExit:
            pass
        time.sleep(0.1)
    raise SystemExit(f"farmd {name} did not start")


def stop(p):
    p.terminate()
    p.wait(timeout=60)


def source(kib, tag):
    lines = [f"-- {tag}\nlocal M = {{}}\n"]
    size, i = 0, 0
    while size < kib * 1024:
        line = f"function M.f{i}(x) if x > {i} then return x - {i} end return x + {i} end\n"
        lines.append(line)
        size += len(line)
        i += 1
    lines.append("function validate(b) return true end\n")
    return "".join(lines)


def timed(args):
    t = time.monotonic()
    subprocess.run(args, check=True, capture_output=True, timeout=600)
    return time.monotonic() - t


def compile_figures(sock):
    small, large = 16, 512
    out = {}
    for kib in (small, large):
        farmd_t, luac_t = [], []
        for r in range(3):
            path = os.path.join(WORK, f"src-{kib}-{r}.lua")
            with open(path, "w") as f:
                f.write(source(kib, f"{kib} {r} {time.time()}"))
            farmd_t.append(timed([FARMCTL, "-s", sock, "artifact", "prepare", path]))
            luac_t.append(timed(["luac5.4", "-s", "-o", os.devnull, path]))
        out[kib] = (statistics.median(farmd_t), statistics.median(luac_t))
    per = [(out[large][k] - out[small][k]) / (large - small) * 1e6 for k in (0, 1)]
    print(f"compile_us_per_KiB farmd {per[0]:.1f} luac5.4 {per[1]:.1f} ratio {per[0] / per[1]:.2f}")
    print(f"compile_{small}KiB_s farmd {out[small][0]:.3f} luac5.4 {out[small][1]:.3f}")
    print(f"compile_{large}KiB_s farmd {out[large][0]:.3f} luac5.4 {out[large][1]:.3f}")


def hist(sock, name):
    buckets, total, count = [], 0.0, 0
    for line in ctl(sock, "metrics").splitlines():
        if line.startswith(name + "_bucket{le=\""):
            le = line.split('"')[1]
            buckets.append((float("inf") if le == "+Inf" else float(le), int(line.split()[-1])))
        elif line.startswith(name + "_sum "):
            total = float(line.split()[-1])
        elif line.startswith(name + "_count "):
            count = int(line.split()[-1])
    return buckets, total, count


def quantile(buckets, count, q):
    for le, n in buckets:
        if n >= q * count:
            return le
    return float("inf")


def archive_run(name, code):
    chain = os.path.join(WORK, "chain-" + name)
    shutil.rmtree(chain, ignore_errors=True)
    args = [FARMCTL, "chain", "generate", "--blocks", str(BLOCKS), "--body-size", "4096",
            "--seed", "bench", "--out", chain]
    if code is not None:
        cf = os.path.join(WORK, name + ".lua")
        with open(cf, "w") as f:
            f.write(code)
        args += ["--code", f"{cf}@1"]
    subprocess.run(args, check=True, capture_output=True)
    p, sock = start("archive-" + name)
    files = sorted(os.path.join(chain, n) for n in os.listdir(chain) if n.endswith(".blk"))
    t = time.monotonic()
    for i in range(0, len(files), 500):
        ctl(sock, "history", "ingest", *files[i:i + 500])
    while ctl(sock, "history", "status", json_out=True)["archived_height"] < BLOCKS:
        time.sleep(0.05)
    secs = time.monotonic() - t
    st = ctl(sock, "history", "status", json_out=True)
    assert st["rejected"] == [], st
    b, total, count = hist(sock, "farmd_artifact_execute_seconds")
    stop(p)
    return secs, b, total, count


def inprocess(code):
    """validate(block) called BLOCKS times in one lua5.4: per-call seconds."""
    script = code + """
local body = string.rep("x", 4096)
local t = {}
for h = 1, %d do
  local b = {height = h, parent_hash = string.rep("\\0", 32), body = body}
  local c = os.clock()
  assert(validate(b))
  t[#t + 1] = os.clock() - c
end
table.sort(t)
print(t[math.floor(#t * 0.5)], t[math.floor(#t * 0.99)])
""" % BLOCKS
    out = subprocess.run(["lua5.4", "-"], input=script, capture_output=True, text=True,
                         check=True).stdout.split()
    return float(out[0]), float(out[1])


def main():
    os.makedirs(WORK, exist_ok=True)
    if not shutil.which("lua5.4") or not shutil.which("luac5.4"):
        raise SystemExit("bench_artifacts: lua5.4 and luac5.4 are needed (Debian package lua5.4)")
    p, sock = start("compile")
    compile_figures(sock)
    stop(p)
    base, _, _, _ = archive_run("none", None)
    print(f"archive_{BLOCKS}_blocks_no_code blocks/s {BLOCKS / base:.0f}")
    for name, code in CODES.items():
        secs, b, total, count = archive_run(name, code)
        p50, p99 = inprocess(code)
        print(f"archive_{BLOCKS}_blocks_code_{name} blocks/s {BLOCKS / secs:.0f} "
              f"ratio_to_no_code {base / secs:.2f}")
        print(f"execute_{name} farmd executions {count} mean_ms {total / max(count, 1) * 1e3:.2f} "
              f"p50_le_ms {quantile(b, count, 0.5) * 1e3:g} p99_le_ms {quantile(b, count, 0.99) * 1e3:g} "
              f"in_process p50_ms {p50 * 1e3:.3f} p99_ms {p99 * 1e3:.3f}")


if __name__ == "__main__":
    main()
