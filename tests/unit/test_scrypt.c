/*
 * test_scrypt.c: every scrypt kernel this CPU runs (common/scrypt.h)
 * against OpenSSL's EVP_PBE_scrypt, byte for byte.
 *
 * References: tests/vectors/scrypt.txt ($FARMD_VECTORS), written by
 * gen_scrypt_vectors.py with Python's hashlib.scrypt, which is OpenSSL's
 * EVP_PBE_scrypt: the RFC 7914 §12 vectors, fixed farmd-shaped seeds of
 * both profiles, and SHA-256 digests over the seeds of 10,000 random
 * farmd-shaped inputs per profile in chunks of 100.  Live calls of
 * EVP_PBE_scrypt in this process check the same inputs again on a subset
 * and cover random shapes (N, r, p, lengths) the file does not.
 *
 * Counts (normal build; in brackets the reduced counts of sanitized()
 * below, to stay near a minute in the ASan/UBSan pass):
 *  - random set: the kernel plotting uses here (scrypt_kernel_best) on
 *    all 10,000 [500] demo inputs and 1,000 [100] production ones, any
 *    other SIMD kernel on 2,000 [500] demo and 500 [100] production
 *    inputs (FARMD_SCRYPT_FULL=1, scripts/test --full: all 10,000 of both
 *    on every kernel); batches of every size from 1 to the lane count (pad_min 1:
 *    short batches run padded through the kernel);
 *    the portable kernel is OpenSSL's own scrypt and checks the live
 *    subset: 256 [32] demo and 16 [4] production inputs, which every
 *    kernel also matches against EVP_PBE_scrypt called here;
 *  - RFC 7914 vectors: all four on every kernel [the 1 GiB fourth
 *    skipped];
 *  - random shapes: 60 [15] parameter sets, batches of 1..2*lanes+1;
 *  - fixed seeds: all 15 per profile in one batch and one by one [the
 *    production ones: 2 one by one; the sanitized kernels are slow there].
 * The random set runs on as many threads as there are CPUs.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <pthread.h>
#include <unistd.h>

#include <check.h>
#include <openssl/evp.h>

#include "encode_v1.h"
#include "err.h"
#include "hash.h"
#include "sandbox.h"
#include "scrypt.h"

#define SALT ((const uint8_t *)ENCODE_V1_SALT)
#define SALT_LEN (sizeof(ENCODE_V1_SALT) - 1)
#define RANDOM_COUNT 10000
#define CHUNK 100
#define PW_LEN (HASH_LEN + 4)

/* The reduced counts: FARMD_SANITIZED=1 (scripts/test's sanitizer pass),
 * or a binary built with ASan or without optimisation (sanitized kernels
 * run several times slower), whatever the environment. */
static bool
sanitized(void)
{
	const char *s = getenv("FARMD_SANITIZED");

#if defined(__SANITIZE_ADDRESS__) || !defined(__OPTIMIZE__)
	(void)s;
	return true;
#else
	return s != NULL && strcmp(s, "1") == 0;
#endif
}

/* ------------------------------------------------------------ helpers */

static enum scrypt_kernel kernels[SCRYPT_KERNEL_COUNT];
static int nkernels;

static void
find_kernels(void)
{
	nkernels = 0;
	for (int k = 0; k < SCRYPT_KERNEL_COUNT; k++)
		if (scrypt_kernel_available((enum scrypt_kernel)k))
			kernels[nkernels++] = (enum scrypt_kernel)k;
}

static struct scrypt_ctx *
kctx(enum scrypt_kernel k, unsigned pad_min)
{
	struct err e = { "" };
	struct scrypt_ctx *ctx = scrypt_ctx_new(k, &e);

	ck_assert_msg(ctx != NULL, "scrypt_ctx_new(%s): %s", scrypt_kernel_name(k), e.msg);
	ck_assert_int_eq(scrypt_ctx_kernel(ctx), k);
	if (pad_min > 0)
		scrypt_ctx_set_pad_min(ctx, pad_min);
	return ctx;
}

/* The reference: OpenSSL's EVP_PBE_scrypt. */
static void
ref(const uint8_t *pw, size_t pwlen, const uint8_t *salt, size_t saltlen,
    uint64_t n, uint32_t r, uint32_t p, uint8_t *out, size_t dklen)
{
	uint64_t maxmem = (uint64_t)128 * r * (n + p + 2) + (1 << 20);

	ck_assert_msg(EVP_PBE_scrypt((const char *)pw, pwlen, salt, saltlen, n, r, p,
	    maxmem, out, dklen) == 1, "EVP_PBE_scrypt N=%llu r=%u p=%u failed",
	    (unsigned long long)n, r, p);
}

