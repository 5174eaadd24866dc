/*
 * hash.h: SHA-256 and hex, the names every format in farmd is built on.
 * Hex is lowercase; a hash is always 32 bytes.
 */
#ifndef FARMD_HASH_H
#define FARMD_HASH_H

#include <stddef.h>
#include <stdint.h>

#define HASH_LEN 32
#define HASH_HEX_LEN 64

void hash_sha256(const void *data, size_t len, uint8_t out[HASH_LEN]);

/* out[i] = SHA-256 of the len bytes at p[i], for n messages of one
 * length: 16 at a time in the lanes of one vector where the CPU has
 * AVX-512 (hash_avx512.c), about twice OpenSSL's rate for the same work
 * (a block store batch: a part's pieces). */
void hash_sha256_many(const uint8_t *const *p, size_t n, size_t len,
    uint8_t (*out)[HASH_LEN]);

/* Incremental SHA-256 over several buffers: hash_sha256v(out, n, p0, l0, p1, l1, ...). */
void hash_sha256v(uint8_t out[HASH_LEN], int nparts, ...);

/* out must hold 2*len+1 bytes. */
void hex_encode(const uint8_t *in, size_t len, char *out);
/* Decodes exactly 2*len hex characters; returns -1 on a bad character or length. */
int hex_decode(const char *in, uint8_t *out, size_t len);
/* A fast 64-bit checksum, not cryptographic: a shared buffer's answer
 * carries it, so a change made after the answer was sent is seen
 * (wbuf.h). */
uint64_t hash_fast64(const uint8_t *p, size_t n);
/* Copies n bytes from src to dst and returns hash_fast64(dst, n), reading
 * src once: the checksum is of the bytes that reached dst, whatever is
 * written into src meanwhile (src may be a worker's shared buffer). */
uint64_t hash_fast64_copy(uint8_t *restrict dst, const uint8_t *restrict src, size_t n);

static inline void
be32_put(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

static inline void
be64_put(uint8_t *p, uint64_t v)
{
	be32_put(p, (uint32_t)(v >> 32));
	be32_put(p + 4, (uint32_t)v);
}

static inline uint32_t
be32_get(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t
be64_get(const uint8_t *p)
{
	return (uint64_t)be32_get(p) << 32 | be32_get(p + 4);
}

#endif
