/*
 * test_formats.c: known-answer and property tests for the persistent
 * formats (DESIGN.md §4 Merkle trees and segment headers, §6 encoding v1
 * and expiry v1).
 *
 * The known answers come from the .txt files in tests/vectors, written by the
 * independent Python implementation tests/vectors/gen_vectors.py; the
 * directory is taken from $FARMD_VECTORS.  See the header comment of each
 * file for its record format.
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <check.h>
#include <openssl/sha.h>

#include "encode_v1.h"
#include "err.h"
#include "expiry_v1.h"
#include "hash.h"
#include "hash_int.h"
#include "merkle.h"

#if defined(__x86_64__) || defined(__aarch64__)
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#define HAVE_SECCOMP_TEST 1
#endif

static const struct encode_params demo = { .n = 1024, .r = 8, .p = 1 };

/* ------------------------------------------------------------ helpers */

/* stream(label, n): SHA-256(label || u32be(ctr)) for ctr = 0, 1, ...;
 * "zero" means zero bytes (gen_vectors.py). */
static uint8_t *
stream(const char *label, size_t n)
{
	uint8_t *buf = malloc(n ? n : 1);
	size_t len = strlen(label);
	uint8_t *in = malloc(len + 4);

	ck_assert_ptr_nonnull(buf);
	ck_assert_ptr_nonnull(in);
	if (strcmp(label, "zero") == 0) {
		memset(buf, 0, n);
	} else {
		memcpy(in, label, len);
		for (uint32_t ctr = 0; (size_t)ctr * HASH_LEN < n; ctr++) {
			uint8_t h[HASH_LEN];
			size_t off = (size_t)ctr * HASH_LEN;

			be32_put(in + len, ctr);
			hash_sha256(in, len + 4, h);
			memcpy(buf + off, h, n - off < HASH_LEN ? n - off : HASH_LEN);
		}
	}
	free(in);
	return buf;
}

static char *
hex(const uint8_t *p, size_t len)
{
	static char buf[2][2 * 512 + 1];
	static int which;

	ck_assert_uint_le(len, 512);
	which ^= 1;
	hex_encode(p, len, buf[which]);
	return buf[which];
}

#define MAX_FIELDS 24

struct rec {
	const char *file;
	int line;
	int nf;
	char *f[MAX_FIELDS];
};

static uint64_t
num(const struct rec *r, int i)
{
	char *end;
	unsigned long long v;

	ck_assert_int_lt(i, r->nf);
	errno = 0;
	v = strtoull(r->f[i], &end, 10);
	ck_assert_msg(errno == 0 && *end == '\0' && end != r->f[i],
	    "%s:%d: field %d: bad integer '%s'", r->file, r->line, i, r->f[i]);
	return v;
}

static double
dbl(const struct rec *r, int i)
{
	char *end;
	double v;

	ck_assert_int_lt(i, r->nf);
	v = strtod(r->f[i], &end);
	ck_assert_msg(*end == '\0' && end != r->f[i],
	    "%s:%d: field %d: bad number '%s'", r->file, r->line, i, r->f[i]);
	return v;
}

static void
bytes(const struct rec *r, int i, uint8_t *out, size_t len)
{
	ck_assert_int_lt(i, r->nf);
	ck_assert_msg(hex_decode(r->f[i], out, len) == 0,
	    "%s:%d: field %d: expected %zu hex bytes", r->file, r->line, i, len);
}

/* Asserts that field i is the lowercase hex of got. */
static void
expect_hex(const struct rec *r, int i, const uint8_t *got, size_t len)
{
	char *buf = malloc(2 * len + 1);

	ck_assert_ptr_nonnull(buf);
	ck_assert_int_lt(i, r->nf);
	hex_encode(got, len, buf);
	ck_assert_msg(strcmp(buf, r->f[i]) == 0,
	    "%s:%d: %s: got %.80s, want %.80s", r->file, r->line, r->f[0],
	    buf, r->f[i]);
	free(buf);
}

typedef void (*rec_fn)(const struct rec *r, void *arg);

/* Calls fn for every record of the given kind in $FARMD_VECTORS/file with
 * exactly nfields fields; returns the number of records. */