static void
batch(struct scrypt_ctx *ctx, const struct scrypt_pw *pw, size_t count,
    const uint8_t *salt, size_t saltlen, uint64_t n, uint32_t r, uint32_t p,
    uint8_t *out, size_t dklen)
{
	struct err e = { "" };

	ck_assert_msg(scrypt_batch(ctx, pw, count, salt, saltlen, n, r, p, out, dklen,
	    &e) == 0, "%s: scrypt_batch of %zu: %s",
	    scrypt_kernel_name(scrypt_ctx_kernel(ctx)), count, e.msg);
}

static void
expect_eq(const uint8_t *got, const uint8_t *want, size_t len, const char *what,
    enum scrypt_kernel k)
{
	char g[129], w[129];
	size_t show = len < 64 ? len : 64;

	if (memcmp(got, want, len) == 0)
		return;
	hex_encode(got, show, g);
	hex_encode(want, show, w);
	ck_abort_msg("%s: kernel %s: got %s, want %s", what, scrypt_kernel_name(k), g, w);
}

static int
hexfield(const char *s, uint8_t *out, size_t cap)
{
	size_t len = strcmp(s, "-") == 0 ? 0 : strlen(s) / 2;

	ck_assert_uint_le(len, cap);
	ck_assert_msg(len == 0 || hex_decode(s, out, len) == 0, "bad hex '%s'", s);
	return (int)len;
}

/* Calls fn for each record of kind in $FARMD_VECTORS/scrypt.txt. */
typedef void (*rec_fn)(char **f, int nf, void *arg);

static int
for_each(const char *kind, int nfields, rec_fn fn, void *arg)
{
	const char *dir = getenv("FARMD_VECTORS");
	char path[4096], *line = NULL;
	size_t cap = 0;
	int count = 0, lineno = 0;
	ssize_t n;
	FILE *fp;

	ck_assert_msg(dir != NULL && *dir != '\0', "FARMD_VECTORS is not set");
	snprintf(path, sizeof(path), "%s/scrypt.txt", dir);
	fp = fopen(path, "r");
	ck_assert_msg(fp != NULL, "%s: %s", path, strerror(errno));
	while ((n = getline(&line, &cap, fp)) >= 0) {
		char *f[16], *save = NULL, *tok;
		int nf = 0;

		lineno++;
		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			line[--n] = '\0';
		if (n == 0 || line[0] == '#')
			continue;
		for (tok = strtok_r(line, " ", &save); tok != NULL && nf < 16;
		    tok = strtok_r(NULL, " ", &save))
			f[nf++] = tok;
		if (strcmp(f[0], kind) != 0)
			continue;
		ck_assert_msg(nf == nfields, "scrypt.txt:%d: %d fields, want %d",
		    lineno, nf, nfields);
		fn(f, nf, arg);
		count++;
	}
	free(line);
	fclose(fp);
	ck_assert_msg(count > 0, "%s: no '%s' records", path, kind);
	return count;
}

static uint64_t
num(const char *s)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 10);

	ck_assert_msg(*end == '\0' && end != s, "bad number '%s'", s);
	return v;
}

/* ------------------------------------------------------------ kernels */

START_TEST(test_kernel_select)
{
	enum scrypt_kernel k;
	struct err e = { "" };

	for (int i = 0; i < SCRYPT_KERNEL_COUNT; i++) {
		ck_assert_int_eq(scrypt_kernel_parse(scrypt_kernel_name(
		    (enum scrypt_kernel)i), &k), 0);
		ck_assert_int_eq(k, i);
	}
	ck_assert_uint_eq(scrypt_kernel_lanes(SCRYPT_KERNEL_PORTABLE), 1);
	ck_assert_uint_eq(scrypt_kernel_lanes(SCRYPT_KERNEL_AVX2), 8);
	ck_assert_uint_eq(scrypt_kernel_lanes(SCRYPT_KERNEL_AVX512), 16);
	ck_assert(scrypt_kernel_available(SCRYPT_KERNEL_PORTABLE));
	ck_assert_int_eq(scrypt_kernel_select(NULL, &k, &e), 0);
	ck_assert_int_eq(k, scrypt_kernel_best());
	ck_assert_int_eq(scrypt_kernel_select("", &k, &e), 0);
	ck_assert_int_eq(k, scrypt_kernel_best());
	ck_assert(scrypt_kernel_available(scrypt_kernel_best()));
	ck_assert_int_eq(scrypt_kernel_select("sse9", &k, &e), -1);
	ck_assert_str_eq(e.msg, "FARMD_KERNEL=sse9: unknown kernel (portable, avx2 or avx512)");
	for (int i = 0; i < SCRYPT_KERNEL_COUNT; i++) {
		const char *name = scrypt_kernel_name((enum scrypt_kernel)i);
		int rc = scrypt_kernel_select(name, &k, &e);

		if (scrypt_kernel_available((enum scrypt_kernel)i)) {
			ck_assert_int_eq(rc, 0);
			ck_assert_int_eq(k, i);
		} else {
			ck_assert_int_eq(rc, -1);
			ck_assert_msg(strstr(e.msg, "this CPU cannot run it") != NULL, "%s", e.msg);
			ck_assert_ptr_null(scrypt_ctx_new((enum scrypt_kernel)i, &e));
		}
	}
}
END_TEST

