/*
 * scrypt.c: batch scrypt (RFC 7914) — kernel choice, PBKDF2, the work
 * area, and the split of a batch into SIMD passes.
 *
 * Invariants:
 *  - Output is byte-identical to EVP_PBE_scrypt for every kernel: the
 *    SIMD kernels replace only ROMix; both PBKDF2-HMAC-SHA256 calls are
 *    OpenSSL's (EVP_KDF "PBKDF2", fetched in scrypt_ctx_new).
 *  - After scrypt_ctx_new() returns, nothing here opens a file or loads a
 *    provider (the encode worker is sandboxed by then).  What a batch may
 *    still do: mmap/munmap/madvise of the work area when it must grow,
 *    malloc of the PBKDF2 block buffer when it must grow, and OpenSSL's
 *    uncontended locks.
 *  - The work area (scratch X, then V) is one anonymous mapping owned by
 *    the context, kept from one batch to the next and only ever grown: a
 *    fresh 4 KiB page costs a fault (~13 us here), 16 MiB of them ~50 ms,
 *    so a steady stream of same-sized batches faults nothing.  It is
 *    marked MADV_HUGEPAGE: the second loop's reads are random over all
 *    of V (256 MiB at N=16384), and 2 MiB pages keep them off the page
 *    walker.
 *  - Lanes of a pass beyond its instances are padding (scrypt_simd.h);
 *    V is sized for the real instances only.
 */
#include "scrypt.h"
#include "scrypt_simd.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

/*
 * A remainder smaller than this runs on the portable path, one instance
 * at a time, instead of as one padded SIMD pass.  The Salsa20/8 chain of
 * a pass costs the same whatever the number of live lanes (only the V
 * traffic shrinks), so a short pass costs most of a full one.  Measured
 * here (one pass vs k OpenSSL derives, side by side in one process):
 *   avx512 demo:        k=1 3.0 ms vs 1.8;  k=2 3.0 ms vs 3.5;  16: 4.5 ms
 *   avx512 production:  k=1  53 ms vs 34;   k=2  59 ms vs 68;   16:  86 ms
 *   avx2 demo:          k=2 4.0 ms vs 3.5;  k=3 4.0 ms vs 5.3;   8: 4.4 ms
 *   avx2 production:    k=2  77 ms vs 68;   k=3  81 ms vs 102;   8:  87 ms
 */
#define PAD_MIN_AVX512 2
#define PAD_MIN_AVX2 3
/*
 * V of an AVX-512 pass at least this large is written with non-temporal
 * stores (lines written whole, no read-for-ownership; the second loop then
 * reads them from DRAM).  Measured per pass, NT vs normal stores:
 * 16 lanes demo (V 16 MiB) 4.4 vs 4.8 ms, production (256 MiB) 79 vs
 * 109 ms; but 8 lanes demo (8 MiB) 3.6 vs 3.2 ms, and V that fits the
 * 1 MiB L2 15% slower.  AVX2's 32-byte NT stores lose at every size
 * measured (demo 6.3 vs 4.1 ms per 8-lane pass, production 90 vs 85 ms),
 * so that kernel never uses them.
 */
#define NT_MIN_AVX512 ((size_t)16 << 20)

static const char *const kernel_names[SCRYPT_KERNEL_COUNT] = {
	[SCRYPT_KERNEL_PORTABLE] = "portable",
	[SCRYPT_KERNEL_AVX2] = "avx2",
	[SCRYPT_KERNEL_AVX512] = "avx512",
};

struct scrypt_ctx {
	enum scrypt_kernel kernel;
	unsigned lanes;
	unsigned pad_min;
	EVP_KDF *pbkdf2;
	EVP_KDF_CTX *pctx;	/* digest SHA-256 set once */
	EVP_KDF *kdf;
	EVP_KDF_CTX *sctx;	/* portable path */
	uint8_t *area;		/* mmap: scratch X, then V */
	size_t area_len;
	uint8_t *blocks;	/* PBKDF2 output, lanes * p * 128r bytes */
	size_t blocks_len;
};

const char *
scrypt_kernel_name(enum scrypt_kernel k)
{
	return (unsigned)k < SCRYPT_KERNEL_COUNT ? kernel_names[k] : "?";
}

int
scrypt_kernel_parse(const char *name, enum scrypt_kernel *k)
{
	for (int i = 0; i < SCRYPT_KERNEL_COUNT; i++)
		if (strcmp(name, kernel_names[i]) == 0) {
			*k = (enum scrypt_kernel)i;
			return 0;
		}
	return -1;
}