static int
for_each(const char *file, const char *kind, int nfields, rec_fn fn, void *arg)
{
	const char *dir = getenv("FARMD_VECTORS");
	char path[4096];
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	FILE *fp;
	int lineno = 0, count = 0;

	ck_assert_msg(dir != NULL && *dir != '\0',
	    "FARMD_VECTORS is not set (the tests/vectors directory)");
	snprintf(path, sizeof(path), "%s/%s", dir, file);
	fp = fopen(path, "r");
	ck_assert_msg(fp != NULL, "%s: %s", path, strerror(errno));
	while ((n = getline(&line, &cap, fp)) >= 0) {
		struct rec r = { .file = file, .line = ++lineno };
		char *save = NULL, *tok;

		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			line[--n] = '\0';
		if (n == 0 || line[0] == '#')
			continue;
		for (tok = strtok_r(line, " ", &save); tok != NULL;
		    tok = strtok_r(NULL, " ", &save)) {
			ck_assert_msg(r.nf < MAX_FIELDS, "%s:%d: too many fields",
			    file, lineno);
			r.f[r.nf++] = tok;
		}
		if (strcmp(r.f[0], kind) != 0)
			continue;
		ck_assert_msg(r.nf == nfields, "%s:%d: %s: %d fields, want %d",
		    file, lineno, kind, r.nf, nfields);
		fn(&r, arg);
		count++;
	}
	free(line);
	fclose(fp);
	ck_assert_msg(count > 0, "%s: no '%s' records", path, kind);
	return count;
}

static struct encode_v1_ctx *
ctx_new(void)
{
	struct err e = { "" };
	struct encode_v1_ctx *ctx = encode_v1_ctx_new(&e);

	ck_assert_msg(ctx != NULL, "encode_v1_ctx_new: %s", e.msg);
	return ctx;
}

static struct encode_params
params_of(const struct rec *r, int i)
{
	struct encode_params p = {
		.n = num(r, i), .r = (uint32_t)num(r, i + 1),
		.p = (uint32_t)num(r, i + 2),
	};
	return p;
}

/* ---------------------------------------------------- encode_v1 vectors */

static void
rec_sector_id(const struct rec *r, void *arg)
{
	uint8_t pkh[HASH_LEN], id[HASH_LEN];

	(void)arg;
	bytes(r, 1, pkh, HASH_LEN);
	encode_v1_sector_id(pkh, (uint32_t)num(r, 2), num(r, 3), id);
	expect_hex(r, 4, id, HASH_LEN);
}

START_TEST(test_sector_id_vectors)
{
	for_each("encode_v1.txt", "sector_id", 5, rec_sector_id, NULL);
}
END_TEST

static void
rec_piece_index(const struct rec *r, void *arg)
{
	uint8_t id[HASH_LEN];
	uint64_t hs = num(r, 3), want = num(r, 7), got, total, recent;
	uint32_t pps = (uint32_t)num(r, 4), rs = (uint32_t)num(r, 5);
	int *branches = arg;

	bytes(r, 1, id, HASH_LEN);
	got = encode_v1_piece_index(id, (uint32_t)num(r, 2), hs, pps, rs,
	    dbl(r, 6));
	ck_assert_msg(got == want, "%s:%d: piece_index: got %llu, want %llu",
	    r->file, r->line, (unsigned long long)got, (unsigned long long)want);
	total = hs * pps;
	recent = (uint64_t)rs * pps;
	ck_assert_uint_lt(got, total);
	if (strcmp(r->f[8], "recent") == 0) {
		ck_assert_uint_ge(got, total - recent);
		branches[0]++;
	} else if (strcmp(r->f[8], "uniform") == 0) {
		branches[1]++;
	} else {
		ck_assert_str_eq(r->f[8], "young");
		ck_assert_uint_le(hs, rs);
		branches[2]++;
	}
}

START_TEST(test_piece_index_vectors)
{
	int branches[3] = { 0, 0, 0 };

	for_each("encode_v1.txt", "piece_index", 9, rec_piece_index, branches);
	/* The vectors must exercise every branch. */
	ck_assert_int_gt(branches[0], 0);
	ck_assert_int_gt(branches[1], 0);
	ck_assert_int_gt(branches[2], 0);
}
END_TEST

static void
rec_seed(const struct rec *r, void *arg)
{
	struct encode_v1_ctx *ctx = arg;
	struct encode_params p = params_of(r, 3);
	uint8_t id[HASH_LEN], seed[HASH_LEN];
	struct err e = { "" };

	bytes(r, 1, id, HASH_LEN);
	ck_assert_msg(encode_v1_seed(ctx, id, (uint32_t)num(r, 2), &p, seed,
	    &e) == 0, "%s:%d: %s", r->file, r->line, e.msg);
	expect_hex(r, 6, seed, HASH_LEN);
}

