"""What an operator reads (issue 14): `farmctl metrics` passes `promtool
check metrics` after plotting, ingesting and a block put; the tables show
times and sizes for people while --json keeps the exact values; status
lines never double a word; `plot --follow` keeps following while sectors
wait for history.  DESIGN.md sections 10 and 11.

promtool comes from Debian's `prometheus` package (scripts/deps installs
it); without it the promtool test fails, it does not skip.

    FARMD_BUILD=/work/h3/build python3 tests/integration/test_ops_output.py [test_name ...]
"""
import datetime
import os
import re
import shutil
import subprocess
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from harness import FARMCTL, SLOW, farmd, metric, run_tests, wait_for  # noqa: E402

KIB = 1 << 10
CONFIG = "[workers]\nencode = 1\nrestart_backoff_max = 1s\n[plotting]\nmax_sectors_per_farm = 2\n"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$")
EPOCH_MS = re.compile(r"\b1\d{12}\b")              # a 13-digit epoch in ms


def chain(tmp, blocks=20, body=64 * KIB):
    """`farmctl chain generate`: blocks of about 64 KiB, 16 to a segment."""
    d = os.path.join(tmp, "chain")
    p = subprocess.run([FARMCTL, "chain", "generate", "--blocks", str(blocks), "--body-size",
                        str(body), "--seed", "ops-output", "--out", d],
                       capture_output=True, text=True, timeout=120 * SLOW)
    assert p.returncode == 0, p.stderr
    return d, blocks


def ingest_all(f, d, blocks):
    f.ctl("history", "ingest", d, timeout=120)
    return wait_for(lambda: (lambda st: st["archived_height"] == blocks and st)(
        f.ctl_json("history", "status")), 60, interval=0.05, what=f"archived height {blocks}")


def plot_done(f, sectors):
    def done():
        st = f.ctl_json("plot")
        return st["idle"] and st["farms"][0]["plotted"] == sectors and st
    return wait_for(done, 90, interval=0.1, what=f"{sectors} sectors plotted")


def lost_block(f, tmp, size):
    """`block put` of size random bytes whose file is then lost, so that a
    `block get` fails and `block list-errors` lists it.  Its hash."""
    blob = os.path.join(tmp, "blob")
    with open(blob, "wb") as fh:
        fh.write(os.urandom(size))
    h = f.ctl("block", "put", blob).strip()
    os.unlink(os.path.join(f.state_dir, "blocks", h[:2], h[2:4], h))
    assert f.ctl_raw("block", "get", h, "-o", os.path.join(tmp, "out")).returncode == 1
    wait_for(lambda: any(e["hash"] == h for e in f.ctl_json("block", "list-errors")), 10,
             what="the lost block in list-errors")
    return h


def doubled(text):
    """The lines of a status text that repeat a word ("waiting: waiting
    for ...", "the the"); paths (which may name a directory twice) are
    left out."""
    bad = []
    for line in text.splitlines():
        words = [w.lower() for tok in line.split() if "/" not in tok
                 for w in re.findall(r"[A-Za-z]+", tok)]
        if any(a == b for a, b in zip(words, words[1:])):
            bad.append(line)
    return bad


def status_lines_clean(f, *extra):
    """`status`, `history status`, `scrub status` (and extra commands):
    no line repeats a word.  Returns their texts by command."""
    texts = {}
    for cmd in (("status",), ("history", "status"), ("scrub", "status"), ("plot",)) + extra:
        text = f.ctl(*cmd)
        assert text.strip(), cmd
        assert not doubled(text), f"`farmctl {' '.join(cmd)}` doubles a word: {doubled(text)}"
        texts[" ".join(cmd)] = text
    return texts


# ---- the exposition, checked here as well as by promtool ---------------------------

def families(text):
    """{family: {"type", "help", "samples": [(name, labels, value)]}} of a
    text exposition; a sample line before its family's TYPE fails."""
    fams, current = {}, None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_ = line[7:].partition(" ")
            fams.setdefault(name, {"samples": []})["help"] = help_
        elif line.startswith("# TYPE "):
            name, _, typ = line[7:].partition(" ")
            fams.setdefault(name, {"samples": []})["type"] = typ
            current = name
        elif line and not line.startswith("#"):
            m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$", line)
            assert m, f"not a sample line: {line!r}"
            name = m.group(1)
            assert current is not None and name.startswith(current), \
                f"{name} outside its family (after {current})"
            float(m.group(3))
            fams[current]["samples"].append((name, m.group(2) or "", float(m.group(3))))
    return fams


