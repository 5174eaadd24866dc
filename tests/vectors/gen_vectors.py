#!/usr/bin/env python3
"""Known-answer vectors for farmd's persistent formats (DESIGN.md §4, §6).

This is an independent implementation written from the text of DESIGN.md,
using only the Python 3 standard library (hashlib.sha256, hashlib.scrypt)
and a pure-Python ChaCha20 (RFC 8439 block function).  It shares no code
with the C implementation in common/.

Usage:  python3 tests/vectors/gen_vectors.py [OUTDIR]
        (OUTDIR defaults to the directory of this script)

Writes encode_v1.txt, merkle.txt and expiry_v1.txt.  File format (all
three): UTF-8 text, one record per line, fields separated by single
spaces, first field is the record kind; lines that are empty or start with
'#' are comments.  Integers are decimal, byte strings lowercase hex, '-'
means "not given".  Each file's header comment lists its record kinds.

Test inputs are deterministic byte streams named by a label:
    stream(label, n) = first n bytes of
        SHA-256(label || u32be(0)) || SHA-256(label || u32be(1)) || ...
with label the ASCII bytes of the label token; the label "zero" means n
zero bytes instead.
"""

import array
import hashlib
import hmac
import os
import shutil
import struct
import subprocess
import sys

MASK64 = (1 << 64) - 1


def sha256(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.digest()


def u32(v):
    return struct.pack(">I", v)


def u64(v):
    return struct.pack(">Q", v)


def be64(b):
    return struct.unpack(">Q", b)[0]


def stream(label, n):
    if label == "zero":
        return bytes(n)
    lb = label.encode("ascii")
    out = bytearray()
    ctr = 0
    while len(out) < n:
        out += sha256(lb, u32(ctr))
        ctr += 1
    return bytes(out[:n])


# ---------------------------------------------------------------- ChaCha20
# RFC 8439 §2.3 block function, §2.4 encryption.

def _rotl(v, c):
    return ((v << c) & 0xFFFFFFFF) | (v >> (32 - c))


# One double round: four column rounds, then four diagonal ones.
_DOUBLE_ROUND = ((0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15),
                 (0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14))


def chacha20_block(key, counter, nonce):
    assert len(key) == 32 and len(nonce) == 12
    const = (0x61707865, 0x3320646E, 0x79622D32, 0x6B206574)
    state = list(const) + list(struct.unpack("<8I", key)) + \
        [counter & 0xFFFFFFFF] + list(struct.unpack("<3I", nonce))
    x = state[:]

    def qr(a, b, c, d):
        x[a] = (x[a] + x[b]) & 0xFFFFFFFF
        x[d] = _rotl(x[d] ^ x[a], 16)
        x[c] = (x[c] + x[d]) & 0xFFFFFFFF
        x[b] = _rotl(x[b] ^ x[c], 12)
        x[a] = (x[a] + x[b]) & 0xFFFFFFFF
        x[d] = _rotl(x[d] ^ x[a], 8)
        x[c] = (x[c] + x[d]) & 0xFFFFFFFF
        x[b] = _rotl(x[b] ^ x[c], 7)

    for _ in range(10):
        for q in _DOUBLE_ROUND:
            qr(*q)
    return struct.pack("<16I", *[(x[i] + state[i]) & 0xFFFFFFFF
                                 for i in range(16)])


def chacha20_keystream(key, nonce, counter, n):
    """n bytes of keystream: the blocks from counter on, computed together
    by _chacha20_lanes (a 64 KiB piece in milliseconds, not the 140 ms the
    block function takes one block at a time); self_test_chacha20 checks
    it against chacha20_block."""
    nblocks = (n + 63) // 64
    out = bytearray()
    for first in range(0, nblocks, _LANES):
        out += _chacha20_lanes(key, nonce, counter + first, min(_LANES, nblocks - first))
    return bytes(out[:n])


# The block function on many blocks at once: word i of block k is bits
# [64k, 64k + 32) of one big integer x[i]; the 32 bits above each word
# take the carries of + and the spill of <<, which the mask clears, so
# every lane computes exactly the 32-bit block function of its counter.
_LANES = 1024


def _chacha20_lanes(key, nonce, counter, lanes):
    assert len(key) == 32 and len(nonce) == 12
    assert counter + lanes <= 1 << 32, "the 32-bit block counter would wrap"
    ones = sum(1 << (64 * k) for k in range(lanes))
    mask = ones * 0xFFFFFFFF

    def spread(w):
        return ones * w

    words = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574] + \
        list(struct.unpack("<8I", key)) + [0] + list(struct.unpack("<3I", nonce))
    state = [spread(w) for w in words]
    state[12] = sum((counter + k) << (64 * k) for k in range(lanes))
    x = state[:]

    def qr(a, b, c, d):
        xa = (x[a] + x[b]) & mask
        xd = x[d] ^ xa
        xd = ((xd << 16) | (xd >> 16)) & mask
        xc = (x[c] + xd) & mask
        xb = x[b] ^ xc
        xb = ((xb << 12) | (xb >> 20)) & mask
        xa = (xa + xb) & mask
        xd ^= xa
        xd = ((xd << 8) | (xd >> 24)) & mask
        xc = (xc + xd) & mask
        xb ^= xc
        x[a], x[b], x[c], x[d] = xa, ((xb << 7) | (xb >> 25)) & mask, xc, xd

    for _ in range(10):
        for q in _DOUBLE_ROUND:
            qr(*q)
    out = array.array("I", bytes(64 * lanes))
    for i in range(16):
        lane_words = array.array("Q", ((x[i] + state[i]) & mask).to_bytes(8 * lanes, "little"))
        out[i::16] = array.array("I", lane_words)
    if sys.byteorder != "little":
        out.byteswap()
    return out.tobytes()