int
scrypt_kernel_available(enum scrypt_kernel k)
{
	switch (k) {
	case SCRYPT_KERNEL_PORTABLE:
		return 1;
#if defined(__x86_64__)
	/* libgcc's checks include the OS's XSAVE support (XCR0) for the
	 * ymm and zmm state, not just the CPUID bits. */
	case SCRYPT_KERNEL_AVX2:
		__builtin_cpu_init();
		return __builtin_cpu_supports("avx2");
	case SCRYPT_KERNEL_AVX512:
		__builtin_cpu_init();
		return __builtin_cpu_supports("avx512f") &&
		    __builtin_cpu_supports("avx512bw") &&
		    __builtin_cpu_supports("avx512vl");
#endif
	default:
		return 0;
	}
}

unsigned
scrypt_kernel_lanes(enum scrypt_kernel k)
{
	return k == SCRYPT_KERNEL_AVX512 ? 16 : k == SCRYPT_KERNEL_AVX2 ? 8 : 1;
}

enum scrypt_kernel
scrypt_kernel_best(void)
{
	if (scrypt_kernel_available(SCRYPT_KERNEL_AVX512))
		return SCRYPT_KERNEL_AVX512;
	if (scrypt_kernel_available(SCRYPT_KERNEL_AVX2))
		return SCRYPT_KERNEL_AVX2;
	return SCRYPT_KERNEL_PORTABLE;
}

int
scrypt_kernel_select(const char *forced, enum scrypt_kernel *k, struct err *e)
{
	if (forced == NULL || *forced == '\0') {
		*k = scrypt_kernel_best();
		return 0;
	}
	if (scrypt_kernel_parse(forced, k) < 0)
		return err_set(e, "FARMD_KERNEL=%.32s: unknown kernel (portable, avx2 "
		    "or avx512)", forced);
	if (!scrypt_kernel_available(*k))
		return err_set(e, "FARMD_KERNEL=%s: this CPU cannot run it (%s)",
		    forced, *k == SCRYPT_KERNEL_AVX512 ?
		    "needs AVX-512F, AVX-512BW and AVX-512VL" : "needs AVX2");
	return 0;
}

/* OpenSSL reads an empty octet string through its pointer: never NULL. */
static void *
nonnull(const uint8_t *p)
{
	static const uint8_t empty[1];

	return (void *)(p != NULL ? p : empty);
}

/* out = PBKDF2-HMAC-SHA256(pw, salt, 1 iteration, outlen). */
static int
pbkdf2(struct scrypt_ctx *ctx, const uint8_t *pw, size_t pwlen,
    const uint8_t *salt, size_t saltlen, uint8_t *out, size_t outlen,
    struct err *e)
{
	uint64_t iter = 1;
	OSSL_PARAM p[] = {
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PASSWORD,
		    nonnull(pw), pwlen),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT,
		    nonnull(salt), saltlen),
		OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_ITER, &iter),
		OSSL_PARAM_construct_end(),
	};

	if (EVP_KDF_derive(ctx->pctx, out, outlen, p) != 1)
		return err_ossl(e, "scrypt: PBKDF2");
	return 0;
}

/* OpenSSL's scrypt, one instance (the portable path). */
static int
portable_one(struct scrypt_ctx *ctx, const struct scrypt_pw *pw,
    const uint8_t *salt, size_t saltlen, uint64_t n, uint32_t r, uint32_t pp,
    uint8_t *out, size_t dklen, struct err *e)
{
	uint64_t maxmem, mem;
	OSSL_PARAM p[7], *q = p;

	/* OpenSSL needs 128*r*(N+p+2) bytes; allow that plus 1 MiB. */
	if (__builtin_mul_overflow((uint64_t)128 * r, n + pp + 2, &mem) ||
	    __builtin_add_overflow(mem, (uint64_t)1 << 20, &maxmem))
		maxmem = UINT64_MAX;
	*q++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PASSWORD,
	    nonnull(pw->data), pw->len);
	*q++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT,
	    nonnull(salt), saltlen);
	*q++ = OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_N, &n);
	*q++ = OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_R, &r);
	*q++ = OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_P, &pp);
	*q++ = OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_MAXMEM, &maxmem);
	*q = OSSL_PARAM_construct_end();
	if (EVP_KDF_derive(ctx->sctx, out, dklen, p) != 1)
		return err_ossl(e, "scrypt");
	return 0;
}

