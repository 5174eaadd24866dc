/*
 * encode_v1.h: encoding format v1 (DESIGN.md §6), the bytes that end up
 * in plot files.  All integers big-endian.  This is a persistent format
 * checked byte for byte against independent implementations: change
 * nothing here without a new format version.
 */
#ifndef FARMD_ENCODE_V1_H
#define FARMD_ENCODE_V1_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "hash.h"

#define ENCODE_V1_TAG "farmd-sector-v1"
#define ENCODE_V1_SALT "farmd-encode-v1"

struct encode_params {
	uint64_t n;     /* scrypt N (power of two) */
	uint32_t r;
	uint32_t p;
};

/* Prefetched OpenSSL algorithms and contexts.  Created before a worker
 * enters its sandbox: fetching loads providers and config files. */
struct encode_v1_ctx;

struct encode_v1_ctx *encode_v1_ctx_new(struct err *e);
void encode_v1_ctx_free(struct encode_v1_ctx *ctx);

/* sector_id = SHA-256("farmd-sector-v1" || public_key_hash || u32 sector_index || u64 history_size) */
void encode_v1_sector_id(const uint8_t public_key_hash[HASH_LEN],
    uint32_t sector_index, uint64_t history_size, uint8_t out[HASH_LEN]);

/* The global piece index stored at piece_offset of a sector. */
uint64_t encode_v1_piece_index(const uint8_t sector_id[HASH_LEN],
    uint32_t piece_offset, uint64_t history_size, uint32_t pieces_per_segment,
    uint32_t recent_segments, double recent_history_fraction);

/* seed = scrypt(sector_id || u32 piece_offset, "farmd-encode-v1", N, r, p, 32) */
int encode_v1_seed(struct encode_v1_ctx *ctx, const uint8_t sector_id[HASH_LEN],
    uint32_t piece_offset, const struct encode_params *params,
    uint8_t seed[HASH_LEN], struct err *e);

/*
 * The seeds of count consecutive pieces, seeds + 32*i for piece
 * first_offset + i (u32 arithmetic, as the encode job counts), computed
 * as one batch by a SIMD scrypt kernel (common/scrypt.h): the same bytes
 * as encode_v1_seed() for each, faster per piece.
 */
struct scrypt_ctx;
int encode_v1_seeds(struct scrypt_ctx *sc, const uint8_t sector_id[HASH_LEN],
    uint32_t first_offset, size_t count, const struct encode_params *params,
    uint8_t *seeds, struct err *e);

/* out = in XOR ChaCha20(key = seed, nonce = 0, counter = 0).  Encoding and
 * decoding are the same transform; in == out is allowed. */
int encode_v1_piece(struct encode_v1_ctx *ctx, const uint8_t sector_id[HASH_LEN],
    uint32_t piece_offset, const struct encode_params *params,
    const uint8_t *in, uint8_t *out, size_t len, struct err *e);

/* XOR with the ChaCha20 keystream of an already derived seed (the kernel
 * without scrypt; exposed for benchmarks and tests). */
int encode_v1_mask(struct encode_v1_ctx *ctx, const uint8_t seed[HASH_LEN],
    const uint8_t *in, uint8_t *out, size_t len, struct err *e);

#endif
