"""Install layout tests (issue 14, acceptance 4 and 5): `meson install
--destdir D` of the build under test lays out the programs, man pages,
bash completion, systemd files and example config; the unit passes
`systemd-analyze verify`; the man pages pass `mandoc -T lint`; the bash
completion completes from farmctl's table; and farmd started from D runs
D's own worker (not the build directory's) and plots a small demo farm.

The tree is installed with the build's own prefix (/usr/local for a plain
`meson setup`), read from `meson introspect`, so the build under test is
reused as it is (--no-rebuild).  Needs meson, systemd-analyze (Debian's
systemd package, which runs without systemd as PID 1) and mandoc.

    FARMD_BUILD=build python3 tests/integration/test_install.py [test_name ...]
"""
import atexit
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # noqa: E402
from harness import BUILD, SLOW, farmd, run_tests, wait_for  # noqa: E402

OUR_PAGES = ("farmd.8", "farmctl.8", "farmd.conf.5")


def build_dirs():
    """The build's install directories, absolute."""
    p = subprocess.run(["meson", "introspect", BUILD, "--buildoptions"], capture_output=True,
                       text=True, timeout=60 * SLOW, check=True)
    opts = {o["name"]: o["value"] for o in json.loads(p.stdout)}
    prefix = opts["prefix"]
    return {k: os.path.join(prefix, opts[k]) for k in
            ("bindir", "sbindir", "libexecdir", "datadir", "mandir", "sysconfdir")} | \
        {"prefix": prefix}


class Tree:
    """The build installed under DIR/D; paths as installed (in D)."""

    def __init__(self, tmp):
        self.root = os.path.join(tmp, "D")
        p = subprocess.run(["meson", "install", "-C", BUILD, "--destdir", self.root,
                            "--no-rebuild", "--quiet"], capture_output=True, text=True,
                           timeout=120 * SLOW)
        assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
        self.dirs = build_dirs()
        self.lib = os.path.join(self.dirs["prefix"], "lib")

    def path(self, d, *names):
        """An installed path in D: d is a key of build_dirs() or an absolute dir."""
        base = self.dirs.get(d, d)
        return self.root + os.path.join(base, *names)

    @property
    def farmd(self):
        return self.path("sbindir", "farmd")

    @property
    def farmctl(self):
        return self.path("bindir", "farmctl")

    @property
    def worker(self):
        return self.path("libexecdir", "farmd-worker")


_tree = None


def installed(tmp):
    """The installed tree, made once for the file (the tests only read it)."""
    global _tree
    if _tree is None:
        top = tempfile.mkdtemp(prefix="farmd-install-", dir=os.environ.get("FARMD_TMP"))
        os.chmod(top, 0o755)
        atexit.register(shutil.rmtree, top, ignore_errors=True)
        _tree = Tree(top)
    return _tree


def is_exec(path):
    return os.path.isfile(path) and os.access(path, os.X_OK)