/* The work area holds at least len bytes (grown, never shrunk). */
static int
area_reserve(struct scrypt_ctx *ctx, size_t len, struct err *e)
{
	const size_t huge = (size_t)2 << 20;
	void *p;

	if (len <= ctx->area_len)
		return 0;
	len = (len + huge - 1) & ~(huge - 1);
	if (ctx->area != NULL)
		munmap(ctx->area, ctx->area_len);
	ctx->area = NULL;
	ctx->area_len = 0;
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
	    -1, 0);
	if (p == MAP_FAILED)
		return err_sys(e, "scrypt: work area of %zu MiB", len >> 20);
	(void)madvise(p, len, MADV_HUGEPAGE);	/* a hint; fine if refused */
	ctx->area = p;
	ctx->area_len = len;
	return 0;
}

static int
blocks_reserve(struct scrypt_ctx *ctx, size_t len, struct err *e)
{
	uint8_t *nb;

	if (len <= ctx->blocks_len)
		return 0;
	nb = realloc(ctx->blocks, len);
	if (nb == NULL)
		return err_set(e, "scrypt: out of memory for %zu bytes of blocks", len);
	ctx->blocks = nb;
	ctx->blocks_len = len;
	return 0;
}

/* One SIMD pass over count <= lanes instances. */
static int
simd_pass(struct scrypt_ctx *ctx, const struct scrypt_pw *pw, unsigned count,
    const uint8_t *salt, size_t saltlen, uint32_t n, uint32_t r, uint32_t p,
    uint8_t *out, size_t dklen, struct err *e)
{
	const size_t blk = (size_t)128 * r, stride = blk * p;
	const size_t xlen = SCRYPT_SIMD_X_BYTES(r), vlen = (size_t)count * blk * n;
	int nt = ctx->kernel == SCRYPT_KERNEL_AVX512 && vlen >= NT_MIN_AVX512;

	if (area_reserve(ctx, xlen + vlen, e) < 0 ||
	    blocks_reserve(ctx, stride * count, e) < 0)
		return -1;
	for (unsigned l = 0; l < count; l++)
		if (pbkdf2(ctx, pw[l].data, pw[l].len, salt, saltlen,
		    ctx->blocks + l * stride, stride, e) < 0)
			return -1;
	for (uint32_t k = 0; k < p; k++) {
		uint8_t *b = ctx->blocks + k * blk;

		if (ctx->kernel == SCRYPT_KERNEL_AVX512)
			scrypt_romix_avx512(b, stride, count, n, r, ctx->area + xlen,
			    ctx->area, nt);
		else
			scrypt_romix_avx2(b, stride, count, n, r, ctx->area + xlen,
			    ctx->area, nt);
	}
	for (unsigned l = 0; l < count; l++)
		if (pbkdf2(ctx, pw[l].data, pw[l].len, ctx->blocks + l * stride,
		    stride, out + l * dklen, dklen, e) < 0)
			return -1;
	return 0;
}

/* How many instances a SIMD pass may take at these parameters (0: none,
 * use the portable path). */
static unsigned
simd_width(const struct scrypt_ctx *ctx, uint64_t n, uint32_t r, uint32_t p)
{
	size_t per;

	if (ctx->kernel == SCRYPT_KERNEL_PORTABLE || n > ((uint64_t)1 << 31) ||
	    r > SCRYPT_SIMD_R_MAX || p > (64u << 20) / (128 * r))
		return 0;
	per = (size_t)128 * r * (size_t)n;
	if (per > SCRYPT_V_MAX)
		return 0;
	return SCRYPT_V_MAX / per < ctx->lanes ? (unsigned)(SCRYPT_V_MAX / per) :
	    ctx->lanes;
}

int
scrypt_batch(struct scrypt_ctx *ctx, const struct scrypt_pw *pw, size_t count,
    const uint8_t *salt, size_t saltlen, uint64_t n, uint32_t r, uint32_t p,
    uint8_t *out, size_t dklen, struct err *e)
{
	unsigned width;

	if (n < 2 || (n & (n - 1)) != 0)
		return err_set(e, "scrypt: N=%llu is not a power of two >= 2",
		    (unsigned long long)n);
	if (r == 0 || p == 0)
		return err_set(e, "scrypt: r=%u p=%u must be >= 1", r, p);
	if (dklen == 0)
		return err_set(e, "scrypt: output length 0");
	/* RFC 7914 §2, as OpenSSL enforces it: N < 2^(128*r/8). */
	if (16 * (uint64_t)r < 64 && n >= (uint64_t)1 << (16 * r))
		return err_set(e, "scrypt: N=%llu must be below 2^%u for r=%u",
		    (unsigned long long)n, 16 * r, r);
	width = simd_width(ctx, n, r, p);
	if (width < ctx->pad_min)	/* V_MAX allows too few lanes to pay */
		width = 0;
	for (size_t i = 0; i < count;) {
		size_t left = count - i;
		unsigned k = left < width ? (unsigned)left : width;

		if (k == 0 || (k < width && k < ctx->pad_min)) {
			if (portable_one(ctx, &pw[i], salt, saltlen, n, r, p,
			    out + i * dklen, dklen, e) < 0)
				return -1;
			i++;
			continue;
		}
		if (simd_pass(ctx, pw + i, k, salt, saltlen, (uint32_t)n, r, p,
		    out + i * dklen, dklen, e) < 0)
			return -1;
		i += k;
	}
	return 0;
}