def check_exposition(text):
    fams = families(text)
    assert fams, "no metrics"
    for name, fam in fams.items():
        assert fam.get("help"), f"{name}: no HELP"
        assert fam.get("type") in ("counter", "gauge", "histogram"), f"{name}: TYPE {fam.get('type')}"
        assert not re.search(r"_(ms|us|ns|milliseconds|microseconds|nanoseconds|minutes|hours|"
                             r"kilobytes|megabytes|kib|mib)(_|$)", name), f"{name}: not a base unit"
        if fam["type"] == "counter":
            assert name.endswith("_total"), f"counter {name} does not end in _total"
            assert all(s[0] == name for s in fam["samples"]), name
        else:
            assert not name.endswith("_total"), f"{fam['type']} {name} ends in _total"
        if fam["type"] == "histogram":
            kinds = {s[0][len(name):] for s in fam["samples"]}
            assert kinds == {"_bucket", "_sum", "_count"}, (name, kinds)
            assert any('le="+Inf"' in s[1] for s in fam["samples"]), name
    return fams


def promtool(text):
    tool = shutil.which("promtool")
    assert tool, "promtool not found: scripts/deps installs it (Debian package prometheus)"
    p = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, text=True,
                       timeout=60 * SLOW)
    assert p.returncode == 0 and p.stdout == "" and p.stderr == "", \
        f"promtool check metrics exited {p.returncode}: {p.stdout}{p.stderr}"


# ---- tests --------------------------------------------------------------------------

def test_metrics_pass_promtool_and_tables_read_as_people_do(tmp):
    """Plot a small farm, ingest a chain, put a block (and lose its file,
    so the block has an error), run a scrub: `farmctl metrics` passes
    promtool with no output; the tables show local ISO-8601 times, "ago"
    and KiB/MiB where JSON has epoch ms and bytes; no status line repeats
    a word."""
    d, blocks = chain(tmp)
    f = farmd(tmp, config=CONFIG)
    farm_dir = os.path.join(tmp, "farm")
    f.ctl_json("farm", "add", farm_dir, "--sectors", 2, "--profile", "demo")
    hist = ingest_all(f, d, blocks)
    plot_done(f, 2)

    h = lost_block(f, tmp, 64 * KIB)
    f.ctl("scrub", "start")
    wait_for(lambda: (lambda st: st["state"] == "idle" and st["checked"] > 0 and st)(
        f.ctl_json("scrub", "status")), 60, interval=0.1, what="a finished scrub run")

    text = f.ctl("metrics")
    promtool(text)
    fams = check_exposition(text)
    assert "farmd_resync_last_item_seconds" in fams, "the resync duration is in seconds"
    assert "farmd_resync_last_item_microseconds" not in fams
    assert fams["farmd_farm_plot_seconds"]["type"] == "histogram"
    assert metric(f, 'farmd_farm_plot_seconds_count{farm="0",phase="total"}') == 2
    assert metric(f, "farmd_history_archived_height") == blocks
    assert metric(f, "farmd_scrub_last_run_seconds") >= 0

    # sectors: PLOTTED_AT is the JSON's plotted_at (epoch ms), to the second.
    secs = {s["index"]: s for s in f.ctl_json("sectors")}
    table = f.ctl("sectors").splitlines()
    head = table[0].split()
    assert head[-1] == "PLOTTED_AT" and "PLOTTED_AT_MS" not in head, head
    for row in table[1:]:
        cols = row.split()
        at = cols[-1]
        assert ISO.match(at), f"PLOTTED_AT {at!r} is not local ISO-8601"
        want = secs[int(cols[1])]["plotted_at"]
        assert isinstance(want, int) and want > 10 ** 12, secs       # JSON: exact epoch ms
        assert datetime.datetime.fromisoformat(at).timestamp() == want // 1000, (at, want)

    # farm list: SECTOR_SIZE in MiB; JSON in bytes.
    (farm,) = f.ctl_json("farm", "list")
    assert farm["sector_size"] == 4 << 20, farm
    row = f.ctl("farm", "list").splitlines()[1]
    assert " 4.0 MiB " in row and str(4 << 20) not in row, row

    # block list-errors: LAST_TRY "… ago" (or "now"), NEXT_TRY "in …" (or "due").
    errs = f.ctl_json("block", "list-errors")
    assert all(isinstance(e["last_try_ms"], int) and isinstance(e["next_try_ms"], int)
               for e in errs), errs
    table = f.ctl("block", "list-errors").splitlines()
    assert table[0].split()[:4] == ["HASH", "ERRORS", "LAST_TRY", "NEXT_TRY"], table[0]
    (row,) = [r for r in table[1:] if r.startswith(h)]
    assert not EPOCH_MS.search(row), row
    assert re.search(r" (now|\d+ (s|min|h|d) ago) +(due|in \d+ (s|min|h|d)) ", row), row

    # block stat, history status: sizes for people, bytes beside them.
    piece = f.ctl_json("history", "segments")[0]["pieces"][0]
    stat = f.ctl("block", "stat", piece if isinstance(piece, str) else piece["hash"])
    assert re.search(r"^size +64\.0 KiB \(65536 bytes\)$", stat, re.M), stat
    texts = status_lines_clean(f, ("farm", "list"), ("workers",))
    assert hist["segment_fill_bytes"] > 1024, hist
    assert re.search(r"^segment fill +\d+\.\d (KiB|MiB) of 1\.0 MiB$",
                     texts["history status"], re.M), texts["history status"]
    assert re.search(r"^archiver +waiting for the block at height %d$" % (blocks + 1),
                     texts["history status"], re.M), texts["history status"]
    assert re.search(r"^last run finished \S+ \((now|\d+ (s|min) ago)\)$",
                     texts["scrub status"], re.M), texts["scrub status"]
    assert re.search(r"^farmd \S+  pid \d+  up \d+ (s|min)", texts["status"]), texts["status"]


