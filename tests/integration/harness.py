"""Drives farmd and farmctl the way an operator does, for integration tests.

Each test file defines functions named test_*; run_tests() runs them in
order, each with a fresh temporary directory, prints one line per test and
exits non-zero if any failed.  The build directory comes from FARMD_BUILD
(set by meson); FARMD_SHARD=K/N runs one shard of the file (shard_spec).
"""
import json
import os
import signal
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import adminwire

BUILD = os.environ.get("FARMD_BUILD", os.path.join(os.path.dirname(__file__), "../../build"))
FARMD = os.path.join(BUILD, "farmd")
FARMCTL = os.path.join(BUILD, "farmctl")
WORKER = os.path.join(BUILD, "farmd-worker")
SANITIZED = os.environ.get("FARMD_SANITIZED") == "1"


def load_factor():
    """How much slower than an idle machine this one is likely to be now:
    FARMD_LOAD_FACTOR when set (scripts/test --stress sets it), else the
    1-minute load average per CPU, at least 1."""
    forced = os.environ.get("FARMD_LOAD_FACTOR")
    if forced:
        return max(1.0, float(forced))
    try:
        return max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
    except OSError:
        return 1.0


# Every deadline in the tests is a generous limit for progress, never an
# expected speed (speeds are scripts/bench figures), scaled by SLOW:
# sanitized builds run several times slower, and a busy machine slower
# still.  wait_for() also rescales by the load at the time it waits.
SLOW = (3.0 if SANITIZED else 1.0) * load_factor()
# Pacing (the random moment of a kill, the gap between two kills) scales
# with the build only: stretched by load, the work a loop races against
# would end before the loop had done what it counts on.
PACE = 3.0 if SANITIZED else 1.0


def slow_now():
    """SLOW, or more when the machine is busier now than when the suite
    was imported: for a setting a test sizes just before it needs it (a
    back-off base, a GC delay) and for wait_for's deadlines."""
    return max(SLOW, (3.0 if SANITIZED else 1.0) * load_factor())
# farmd (and the workers it starts) always runs with the ASAN_OPTIONS the
# suite was started with, leak check included.  farmctl is leak-checked in
# the files that set CTL_LEAK_CHECK = True (foundation, operations and the
# other files that run each command a few times); the long files start
# thousands of farmctl calls, where LeakSanitizer's exit scan doubled the
# CPU a call costs (run_tests turns it off for their farmctl calls only).
FARMD_ASAN_OPTIONS = os.environ.get("ASAN_OPTIONS")
# One leak is cnats' own (tests/lsan.supp says which and why).
if SANITIZED and "LSAN_OPTIONS" not in os.environ:
    os.environ["LSAN_OPTIONS"] = "suppressions=" + os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "lsan.supp")

# kill -9 loops: the acceptance lists ask for 20 rounds, which the normal
# pass runs; the sanitizer pass is there for memory errors and runs fewer.
CRASH_ROUNDS = int(os.environ.get("FARMD_CRASH_ROUNDS", "20"))


class CtlError(Exception):
    def __init__(self, proc):
        super().__init__(f"farmctl exited {proc.returncode}: {proc.stderr.strip()}")
        self.proc = proc


# ---- polling --------------------------------------------------------------
# While wait_for() polls, the read-only queries its predicate makes
# (status, history status, metrics, block stat, ...) go over a kept admin
# connection, as the same request farmctl sends, and come back as farmctl
# would print them.  A wait polls a query tens of times a second for as
# long as farmd works; under ASan each farmctl start costs ~40 ms of CPU
# (its shadow memory), and a profile of test_release_archived_blocks found
# two thirds of the test's CPU in 544 farmctl processes, nearly all of them
# polls.  What a test asserts after its waits still runs farmctl.
_polling = threading.local()
POLLED = {("status",), ("metrics",), ("history", "status"), ("block", "stat"),
          ("block", "list-errors"), ("scrub", "status"), ("farm", "list"),
          ("farm", "status"), ("plot", "status"), ("artifact", "list"),
          ("cluster", "status"), ("cluster", "peers")}


def _polled(args):
    if not getattr(_polling, "depth", 0) or not args:
        return False
    words = [str(a) for a in args]
    return (words[0],) in POLLED or tuple(words[:2]) in POLLED