/* ------------------------------------------------------ RFC 7914 §12 */

static void
rfc_one(char **f, int nf, void *arg)
{
	uint8_t pw[64], salt[64], want[64], got[64];
	int pwlen = hexfield(f[1], pw, sizeof(pw)), saltlen = hexfield(f[2], salt,
	    sizeof(salt));
	uint64_t n = num(f[3]);
	uint32_t r = (uint32_t)num(f[4]), p = (uint32_t)num(f[5]);
	size_t dklen = num(f[6]);
	struct scrypt_pw one = { pw, (size_t)pwlen };

	(void)nf;
	(void)arg;
	ck_assert_uint_eq(dklen, sizeof(want));
	hexfield(f[7], want, sizeof(want));
	if (n > 16384 && sanitized()) {
		fprintf(stderr, "test_rfc7914: N=%llu (1 GiB per instance) skipped in "
		    "the sanitized pass\n", (unsigned long long)n);
		return;
	}
	ref(pw, pwlen, salt, saltlen, n, r, p, got, dklen);
	expect_eq(got, want, dklen, "RFC 7914 via EVP_PBE_scrypt", SCRYPT_KERNEL_PORTABLE);
	for (int i = 0; i < nkernels; i++) {
		struct scrypt_ctx *ctx = kctx(kernels[i], 1);

		memset(got, 0, sizeof(got));
		batch(ctx, &one, 1, salt, saltlen, n, r, p, got, dklen);
		expect_eq(got, want, dklen, "RFC 7914", kernels[i]);
		scrypt_ctx_free(ctx);
	}
}

START_TEST(test_rfc7914)
{
	find_kernels();
	ck_assert_int_eq(for_each("rfc", 8, rfc_one, NULL), 4);
}
END_TEST

/* RFC vector 2 (p = 16) in the middle of a batch with other passwords. */
START_TEST(test_rfc7914_p16_in_batch)
{
	static const uint8_t want[64] = {
		0xfd, 0xba, 0xbe, 0x1c, 0x9d, 0x34, 0x72, 0x00, 0x78, 0x56, 0xe7, 0x19,
		0x0d, 0x01, 0xe9, 0xfe, 0x7c, 0x6a, 0xd7, 0xcb, 0xc8, 0x23, 0x78, 0x30,
		0xe7, 0x73, 0x76, 0x63, 0x4b, 0x37, 0x31, 0x62, 0x2e, 0xaf, 0x30, 0xd9,
		0x2e, 0x22, 0xa3, 0x88, 0x6f, 0xf1, 0x09, 0x27, 0x9d, 0x98, 0x30, 0xda,
		0xc7, 0x27, 0xaf, 0xb9, 0x4a, 0x83, 0xee, 0x6d, 0x83, 0x60, 0xcb, 0xdf,
		0xa2, 0xcc, 0x06, 0x40,
	};
	const uint8_t *salt = (const uint8_t *)"NaCl";
	struct scrypt_pw pw[3] = {
		{ (const uint8_t *)"other", 5 }, { (const uint8_t *)"password", 8 },
		{ (const uint8_t *)"", 0 },
	};
	uint8_t got[3][64], r0[64], r2[64];

	find_kernels();
	ref(pw[0].data, pw[0].len, salt, 4, 1024, 8, 16, r0, 64);
	ref(pw[2].data, pw[2].len, salt, 4, 1024, 8, 16, r2, 64);
	for (int i = 0; i < nkernels; i++) {
		struct scrypt_ctx *ctx = kctx(kernels[i], 1);

		batch(ctx, pw, 3, salt, 4, 1024, 8, 16, got[0], 64);
		expect_eq(got[0], r0, 64, "p=16 lane 0", kernels[i]);
		expect_eq(got[1], want, 64, "p=16 lane 1 (RFC vector 2)", kernels[i]);
		expect_eq(got[2], r2, 64, "p=16 lane 2", kernels[i]);
		scrypt_ctx_free(ctx);
	}
}
END_TEST