START_TEST(test_seed_vectors)
{
	struct encode_v1_ctx *ctx = ctx_new();

	for_each("encode_v1.txt", "seed", 7, rec_seed, ctx);
	encode_v1_ctx_free(ctx);
}
END_TEST

static void
rec_mask(const struct rec *r, void *arg)
{
	struct encode_v1_ctx *ctx = arg;
	size_t len = num(r, 2);
	uint8_t seed[HASH_LEN], h[HASH_LEN];
	uint8_t *in = stream(r->f[3], len), *out = malloc(len);
	struct err e = { "" };

	ck_assert_ptr_nonnull(out);
	bytes(r, 1, seed, HASH_LEN);
	ck_assert_msg(encode_v1_mask(ctx, seed, in, out, len, &e) == 0,
	    "%s:%d: %s", r->file, r->line, e.msg);
	hash_sha256(out, len, h);
	expect_hex(r, 4, h, HASH_LEN);
	if (strcmp(r->f[5], "-") != 0)
		expect_hex(r, 5, out, len);
	/* In place gives the same bytes. */
	ck_assert_int_eq(encode_v1_mask(ctx, seed, in, in, len, &e), 0);
	ck_assert_msg(memcmp(in, out, len) == 0, "%s:%d: in-place differs",
	    r->file, r->line);
	free(in);
	free(out);
}

START_TEST(test_mask_vectors)
{
	struct encode_v1_ctx *ctx = ctx_new();

	for_each("encode_v1.txt", "mask", 6, rec_mask, ctx);
	encode_v1_ctx_free(ctx);
}
END_TEST

/* RFC 8439 Appendix A.1 test vector #1: key 0, nonce 0, counter 0 is
 * exactly the v1 setting; hard-coded here as a check independent of the
 * vector files. */
START_TEST(test_mask_rfc8439_a1)
{
	static const char want[] =
	    "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7"
	    "da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586";
	struct encode_v1_ctx *ctx = ctx_new();
	uint8_t key[HASH_LEN] = { 0 }, buf[64] = { 0 };
	struct err e = { "" };

	ck_assert_int_eq(encode_v1_mask(ctx, key, buf, buf, sizeof(buf), &e), 0);
	ck_assert_str_eq(hex(buf, sizeof(buf)), want);
	encode_v1_ctx_free(ctx);
}
END_TEST

static void
rec_piece(const struct rec *r, void *arg)
{
	struct encode_v1_ctx *ctx = arg;
	struct encode_params p = params_of(r, 3);
	size_t len = num(r, 6);
	uint8_t id[HASH_LEN], h[HASH_LEN];
	uint32_t off = (uint32_t)num(r, 2);
	uint8_t *in = stream(r->f[7], len), *out = malloc(len);
	struct err e = { "" };

	ck_assert_ptr_nonnull(out);
	bytes(r, 1, id, HASH_LEN);
	ck_assert_msg(encode_v1_piece(ctx, id, off, &p, in, out, len, &e) == 0,
	    "%s:%d: %s", r->file, r->line, e.msg);
	hash_sha256(out, len, h);
	expect_hex(r, 8, h, HASH_LEN);
	if (strcmp(r->f[9], "-") != 0)
		expect_hex(r, 9, out, len);
	/* Decoding is the same transform, in place. */
	ck_assert_int_eq(encode_v1_piece(ctx, id, off, &p, out, out, len, &e), 0);
	ck_assert_msg(memcmp(in, out, len) == 0, "%s:%d: decode differs",
	    r->file, r->line);
	free(in);
	free(out);
}

START_TEST(test_piece_vectors)
{
	struct encode_v1_ctx *ctx = ctx_new();

	for_each("encode_v1.txt", "piece", 10, rec_piece, ctx);
	encode_v1_ctx_free(ctx);
}
END_TEST

