/*
 * encode_v1.c: encoding format v1 (DESIGN.md §6).  A persistent format:
 * every byte here is checked against independent implementations
 * (tests/vectors/gen_vectors.py), so change nothing without a new format
 * version.
 *
 * Sandbox note: encode_v1_ctx_new() fetches every OpenSSL algorithm the
 * hot path needs and runs each of them once, so that after it returns
 * encode_v1_seed()/encode_v1_piece()/encode_v1_mask() do no provider or
 * config loading (no open()).  What they still do: malloc/free (scrypt
 * allocates its 128*r*(N+p+2)-byte work area on every derive, which glibc
 * serves with mmap/munmap for large sizes) and uncontended pthread locking
 * (futex) inside OpenSSL.  encode_v1_seeds() runs on a struct scrypt_ctx,
 * prepared the same way (scrypt.h, scrypt_ctx_new).
 */
#include "encode_v1.h"
#include "merkle.h"
#include "scrypt.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#define SECTOR_TAG_LEN (sizeof(ENCODE_V1_TAG) - 1)	/* 15, no NUL */
#define SALT_LEN (sizeof(ENCODE_V1_SALT) - 1)		/* 15, no NUL */
#define CHACHA_IV_LEN 16
#define MASK_CHUNK (1u << 30)	/* EVP_EncryptUpdate takes an int length */

struct encode_v1_ctx {
	EVP_KDF *kdf;
	EVP_KDF_CTX *kctx;	/* reused: holds the prefetched SHA-256 */
	EVP_CIPHER *cipher;
	EVP_CIPHER_CTX *cctx;	/* reused; re-keyed for every piece */
};

void
encode_v1_sector_id(const uint8_t public_key_hash[HASH_LEN],
    uint32_t sector_index, uint64_t history_size, uint8_t out[HASH_LEN])
{
	uint8_t buf[SECTOR_TAG_LEN + HASH_LEN + 4 + 8];

	memcpy(buf, ENCODE_V1_TAG, SECTOR_TAG_LEN);
	memcpy(buf + SECTOR_TAG_LEN, public_key_hash, HASH_LEN);
	be32_put(buf + SECTOR_TAG_LEN + HASH_LEN, sector_index);
	be64_put(buf + SECTOR_TAG_LEN + HASH_LEN + 4, history_size);
	hash_sha256(buf, sizeof(buf), out);
}

uint64_t
encode_v1_piece_index(const uint8_t sector_id[HASH_LEN],
    uint32_t piece_offset, uint64_t history_size, uint32_t pieces_per_segment,
    uint32_t recent_segments, double recent_history_fraction)
{
	uint8_t buf[HASH_LEN + 4], d[HASH_LEN];
	uint64_t total = history_size * pieces_per_segment;
	uint64_t recent = (uint64_t)recent_segments * pieces_per_segment;
	uint64_t pick, frac_bits;

	memcpy(buf, sector_id, HASH_LEN);
	be32_put(buf + HASH_LEN, piece_offset);
	hash_sha256(buf, sizeof(buf), d);
	pick = be64_get(d);
	frac_bits = be64_get(d + 8);

	/* No history (history_size 0 or pieces_per_segment 0): nothing to
	 * draw from.  DESIGN.md §6 only plots once history size >= 1, so this
	 * is a caller error; answer 0 instead of dividing by zero. */
	if (total == 0)
		return 0;

	/*
	 * u64(d[8..16]) / 2^64 < recent_history_fraction.  The u64 -> double
	 * conversion rounds to nearest (53 bits) and the multiplication by
	 * 2^-64 is exact, so this is the same value that Python's
	 * `x / 2**64 < f` computes (true division of ints is correctly
	 * rounded, and dividing by a power of two is exact): the result is
	 * identical bit for bit.
	 *
	 * recent == 0 (recent_segments 0) would make "the last 0 segments"
	 * empty and the modulus zero; it falls back to the uniform draw.
	 */
	if ((double)frac_bits * 0x1p-64 < recent_history_fraction &&
	    history_size > recent_segments && recent != 0)
		return total - recent + pick % recent;
	return pick % total;
}