def test_layout(tmp):
    t = installed(tmp)
    assert is_exec(t.farmd) and is_exec(t.farmctl) and is_exec(t.worker), \
        sorted(os.path.join(d, f) for d, _, fs in os.walk(t.root) for f in fs)
    # Each program in its own place, and only there.
    for prog, d in (("farmd", "sbindir"), ("farmctl", "bindir"), ("farmd-worker", "libexecdir")):
        where = [os.path.join(dp, f) for dp, _, fs in os.walk(t.root) for f in fs
                 if f == prog and is_exec(os.path.join(dp, f))]
        assert where == [t.path(d, prog)], (prog, where)
    assert os.path.isfile(t.path("mandir", "man8", "farmd.8"))
    assert os.path.isfile(t.path("mandir", "man8", "farmctl.8"))
    assert os.path.isfile(t.path("mandir", "man5", "farmd.conf.5"))
    assert os.path.isfile(t.path("datadir", "bash-completion", "completions", "farmctl"))
    unit = t.path(t.lib, "systemd", "system", "farmd.service")
    sysusers = t.path(t.lib, "sysusers.d", "farmd.conf")
    tmpfiles = t.path(t.lib, "tmpfiles.d", "farmd.conf")
    example = t.path("datadir", "farmd", "farmd.conf")
    for p in (unit, sysusers, tmpfiles, example):
        assert os.path.isfile(p), p
    text = open(unit).read()
    # The unit runs the installed farmd and names installed paths.
    assert f"ExecStart={t.dirs['sbindir']}/farmd --state-dir /var/lib/farmd --config " \
        f"{t.dirs['sysconfdir']}/farmd/farmd.conf\n" in text, text
    for line in ("Type=notify", "RestartPreventExitStatus=78", "StateDirectory=farmd",
                 "User=farmd", "Group=farmd", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "ProtectHome=yes", "PrivateTmp=yes", "LockPersonality=yes",
                 "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
                 "SystemCallArchitectures=native", "ExecReload=/bin/kill -HUP $MAINPID"):
        assert line + "\n" in text, line
    assert re.search(r"^WatchdogSec=\d+s$", text, re.M), text
    assert "@" not in text.replace("\n#", ""), "an unconfigured @VAR@ in the unit"
    assert re.search(r"^u farmd ", open(sysusers).read(), re.M)
    tf = open(tmpfiles).read()
    assert f"C {t.dirs['sysconfdir']}/farmd/farmd.conf - - - - {t.dirs['datadir']}/farmd/farmd.conf" \
        in tf, tf


def test_unit_verifies(tmp):
    """systemd-analyze verify says nothing about the installed unit.  It
    checks that ExecStart's program exists, and Documentation='s man
    pages: a copy of the unit runs D's farmd, and MANPATH is D's."""
    t = installed(tmp)
    unit = t.path(t.lib, "systemd", "system", "farmd.service")
    text = open(unit).read()
    sbin = t.dirs["sbindir"]
    assert f"ExecStart={sbin}/farmd " in text
    copy = os.path.join(tmp, "farmd.service")
    with open(copy, "w") as f:
        f.write(text.replace(f"ExecStart={sbin}/farmd ", f"ExecStart={t.farmd} "))
    env = dict(os.environ, MANPATH=t.path("mandir"), SYSTEMD_LOG_COLOR="0")
    p = subprocess.run(["systemd-analyze", "verify", copy], capture_output=True, text=True,
                       env=env, timeout=60 * SLOW)
    assert p.returncode == 0 and p.stdout == "" and p.stderr == "", \
        (p.returncode, p.stdout, p.stderr)
    # The check is real: a broken copy is reported.
    with open(copy, "w") as f:
        f.write(text.replace(f"ExecStart={sbin}/farmd ", f"ExecStart={t.farmd} ")
                .replace("WatchdogSec=", "WatchdogSecs="))
    p = subprocess.run(["systemd-analyze", "verify", copy], capture_output=True, text=True,
                       env=env, timeout=60 * SLOW)
    assert "WatchdogSecs" in p.stderr, (p.returncode, p.stderr)