static void
rec_sector(const struct rec *r, void *arg)
{
	struct encode_v1_ctx *ctx = arg;
	uint8_t pkh[HASH_LEN], id[HASH_LEN], h[HASH_LEN];
	uint32_t sidx = (uint32_t)num(r, 2);
	uint64_t hs = num(r, 3);
	uint32_t pps = (uint32_t)num(r, 4), rs = (uint32_t)num(r, 5);
	double frac = dbl(r, 6);
	struct encode_params p = params_of(r, 7);
	uint32_t nsec = (uint32_t)num(r, 10);
	size_t psz = num(r, 11);
	uint8_t *hist = stream(r->f[12], hs * pps * psz);
	uint8_t *sector = malloc(nsec * psz);
	struct err e = { "" };

	ck_assert_ptr_nonnull(sector);
	bytes(r, 1, pkh, HASH_LEN);
	encode_v1_sector_id(pkh, sidx, hs, id);
	for (uint32_t off = 0; off < nsec; off++) {
		uint64_t gi = encode_v1_piece_index(id, off, hs, pps, rs, frac);

		ck_assert_uint_lt(gi, hs * pps);
		ck_assert_msg(encode_v1_piece(ctx, id, off, &p, hist + gi * psz,
		    sector + off * psz, psz, &e) == 0, "%s:%d: %s", r->file,
		    r->line, e.msg);
	}
	hash_sha256(sector, nsec * psz, h);
	expect_hex(r, 13, h, HASH_LEN);
	free(hist);
	free(sector);
}

START_TEST(test_sector_vectors)
{
	struct encode_v1_ctx *ctx = ctx_new();

	for_each("encode_v1.txt", "sector", 14, rec_sector, ctx);
	encode_v1_ctx_free(ctx);
}
END_TEST

/* ------------------------------------------------------- merkle vectors */

static void
rec_root(const struct rec *r, void *arg)
{
	size_t n = num(r, 1);
	uint8_t *data = stream(r->f[2], n * HASH_LEN), root[HASH_LEN];

	(void)arg;
	ck_assert_int_eq(merkle_root(data, n, root), 0);
	expect_hex(r, 3, root, HASH_LEN);
	free(data);
}

START_TEST(test_merkle_root_vectors)
{
	for_each("merkle.txt", "root", 4, rec_root, NULL);
}
END_TEST

static void
rec_segment(const struct rec *r, void *arg)
{
	size_t pieces = num(r, 1), psz = num(r, 2);
	uint8_t *data = stream(r->f[3], pieces * psz), root[HASH_LEN];
	uint8_t *roots = malloc(pieces * HASH_LEN);

	(void)arg;
	ck_assert_ptr_nonnull(roots);
	for (size_t k = 0; k < pieces; k++)
		ck_assert_int_eq(merkle_root(data + k * psz, psz / HASH_LEN,
		    roots + k * HASH_LEN), 0);
	ck_assert_int_eq(merkle_root(roots, pieces, root), 0);
	expect_hex(r, 4, root, HASH_LEN);
	free(roots);
	free(data);
}

START_TEST(test_merkle_segment_vectors)
{
	for_each("merkle.txt", "segment", 5, rec_segment, NULL);
}
END_TEST

static void
rec_header(const struct rec *r, void *arg)
{
	uint8_t root[HASH_LEN], prev[HASH_LEN], h[HASH_LEN];

	(void)arg;
	bytes(r, 2, root, HASH_LEN);
	bytes(r, 3, prev, HASH_LEN);
	merkle_segment_header_hash(num(r, 1), root, prev, num(r, 4), h);
	expect_hex(r, 5, h, HASH_LEN);
}

START_TEST(test_segment_header_vectors)
{
	for_each("merkle.txt", "header", 6, rec_header, NULL);
}
END_TEST

/* ------------------------------------------------------- expiry vectors */

static void
rec_expiry(const struct rec *r, void *arg)
{
	uint8_t id[HASH_LEN], root[HASH_LEN];
	uint64_t hs = num(r, 2), msl = num(r, 3), at;

	(void)arg;
	bytes(r, 1, id, HASH_LEN);
	bytes(r, 4, root, HASH_LEN);
	ck_assert_uint_eq(expiry_v1_check(hs, msl), num(r, 5));
	at = expiry_v1_expires_at(id, hs, msl, root);
	ck_assert_msg(at == num(r, 6), "%s:%d: expires_at %llu, want %s",
	    r->file, r->line, (unsigned long long)at, r->f[6]);
	ck_assert_uint_ge(at, expiry_v1_check(hs, msl));
}

START_TEST(test_expiry_vectors)
{
	for_each("expiry_v1.txt", "expiry", 7, rec_expiry, NULL);
}
END_TEST

