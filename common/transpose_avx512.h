/*
 * transpose_avx512.h: an in-place transpose of a 16x16 matrix of 32-bit
 * words held in 16 zmm registers (m[i] = row i), the step between 16 rows
 * of data, one per lane, and vectors that hold one word of every lane:
 * scrypt_avx512.c moves ROMix blocks with it, hash_avx512.c SHA-256
 * message blocks.  Static inline with a function-level target (AVX-512F
 * only), so each kernel inlines it into its own target.
 */
#ifndef FARMD_TRANSPOSE_AVX512_H
#define FARMD_TRANSPOSE_AVX512_H

#include <immintrin.h>

__attribute__((target("avx512f"))) static inline void
transpose16(__m512i *m)
{
	__m512i t[16], u[16];

	/* Unrolled whole, so that every array here lives in registers. */
	_Pragma("GCC unroll 16")
	for (int i = 0; i < 16; i += 2) {
		t[i] = _mm512_unpacklo_epi32(m[i], m[i + 1]);
		t[i + 1] = _mm512_unpackhi_epi32(m[i], m[i + 1]);
	}
	/* u[4g+k], 128-bit lane q: column 4q+k of rows 4g..4g+3. */
	_Pragma("GCC unroll 16")
	for (int g = 0; g < 16; g += 4) {
		u[g] = _mm512_unpacklo_epi64(t[g], t[g + 2]);
		u[g + 1] = _mm512_unpackhi_epi64(t[g], t[g + 2]);
		u[g + 2] = _mm512_unpacklo_epi64(t[g + 1], t[g + 3]);
		u[g + 3] = _mm512_unpackhi_epi64(t[g + 1], t[g + 3]);
	}
	/* A 4x4 transpose of 128-bit blocks for each k. */
	_Pragma("GCC unroll 16")
	for (int k = 0; k < 4; k++) {
		__m512i s0 = _mm512_shuffle_i32x4(u[k], u[4 + k], 0x44);
		__m512i s1 = _mm512_shuffle_i32x4(u[k], u[4 + k], 0xee);
		__m512i s2 = _mm512_shuffle_i32x4(u[8 + k], u[12 + k], 0x44);
		__m512i s3 = _mm512_shuffle_i32x4(u[8 + k], u[12 + k], 0xee);

		m[k] = _mm512_shuffle_i32x4(s0, s2, 0x88);
		m[4 + k] = _mm512_shuffle_i32x4(s0, s2, 0xdd);
		m[8 + k] = _mm512_shuffle_i32x4(s1, s3, 0x88);
		m[12 + k] = _mm512_shuffle_i32x4(s1, s3, 0xdd);
	}
}

#endif
