"""`farmctl chain generate --code FILE@HEIGHT` (DESIGN.md sections 7 and 11):
the block at HEIGHT carries FILE's bytes as validation_code, every other
block none; several --code options each place their own file; the chain
is otherwise the same chain (parents, bodies) as one generated without
code; bad --code values are refused with exit 2 and a reason.

Blocks are read with test_history's strict ChainBlock decoder, not farmd's.

    FARMD_BUILD=build python3 tests/integration/test_chain_code.py [test_name ...]
"""
import hashlib
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))

from harness import FARMCTL, SLOW, run_tests  # noqa: E402
from test_history import parse_block  # noqa: E402

REJECT_FF = (b"-- rejects bodies whose first byte is 0xFF\n"
             b"function validate(b)\n"
             b"  if b.body:byte(1) == 0xFF then return false, \"body starts with 0xFF\" end\n"
             b"  return true\n"
             b"end\n")
ACCEPT_ALL = "function validate(b) return true end -- caf\u00e9\n".encode()


def generate(tmp, name, *args):
    out = os.path.join(tmp, name)
    p = subprocess.run([FARMCTL, "chain", "generate", "--blocks", "12", "--body-size", "300",
                        *args, "--out", out], capture_output=True, text=True, timeout=60 * SLOW)
    return p, out


def blocks(d):
    names = sorted(os.listdir(d))
    assert names == [f"{h:06d}.blk" for h in range(1, 13)], names
    raw = [open(os.path.join(d, n), "rb").read() for n in names]
    return raw, [parse_block(r) for r in raw]


def write(tmp, name, data):
    path = os.path.join(tmp, name)
    with open(path, "wb") as fh:
        fh.write(data)
    return path


def test_code_at_one_height(tmp):
    src = write(tmp, "reject_ff.lua", REJECT_FF)
    p, d = generate(tmp, "with", "--code", f"{src}@5")
    assert p.returncode == 0, p.stderr
    raw, parsed = blocks(d)
    for h, b in enumerate(parsed, 1):
        assert b["height"] == h, b
        assert b["code"] == (REJECT_FF.decode() if h == 5 else ""), (h, b["code"])
    # The code's bytes are in block 5's file as they are in the source file.
    assert REJECT_FF in raw[4]
    assert all(REJECT_FF not in r for i, r in enumerate(raw) if i != 4)
    # Parents chain over the exact file bytes, code included.
    assert parsed[0]["parent_hash"] == bytes(32)
    for h in range(2, 13):
        assert parsed[h - 1]["parent_hash"] == hashlib.sha256(raw[h - 2]).digest(), h
    # Bodies are those of the same chain without code; the hashes differ
    # from block 5 on (block 5's bytes, and every parent after it).
    p, plain_dir = generate(tmp, "plain")
    assert p.returncode == 0, p.stderr
    plain_raw, plain = blocks(plain_dir)
    assert [b["body"] for b in plain] == [b["body"] for b in parsed]
    assert all(b["code"] == "" for b in plain)
    assert plain_raw[:4] == raw[:4]
    assert all(plain_raw[i] != raw[i] for i in range(4, 12))


def test_several_codes(tmp):
    a = write(tmp, "reject_ff.lua", REJECT_FF)
    b = write(tmp, "accept@all.lua", ACCEPT_ALL)     # an '@' in the file name
    p, d = generate(tmp, "two", "--code", f"{b}@9", "--code", f"{a}@3")
    assert p.returncode == 0, p.stderr
    _, parsed = blocks(d)
    want = {3: REJECT_FF.decode(), 9: ACCEPT_ALL.decode()}
    assert [b["code"] for b in parsed] == [want.get(h, "") for h in range(1, 13)]


def test_bad_code_options(tmp):
    src = write(tmp, "v.lua", REJECT_FF)
    nul = write(tmp, "nul.lua", b"function validate(b)\0 return true end")
    empty = write(tmp, "empty.lua", b"")
    cases = [
        (["--code", f"{src}@13"], "height beyond --blocks 12"),
        (["--code", f"{src}@0"], "--code takes FILE@HEIGHT"),
        (["--code", src], "--code takes FILE@HEIGHT"),
        (["--code", f"{src}@4", "--code", f"{src}@4"], "two --code options for height 4"),
        (["--code", f"{nul}@4"], "contains a NUL byte"),
        (["--code", f"{empty}@4"], "empty file"),
        (["--code", os.path.join(tmp, "missing.lua") + "@4"], "No such file or directory"),
    ]
    for i, (args, why) in enumerate(cases):
        p, d = generate(tmp, f"bad{i}", *args)
        assert p.returncode == 2, (args, p.returncode, p.stderr)
        assert why in p.stderr, (args, p.stderr)
        assert not os.path.exists(d) or not os.listdir(d), (args, os.listdir(d))


if __name__ == "__main__":
    run_tests(globals())