static void
rec_state(const struct rec *r, void *arg)
{
	uint64_t at = num(r, 1), now = num(r, 2);

	(void)arg;
	ck_assert_int_eq(expiry_v1_about_to_expire(at, now), num(r, 3) != 0);
	ck_assert_int_eq(expiry_v1_expired(at, now), num(r, 4) != 0);
}

START_TEST(test_expiry_state_vectors)
{
	for_each("expiry_v1.txt", "state", 5, rec_state, NULL);
}
END_TEST

/* ---------------------------------------------------- property tests */

START_TEST(test_encode_twice_is_identity)
{
	static const size_t sizes[] = { 0, 1, 31, 64, 65, 1000, 4096, 65536 };
	struct encode_v1_ctx *ctx = ctx_new();
	uint8_t id[HASH_LEN];
	struct err e = { "" };

	encode_v1_sector_id((const uint8_t *)"0123456789abcdef0123456789abcdef",
	    3, 9, id);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		size_t n = sizes[i];
		uint8_t *in = stream("identity", n), *a = malloc(n + 1),
		    *b = malloc(n + 1);

		ck_assert_int_eq(encode_v1_piece(ctx, id, (uint32_t)i, &demo,
		    in, a, n, &e), 0);
		if (n >= HASH_LEN)	/* the mask actually changed something */
			ck_assert_int_ne(memcmp(in, a, n), 0);
		ck_assert_int_eq(encode_v1_piece(ctx, id, (uint32_t)i, &demo,
		    a, b, n, &e), 0);
		ck_assert_int_eq(memcmp(in, b, n), 0);
		free(in);
		free(a);
		free(b);
	}
	encode_v1_ctx_free(ctx);
}
END_TEST

START_TEST(test_in_place_equals_out_of_place)
{
	struct encode_v1_ctx *ctx = ctx_new();
	size_t n = 65536 + 17;
	uint8_t id[HASH_LEN] = { 7 }, seed[HASH_LEN];
	uint8_t *in = stream("in-place", n), *out = malloc(n), *buf = malloc(n);
	struct err e = { "" };

	ck_assert_ptr_nonnull(out);
	ck_assert_ptr_nonnull(buf);
	memcpy(buf, in, n);
	ck_assert_int_eq(encode_v1_piece(ctx, id, 5, &demo, in, out, n, &e), 0);
	ck_assert_int_eq(encode_v1_piece(ctx, id, 5, &demo, buf, buf, n, &e), 0);
	ck_assert_int_eq(memcmp(out, buf, n), 0);

	/* encode_v1_piece == encode_v1_seed + encode_v1_mask */
	ck_assert_int_eq(encode_v1_seed(ctx, id, 5, &demo, seed, &e), 0);
	ck_assert_int_eq(encode_v1_mask(ctx, seed, in, buf, n, &e), 0);
	ck_assert_int_eq(memcmp(out, buf, n), 0);
	free(in);
	free(out);
	free(buf);
	encode_v1_ctx_free(ctx);
}
END_TEST

/* The reused cipher context must restart the keystream at counter 0 for
 * every call, whatever was masked before (including a partial block). */
START_TEST(test_mask_restarts_keystream)
{
	struct encode_v1_ctx *ctx = ctx_new();
	uint8_t k1[HASH_LEN], k2[HASH_LEN], a[100], b[100], c[100], z[100] = { 0 };
	struct err e = { "" };

	hash_sha256("k1", 2, k1);
	hash_sha256("k2", 2, k2);
	ck_assert_int_eq(encode_v1_mask(ctx, k1, z, a, 37, &e), 0);
	ck_assert_int_eq(encode_v1_mask(ctx, k1, z, a, sizeof(a), &e), 0);
	ck_assert_int_eq(encode_v1_mask(ctx, k2, z, b, 77, &e), 0);
	ck_assert_int_eq(encode_v1_mask(ctx, k1, z, c, sizeof(c), &e), 0);
	ck_assert_int_eq(memcmp(a, c, sizeof(a)), 0);
	ck_assert_int_ne(memcmp(a, b, 77), 0);

	/* A second context gives the same keystream. */
	{
		struct encode_v1_ctx *ctx2 = ctx_new();

		ck_assert_int_eq(encode_v1_mask(ctx2, k1, z, b, sizeof(b), &e), 0);
		ck_assert_int_eq(memcmp(a, b, sizeof(a)), 0);
		encode_v1_ctx_free(ctx2);
	}
	encode_v1_ctx_free(ctx);
}
END_TEST

