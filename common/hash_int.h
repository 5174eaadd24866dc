/*
 * hash_int.h: what hash.c shares with its AVX-512 blocks (hash_avx512.c),
 * and the entry points the unit tests compare (the portable and AVX-512
 * forms of hash_fast64, hash_sha256_many against OpenSSL).
 */
#ifndef FARMD_HASH_INT_H
#define FARMD_HASH_INT_H

#include <stddef.h>
#include <stdint.h>

#include "hash.h"

#define FAST64_LANES 8
#define FAST64_STRIPE 64                /* bytes: one word per lane */
#define FAST64_BLOCK_STRIPES 16
#define FAST64_K 0x9e3779b97f4a7c15ULL  /* stripe s's keys: fast64_key ^ s * K */
#define FAST64_PRIME32 0x9e3779b1u

extern const uint64_t fast64_key[FAST64_LANES];

/* nblocks blocks of FAST64_BLOCK_STRIPES stripes from p into acc; the two
 * give the same acc for the same bytes. */
void hash_fast64_blocks_portable(uint64_t acc[FAST64_LANES], const uint8_t *p,
    size_t nblocks);
/* Only where hash_simd() is true. */
void hash_fast64_blocks_avx512(uint64_t acc[FAST64_LANES], const uint8_t *p,
    size_t nblocks);

/* The same blocks of src, each stored to dst as it is hashed: the hash is
 * of the values stored.  Only where hash_simd() is true. */
void hash_fast64_copy_blocks_avx512(uint64_t acc[FAST64_LANES], uint8_t *dst,
    const uint8_t *src, size_t nblocks);

/* hash_fast64 and hash_fast64_copy with the AVX-512 blocks (simd) or the
 * portable ones. */
uint64_t hash_fast64_with(const uint8_t *p, size_t n, int simd);
uint64_t hash_fast64_copy_with(uint8_t *restrict dst, const uint8_t *restrict src, size_t n,
    int simd);

/* SHA-256 of 16 messages at once, one per 32-bit lane of a 512-bit
 * vector: state[k][l] is word k of lane l's state, and nblocks 64-byte
 * blocks are taken from each p[l].  Only where hash_simd() is true. */
#define SHA256_LANES 16
void hash_sha256_blocks_avx512(uint32_t state[8][SHA256_LANES],
    const uint8_t *const p[SHA256_LANES], size_t nblocks);

/* hash_sha256_many with the lanes (simd) or with OpenSSL one at a time. */
void hash_sha256_many_with(const uint8_t *const *p, size_t n, size_t len,
    uint8_t (*out)[HASH_LEN], int simd);
/* Whether this CPU runs the AVX-512 blocks (F and BW). */
int hash_simd(void);

#endif