def test_man_pages_lint_clean(tmp):
    """mandoc -T lint reports nothing but the cross references among
    farmd's own three pages (mandoc looks those up in the base system's
    /usr/share/man only, where they are not installed by a test)."""
    t = installed(tmp)
    own = re.compile(r"STYLE: referenced manual not found: Xr (farmd|farmctl|farmd\.conf) [58]")
    for page in OUR_PAGES:
        path = t.path("mandir", "man" + page[-1], page)
        p = subprocess.run(["mandoc", "-T", "lint", path], capture_output=True, text=True,
                           timeout=60 * SLOW)
        msgs = [m for m in (p.stdout + p.stderr).splitlines() if m and not own.search(m)]
        assert msgs == [], (page, msgs)
        p = subprocess.run(["mandoc", "-T", "lint", "-W", "warning", path], capture_output=True,
                           text=True, timeout=60 * SLOW)
        assert p.returncode == 0 and p.stdout == p.stderr == "", (page, p.stdout, p.stderr)
        out = re.sub(r".\x08", "", subprocess.run(["mandoc", "-T", "ascii", path],
                     capture_output=True, text=True, timeout=60 * SLOW, check=True).stdout)
        assert "EXIT STATUS" in out or page.endswith(".5"), page
    # Every command of farmctl's grammar is in farmctl(8).
    man = subprocess.run(["mandoc", "-T", "ascii", t.path("mandir", "man8", "farmctl.8")],
                         capture_output=True, text=True, timeout=60 * SLOW, check=True).stdout
    man = re.sub(r".\x08", "", man)
    helptext = subprocess.run([t.farmctl, "help"], capture_output=True, text=True,
                              timeout=60 * SLOW, check=True).stdout
    for line in helptext.splitlines()[2:]:
        words = re.split(r"\s{2,}", line.strip())[0].split()
        if not words or words[0] == "the" or line.startswith("   "):
            continue
        cmd = []
        for w in words:
            if not re.fullmatch(r"[a-z][a-z-]*|--all|--follow", w):
                break
            cmd.append(w)
        assert " ".join(cmd) in re.sub(r"\s+", " ", man), (cmd, line)
    # Every key of the example config is in farmd.conf(5).
    conf = re.sub(r".\x08", "", subprocess.run(
        ["mandoc", "-T", "ascii", t.path("mandir", "man5", "farmd.conf.5")],
        capture_output=True, text=True, timeout=60 * SLOW, check=True).stdout)
    for key in re.findall(r"^#(\w+) =", open(t.path("datadir", "farmd", "farmd.conf")).read(),
                          re.M):
        assert key + " =" in conf, key