START_TEST(test_seed_bad_params)
{
	struct encode_v1_ctx *ctx = ctx_new();
	uint8_t id[HASH_LEN] = { 0 }, seed[HASH_LEN];
	struct encode_params bad[] = {
		{ .n = 1000, .r = 8, .p = 1 }, { .n = 0, .r = 8, .p = 1 },
		{ .n = 1, .r = 8, .p = 1 }, { .n = 1024, .r = 0, .p = 1 },
		{ .n = 1024, .r = 8, .p = 0 },
	};
	struct err e = { "" };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		e.msg[0] = '\0';
		ck_assert_int_eq(encode_v1_seed(ctx, id, 0, &bad[i], seed, &e), -1);
		ck_assert_msg(strstr(e.msg, "scrypt") != NULL, "msg: %s", e.msg);
	}
	/* The context is still usable after a failure. */
	ck_assert_int_eq(encode_v1_seed(ctx, id, 0, &demo, seed, &e), 0);
	encode_v1_ctx_free(ctx);
}
END_TEST

START_TEST(test_piece_index_edges)
{
	uint8_t id[HASH_LEN] = { 1 };

	/* No history: defined as 0 rather than a division by zero. */
	ck_assert_uint_eq(encode_v1_piece_index(id, 0, 0, 16, 2, 0.1), 0);
	for (uint32_t off = 0; off < 200; off++) {
		/* fraction 1: always recent once history_size > recent_segments */
		uint64_t i = encode_v1_piece_index(id, off, 3, 16, 2, 1.0);

		ck_assert_uint_ge(i, 16);
		ck_assert_uint_lt(i, 48);
		/* one segment of history: every index is in segment 0 */
		ck_assert_uint_lt(encode_v1_piece_index(id, off, 1, 16, 2, 1.0), 16);
		/* recent_segments 0 falls back to the uniform draw */
		ck_assert_uint_lt(encode_v1_piece_index(id, off, 3, 16, 0, 1.0), 48);
	}
}
END_TEST

START_TEST(test_merkle_not_power_of_two)
{
	static const size_t counts[] = { 0, 3, 5, 6, 7, 12, 100, 32767, 32769 };
	uint8_t *data = stream("npot", 32769 * HASH_LEN), root[HASH_LEN];

	memset(root, 0xaa, sizeof(root));
	for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++)
		ck_assert_int_eq(merkle_root(data, counts[i], root), -1);
	for (size_t i = 0; i < HASH_LEN; i++)
		ck_assert_uint_eq(root[i], 0xaa);	/* untouched */
	free(data);
}
END_TEST

/* The tree shape written out by hand for 1, 2 and 4 chunks. */
START_TEST(test_merkle_shape)
{
	uint8_t *d = stream("shape", 4 * HASH_LEN);
	uint8_t l[4][HASH_LEN], n01[HASH_LEN], n23[HASH_LEN], top[HASH_LEN];
	uint8_t buf[1 + 2 * HASH_LEN], root[HASH_LEN];

	for (int i = 0; i < 4; i++) {
		buf[0] = 0;
		memcpy(buf + 1, d + i * HASH_LEN, HASH_LEN);
		hash_sha256(buf, 1 + HASH_LEN, l[i]);
	}
	buf[0] = 1;
	memcpy(buf + 1, l[0], HASH_LEN);
	memcpy(buf + 1 + HASH_LEN, l[1], HASH_LEN);
	hash_sha256(buf, sizeof(buf), n01);
	memcpy(buf + 1, l[2], HASH_LEN);
	memcpy(buf + 1 + HASH_LEN, l[3], HASH_LEN);
	hash_sha256(buf, sizeof(buf), n23);
	memcpy(buf + 1, n01, HASH_LEN);
	memcpy(buf + 1 + HASH_LEN, n23, HASH_LEN);
	hash_sha256(buf, sizeof(buf), top);

	ck_assert_int_eq(merkle_root(d, 1, root), 0);
	ck_assert_int_eq(memcmp(root, l[0], HASH_LEN), 0);
	ck_assert_int_eq(merkle_root(d, 2, root), 0);
	ck_assert_int_eq(memcmp(root, n01, HASH_LEN), 0);
	ck_assert_int_eq(merkle_root(d, 4, root), 0);
	ck_assert_int_eq(memcmp(root, top, HASH_LEN), 0);
	free(d);
}
END_TEST

