"""Running farmd under a process manager: sd_notify, watchdog, reload,
admin connection limits."""
import os
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import FARMD, SLOW, Farmd, farmd, run_tests, wait_for  # noqa: E402


def notify_socket(tmp):
    path = os.path.join(tmp, "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(0.2)
    return s, path


def collect(s, done, timeout, what):
    """Notify messages until done(messages) holds; a generous limit for
    progress (a slow start only takes longer, it does not fail)."""
    msgs = []
    deadline = time.monotonic() + timeout * SLOW
    while not done(msgs):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout * SLOW:.0f}s waiting for {what}: {msgs}")
        try:
            msgs.append(s.recv(4096).decode())
        except socket.timeout:
            pass
    return msgs


def drain(s, seconds):
    msgs = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            msgs.append(s.recv(4096).decode())
        except socket.timeout:
            pass
    return msgs


def test_sd_notify_ready_status_watchdog_stopping(tmp):
    s, path = notify_socket(tmp)
    f = Farmd(tmp)
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="200000")
    log = open(f.log_path, "ab")
    p = subprocess.Popen([FARMD, "--state-dir", f.state_dir], env=env, stdout=log, stderr=log)
    try:
        msgs = collect(s, lambda m: "READY=1" in "\n".join(m) and
                       any("STATUS=running" in x for x in m), 30, "READY=1 and STATUS=running")
        # Pings keep coming after READY (every half of WATCHDOG_USEC).
        more = collect(s, lambda m: sum(x.count("WATCHDOG=1") for x in m) >= 5, 30,
                       "5 watchdog pings after READY")
        assert all(x.startswith("WATCHDOG=1") or x.startswith("STATUS=") for x in more), more
        # READY comes after the admin socket answers.
        f.proc = p
        f.logf = log
        assert f.status()["state"] == "running"
        p.send_signal(signal.SIGTERM)
        assert p.wait(30 * SLOW) == 0
        assert "STOPPING=1" in "\n".join(drain(s, 0.3))
    finally:
        if p.poll() is None:
            p.kill()
        log.close()


def test_sighup_reloads_reloadable_keys_and_refuses_others(tmp):
    f = farmd(tmp, config="[workers]\nencode = 1\njob_timeout = 60s\n")
    f.write_config("[workers]\nencode = 1\njob_timeout = 5s\n[daemon]\nlog_level = debug\n")
    f.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in f.log(), 5, what="reload logged")
    f.write_config("[workers]\nencode = 2\n")
    f.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "not reloadable without restart: [workers] encode" in f.log(), 5,
             what="refusal logged")
    f.write_config("[workers]\nencode = 1\nbogus = 1\n")
    f.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "unknown key 'bogus'" in f.log(), 5, what="bad config refused")
    assert f.pool("encode")["size"] == 1
    assert f.status()["state"] == "running"
    assert f.stop() == 0


def test_admin_connections_per_uid_are_limited(tmp):
    f = farmd(tmp, config="[daemon]\nadmin_clients_per_uid = 2\n")
    uid = 65534
    os.chmod(f.state_dir, 0o755)
    os.chmod(f.socket, 0o666)
    held = []

    def connect_as_nobody():
        # Connect as an unprivileged uid: the limit never applies to root.
        return subprocess.Popen(
            ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--",
             sys.executable, "-c",
             "import socket,sys,time; s=socket.socket(socket.AF_UNIX); "
             f"s.connect({f.socket!r}); print('up', flush=True); time.sleep(30)"],
            stdout=subprocess.PIPE, text=True)
    for _ in range(2):
        c = connect_as_nobody()
        assert c.stdout.readline().strip() == "up"
        held.append(c)
    try:
        r = f.ctl_raw("status", user=[f"--reuid={uid}", f"--regid={uid}", "--clear-groups"])
        assert r.returncode == 1, (r.returncode, r.stderr)
        assert "too many admin connections for uid 65534 (limit 2)" in r.stderr, r.stderr
        # Root is never limited, and farmd still answers.
        assert f.status()["state"] == "running"
    finally:
        for c in held:
            c.kill()
            c.wait()
    # Once they are gone the uid may connect again (and is then denied by
    # access rules, not by the limit).
    def again():
        r = f.ctl_raw("status", user=[f"--reuid={uid}", f"--regid={uid}", "--clear-groups"])
        return "too many" not in r.stderr and r
    r = wait_for(again, 5, what="limit released")
    assert "permission denied" in r.stderr, r.stderr


# Every farmctl call here runs with LeakSanitizer on (harness.py).
CTL_LEAK_CHECK = True


if __name__ == "__main__":
    run_tests(globals())
