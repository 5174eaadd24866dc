/*
 * hash_fast64.h: the parts of hash_fast64 (hash.c) that its AVX-512
 * blocks (hash_avx512.c) share, and the entry points unit_wbuf compares.
 */
#ifndef FARMD_HASH_FAST64_H
#define FARMD_HASH_FAST64_H

#include <stddef.h>
#include <stdint.h>

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
/* Only where __builtin_cpu_supports("avx512f"). */
void hash_fast64_blocks_avx512(uint64_t acc[FAST64_LANES], const uint8_t *p,
    size_t nblocks);

/* hash_fast64 with the AVX-512 blocks (simd) or the portable ones. */
uint64_t hash_fast64_with(const uint8_t *p, size_t n, int simd);

#endif