START_TEST(test_expiry_edges)
{
	uint8_t id[HASH_LEN] = { 0 }, root[HASH_LEN] = { 0 };

	ck_assert_uint_eq(expiry_v1_check(10, 4), 14);
	/* history_size 0: last = 4 <= check = 4 */
	ck_assert_uint_eq(expiry_v1_expires_at(id, 0, 4, root), 4);
	/* range [check, last) = [14, 44) */
	for (int i = 0; i < 50; i++) {
		uint64_t at;

		id[0] = (uint8_t)i;
		at = expiry_v1_expires_at(id, 10, 4, root);
		ck_assert_uint_ge(at, 14);
		ck_assert_uint_lt(at, 44);
	}
	ck_assert(!expiry_v1_about_to_expire(10, 8));
	ck_assert(expiry_v1_about_to_expire(10, 9));
	ck_assert(!expiry_v1_expired(10, 9));
	ck_assert(expiry_v1_expired(10, 10));
}
END_TEST

#ifdef HAVE_SECCOMP_TEST
/*
 * After encode_v1_ctx_new() the hot path must not open files: run it in a
 * child under a seccomp filter that kills the process on open/openat
 * (like the worker's sandbox does for everything off its allowlist).
 */
START_TEST(test_no_open_after_ctx_new)
{
	pid_t pid = fork();
	int status;

	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct sock_filter filter[] = {
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			    offsetof(struct seccomp_data, arch)),
#if defined(__x86_64__)
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
#else
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_AARCH64, 1, 0),
#endif
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			    offsetof(struct seccomp_data, nr)),
#ifdef __NR_open
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_open, 3, 0),
#else
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_openat, 3, 0),
#endif
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_openat, 2, 0),
#ifdef __NR_openat2
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_openat2, 1, 0),
#else
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_openat, 1, 0),
#endif
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		};
		struct sock_fprog prog = {
			.len = sizeof(filter) / sizeof(filter[0]), .filter = filter,
		};
		static const struct encode_params prod = { .n = 16384, .r = 8, .p = 1 };
		struct err e = { "" };
		struct encode_v1_ctx *ctx = encode_v1_ctx_new(&e);
		uint8_t pkh[HASH_LEN] = { 0 }, id[HASH_LEN], seed[HASH_LEN];
		uint8_t root[HASH_LEN];
		static uint8_t piece[65536];

		if (ctx == NULL)
			_exit(2);
		/* No seccomp here (old kernel, valgrind): nothing to test. */
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
		    syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0)
			_exit(77);
		encode_v1_sector_id(pkh, 1, 2, id);
		(void)encode_v1_piece_index(id, 3, 10, 16, 2, 0.1);
		if (encode_v1_seed(ctx, id, 0, &prod, seed, &e) != 0 ||
		    encode_v1_piece(ctx, id, 1, &demo, piece, piece, sizeof(piece),
		    &e) != 0 ||
		    encode_v1_mask(ctx, seed, piece, piece, sizeof(piece), &e) != 0)
			_exit(4);
		if (merkle_root(piece, sizeof(piece) / HASH_LEN, root) != 0)
			_exit(5);
		merkle_segment_header_hash(0, root, root, 1, root);
		(void)expiry_v1_expires_at(id, 10, 4, root);
		encode_v1_ctx_free(ctx);
		_exit(0);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(!WIFSIGNALED(status), "child killed by signal %d "
	    "(SIGSYS = a forbidden open)", WIFSIGNALED(status) ? WTERMSIG(status) : 0);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
		fprintf(stderr, "test_no_open_after_ctx_new: seccomp "
		    "unavailable, skipped\n");
		return;
	}
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	    "child exit status %d", WEXITSTATUS(status));
}
END_TEST
#endif

/* hash_sha256_many (16 messages per vector where the CPU has AVX-512,
 * OpenSSL one at a time otherwise) against OpenSSL's SHA256, for every
 * padding shape (a tail of 0 .. 63 bytes: one padded block or two), whole
 * pieces, every group size from 1 to 2 groups and a remainder, messages
 * at odd addresses, and a change in one message changing only its sum. */