def test_plot_follow_waits_for_history(tmp):
    """A farm added before any history: `plot --follow` does not exit, and
    says it is waiting; once history is ingested the sectors are plotted
    and it exits 0 when plotting is idle."""
    d, blocks = chain(tmp)
    f = farmd(tmp, config=CONFIG)
    f.ctl_json("farm", "add", os.path.join(tmp, "farm"), "--sectors", 3, "--profile", "demo")
    st = f.ctl_json("plot")
    assert st["idle"] and st["history_size"] == 0, st
    assert st["waiting_for_history"] == 3 and st["farms"][0]["waiting_for_history"] == 3, st
    texts = status_lines_clean(f)
    assert "plotting is waiting for history (3 sectors)" in texts["plot"], texts["plot"]
    assert re.search(r"^archiver +waiting for the block at height 1$",
                     texts["history status"], re.M), texts["history status"]

    follow = subprocess.Popen([FARMCTL, "-s", f.socket, "plot", "--follow"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(follow.stdout), daemon=True)
    reader.start()
    try:
        wait_for(lambda: "waiting for history: 3 sectors in farm 0\n" in lines, 10,
                 what="plot --follow saying it waits for history")
        # Still following: farmd keeps answering its polls (one a second),
        # counted as admin requests less the ones made here to read them.
        base, mine = metric(f, "farmd_admin_requests_total"), [0]

        def follow_polls():
            mine[0] += 1
            return metric(f, "farmd_admin_requests_total") - base - mine[0] >= 3
        wait_for(follow_polls, 20, interval=0.2, what="plot --follow polling")
        assert follow.poll() is None, f"plot --follow exited {follow.returncode}: {lines}"
        assert not any("idle" in line for line in lines), lines
        ingest_all(f, d, blocks)
        follow.wait(timeout=90 * SLOW)
        reader.join(timeout=10 * SLOW)
        err = follow.stderr.read()
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    assert follow.returncode == 0, (follow.returncode, err, lines)
    assert lines[-1] == "plotting is idle\n", lines
    assert any(re.match(r"farm 0: 3/3 sectors plotted", line) for line in lines), lines
    st = f.ctl_json("plot")
    assert st["idle"] and st["waiting_for_history"] == 0 and st["farms"][0]["plotted"] == 3, st
    status_lines_clean(f)


# Every farmctl call here runs with LeakSanitizer on (harness.py).
CTL_LEAK_CHECK = True


if __name__ == "__main__":
    run_tests(globals())