/* -------------------------------------------- farmd-shaped fixed seeds */

struct seed_set {
	const char *profile;
	uint8_t pw[32][PW_LEN];
	uint8_t want[32][HASH_LEN];
	int n;
	uint64_t N;
	uint32_t r, p;
};

static void
seed_one(char **f, int nf, void *arg)
{
	struct seed_set *s = arg;
	uint8_t sid[HASH_LEN], seed[HASH_LEN];
	struct err e = { "" };
	struct encode_params params;
	struct encode_v1_ctx *enc;

	(void)nf;
	if (strcmp(f[1], s->profile) != 0)
		return;
	ck_assert_int_lt(s->n, 32);
	hexfield(f[2], sid, sizeof(sid));
	s->N = num(f[4]);
	s->r = (uint32_t)num(f[5]);
	s->p = (uint32_t)num(f[6]);
	memcpy(s->pw[s->n], sid, HASH_LEN);
	be32_put(s->pw[s->n] + HASH_LEN, (uint32_t)num(f[3]));
	hexfield(f[7], s->want[s->n], HASH_LEN);
	/* encode_v1_seed (the portable path plotting used so far) agrees. */
	params = (struct encode_params){ s->N, s->r, s->p };
	enc = encode_v1_ctx_new(&e);
	ck_assert_ptr_nonnull(enc);
	ck_assert_int_eq(encode_v1_seed(enc, sid, (uint32_t)num(f[3]), &params, seed, &e), 0);
	expect_eq(seed, s->want[s->n], HASH_LEN, "encode_v1_seed", SCRYPT_KERNEL_PORTABLE);
	encode_v1_ctx_free(enc);
	s->n++;
}

static void
seed_profile(const char *profile)
{
	static struct seed_set s;
	struct scrypt_pw pw[32];
	uint8_t got[32][HASH_LEN];
	int singles;

	memset(&s, 0, sizeof(s));
	s.profile = profile;
	find_kernels();
	for_each("seed", 8, seed_one, &s);
	ck_assert_int_gt(s.n, 0);
	for (int i = 0; i < s.n; i++)
		pw[i] = (struct scrypt_pw){ s.pw[i], PW_LEN };
	/* A one-instance production pass takes seconds under ASan. */
	singles = sanitized() && s.N > 1024 ? 2 : s.n;
	for (int i = 0; i < nkernels; i++) {
		struct scrypt_ctx *ctx = kctx(kernels[i], 1);

		/* All at once (one padded pass for 16 lanes), then one by one. */
		batch(ctx, pw, (size_t)s.n, SALT, SALT_LEN, s.N, s.r, s.p, got[0], HASH_LEN);
		for (int j = 0; j < s.n; j++)
			expect_eq(got[j], s.want[j], HASH_LEN, profile, kernels[i]);
		for (int j = 0; j < singles; j++) {
			batch(ctx, &pw[j], 1, SALT, SALT_LEN, s.N, s.r, s.p, got[j], HASH_LEN);
			expect_eq(got[j], s.want[j], HASH_LEN, profile, kernels[i]);
		}
		scrypt_ctx_free(ctx);
	}
}

START_TEST(test_seed_vectors_demo)
{
	seed_profile("demo");
}
END_TEST

START_TEST(test_seed_vectors_production)
{
	seed_profile("production");
}
END_TEST

/* encode_v1_seeds == encode_v1_seed piece by piece, across the u32 wrap
 * of piece offsets, for every kernel and the default short-batch rule. */