static int
derive_seed(struct encode_v1_ctx *ctx, const uint8_t *password, size_t pwlen,
    const struct encode_params *params, uint8_t seed[HASH_LEN], struct err *e)
{
	OSSL_PARAM p[7], *q = p;
	uint64_t n = params->n, maxmem, mem;
	uint32_t r = params->r, pp = params->p;

	if (n < 2 || (n & (n - 1)) != 0)
		return err_set(e, "scrypt: N=%llu is not a power of two >= 2",
		    (unsigned long long)n);
	if (r == 0 || pp == 0)
		return err_set(e, "scrypt: r=%u p=%u must be >= 1", r, pp);
	/* OpenSSL needs 128*r*(N+p+2) bytes; allow that plus 1 MiB. */
	if (__builtin_mul_overflow((uint64_t)128 * r, n + pp + 2, &mem) ||
	    __builtin_add_overflow(mem, (uint64_t)1 << 20, &maxmem))
		maxmem = UINT64_MAX;

	*q++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PASSWORD,
	    (void *)password, pwlen);
	*q++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT,
	    (void *)ENCODE_V1_SALT, SALT_LEN);
	*q++ = OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_N, &n);
	*q++ = OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_R, &r);
	*q++ = OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_P, &pp);
	*q++ = OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_MAXMEM, &maxmem);
	*q = OSSL_PARAM_construct_end();

	if (EVP_KDF_derive(ctx->kctx, seed, HASH_LEN, p) != 1)
		return err_ossl(e, "scrypt");
	return 0;
}

int
encode_v1_seed(struct encode_v1_ctx *ctx, const uint8_t sector_id[HASH_LEN],
    uint32_t piece_offset, const struct encode_params *params,
    uint8_t seed[HASH_LEN], struct err *e)
{
	uint8_t password[HASH_LEN + 4];

	memcpy(password, sector_id, HASH_LEN);
	be32_put(password + HASH_LEN, piece_offset);
	return derive_seed(ctx, password, sizeof(password), params, seed, e);
}

/* Passwords per scrypt_batch call: a multiple of every kernel's lanes. */
#define SEEDS_CHUNK 64

int
encode_v1_seeds(struct scrypt_ctx *sc, const uint8_t sector_id[HASH_LEN],
    uint32_t first_offset, size_t count, const struct encode_params *params,
    uint8_t *seeds, struct err *e)
{
	uint8_t password[SEEDS_CHUNK][HASH_LEN + 4];
	struct scrypt_pw pw[SEEDS_CHUNK];
	int rc = 0;

	for (size_t done = 0; done < count && rc == 0;) {
		size_t n = count - done < SEEDS_CHUNK ? count - done : SEEDS_CHUNK;

		for (size_t i = 0; i < n; i++) {
			memcpy(password[i], sector_id, HASH_LEN);
			be32_put(password[i] + HASH_LEN, first_offset + (uint32_t)(done + i));
			pw[i].data = password[i];
			pw[i].len = sizeof(password[i]);
		}
		rc = scrypt_batch(sc, pw, n, (const uint8_t *)ENCODE_V1_SALT, SALT_LEN,
		    params->n, params->r, params->p, seeds + done * HASH_LEN, HASH_LEN, e);
		if (rc < 0)
			err_wrap(e, "pieces %u..%u", first_offset + (uint32_t)done,
			    first_offset + (uint32_t)(done + n - 1));
		done += n;
	}
	OPENSSL_cleanse(password, sizeof(password));
	return rc;
}

int
encode_v1_mask(struct encode_v1_ctx *ctx, const uint8_t seed[HASH_LEN],
    const uint8_t *in, uint8_t *out, size_t len, struct err *e)
{
	/* OpenSSL's ChaCha20 IV: 32-bit little-endian block counter || 96-bit
	 * nonce.  All zero: counter 0, nonce 0 (RFC 8439 layout). */
	static const uint8_t iv[CHACHA_IV_LEN];
	int outl;

	/* cipher NULL: re-key the already initialised context in place. */
	if (EVP_EncryptInit_ex2(ctx->cctx, NULL, seed, iv, NULL) != 1)
		return err_ossl(e, "chacha20: init");
	while (len > 0) {
		size_t n = len < MASK_CHUNK ? len : MASK_CHUNK;

		if (EVP_EncryptUpdate(ctx->cctx, out, &outl, in, (int)n) != 1 ||
		    (size_t)outl != n)
			return err_ossl(e, "chacha20: update");
		in += n;
		out += n;
		len -= n;
	}
	return 0;
}