void
scrypt_ctx_set_pad_min(struct scrypt_ctx *ctx, unsigned min)
{
	ctx->pad_min = min;
}

enum scrypt_kernel
scrypt_ctx_kernel(const struct scrypt_ctx *ctx)
{
	return ctx->kernel;
}

size_t
scrypt_ctx_mem(const struct scrypt_ctx *ctx)
{
	return ctx->area_len + ctx->blocks_len;
}

/* Fetches and configures the OpenSSL halves. */
static int
ctx_fetch(struct scrypt_ctx *ctx, struct err *e)
{
	const char *sha = "SHA256";
	int pkcs5 = 1;	/* plain PKCS#5: no SP 800-132 minimum lengths */
	OSSL_PARAM set[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)sha, 0),
		OSSL_PARAM_construct_int(OSSL_KDF_PARAM_PKCS5, &pkcs5),
		OSSL_PARAM_construct_end(),
	};

	ctx->pbkdf2 = EVP_KDF_fetch(NULL, "PBKDF2", NULL);
	if (ctx->pbkdf2 == NULL)
		return err_ossl(e, "fetch PBKDF2");
	ctx->pctx = EVP_KDF_CTX_new(ctx->pbkdf2);
	if (ctx->pctx == NULL || EVP_KDF_CTX_set_params(ctx->pctx, set) != 1)
		return err_ossl(e, "PBKDF2 context");
	ctx->kdf = EVP_KDF_fetch(NULL, "SCRYPT", NULL);
	if (ctx->kdf == NULL)
		return err_ossl(e, "fetch SCRYPT");
	ctx->sctx = EVP_KDF_CTX_new(ctx->kdf);	/* fetches SHA-256 for PBKDF2 */
	if (ctx->sctx == NULL)
		return err_ossl(e, "scrypt context");
	return 0;
}

struct scrypt_ctx *
scrypt_ctx_new(enum scrypt_kernel k, struct err *e)
{
	static const uint8_t pw[4] = "warm";
	const struct scrypt_pw warm = { pw, sizeof(pw) };
	struct scrypt_ctx *ctx;
	uint8_t out[32];

	if (!scrypt_kernel_available(k)) {
		err_set(e, "scrypt kernel %s is not available on this CPU",
		    scrypt_kernel_name(k));
		return NULL;
	}
	ctx = calloc(1, sizeof(*ctx));
	if (ctx == NULL) {
		err_set(e, "scrypt context: out of memory");
		return NULL;
	}
	ctx->kernel = k;
	ctx->lanes = scrypt_kernel_lanes(k);
	ctx->pad_min = k == SCRYPT_KERNEL_AVX512 ? PAD_MIN_AVX512 : PAD_MIN_AVX2;
	if (ctx_fetch(ctx, e) < 0)
		goto fail;
	/* Warm-up: both OpenSSL paths and the kernel, before any sandbox. */
	if (portable_one(ctx, &warm, pw, sizeof(pw), 16, 1, 1, out, sizeof(out), e) < 0 ||
	    (k != SCRYPT_KERNEL_PORTABLE && simd_pass(ctx, &warm, 1, pw, sizeof(pw),
	    16, 1, 1, out, sizeof(out), e) < 0)) {
		err_wrap(e, "scrypt warm-up");
		goto fail;
	}
	ERR_clear_error();
	return ctx;

fail:
	scrypt_ctx_free(ctx);
	return NULL;
}

void
scrypt_ctx_free(struct scrypt_ctx *ctx)
{
	if (ctx == NULL)
		return;
	if (ctx->area != NULL)
		munmap(ctx->area, ctx->area_len);
	free(ctx->blocks);
	EVP_KDF_CTX_free(ctx->sctx);
	EVP_KDF_free(ctx->kdf);
	EVP_KDF_CTX_free(ctx->pctx);
	EVP_KDF_free(ctx->pbkdf2);
	free(ctx);
}