def _poll_ctl(f, argv, json_out):
    """What `farmctl [--json] ARGV` returns, from a kept connection."""
    try:
        resp = _wire_client(f).call(argv, json=json_out)
    except (OSError, EOFError):
        _drop_wire_client(f)
        raise
    warn = resp.get(5, b"").decode()
    err = f"farmctl: warning: {warn}\n" if warn else ""
    if not resp.get(1):
        return subprocess.CompletedProcess(argv, 1, "", err + "farmctl: " + resp.get(2, b"").decode() + "\n")
    if json_out:
        out = (resp.get(4, b"").decode() or "{}") + "\n"
    else:
        out = resp.get(6, b"").decode() if resp.get(6) else resp.get(3, b"").decode()
    return subprocess.CompletedProcess(argv, 0, out, err)


def wait_for(pred, timeout=10.0, interval=0.02, what="condition"):
    """Polls pred until it returns something true; fails after timeout
    (seconds on an idle machine, scaled by SLOW and by the load now).
    Between two polls it sleeps at least as long as the last poll took: a
    predicate that starts farmctl costs ~80 ms of CPU under ASan, and
    polling back to back would take a core from the farmd it waits for."""
    scale = slow_now()
    deadline = time.monotonic() + timeout * scale
    last = None
    while time.monotonic() < deadline:
        began = time.monotonic()
        _polling.depth = getattr(_polling, "depth", 0) + 1
        try:
            last = pred()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - the predicate may race
            last = e
        finally:
            _polling.depth -= 1
        time.sleep(max(interval, time.monotonic() - began))
    raise AssertionError(f"timed out after {timeout * scale:.1f}s waiting for {what} (last: {last!r})")