int
encode_v1_piece(struct encode_v1_ctx *ctx, const uint8_t sector_id[HASH_LEN],
    uint32_t piece_offset, const struct encode_params *params,
    const uint8_t *in, uint8_t *out, size_t len, struct err *e)
{
	uint8_t seed[HASH_LEN];
	int rc;

	if (encode_v1_seed(ctx, sector_id, piece_offset, params, seed, e) < 0)
		return err_wrap(e, "piece offset %u", piece_offset);
	rc = encode_v1_mask(ctx, seed, in, out, len, e);
	OPENSSL_cleanse(seed, sizeof(seed));
	if (rc < 0)
		return err_wrap(e, "piece offset %u", piece_offset);
	return 0;
}

struct encode_v1_ctx *
encode_v1_ctx_new(struct err *e)
{
	static const uint8_t zero_iv[CHACHA_IV_LEN];
	static const struct encode_params warm = { .n = 16, .r = 1, .p = 1 };
	struct encode_v1_ctx *ctx = calloc(1, sizeof(*ctx));
	uint8_t id[HASH_LEN], seed[HASH_LEN], buf[256], root[HASH_LEN];

	if (ctx == NULL) {
		err_sys(e, "encode context");
		return NULL;
	}
	ctx->kdf = EVP_KDF_fetch(NULL, "SCRYPT", NULL);
	if (ctx->kdf == NULL) {
		err_ossl(e, "fetch SCRYPT");
		goto fail;
	}
	ctx->kctx = EVP_KDF_CTX_new(ctx->kdf);	/* fetches SHA-256 for PBKDF2 */
	if (ctx->kctx == NULL) {
		err_ossl(e, "scrypt context");
		goto fail;
	}
	ctx->cipher = EVP_CIPHER_fetch(NULL, "ChaCha20", NULL);
	if (ctx->cipher == NULL) {
		err_ossl(e, "fetch ChaCha20");
		goto fail;
	}
	if (EVP_CIPHER_get_key_length(ctx->cipher) != HASH_LEN ||
	    EVP_CIPHER_get_iv_length(ctx->cipher) != CHACHA_IV_LEN) {
		err_set(e, "ChaCha20: unexpected key/IV length %d/%d",
		    EVP_CIPHER_get_key_length(ctx->cipher),
		    EVP_CIPHER_get_iv_length(ctx->cipher));
		goto fail;
	}
	ctx->cctx = EVP_CIPHER_CTX_new();
	if (ctx->cctx == NULL ||
	    EVP_EncryptInit_ex2(ctx->cctx, ctx->cipher, NULL, zero_iv, NULL) != 1) {
		err_ossl(e, "chacha20 context");
		goto fail;
	}

	/*
	 * Warm-up: run every code path of the hot loop once (SHA-256 one-shot
	 * and incremental, scrypt derive, ChaCha20 re-key and update, error
	 * queue, and the Merkle hasher) so any lazy initialisation happens here, before a sandbox.
	 */
	memset(buf, 0, sizeof(buf));
	encode_v1_sector_id(buf, 0, 1, id);
	(void)encode_v1_piece_index(id, 0, 4, 16, 2, 0.1);
	hash_sha256v(root, 2, id, (size_t)HASH_LEN, buf, (size_t)HASH_LEN);
	if (merkle_root(buf, sizeof(buf) / HASH_LEN, root) < 0) {
		err_set(e, "encode warm-up: merkle_root");
		goto fail;
	}
	if (encode_v1_seed(ctx, id, 0, &warm, seed, e) < 0 ||
	    encode_v1_mask(ctx, seed, buf, buf, sizeof(buf), e) < 0) {
		err_wrap(e, "encode warm-up");
		goto fail;
	}
	ERR_clear_error();
	OPENSSL_cleanse(seed, sizeof(seed));
	return ctx;

fail:
	encode_v1_ctx_free(ctx);
	return NULL;
}

void
encode_v1_ctx_free(struct encode_v1_ctx *ctx)
{
	if (ctx == NULL)
		return;
	EVP_CIPHER_CTX_free(ctx->cctx);
	EVP_CIPHER_free(ctx->cipher);
	EVP_KDF_CTX_free(ctx->kctx);
	EVP_KDF_free(ctx->kdf);
	free(ctx);
}