START_TEST(test_encode_v1_seeds)
{
	static const struct encode_params demo = { .n = 1024, .r = 8, .p = 1 };
	enum { COUNT = 70 };
	uint8_t pkh[HASH_LEN] = { 7 }, id[HASH_LEN], want[COUNT][HASH_LEN];
	uint8_t got[COUNT][HASH_LEN];
	uint32_t first = 0xffffffffu - 20;
	struct err e = { "" };
	struct encode_v1_ctx *enc = encode_v1_ctx_new(&e);

	ck_assert_ptr_nonnull(enc);
	find_kernels();
	encode_v1_sector_id(pkh, 3, 9, id);
	for (uint32_t i = 0; i < COUNT; i++)
		ck_assert_int_eq(encode_v1_seed(enc, id, first + i, &demo, want[i], &e), 0);
	for (int i = 0; i < nkernels; i++) {
		struct scrypt_ctx *ctx = kctx(kernels[i], 0);
		size_t sizes[] = { COUNT, 1, 2, 17 };

		for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
			memset(got, 0, sizeof(got));
			ck_assert_msg(encode_v1_seeds(ctx, id, first, sizes[s], &demo, got[0],
			    &e) == 0, "%s", e.msg);
			for (size_t j = 0; j < sizes[s]; j++)
				expect_eq(got[j], want[j], HASH_LEN, "encode_v1_seeds", kernels[i]);
		}
		scrypt_ctx_free(ctx);
	}
	encode_v1_ctx_free(enc);
}
END_TEST

/* ------------------------------------------------- the random set */

struct random_job {
	const char *profile;
	uint64_t N;
	uint32_t r, p;
	int nchunks;                     /* chunks of CHUNK inputs to check */
	uint8_t want[RANDOM_COUNT / CHUNK][HASH_LEN];
	int nwant;
	/* Work: (SIMD kernel, chunk) pairs, taken by the threads. */
	enum scrypt_kernel simd[SCRYPT_KERNEL_COUNT];
	int nsimd;
	int kchunks[SCRYPT_KERNEL_COUNT];	/* chunks checked on simd[i] */
	atomic_int next;
	uint8_t got[SCRYPT_KERNEL_COUNT][RANDOM_COUNT / CHUNK][HASH_LEN];
	char error[ERR_MSG_MAX];
};

/* Input k of a profile's random set (gen_scrypt_vectors.py). */
static void
random_pw(const char *profile, uint32_t k, uint8_t pw[PW_LEN])
{
	uint8_t label[64], off[HASH_LEN];
	size_t len = (size_t)snprintf((char *)label, sizeof(label), "scrypt-random-%s",
	    profile);

	be32_put(label + len, k);
	hash_sha256(label, len + 4, pw);
	hash_sha256(pw, HASH_LEN, off);
	memcpy(pw + HASH_LEN, off, 4);
}

static void
random_want(char **f, int nf, void *arg)
{
	struct random_job *j = arg;

	(void)nf;
	if (strcmp(f[1], j->profile) != 0)
		return;
	j->N = num(f[2]);
	j->r = (uint32_t)num(f[3]);
	j->p = (uint32_t)num(f[4]);
	ck_assert_uint_eq(num(f[5]), (uint64_t)j->nwant * CHUNK);
	ck_assert_uint_eq(num(f[6]), CHUNK);
	hexfield(f[7], j->want[j->nwant++], HASH_LEN);
}

/* Digest of chunk c's seeds, in batches of 1 + c % lanes, then full
 * batches, then the rest: every short size occurs. */
static int
random_chunk(struct scrypt_ctx *ctx, struct random_job *j, int c, uint8_t digest[HASH_LEN],
    struct err *e)
{
	static __thread uint8_t pw[CHUNK][PW_LEN], out[CHUNK][HASH_LEN];
	unsigned lanes = scrypt_kernel_lanes(scrypt_ctx_kernel(ctx));
	struct scrypt_pw p[CHUNK];
	size_t done = 0, n = 1 + (size_t)c % lanes;

	for (int i = 0; i < CHUNK; i++) {
		random_pw(j->profile, (uint32_t)(c * CHUNK + i), pw[i]);
		p[i] = (struct scrypt_pw){ pw[i], PW_LEN };
	}
	while (done < CHUNK) {
		if (n > CHUNK - done)
			n = CHUNK - done;
		if (scrypt_batch(ctx, p + done, n, SALT, SALT_LEN, j->N, j->r, j->p,
		    out[done], HASH_LEN, e) < 0)
			return -1;
		done += n;
		n = lanes;
	}
	hash_sha256(out, sizeof(out), digest);
	return 0;
}