def children_of(pid):
    """Direct children of pid, from /proc."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
            ppid = int(st[st.rindex(")") + 2:].split()[1])
            if ppid == pid:
                out.append(int(d))
        except (FileNotFoundError, ProcessLookupError, ValueError):
            pass
    return out


def proc_state(pid):
    # A process that dies while we read its stat file gives ESRCH.
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
        return st[st.rindex(")") + 2]
    except (FileNotFoundError, ProcessLookupError):
        return None


def pids_named(name):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    argv0 = f.read().split(b"\0")[0]
                if os.path.basename(argv0).decode() == name:
                    out.append(int(d))
            except (FileNotFoundError, ProcessLookupError):
                pass
    return out


class Farmd:
    """One farmd under test, with its own state dir and config."""

    def __init__(self, tmp, config=None, name="farmd", env=None):
        self.tmp = tmp
        self.env = dict(env or {})          # added to farmd's environment
        self.state_dir = os.path.join(tmp, "state")
        self.socket = os.path.join(self.state_dir, "farmd.sock")
        self.log_path = os.path.join(tmp, name + ".log")
        self.config_path = None
        self.proc = None
        self.logf = None
        if config is not None:
            self.write_config(config)

    def write_config(self, text):
        self.config_path = os.path.join(self.tmp, "farmd.ini")
        with open(self.config_path, "w") as f:
            f.write(text)

    def start(self, wait=True, extra=()):
        args = [FARMD, "--state-dir", self.state_dir] + list(extra)
        if self.config_path:
            args += ["--config", self.config_path]
        self.logf = open(self.log_path, "ab")
        env = dict(os.environ)
        env.update(self.env)
        if FARMD_ASAN_OPTIONS is not None:
            env["ASAN_OPTIONS"] = FARMD_ASAN_OPTIONS
        self.proc = subprocess.Popen(args, stdout=self.logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=10.0):
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"farmd exited {self.proc.returncode}: {self.log()[-2000:]}")
            st = self.status()
            return st["state"] == "running" and all(p["alive"] == p["size"] for p in st["pools"])
        wait_for(ready, timeout, what="farmd ready")

    def ctl_raw(self, *args, json_out=False, env=None, user=None, timeout=60, input=None):
        if env is None and user is None and input is None and _polled(args):
            return _poll_ctl(self, [str(a) for a in args], json_out)
        cmd = [FARMCTL, "-s", self.socket] + (["--json"] if json_out else []) + [str(a) for a in args]
        if user is not None:
            cmd = ["setpriv"] + user + ["--"] + cmd
        return subprocess.run(cmd, capture_output=True, text=input is None or isinstance(input, str),
                              timeout=timeout * SLOW, env=env, input=input)

    def ctl(self, *args, **kw):
        p = self.ctl_raw(*args, **kw)
        if p.returncode != 0:
            raise CtlError(p)
        return p.stdout

    def ctl_json(self, *args, **kw):
        return json.loads(self.ctl(*args, json_out=True, **kw))

    def status(self):
        return self.ctl_json("status")

    def worker_pids(self, kind=None):
        return [w["pid"] for w in self.status()["workers"]
                if kind is None or w["kind"] == kind]

    def pool(self, kind):
        return next(p for p in self.status()["pools"] if p["kind"] == kind)

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self, timeout=10.0):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout * SLOW)
        finally:
            self.logf.close()

    def kill9(self):
        self.proc.kill()
        self.proc.wait()
        self.logf.close()

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.logf is not None and not self.logf.closed:
            self.logf.close()


def metric(f, name):
    """One sample of `farmctl metrics`, e.g. 'farmd_worker_timeouts_total{kind="encode"}'."""
    for line in f.ctl("metrics").splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key == name:
            return float(value)
    raise AssertionError(f"metric {name} not in `farmctl metrics`")


def ctl_bin(f, *args, timeout=60):
    """farmctl with binary stdout (e.g. `block get` to stdout)."""
    return subprocess.run([FARMCTL, "-s", f.socket] + [str(a) for a in args],
                          capture_output=True, timeout=timeout * SLOW)


def block_stat(f, h):
    """`block stat --json`, or None when farmd says there is no such block."""
    p = f.ctl_raw("block", "stat", h, json_out=True)
    if p.returncode == 1 and "no such block" in p.stderr:
        return None
    if p.returncode != 0:
        raise CtlError(p)
    return json.loads(p.stdout)


# ---- bulk reads -------------------------------------------------------------
# A test that checks thousands of blocks after the fact (every piece of a
# history, every chain block's refcount), or sets up a thousand blocks
# to scrub, asks farmd over the admin protocol
# on one connection per thread, the requests farmctl sends, instead of
# starting one farmctl per block: under ASan a farmctl start costs ~80 ms of
# CPU (its shadow memory and leak check), and those checks started ~4,000
# each.  What they check is farmd's answer; farmctl's own handling of
# `block get` and `block stat` is tested by test_blocks through farmctl.
_wire = threading.local()


def _wire_client(f):
    key = (f.socket, f.proc.pid if f.proc else None)
    c = getattr(_wire, "clients", {}).get(key)
    if c is None:
        c = adminwire.Client(f.socket, timeout=60 * SLOW)
        _wire.__dict__.setdefault("clients", {})[key] = c
    return c


def _drop_wire_client(f):
    key = (f.socket, f.proc.pid if f.proc else None)
    c = getattr(_wire, "clients", {}).pop(key, None)
    if c is not None:
        c.s.close()


def bulk_stat(f, h):
    """As block_stat (`block stat --json`), on a kept admin connection."""
    try:
        resp = _wire_client(f).request(["block", "stat", h], json=True)
    except RuntimeError as e:
        if "no such block" in str(e):
            return None
        raise
    return json.loads(resp[4])


def bulk_put(f, path):
    """`block put PATH` (the file passed as a descriptor, as farmctl does)
    on a kept admin connection; returns the hash farmd answered."""
    resp = _wire_client(f).put(path)
    return resp[3].decode().strip()


def bulk_get(f, h):
    """The bytes `block get HASH` writes, on a kept admin connection."""
    fd = os.memfd_create("block-get")
    try:
        _wire_client(f).request(["block", "get", h], [fd])
        os.lseek(fd, 0, os.SEEK_SET)
        out = bytearray()
        while chunk := os.read(fd, 1 << 20):
            out += chunk
        return bytes(out)
    finally:
        os.close(fd)


def shard_spec():
    """(k, n) from FARMD_SHARD=k/n (1 <= k <= n), else (1, 1).

    meson runs a long file as n tests, shard k of n running the tests at
    0-based positions i (in file order) with i % n == k - 1: together they
    run every test exactly once, each in the order of the file.  Tests
    share no state (each has its own temporary directory and farmd), so
    any split is safe."""
    spec = os.environ.get("FARMD_SHARD", "")
    if not spec:
        return 1, 1
    try:
        k, n = (int(x) for x in spec.split("/"))
    except ValueError:
        k = n = 0
    if not 1 <= k <= n:
        sys.exit(f"FARMD_SHARD={spec!r}: expected K/N with 1 <= K <= N")
    return k, n


def run_tests(module_globals):
    only = sys.argv[1:]
    if SANITIZED and FARMD_ASAN_OPTIONS is not None and not module_globals.get("CTL_LEAK_CHECK"):
        opts = [o for o in FARMD_ASAN_OPTIONS.split(":") if o and not o.startswith("detect_leaks=")]
        os.environ["ASAN_OPTIONS"] = ":".join(opts + ["detect_leaks=0"])
    tests = [(n, f) for n, f in module_globals.items()
             if n.startswith("test_") and callable(f) and (not only or n in only)]
    k, n = shard_spec()
    if n > 1:
        total = len(tests)
        tests = [t for i, t in enumerate(tests) if i % n == k - 1]
        print(f"shard {k}/{n}: {len(tests)} of {total} tests: "
              + " ".join(name for name, _ in tests), flush=True)
    failed = 0
    for name, fn in tests:
        tmp = tempfile.mkdtemp(prefix=f"farmd-{name}-", dir=os.environ.get("FARMD_TMP"))
        os.chmod(tmp, 0o755)
        started = time.monotonic()
        try:
            fn(tmp)
            print(f"ok   {name} ({time.monotonic() - started:.1f}s)", flush=True)
            if not os.environ.get("FARMD_KEEP_TMP"):    # keep it to read its logs
                shutil.rmtree(tmp, ignore_errors=True)
        except Exception:  # noqa: BLE001
            failed += 1
            print(f"FAIL {name} ({time.monotonic() - started:.1f}s)", flush=True)
            traceback.print_exc()
            for log in sorted(os.listdir(tmp)):
                if log.endswith(".log"):
                    with open(os.path.join(tmp, log), "rb") as f:
                        tail = f.read()[-3000:].decode(errors="replace")
                    print(f"--- {log} (tail) ---\n{tail}", flush=True)
        finally:
            for obj in list(_live):
                obj.cleanup()
            _live.clear()
    print(f"{len(tests) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


_live = []


def farmd(tmp, config=None, start=True, name="farmd", env=None, **kw):
    """A Farmd that run_tests() cleans up whatever the test does (env: added
    to its environment at every start)."""
    f = Farmd(tmp, config=config, name=name, env=env)
    _live.append(f)
    if start:
        f.start(**kw)
    return f


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NatsServer:
    """A nats-server of our own on 127.0.0.1 (Debian's nats-server 2.9),
    on a free port that stays the same across stop() and start(), so a
    farmd pointed at url reconnects to the restarted server.  max_payload
    (bytes) goes through a config file: 2.9 has no command-line flag for it.
    run_tests() kills it after the test whatever happens."""

    def __init__(self, tmp, max_payload=None, name="nats", port=None, extra=""):
        self.tmp = tmp
        self.port = port if port is not None else free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.log_path = os.path.join(tmp, name + ".log")
        self.conf = os.path.join(tmp, name + ".conf")
        with open(self.conf, "w") as f:
            f.write(f"listen: 127.0.0.1:{self.port}\n")
            if max_payload is not None:
                f.write(f"max_payload: {int(max_payload)}\n")
            f.write(extra)      # more nats-server config, e.g. authorization { ... }
            if os.environ.get("FARMD_NATS_DEBUG"):
                f.write("debug: true\n")   # connects, closes and their reasons in nats.log
            if os.environ.get("FARMD_NATS_DEBUG") == "trace":
                f.write("trace: true\n")   # and every protocol line (SUB, PUB, MSG)
        self.proc = None
        self.logf = None
        _live.append(self)

    def start(self, timeout=10.0):
        import socket
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["nats-server", "-c", self.conf], stdout=self.logf,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

        def listening():
            if self.proc.poll() is not None:
                raise AssertionError(f"nats-server exited {self.proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return True
            except OSError:
                return False
        wait_for(listening, timeout, what="nats-server listening")
        return self

    def stop(self):
        """kill -9: the server goes away without a goodbye, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.logf is not None and not self.logf.closed:
            self.logf.close()

    cleanup = stop

    def config_line(self):
        """The [cluster] nats line of a farmd config."""
        return f"nats = {self.url}\n"


def nats_server(tmp, **kw):
    """A started NatsServer that run_tests() stops whatever the test does."""
    return NatsServer(tmp, **kw).start()
