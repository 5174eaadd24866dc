/*
 * scrypt_avx2.c: ROMix on 8 scrypt instances at once, one per 32-bit lane
 * of the ymm registers (AVX2).  The same design and the same ROMix loop
 * (scrypt_romix.h) as scrypt_avx512.c, read that file's comment first;
 * what differs:
 *  - no vector rotate: rotl(v, c) = (v << c) | (v >> (32 - c));
 *  - 16 registers, so the compiler spills part of the Salsa20/8 state
 *    (the loads and stores hit L1 and are cheaper than a narrower layout);
 *  - a 64-byte row chunk is two ymm halves, so one chunk is moved between
 *    rows and the interleaved form with two 8x8 transposes (48 shuffles).
 *
 * Built with a function-level target attribute, so the file compiles on
 * any x86-64 compiler flags; scrypt.c calls it only after
 * __builtin_cpu_supports("avx2") said yes.
 */
#include "scrypt_simd.h"

#define ROMIX scrypt_romix_avx2

#if defined(__x86_64__)

#include <immintrin.h>

#define TARGET __attribute__((target("avx2")))
#define LANES 8

typedef __m256i vec;

#define ADD(a, b) _mm256_add_epi32(a, b)
#define XOR(a, b) _mm256_xor_si256(a, b)
#define ROL(v, c) _mm256_or_si256(_mm256_slli_epi32(v, c), \
	_mm256_srli_epi32(v, 32 - (c)))
#define INTEGERIFY(j, v, mask) _mm256_store_si256((vec *)(j), \
	_mm256_and_si256((v), _mm256_set1_epi32((int)(mask))))

/* In-place transpose of an 8x8 matrix of 32-bit words, m[i] = row i. */
TARGET static inline void
transpose8(vec *m)
{
	vec t[8], u[8];

	for (int i = 0; i < 8; i += 2) {
		t[i] = _mm256_unpacklo_epi32(m[i], m[i + 1]);
		t[i + 1] = _mm256_unpackhi_epi32(m[i], m[i + 1]);
	}
	/* u[4g+k], 128-bit lane q: column 4q+k of rows 4g..4g+3. */
	for (int g = 0; g < 8; g += 4) {
		u[g] = _mm256_unpacklo_epi64(t[g], t[g + 2]);
		u[g + 1] = _mm256_unpackhi_epi64(t[g], t[g + 2]);
		u[g + 2] = _mm256_unpacklo_epi64(t[g + 1], t[g + 3]);
		u[g + 3] = _mm256_unpackhi_epi64(t[g + 1], t[g + 3]);
	}
	for (int k = 0; k < 4; k++) {
		m[k] = _mm256_permute2x128_si256(u[k], u[4 + k], 0x20);
		m[4 + k] = _mm256_permute2x128_si256(u[k], u[4 + k], 0x31);
	}
}

/* m = the chunk at row[l] + off of every lane, interleaved: words 0-7 of
 * every lane from the chunk's first 32 bytes, words 8-15 from the second. */
TARGET static inline void
chunk_load(vec *m, uint8_t *const *row, size_t off)
{
	for (int l = 0; l < LANES; l++) {
		m[l] = _mm256_loadu_si256((const void *)(row[l] + off));
		m[8 + l] = _mm256_loadu_si256((const void *)(row[l] + off + 32));
	}
	transpose8(m);
	transpose8(m + 8);
}

/* Interleaved in -> the chunk at row[l] + off of lanes < count. */
TARGET static inline void
chunk_store(const vec *in, uint8_t *const *row, unsigned count, size_t off,
    enum simd_store how)
{
	vec m[16];

	for (int k = 0; k < 16; k++)
		m[k] = in[k];
	transpose8(m);
	transpose8(m + 8);
	for (unsigned l = 0; l < count; l++) {
		vec *d = (vec *)(row[l] + off);

		if (how == SIMD_STORE_STREAM) {
			_mm256_stream_si256(d, m[l]);
			_mm256_stream_si256(d + 1, m[8 + l]);
		} else if (how == SIMD_STORE_ALIGNED) {
			_mm256_store_si256(d, m[l]);
			_mm256_store_si256(d + 1, m[8 + l]);
		} else {
			_mm256_storeu_si256(d, m[l]);
			_mm256_storeu_si256(d + 1, m[8 + l]);
		}
	}
}

#endif

#include "scrypt_romix.h"