static void *
random_thread(void *arg)
{
	struct random_job *j = arg;
	struct scrypt_ctx *ctx[SCRYPT_KERNEL_COUNT] = { NULL };
	struct err e = { "" };
	int t;

	while ((t = atomic_fetch_add(&j->next, 1)) < j->nsimd * j->nchunks) {
		int ki = t % j->nsimd, c = t / j->nsimd;

		if (c >= j->kchunks[ki])
			continue;
		if (ctx[ki] == NULL) {
			ctx[ki] = scrypt_ctx_new(j->simd[ki], &e);
			if (ctx[ki] == NULL)
				break;
			scrypt_ctx_set_pad_min(ctx[ki], 1);
		}
		if (random_chunk(ctx[ki], j, c, j->got[ki][c], &e) < 0)
			break;
	}
	if (e.msg[0] != '\0')
		snprintf(j->error, sizeof(j->error), "%s", e.msg);
	for (int i = 0; i < SCRYPT_KERNEL_COUNT; i++)
		scrypt_ctx_free(ctx[i]);
	return NULL;
}

/* The first inputs again, one by one against EVP_PBE_scrypt called here. */
static void
random_live(struct random_job *j, int count)
{
	uint8_t pw[PW_LEN], want[HASH_LEN], got[HASH_LEN];

	for (int i = 0; i < nkernels; i++) {
		struct scrypt_ctx *ctx = kctx(kernels[i], 1);
		unsigned lanes = scrypt_kernel_lanes(kernels[i]);

		for (int k = 0; k < count; k += (int)lanes) {
			static uint8_t bpw[16][PW_LEN], out[16][HASH_LEN];
			struct scrypt_pw p[16];
			int n = count - k < (int)lanes ? count - k : (int)lanes;

			for (int l = 0; l < n; l++) {
				random_pw(j->profile, (uint32_t)(k + l), bpw[l]);
				p[l] = (struct scrypt_pw){ bpw[l], PW_LEN };
			}
			batch(ctx, p, (size_t)n, SALT, SALT_LEN, j->N, j->r, j->p, out[0],
			    HASH_LEN);
			for (int l = 0; l < n; l++) {
				random_pw(j->profile, (uint32_t)(k + l), pw);
				ref(pw, PW_LEN, SALT, SALT_LEN, j->N, j->r, j->p, want, HASH_LEN);
				memcpy(got, out[l], HASH_LEN);
				expect_eq(got, want, HASH_LEN, j->profile, kernels[i]);
			}
		}
		scrypt_ctx_free(ctx);
	}
}

/* FARMD_SCRYPT_FULL=1 (scripts/test --full): every SIMD kernel on the whole
 * random set of both profiles, as issue 13's acceptance states it. */
static bool
full(void)
{
	const char *s = getenv("FARMD_SCRYPT_FULL");

	return s != NULL && strcmp(s, "1") == 0;
}

/* chunks_other: how many chunks a SIMD kernel other than the one this CPU
 * plots with (scrypt_kernel_best) checks in a normal run; it checks all of
 * them with full(). */
static void
random_profile(const char *profile, int chunks_normal, int chunks_sanitized, int chunks_other,
    int live_normal, int live_sanitized)
{
	enum scrypt_kernel best = scrypt_kernel_best();
	char counts[256];
	size_t off = 0;
	static struct random_job j;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	pthread_t th[8];
	int nth = ncpu < 1 ? 1 : ncpu > 8 ? 8 : (int)ncpu;

	memset(&j, 0, sizeof(j));
	j.profile = profile;
	find_kernels();
	ck_assert_int_eq(for_each("random", 8, random_want, &j), 2 * RANDOM_COUNT / CHUNK);
	ck_assert_int_eq(j.nwant, RANDOM_COUNT / CHUNK);
	j.nchunks = sanitized() ? chunks_sanitized : chunks_normal;
	for (int i = 0; i < nkernels; i++)
		if (kernels[i] != SCRYPT_KERNEL_PORTABLE) {
			int n = kernels[i] == best || full() ? j.nchunks : chunks_other;

			j.kchunks[j.nsimd] = n < j.nchunks ? n : j.nchunks;
			j.simd[j.nsimd++] = kernels[i];
		}
	random_live(&j, sanitized() ? live_sanitized : live_normal);
	for (int i = 0; i < nth; i++)
		ck_assert_int_eq(pthread_create(&th[i], NULL, random_thread, &j), 0);
	for (int i = 0; i < nth; i++)
		pthread_join(th[i], NULL);
	ck_assert_msg(j.error[0] == '\0', "%s", j.error);
	for (int ki = 0; ki < j.nsimd; ki++)
		for (int c = 0; c < j.kchunks[ki]; c++)
			ck_assert_msg(memcmp(j.got[ki][c], j.want[c], HASH_LEN) == 0,
			    "%s: kernel %s: inputs %d..%d differ from EVP_PBE_scrypt",
			    profile, scrypt_kernel_name(j.simd[ki]), c * CHUNK, c * CHUNK + CHUNK - 1);
	for (int ki = 0; ki < j.nsimd && off < sizeof(counts); ki++)
		off += (size_t)snprintf(counts + off, sizeof(counts) - off, "%s%d on %s",
		    ki ? ", " : "", j.kchunks[ki] * CHUNK, scrypt_kernel_name(j.simd[ki]));
	fprintf(stderr, "test_random_%s: inputs per SIMD kernel: %s; %d live\n",
	    profile, j.nsimd ? counts : "none", sanitized() ? live_sanitized : live_normal);
}

