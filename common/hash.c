#include "hash.h"

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

uint64_t
hash_fast64(const uint8_t *p, size_t n)
{
	/* Four independent multiply-xor lanes over 64-bit words (the
	 * multiplications overlap), folded; then the tail bytes. */
	uint64_t h[4] = { 0x243f6a8885a308d3ULL, 0x13198a2e03707344ULL,
		0xa4093822299f31d0ULL, 0x082efa98ec4e6c89ULL };
	const uint64_t k = 0x9e3779b97f4a7c15ULL;
	uint64_t r;
	size_t i = 0;

	for (; i + 32 <= n; i += 32)
		for (int l = 0; l < 4; l++) {
			uint64_t w;

			memcpy(&w, p + i + 8 * l, 8);
			h[l] = (h[l] ^ w) * k;
			h[l] ^= h[l] >> 29;
		}
	r = h[0] ^ rotl64(h[1], 17) ^ rotl64(h[2], 31) ^ rotl64(h[3], 47) ^ (uint64_t)n;
	for (; i < n; i++)
		r = (r ^ p[i]) * k;
	return r ^ r >> 32;
}