def complete(t, words, cword):
    """COMPREPLY of the installed completion for COMP_WORDS=words."""
    script = t.path("datadir", "bash-completion", "completions", "farmctl")
    words_sh = " ".join("'" + w + "'" for w in words)
    prog = (f"source '{script}'; COMP_WORDS=({words_sh}); COMP_CWORD={cword}; "
            f"COMP_LINE=\"${{COMP_WORDS[*]}}\"; _farmctl; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
    env = dict(os.environ, PATH=os.path.dirname(t.farmctl) + ":/usr/bin:/bin")
    p = subprocess.run(["bash", "--norc", "--noprofile", "-c", prog], capture_output=True,
                       text=True, env=env, timeout=60 * SLOW, cwd=os.path.dirname(script))
    assert p.returncode == 0, (p.returncode, p.stderr)
    return [w for w in p.stdout.splitlines() if w]


def test_bash_completion(tmp):
    t = installed(tmp)
    assert complete(t, ["farmctl", "bl"], 1) == ["block"]
    assert complete(t, ["farmctl", "block", "re"], 2) == ["retry-now"]
    assert complete(t, ["farmctl", "block", "retry-now", ""], 3) == ["--all"]
    assert set(complete(t, ["farmctl", ""], 1)) >= {"status", "block", "history", "farm", "plot"}
    assert complete(t, ["farmctl", "farm", "add", "/x", "--profile", "p"], 5) == ["production"]
    # FILE arguments complete file names (the cwd is the completions dir).
    assert complete(t, ["farmctl", "block", "put", "farm"], 3) == ["farmctl"]
    # DIR arguments complete directories only.
    os.makedirs(os.path.join(tmp, "farmdir"))
    open(os.path.join(tmp, "farmfile"), "w").close()
    got = complete(t, ["farmctl", "farm", "add", os.path.join(tmp, "farm")], 3)
    assert got == [os.path.join(tmp, "farmdir")], got


def test_installed_farmd_plots_demo(tmp):
    """D's farmd, with D's farmctl, finds D's worker (not the build's, and
    not the configured libexecdir outside D) and plots 4 demo sectors."""
    t = installed(tmp)
    saved = harness.FARMD, harness.FARMCTL
    harness.FARMD, harness.FARMCTL = t.farmd, t.farmctl
    try:
        f = farmd(tmp, config="[workers]\nencode = 2\n")
        workers = f.status()["workers"]
        assert workers, "no workers"
        for w in workers:
            exe = os.readlink(f"/proc/{w['pid']}/exe")
            assert exe == t.worker, (w, exe, t.worker)
        chain = os.path.join(tmp, "chain")
        f.ctl("chain", "generate", "--blocks", 24, "--body-size", 65536, "--seed", "install",
              "--out", chain)
        farm = os.path.join(tmp, "farm")
        f.ctl("farm", "add", farm, "--sectors", 4, "--profile", "demo")
        f.ctl("history", "ingest", chain, timeout=120)

        def plotted():
            secs = f.ctl_json("sectors")
            return secs if len(secs) == 4 and all(s["state"] == "plotted" for s in secs) else None
        wait_for(plotted, 90, interval=0.1, what="4 demo sectors plotted")
        assert f.stop() == 0, f.log()[-2000:]
    finally:
        harness.FARMD, harness.FARMCTL = saved


def test_worker_binary_key(tmp):
    """[workers] worker_binary names the worker farmd runs; a relative or
    missing path is a config error with file and line (exit 78)."""
    t = installed(tmp)
    cfg = os.path.join(tmp, "farmd.conf")
    for value, why in (("farmd-worker", "is not an absolute path"),
                       (os.path.join(tmp, "none"), "No such file or directory")):
        with open(cfg, "w") as f:
            f.write(f"[workers]\n\nworker_binary = {value}\n")
        p = subprocess.run([t.farmd, "--state-dir", os.path.join(tmp, "s"), "--config", cfg],
                           capture_output=True, text=True, timeout=60 * SLOW)
        assert p.returncode == 78 and f"{cfg}:3: [workers] worker_binary: " in p.stderr \
            and why in p.stderr, (p.returncode, p.stderr)
    # A copy elsewhere is run, and only it.
    copy = os.path.join(tmp, "bin", "my-worker")
    os.makedirs(os.path.dirname(copy))
    with open(t.worker, "rb") as src, open(copy, "wb") as dst:
        dst.write(src.read())
    os.chmod(copy, 0o755)
    saved = harness.FARMD, harness.FARMCTL
    harness.FARMD, harness.FARMCTL = t.farmd, t.farmctl
    try:
        f = farmd(tmp, config=f"[workers]\nencode = 1\nworker_binary = {copy}\n")
        exes = {os.readlink(f"/proc/{w['pid']}/exe") for w in f.status()["workers"]}
        assert exes == {copy}, exes
        assert f.stop() == 0
    finally:
        harness.FARMD, harness.FARMCTL = saved


def test_example_config(tmp):
    """The example has every key at its default: uncommented, it loads
    (farmd --check-sandbox reads --config) and sets what farmd uses anyway."""
    t = installed(tmp)
    text = open(t.path("datadir", "farmd", "farmd.conf")).read()
    keys = re.findall(r"^#(\w+) = ?(.*)$", text, re.M)
    assert len(keys) >= 30, keys
    live = re.sub(r"^#(\w+ = ?.*)$", r"\1", text, flags=re.M)
    live = live.replace("encode = <CPU count>", f"encode = {os.cpu_count()}")
    cfg = os.path.join(tmp, "farmd.conf")
    with open(cfg, "w") as f:
        f.write(live)
    p = subprocess.run([t.farmd, "--check-sandbox", "--config", cfg], capture_output=True,
                       text=True, timeout=60 * SLOW)
    assert p.returncode == 0 and "seccomp:" in p.stdout, (p.returncode, p.stdout, p.stderr)
    with open(cfg, "a") as f:
        f.write("[workers]\nbogus = 1\n")
    p = subprocess.run([t.farmd, "--check-sandbox", "--config", cfg], capture_output=True,
                       text=True, timeout=60 * SLOW)
    assert p.returncode == 78, (p.returncode, p.stderr)


if __name__ == "__main__":
    run_tests(globals())
