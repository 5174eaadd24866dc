#include "hash.h"
#include "hash_int.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

void
hash_sha256(const void *data, size_t len, uint8_t out[HASH_LEN])
{
	SHA256(data, len, out);
}

void
hash_sha256v(uint8_t out[HASH_LEN], int nparts, ...)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	va_list ap;

	/* Allocation failure here is out-of-memory in a tiny object: abort
	 * rather than hand back a hash that was never computed. */
	if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
		abort();
	va_start(ap, nparts);
	for (int i = 0; i < nparts; i++) {
		const void *p = va_arg(ap, const void *);
		size_t l = va_arg(ap, size_t);
		EVP_DigestUpdate(ctx, p, l);
	}
	va_end(ap);
	EVP_DigestFinal_ex(ctx, out, NULL);
	EVP_MD_CTX_free(ctx);
}

void
hex_encode(const uint8_t *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * len] = '\0';
}

static int
hex_nibble(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int
hex_decode(const char *in, uint8_t *out, size_t len)
{
	if (strlen(in) != 2 * len)
		return -1;
	for (size_t i = 0; i < len; i++) {
		int hi = hex_nibble(in[2 * i]), lo = hex_nibble(in[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

static inline uint64_t
rotl64(uint64_t x, int r)
{
	return x << r | x >> (64 - r);
}

/*
 * hash_fast64: 8 lanes of 64-bit words; a stripe is one word per lane (64
 * bytes), a block 16 stripes.  Each word w of lane l in stripe s adds
 *     w + lo32(w ^ k) * hi32(w ^ k),   k = fast64_key[l] ^ s * FAST64_K
 * to its lane's accumulator (no chain of multiplies: the lanes and the
 * words of a lane are independent, so it vectorises); after each block
 * every accumulator is scrambled (xorshift, multiply by a 32-bit prime),
 * which makes a block's place matter as the per-stripe keys make a
 * stripe's place within its block matter.  The tail is zero-padded to a
 * stripe; the length goes into the fold.  hash_avx512.c computes the
 * same blocks 8 lanes per instruction; unit_wbuf checks both agree.
 */
const uint64_t fast64_key[FAST64_LANES] = {
	0x243f6a8885a308d3ULL, 0x13198a2e03707344ULL, 0xa4093822299f31d0ULL,
	0x082efa98ec4e6c89ULL, 0x452821e638d01377ULL, 0xbe5466cf34e90c6cULL,
	0xc0ac29b7c97c50ddULL, 0x3f84d5b5b5470917ULL,
};

static inline void
fast64_stripe(uint64_t acc[FAST64_LANES], const uint8_t *p, unsigned s)
{
	for (int l = 0; l < FAST64_LANES; l++) {
		uint64_t w, k;

		memcpy(&w, p + 8 * l, 8);
		k = w ^ fast64_key[l] ^ (uint64_t)s * FAST64_K;
		acc[l] += w + (k & 0xffffffffu) * (k >> 32);
	}
}

static inline void
fast64_scramble(uint64_t acc[FAST64_LANES])
{
	for (int l = 0; l < FAST64_LANES; l++) {
		uint64_t a = acc[l];

		a ^= a >> 47;
		acc[l] = (a ^ fast64_key[l]) * FAST64_PRIME32;
	}
}

void
hash_fast64_blocks_portable(uint64_t acc[FAST64_LANES], const uint8_t *p, size_t nblocks)
{
	for (size_t b = 0; b < nblocks; b++) {
		for (unsigned s = 0; s < FAST64_BLOCK_STRIPES; s++)
			fast64_stripe(acc, p + (b * FAST64_BLOCK_STRIPES + s) * FAST64_STRIPE, s);
		fast64_scramble(acc);
	}
}

/* The stripes after the whole blocks (done bytes of p are in acc), the
 * zero-padded tail and the fold. */
static uint64_t
fast64_finish(uint64_t acc[FAST64_LANES], const uint8_t *p, size_t done, size_t n)
{
	uint64_t r = (uint64_t)n * FAST64_K;
	unsigned s = 0;

	for (; done + FAST64_STRIPE <= n; done += FAST64_STRIPE)
		fast64_stripe(acc, p + done, s++);
	if (done < n) {
		uint8_t last[FAST64_STRIPE] = { 0 };

		memcpy(last, p + done, n - done);
		fast64_stripe(acc, last, s);
	}
	for (int l = 0; l < FAST64_LANES; l++) {
		uint64_t a = acc[l];

		a ^= a >> 33;
		r = rotl64(r ^ a * 0xff51afd7ed558ccdULL, 27) * 0x9e3779b97f4a7c15ULL;
	}
	r ^= r >> 33;
	r *= 0xc4ceb9fe1a85ec53ULL;
	return r ^ r >> 29;
}

uint64_t
hash_fast64_with(const uint8_t *p, size_t n, int simd)
{
	const size_t block = FAST64_BLOCK_STRIPES * FAST64_STRIPE;
	uint64_t acc[FAST64_LANES];

	memcpy(acc, fast64_key, sizeof(acc));
	if (simd)
		hash_fast64_blocks_avx512(acc, p, n / block);
	else
		hash_fast64_blocks_portable(acc, p, n / block);
	return fast64_finish(acc, p, n / block * block, n);
}

/* The portable copy goes a chunk at a time, so that the bytes it hashes
 * back from dst are still in L1. */
#define FAST64_COPY_CHUNK (16u << 10)

uint64_t
hash_fast64_copy_with(uint8_t *restrict dst, const uint8_t *restrict src, size_t n, int simd)
{
	const size_t block = FAST64_BLOCK_STRIPES * FAST64_STRIPE;
	size_t whole = n / block * block;
	uint64_t acc[FAST64_LANES];

	memcpy(acc, fast64_key, sizeof(acc));
	if (simd) {
		hash_fast64_copy_blocks_avx512(acc, dst, src, n / block);
	} else {
		for (size_t o = 0; o < whole; o += FAST64_COPY_CHUNK) {
			size_t c = whole - o < FAST64_COPY_CHUNK ? whole - o : FAST64_COPY_CHUNK;

			memcpy(dst + o, src + o, c);
			hash_fast64_blocks_portable(acc, dst + o, c / block);
		}
	}
	/* The tail from the copy too: what is hashed is what dst holds. */
	memcpy(dst + whole, src + whole, n - whole);
	return fast64_finish(acc, dst, whole, n);
}

uint64_t
hash_fast64_copy(uint8_t *restrict dst, const uint8_t *restrict src, size_t n)
{
	return hash_fast64_copy_with(dst, src, n, hash_simd());
}

int
hash_simd(void)
{
	static int simd = -1;
	int v = __atomic_load_n(&simd, __ATOMIC_RELAXED);

	/* Racing first calls store the same answer. */
	if (v < 0) {
		v = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
		__atomic_store_n(&simd, v, __ATOMIC_RELAXED);
	}
	return v;
}

uint64_t
hash_fast64(const uint8_t *p, size_t n)
{
	return hash_fast64_with(p, n, hash_simd());
}

/*
 * Equal lengths make every lane's padding the same shape: the whole
 * blocks straight from the messages, then one or two padded blocks built
 * here per message (0x80, zeros, the bit length).  A group of fewer than
 * 16 fills its idle lanes with its first message and ignores their sums;
 * below SHA256_MIN_LANES messages OpenSSL's one-at-a-time rate (SHA
 * extensions) is the better one.
 */
#define SHA256_MIN_LANES 4

void
hash_sha256_many_with(const uint8_t *const *p, size_t n, size_t len,
    uint8_t (*out)[HASH_LEN], int simd)
{
	size_t whole = len / 64, rem = len % 64, tail = rem < 56 ? 1 : 2;

	for (size_t g = 0; g < n; g += SHA256_LANES) {
		static const uint32_t h0[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372,
			0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };
		size_t m = n - g < SHA256_LANES ? n - g : SHA256_LANES;
		uint32_t st[8][SHA256_LANES];
		uint8_t pad[SHA256_LANES][128];
		const uint8_t *lp[SHA256_LANES];

		if (!simd || m < SHA256_MIN_LANES) {
			for (size_t i = 0; i < m; i++)
				hash_sha256(p[g + i], len, out[g + i]);
			continue;
		}
		for (int k = 0; k < 8; k++)
			for (int l = 0; l < SHA256_LANES; l++)
				st[k][l] = h0[k];
		for (size_t l = 0; l < SHA256_LANES; l++)
			lp[l] = p[g + (l < m ? l : 0)];
		hash_sha256_blocks_avx512(st, lp, whole);
		for (size_t l = 0; l < SHA256_LANES; l++) {
			memset(pad[l], 0, sizeof(pad[l]));
			memcpy(pad[l], lp[l] + whole * 64, rem);
			pad[l][rem] = 0x80;
			be64_put(pad[l] + tail * 64 - 8, (uint64_t)len * 8);
			lp[l] = pad[l];
		}
		hash_sha256_blocks_avx512(st, lp, tail);
		for (size_t l = 0; l < m; l++)
			for (int k = 0; k < 8; k++)
				be32_put(out[g + l] + 4 * k, st[k][l]);
	}
}

void
hash_sha256_many(const uint8_t *const *p, size_t n, size_t len, uint8_t (*out)[HASH_LEN])
{
	hash_sha256_many_with(p, n, len, out, hash_simd());
}