START_TEST(test_random_demo)
{
	/* A kernel plotting does not use here checks a fifth (it is the one
	 * another machine plots with; all of both profiles on both kernels
	 * took unit_scrypt to 180 s of a 9-minute suite on 2 cores). */
	random_profile("demo", RANDOM_COUNT / CHUNK, 5, RANDOM_COUNT / CHUNK / 5, 256, 32);
}
END_TEST

START_TEST(test_random_production)
{
	/* The production set is 16 times the demo's work per input: in the
	 * normal suite the kernel plotting uses checks a tenth of it and any
	 * other kernel a twentieth (all of it cost 220 CPU-s, a third of the
	 * suite's CPU on 2 cores); scripts/test --full checks all of it on
	 * every kernel. */
	random_profile("production", RANDOM_COUNT / CHUNK / 10, 1, RANDOM_COUNT / CHUNK / 20,
	    16, 4);
}
END_TEST

/* ------------------------------------------------ random shapes */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t
rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state >> 16);
}

/* Odd N, r, p, password/salt/output lengths; batch sizes 1..2*lanes+1;
 * the default short-batch rule and pad_min 1. */
START_TEST(test_random_shapes)
{
	enum { MAXB = 33, MAXPW = 80, MAXDK = 100 };
	static uint8_t pw[MAXB][MAXPW], want[MAXB][MAXDK], got[MAXB][MAXDK];
	int sets = sanitized() ? 15 : 60;

	find_kernels();
	for (int s = 0; s < sets; s++) {
		uint32_t r = 1 + rng() % 9, p = 1 + rng() % 3;
		uint64_t n = (uint64_t)2 << (rng() % 8);
		size_t saltlen = rng() % 41, dklen = 1 + rng() % MAXDK;
		uint8_t salt[40];
		struct scrypt_pw pp[MAXB];
		size_t count = 1 + rng() % MAXB;

		for (size_t i = 0; i < saltlen; i++)
			salt[i] = (uint8_t)rng();
		for (size_t b = 0; b < count; b++) {
			pp[b] = (struct scrypt_pw){ pw[b], rng() % MAXPW };
			for (size_t i = 0; i < pp[b].len; i++)
				pw[b][i] = (uint8_t)rng();
			ref(pw[b], pp[b].len, salt, saltlen, n, r, p, want[b], dklen);
		}
		for (int i = 0; i < nkernels; i++) {
			struct scrypt_ctx *ctx = kctx(kernels[i], s % 2 ? 1 : 0);
			char what[96];

			memset(got, 0xa5, sizeof(got));
			batch(ctx, pp, count, salt, saltlen, n, r, p, got[0], dklen);
			for (size_t b = 0; b < count; b++) {
				snprintf(what, sizeof(what), "N=%llu r=%u p=%u dklen=%zu batch %zu/%zu",
				    (unsigned long long)n, r, p, dklen, b, count);
				/* Outputs are packed dklen apart. */
				expect_eq(got[0] + b * dklen, want[b], dklen, what, kernels[i]);
			}
			scrypt_ctx_free(ctx);
		}
	}
}
END_TEST