START_TEST(test_sha256_lanes_agree)
{
	static const size_t lens[] = { 0, 1, 36, 55, 56, 63, 64, 65, 119, 120, 127, 128,
		1000, 4096, 65536, 65536 + 13 };
	enum { MAXN = 2 * SHA256_LANES + 3, MAXLEN = 65536 + 13 };
	uint8_t *buf = malloc((size_t)MAXN * (MAXLEN + 1));
	const uint8_t *p[MAXN];
	uint8_t (*got)[HASH_LEN] = malloc(MAXN * HASH_LEN), want[HASH_LEN];
	uint64_t x = 0x9e3779b97f4a7c15ULL;
	int simd = hash_simd();

	ck_assert_ptr_nonnull(buf);
	ck_assert_ptr_nonnull(got);
	for (size_t i = 0; i < (size_t)MAXN * (MAXLEN + 1); i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		buf[i] = (uint8_t)x;
	}
	if (!simd)
		fprintf(stderr, "test_sha256_lanes_agree: no AVX-512F/BW here, OpenSSL only\n");
	for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
		size_t len = lens[k];

		/* Message i at an odd offset i within its slot. */
		for (size_t i = 0; i < MAXN; i++)
			p[i] = buf + i * (MAXLEN + 1) + (i & 1);
		for (size_t n = 1; n <= MAXN; n += (len > 4096 ? 7 : 1))
			for (int v = 0; v <= simd; v++) {
				memset(got, 0, MAXN * HASH_LEN);
				hash_sha256_many_with(p, n, len, got, v);
				for (size_t i = 0; i < n; i++) {
					SHA256(p[i], len, want);
					ck_assert_msg(memcmp(got[i], want, HASH_LEN) == 0,
					    "len %zu, %zu messages, message %zu, simd %d", len, n, i, v);
				}
			}
	}
	/* One bit of message 5 changes its sum and no other. */
	for (size_t i = 0; i < SHA256_LANES; i++)
		p[i] = buf + i * (MAXLEN + 1);
	{
		uint8_t (*before)[HASH_LEN] = malloc(SHA256_LANES * HASH_LEN);

		ck_assert_ptr_nonnull(before);
		hash_sha256_many(p, SHA256_LANES, 4096, before);
		buf[5 * (MAXLEN + 1) + 4000] ^= 0x10;
		hash_sha256_many(p, SHA256_LANES, 4096, got);
		for (size_t i = 0; i < SHA256_LANES; i++)
			ck_assert_int_eq(memcmp(got[i], before[i], HASH_LEN) != 0, i == 5);
		free(before);
	}
	free(got);
	free(buf);
}
END_TEST

static Suite *
formats_suite(void)
{
	Suite *s = suite_create("formats");
	TCase *kat = tcase_create("vectors");
	TCase *prop = tcase_create("properties");

	tcase_set_timeout(kat, 120);
	tcase_set_timeout(prop, 120);
	tcase_add_test(kat, test_sector_id_vectors);
	tcase_add_test(kat, test_piece_index_vectors);
	tcase_add_test(kat, test_seed_vectors);
	tcase_add_test(kat, test_mask_vectors);
	tcase_add_test(kat, test_mask_rfc8439_a1);
	tcase_add_test(kat, test_piece_vectors);
	tcase_add_test(kat, test_sector_vectors);
	tcase_add_test(kat, test_merkle_root_vectors);
	tcase_add_test(kat, test_merkle_segment_vectors);
	tcase_add_test(kat, test_segment_header_vectors);
	tcase_add_test(kat, test_expiry_vectors);
	tcase_add_test(kat, test_expiry_state_vectors);
	tcase_add_test(prop, test_encode_twice_is_identity);
	tcase_add_test(prop, test_in_place_equals_out_of_place);
	tcase_add_test(prop, test_mask_restarts_keystream);
	tcase_add_test(prop, test_seed_bad_params);
	tcase_add_test(prop, test_piece_index_edges);
	tcase_add_test(prop, test_merkle_not_power_of_two);
	tcase_add_test(prop, test_merkle_shape);
	tcase_add_test(prop, test_expiry_edges);
	tcase_add_test(prop, test_sha256_lanes_agree);
#ifdef HAVE_SECCOMP_TEST
	tcase_add_test(prop, test_no_open_after_ctx_new);
#endif
	suite_add_tcase(s, kat);
	suite_add_tcase(s, prop);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(formats_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