def xor(a, b):
    assert len(a) == len(b)
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")) \
        .to_bytes(len(a), "little")


def chacha20_xor(key, nonce, counter, data):
    return xor(data, chacha20_keystream(key, nonce, counter, len(data)))


def self_test_chacha20():
    # RFC 8439 §2.3.2 block function test vector.
    key = bytes(range(32))
    nonce = bytes.fromhex("000000090000004a00000000")
    blk = chacha20_block(key, 1, nonce)
    assert blk.hex() == (
        "10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e"
        "d2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e"), \
        "RFC 8439 2.3.2 failed"
    # RFC 8439 §2.4.2 encryption test vector.
    nonce = bytes.fromhex("000000000000004a00000000")
    pt = (b"Ladies and Gentlemen of the class of '99: If I could offer you "
          b"only one tip for the future, sunscreen would be it.")
    ct = chacha20_xor(key, nonce, 1, pt)
    assert ct.hex() == (
        "6e2e359a2568f98041ba0728dd0d6981e97e7aec1d4360c20a27afccfd9fae0b"
        "f91b65c5524733ab8f593dabcd62b3571639d624e65152ab8f530c359f0861d8"
        "07ca0dbf500d6a6156a38e088a22b65e52bc514d16ccf806818ce91ab7793736"
        "5af90bbf74a35be6b40b8eedf2785e42874d"), "RFC 8439 2.4.2 failed"
    # RFC 8439 Appendix A.1 test vector #1: key 0, nonce 0, counter 0,
    # exactly the v1 encoding setting.
    ks = chacha20_keystream(bytes(32), bytes(12), 0, 64)
    assert ks.hex() == (
        "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7"
        "da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586"), \
        "RFC 8439 A.1 #1 failed"
    # The lanes against the block function, across a lane boundary and
    # for a counter near the top of its range.
    key = bytes(range(1, 33))
    nonce = bytes.fromhex("0102030405060708090a0b0c")
    for counter, n in ((0, 64 * (_LANES + 3) + 5), (0xFFFFFFF0, 64 * 16)):
        want = b"".join(chacha20_block(key, counter + k, nonce) for k in range((n + 63) // 64))
        assert chacha20_keystream(key, nonce, counter, n) == want[:n], \
            "ChaCha20 lanes differ from the block function"


def cross_check_openssl():
    """Compare one keystream with `openssl enc -chacha20` (counter 0, nonce
    0: OpenSSL's 16-byte IV is u32le counter || 96-bit nonce)."""
    exe = shutil.which("openssl")
    if exe is None:
        print("note: openssl not found, skipping cross-check", file=sys.stderr)
        return False
    key = sha256(b"farmd-openssl-cross-check")
    n = 1000
    try:
        r = subprocess.run([exe, "enc", "-chacha20", "-K", key.hex(),
                            "-iv", "00" * 16], input=bytes(n),
                           capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError) as ex:
        print("note: openssl enc failed (%s), skipping cross-check" % ex,
              file=sys.stderr)
        return False
    assert r.stdout == chacha20_keystream(key, bytes(12), 0, n), \
        "keystream differs from openssl enc -chacha20"
    return True


# ------------------------------------------------------------------ scrypt
# A pure-Python scrypt (RFC 7914) used only to cross-check hashlib.scrypt,
# which is OpenSSL's implementation, the same one the C code calls.  PBKDF2
# is written out over the hmac module so that nothing but SHA-256 itself is
# shared with OpenSSL.  Slow (about 1 s for N=1024, r=8), so the generator
# cross-checks a subset of the seeds it writes.

def _pbkdf2_sha256_1(password, salt, dklen):
    out = bytearray()
    i = 1
    while len(out) < dklen:
        out += hmac.new(password, salt + u32(i), hashlib.sha256).digest()
        i += 1
    return bytes(out[:dklen])


def _salsa20_8(b):
    x = list(struct.unpack("<16I", b))
    s = x[:]

    def q(d, a, c, n):
        v = (x[a] + x[c]) & 0xFFFFFFFF
        x[d] ^= ((v << n) & 0xFFFFFFFF) | (v >> (32 - n))

    for _ in range(4):
        q(4, 0, 12, 7), q(8, 4, 0, 9), q(12, 8, 4, 13), q(0, 12, 8, 18)
        q(9, 5, 1, 7), q(13, 9, 5, 9), q(1, 13, 9, 13), q(5, 1, 13, 18)
        q(14, 10, 6, 7), q(2, 14, 10, 9), q(6, 2, 14, 13), q(10, 6, 2, 18)
        q(3, 15, 11, 7), q(7, 3, 15, 9), q(11, 7, 3, 13), q(15, 11, 7, 18)
        q(1, 0, 3, 7), q(2, 1, 0, 9), q(3, 2, 1, 13), q(0, 3, 2, 18)
        q(6, 5, 4, 7), q(7, 6, 5, 9), q(4, 7, 6, 13), q(5, 4, 7, 18)
        q(11, 10, 9, 7), q(8, 11, 10, 9), q(9, 8, 11, 13), q(10, 9, 8, 18)
        q(12, 15, 14, 7), q(13, 12, 15, 9), q(14, 13, 12, 13), q(15, 14, 13, 18)
    return struct.pack("<16I", *[(x[i] + s[i]) & 0xFFFFFFFF for i in range(16)])


def _blockmix(b, r):
    x = b[(2 * r - 1) * 64:]
    y = []
    for i in range(2 * r):
        x = _salsa20_8(xor(x, b[i * 64:(i + 1) * 64]))
        y.append(x)
    return b"".join(y[0::2] + y[1::2])


def _romix(b, n, r):
    x = b
    v = []
    for _ in range(n):
        v.append(x)
        x = _blockmix(x, r)
    for _ in range(n):
        j = int.from_bytes(x[(2 * r - 1) * 64:(2 * r - 1) * 64 + 8],
                           "little") % n
        x = _blockmix(xor(x, v[j]), r)
    return x


def scrypt_py(password, salt, n, r, p, dklen):
    blen = 128 * r
    b = _pbkdf2_sha256_1(password, salt, p * blen)
    b = b"".join(_romix(b[i * blen:(i + 1) * blen], n, r) for i in range(p))
    return _pbkdf2_sha256_1(password, b, dklen)


def self_test_scrypt():
    # RFC 7914 §12, first test vector.
    assert scrypt_py(b"", b"", 16, 1, 1, 64).hex() == (
        "77d6576238657b203b19ca42c18a0497f16b4844e3074ae8dfdffa3fede21442"
        "fcd0069ded0948f8326a753a0fc81f17e8d3e0fb2e0d3628cf35e20c38d18906"), \
        "RFC 7914 scrypt test vector failed"


# ---------------------------------------------------------- encoding v1
SECTOR_TAG = b"farmd-sector-v1"
ENCODE_SALT = b"farmd-encode-v1"
assert len(SECTOR_TAG) == 15 and len(ENCODE_SALT) == 15


def sector_id(pkh, sector_index, history_size):
    return sha256(SECTOR_TAG, pkh, u32(sector_index), u64(history_size))


def piece_index(sid, piece_offset, history_size, pps, recent_segments, frac):
    """Returns (index, branch).  branch: 'recent' if drawn from the last
    recent_segments segments, 'uniform' if the fraction test failed,
    'young' if the fraction test passed but history_size <=
    recent_segments."""
    d = sha256(sid, u32(piece_offset))
    total = history_size * pps
    recent = recent_segments * pps
    assert total > 0 and recent > 0
    low = be64(d[8:16]) / 2 ** 64 < frac   # exact division by 2^64
    if low and history_size > recent_segments:
        return total - recent + be64(d[0:8]) % recent, "recent"
    return be64(d[0:8]) % total, ("young" if low else "uniform")


def seed(sid, piece_offset, n, r, p):
    return hashlib.scrypt(sid + u32(piece_offset), salt=ENCODE_SALT,
                          n=n, r=r, p=p, dklen=32,
                          maxmem=128 * r * (n + p + 2) + (1 << 20))


def encode_piece(sid, piece_offset, n, r, p, data):
    return chacha20_xor(seed(sid, piece_offset, n, r, p), bytes(12), 0, data)


# ---------------------------------------------------------------- Merkle

def merkle_root(data):
    assert len(data) % 32 == 0
    n = len(data) // 32
    if n == 0 or n & (n - 1):
        return None
    level = [sha256(b"\x00", data[32 * i:32 * i + 32]) for i in range(n)]
    while len(level) > 1:
        level = [sha256(b"\x01", level[i], level[i + 1])
                 for i in range(0, len(level), 2)]
    return level[0]


def segment_header_hash(index, root, prev, last_height):
    return sha256(u64(index), root, prev, u64(last_height))


# ---------------------------------------------------------------- expiry

def expiry(sid, history_size, min_lifetime, root):
    check = history_size + min_lifetime
    last = min_lifetime + 4 * history_size
    if last > check:
        return check, check + be64(sha256(sid, root)[0:8]) % (last - check)
    return check, check


# ---------------------------------------------------------------- output

SMALL_HEX_MAX = 256   # payloads up to this many bytes are stored in full


def gen_encode(out):
    w = out.append
    w("# encode_v1.txt: encoding format v1 known answers (DESIGN.md §6).")
    w("# Generated by gen_vectors.py; do not edit.  Fields are separated")
    w("# by one space; integers decimal, bytes lowercase hex.")
    w("#")
    w("# sector_id PUBLIC_KEY_HASH SECTOR_INDEX HISTORY_SIZE SECTOR_ID")
    w("# piece_index SECTOR_ID PIECE_OFFSET HISTORY_SIZE PIECES_PER_SEGMENT"
      " RECENT_SEGMENTS FRACTION INDEX BRANCH")
    w("#   FRACTION is a decimal number to parse with strtod; BRANCH is"
      " recent|uniform|young")
    w("#   (young: u64(d[8..16])/2^64 < FRACTION but HISTORY_SIZE <="
      " RECENT_SEGMENTS)")
    w("# seed SECTOR_ID PIECE_OFFSET N R P SEED")
    w("# mask SEED LEN INPUT_LABEL SHA256(OUTPUT) OUTPUT|-")
    w("# piece SECTOR_ID PIECE_OFFSET N R P LEN INPUT_LABEL SHA256(OUTPUT)"
      " OUTPUT|-")
    w("#   input = stream(INPUT_LABEL, LEN) (see below); OUTPUT is given in"
      " full when LEN <= %d" % SMALL_HEX_MAX)
    w("# sector PUBLIC_KEY_HASH SECTOR_INDEX HISTORY_SIZE PIECES_PER_SEGMENT"
      " RECENT_SEGMENTS FRACTION N R P PIECES_IN_SECTOR PIECE_SIZE"
      " HISTORY_LABEL CHECKSUM")
    w("#   history = stream(HISTORY_LABEL, HISTORY_SIZE * PIECES_PER_SEGMENT"
      " * PIECE_SIZE); global piece i")
    w("#   = history[i*PIECE_SIZE, (i+1)*PIECE_SIZE); CHECKSUM = SHA-256 of"
      " the encoded sector")
    w("#")
    w("# stream(label, n): first n bytes of SHA-256(label || u32be(0)) ||"
      " SHA-256(label || u32be(1)) || ...;")
    w("#   the label \"zero\" means n zero bytes.")

    pkhs = [bytes(32), b"\xff" * 32, sha256(b"farmd-test-public-key-1"),
            sha256(b"farmd-test-public-key-2")]
    cases = [(0, 0, 1), (1, 0, 0), (2, 0, 1), (2, 1, 1), (2, 0, 2),
             (3, 7, 12345), (3, 0xFFFFFFFF, 2 ** 64 - 1),
             (2, 63, 2 ** 40 + 5)]
    w("")
    for pi, idx, hs in cases:
        w("sector_id %s %d %d %s" % (pkhs[pi].hex(), idx, hs,
                                     sector_id(pkhs[pi], idx, hs).hex()))

    sid_a = sector_id(pkhs[2], 0, 1)
    sid_b = sector_id(pkhs[3], 5, 10)
    branches = set()
    w("")
    # Demo profile: pieces_per_segment 16, recent_segments 2, fraction 0.1.
    for hs in (1, 2, 3, 10, 12345):
        for off in range(64):
            idx, br = piece_index(sid_a, off, hs, 16, 2, 0.1)
            branches.add((br, hs))
            w("piece_index %s %d %d 16 2 0.1 %d %s" % (sid_a.hex(), off, hs,
                                                      idx, br))
    # Other parameters: production segment size, edge fractions.
    for hs, pps, rs, frac in ((3, 256, 2, "0.1"), (100, 256, 2, "0.1"),
                              (5, 16, 2, "0"), (5, 16, 2, "1"),
                              (5, 16, 4, "0.5"), (2 ** 32 + 3, 256, 2, "0.1")):
        for off in range(0, 1000, 37):
            idx, br = piece_index(sid_b, off, hs, pps, rs, float(frac))
            w("piece_index %s %d %d %d %d %s %d %s" % (sid_b.hex(), off, hs,
                                                      pps, rs, frac, idx, br))
    kinds = {b for b, _ in branches}
    assert kinds == {"recent", "uniform", "young"}, kinds
    assert ("uniform", 1) in branches and ("young", 2) in branches

    w("")
    for sid, off, n, r, p in ((sid_a, 0, 1024, 8, 1), (sid_a, 1, 1024, 8, 1),
                              (sid_a, 63, 1024, 8, 1),
                              (sid_b, 0xFFFFFFFF, 1024, 8, 1),
                              (sid_b, 7, 1024, 1, 2), (sid_b, 7, 16, 1, 1),
                              (sid_a, 0, 16384, 8, 1)):
        sd = seed(sid, off, n, r, p)
        if n * r * p <= 8192 and (off != 1 and off != 63):
            # independent cross-check (pure Python, ~1 s per 1024*8)
            assert sd == scrypt_py(sid + u32(off), ENCODE_SALT, n, r, p, 32), \
                "hashlib.scrypt disagrees with scrypt_py"
        w("seed %s %d %d %d %d %s" % (sid.hex(), off, n, r, p, sd.hex()))

    w("")
    for key, n, label in ((bytes(32), 64, "zero"), (bytes(32), 200, "zero"),
                          (sha256(b"mask-1"), 1, "mask-in-1"),
                          (sha256(b"mask-1"), 63, "mask-in-1"),
                          (sha256(b"mask-2"), 65, "mask-in-2"),
                          (sha256(b"mask-2"), 100, "mask-in-2"),
                          (sha256(b"mask-3"), 1000, "mask-in-3"),
                          (sha256(b"mask-4"), 262144, "mask-in-4")):
        o = chacha20_xor(key, bytes(12), 0, stream(label, n))
        w("mask %s %d %s %s %s" % (key.hex(), n, label, sha256(o).hex(),
                                   o.hex() if n <= SMALL_HEX_MAX else "-"))

    w("")
    for sid, off, n, label in ((sid_a, 0, 64, "piece-64"),
                               (sid_a, 1, 64, "piece-64"),
                               (sid_b, 3, 64, "zero"),
                               (sid_a, 2, 4096, "piece-4k"),
                               (sid_b, 9, 4096, "piece-4k"),
                               (sid_a, 0, 65536, "piece-64k"),
                               (sid_b, 63, 65536, "piece-64k")):
        o = encode_piece(sid, off, 1024, 8, 1, stream(label, n))
        w("piece %s %d 1024 8 1 %d %s %s %s" % (
            sid.hex(), off, n, label, sha256(o).hex(),
            o.hex() if n <= SMALL_HEX_MAX else "-"))

    # Whole small sectors (the checksum recorded in sector metadata).
    w("")
    for pi, sidx, hs, pps, rs, frac, nsec, psz, label in (
            (2, 0, 3, 16, 2, "0.1", 8, 4096, "history-1"),
            (3, 4, 1, 16, 2, "0.1", 4, 1024, "history-2"),
            (3, 1, 4, 4, 2, "0.5", 16, 512, "history-3")):
        hist = stream(label, hs * pps * psz)
        sid = sector_id(pkhs[pi], sidx, hs)
        enc = bytearray()
        for off in range(nsec):
            gi, _ = piece_index(sid, off, hs, pps, rs, float(frac))
            enc += encode_piece(sid, off, 1024, 8, 1,
                                hist[gi * psz:(gi + 1) * psz])
        w("sector %s %d %d %d %d %s 1024 8 1 %d %d %s %s" % (
            pkhs[pi].hex(), sidx, hs, pps, rs, frac, nsec, psz, label,
            sha256(bytes(enc)).hex()))


def gen_merkle(out):
    w = out.append
    w("# merkle.txt: Merkle roots and segment header hashes (DESIGN.md §4).")
    w("# Generated by gen_vectors.py; do not edit.")
    w("#")
    w("# root NCHUNKS DATA_LABEL ROOT")
    w("#   data = stream(DATA_LABEL, NCHUNKS * 32), see encode_v1.txt")
    w("# segment PIECES PIECE_SIZE DATA_LABEL SEGMENT_ROOT")
    w("#   data = stream(DATA_LABEL, PIECES * PIECE_SIZE); piece k ="
      " data[k*PIECE_SIZE, (k+1)*PIECE_SIZE);")
    w("#   SEGMENT_ROOT = root over the PIECES piece roots (each leaf-hashed"
      " again)")
    w("# header INDEX ROOT PREV_HEADER_HASH LAST_HEIGHT HEADER_HASH")
    w("")
    for n, label in ((1, "merkle-1"), (2, "merkle-2"), (4, "merkle-4"),
                     (8, "merkle-8"), (2048, "merkle-2048"),
                     (32768, "merkle-32768"), (1, "zero"), (2, "zero")):
        w("root %d %s %s" % (n, label, merkle_root(stream(label, n * 32))
                             .hex()))
    # A single chunk's root is its leaf hash.
    one = stream("merkle-1", 32)
    assert merkle_root(one) == sha256(b"\x00", one)
    assert merkle_root(stream("x", 96)) is None

    w("")
    for pieces, psz, label in ((16, 4096, "segment-1"), (1, 64, "segment-2"),
                               (4, 65536, "segment-3")):
        data = stream(label, pieces * psz)
        roots = b"".join(merkle_root(data[k * psz:(k + 1) * psz])
                         for k in range(pieces))
        w("segment %d %d %s %s" % (pieces, psz, label,
                                   merkle_root(roots).hex()))

    w("")
    prev = bytes(32)
    for index, last_height in ((0, 7), (1, 15), (2, 15), (3, 2 ** 40)):
        root = sha256(b"segment-root", u64(index))
        hh = segment_header_hash(index, root, prev, last_height)
        w("header %d %s %s %d %s" % (index, root.hex(), prev.hex(),
                                     last_height, hh.hex()))
        prev = hh
    w("header %d %s %s %d %s" % (
        2 ** 64 - 1, (b"\xff" * 32).hex(), (b"\xee" * 32).hex(), 2 ** 64 - 1,
        segment_header_hash(2 ** 64 - 1, b"\xff" * 32, b"\xee" * 32,
                            2 ** 64 - 1).hex()))


def gen_expiry(out):
    w = out.append
    w("# expiry_v1.txt: sector expiry v1 (DESIGN.md §6).")
    w("# Generated by gen_vectors.py; do not edit.")
    w("#")
    w("# expiry SECTOR_ID HISTORY_SIZE MIN_SECTOR_LIFETIME ROOT CHECK"
      " EXPIRES_AT")
    w("#   ROOT = root of segment CHECK - 1")
    w("# state EXPIRES_AT HISTORY_SIZE_NOW ABOUT_TO_EXPIRE EXPIRED"
      "   (booleans 0|1)")
    w("")
    pkh = sha256(b"farmd-test-public-key-1")
    cases = [(1, 4), (2, 4), (3, 4), (10, 4), (12345, 4), (1, 0), (5, 0),
             (0, 4), (0, 0), (1, 100), (33, 100), (34, 100), (1000, 1)]
    seen_degenerate = seen_range = False
    for i, (hs, msl) in enumerate(cases):
        sid = sector_id(pkh, i, hs)
        root = sha256(b"segment-root", u64(hs + msl - 1 if hs + msl else 0))
        check, at = expiry(sid, hs, msl, root)
        last = msl + 4 * hs
        seen_degenerate |= last <= check
        seen_range |= last > check
        w("expiry %s %d %d %s %d %d" % (sid.hex(), hs, msl, root.hex(),
                                        check, at))
    assert seen_degenerate and seen_range
    w("")
    for at, now in ((10, 8), (10, 9), (10, 10), (10, 11), (0, 0), (1, 0),
                    (2, 0), (2 ** 64 - 1, 2 ** 64 - 2), (5, 2 ** 40)):
        w("state %d %d %d %d" % (at, now, int(now + 1 >= at), int(now >= at)))


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else \
        os.path.dirname(os.path.abspath(__file__))
    self_test_chacha20()
    self_test_scrypt()
    crossed = cross_check_openssl()
    for name, fn in (("encode_v1.txt", gen_encode), ("merkle.txt", gen_merkle),
                     ("expiry_v1.txt", gen_expiry)):
        lines = []
        fn(lines)
        path = os.path.join(outdir, name)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(path + ".tmp", path)
        print("wrote %s (%d records)" % (
            path, sum(1 for l in lines if l and not l.startswith("#"))))
    print("chacha20 self-test: ok (RFC 8439 2.3.2, 2.4.2, A.1#1); "
          "openssl cross-check: %s" % ("ok" if crossed else "skipped"))
    print("scrypt self-test: ok (RFC 7914 #1); hashlib.scrypt cross-checked "
          "against pure-Python scrypt")


if __name__ == "__main__":
    main()