/* Parameters OpenSSL refuses are refused by every kernel. */
START_TEST(test_bad_params)
{
	static const struct { uint64_t n; uint32_t r, p; size_t dklen; } bad[] = {
		{ 0, 8, 1, 32 }, { 1, 8, 1, 32 }, { 3, 8, 1, 32 }, { 1000, 8, 1, 32 },
		{ 1024, 0, 1, 32 }, { 1024, 8, 0, 32 }, { 65536, 1, 1, 32 },
	};
	struct scrypt_pw pw = { (const uint8_t *)"x", 1 };
	uint8_t out[32];

	find_kernels();
	for (size_t b = 0; b < sizeof(bad) / sizeof(bad[0]); b++) {
		ck_assert_int_eq(EVP_PBE_scrypt("x", 1, SALT, SALT_LEN, bad[b].n, bad[b].r,
		    bad[b].p, 0, out, bad[b].dklen), 0);
		for (int i = 0; i < nkernels; i++) {
			struct scrypt_ctx *ctx = kctx(kernels[i], 1);
			struct err e = { "" };

			ck_assert_int_eq(scrypt_batch(ctx, &pw, 1, SALT, SALT_LEN, bad[b].n,
			    bad[b].r, bad[b].p, out, bad[b].dklen, &e), -1);
			ck_assert_msg(strncmp(e.msg, "scrypt: ", 8) == 0, "%s", e.msg);
			scrypt_ctx_free(ctx);
		}
	}
}
END_TEST

/* ------------------------------------------------ in the worker sandbox */

/*
 * A context made before the sandbox runs both profiles under the real
 * worker sandbox (worker/sandbox.c: its seccomp allowlist, RLIMIT_AS and
 * Landlock), growing its work area from the warm-up's to the production
 * size there: the kernels need no syscall that the worker lacks.
 */
START_TEST(test_in_worker_sandbox)
{
	find_kernels();
	for (int i = 0; i < nkernels; i++) {
		pid_t pid = fork();
		int status;

		ck_assert_int_ge(pid, 0);
		if (pid == 0) {
			struct err e = { "" };
			struct scrypt_ctx *ctx = scrypt_ctx_new(kernels[i], &e);
			struct sandbox_report rep;
			uint8_t pw[16][PW_LEN], out[16][HASH_LEN], want[HASH_LEN];
			struct scrypt_pw p[16];
			/* Sanitized: no RLIMIT_AS; growing the area is the point. */
			uint64_t ns[] = { 1024, sanitized() ? 4096 : 16384 };

			if (ctx == NULL || sandbox_apply(&rep, &e) < 0)
				_exit(2);
			for (int l = 0; l < 16; l++) {
				random_pw("demo", (uint32_t)l, pw[l]);
				p[l] = (struct scrypt_pw){ pw[l], PW_LEN };
			}
			for (int s = 0; s < 2; s++) {
				if (scrypt_batch(ctx, p, 16, SALT, SALT_LEN, ns[s], 8, 1, out[0],
				    HASH_LEN, &e) < 0)
					_exit(3);
			}
			/* The last batch's lane 15 against OpenSSL, still inside. */
			if (EVP_PBE_scrypt((const char *)pw[15], PW_LEN, SALT, SALT_LEN, ns[1],
			    8, 1, 64 << 20, want, HASH_LEN) != 1 ||
			    memcmp(want, out[15], HASH_LEN) != 0)
				_exit(4);
			scrypt_ctx_free(ctx);
			_exit(0);
		}
		ck_assert_int_eq(waitpid(pid, &status, 0), pid);
		ck_assert_msg(!WIFSIGNALED(status), "%s: child killed by signal %d (SIGSYS: "
		    "a syscall outside the worker's allowlist)", scrypt_kernel_name(kernels[i]),
		    WIFSIGNALED(status) ? WTERMSIG(status) : 0);
		ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		    "%s: child exit status %d", scrypt_kernel_name(kernels[i]),
		    WEXITSTATUS(status));
	}
}
END_TEST

static Suite *
scrypt_suite(void)
{
	Suite *s = suite_create("scrypt");
	TCase *kat = tcase_create("vectors");
	TCase *rnd = tcase_create("random");

	tcase_set_timeout(kat, 300);
	tcase_set_timeout(rnd, 1200);
	tcase_add_test(kat, test_kernel_select);
	tcase_add_test(kat, test_rfc7914);
	tcase_add_test(kat, test_rfc7914_p16_in_batch);
	tcase_add_test(kat, test_seed_vectors_demo);
	tcase_add_test(kat, test_seed_vectors_production);
	tcase_add_test(kat, test_encode_v1_seeds);
	tcase_add_test(kat, test_bad_params);
	tcase_add_test(kat, test_in_worker_sandbox);
	tcase_add_test(rnd, test_random_shapes);
	tcase_add_test(rnd, test_random_demo);
	tcase_add_test(rnd, test_random_production);
	suite_add_tcase(s, kat);
	suite_add_tcase(s, rnd);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(scrypt_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
