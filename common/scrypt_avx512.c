/*
 * scrypt_avx512.c: ROMix on 16 scrypt instances at once, one per 32-bit
 * lane of the zmm registers (AVX-512F; the BW/VL bits are required by the
 * dispatcher as a family, only F instructions are used).
 *
 * Invariants:
 *  - The working block X of all 16 instances is kept lane-interleaved:
 *    vector k of chunk c holds word 16c+k of every instance, so one
 *    Salsa20/8 step is 16 vector registers and no shuffles.
 *  - V is stored per instance (scrypt_simd.h): a block's row is moved
 *    into and out of the interleaved form with a 16x16 transpose of
 *    32-bit words per 64-byte chunk (64 shuffles), and the second loop's
 *    random read fetches whole cache lines, 16 KiB per step, instead of
 *    the 256 KiB of lines that a gather per word would touch.
 *  - The rows of padding lanes (lane >= count) are never written; their
 *    reads are pointed at lane 0's row, so every address stays inside V.
 *
 * The ROMix loop is scrypt_romix.h, shared with scrypt_avx2.c; this file
 * gives it the 16-lane primitives.  Built with a function-level target
 * attribute, so the file compiles on any x86-64 compiler flags; scrypt.c
 * calls it only after __builtin_cpu_supports said yes.
 */
#include "scrypt_simd.h"

#define ROMIX scrypt_romix_avx512

#if defined(__x86_64__)

#include <immintrin.h>

#include "transpose_avx512.h"

#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl")))
#define LANES 16

typedef __m512i vec;

#define ADD(a, b) _mm512_add_epi32(a, b)
#define XOR(a, b) _mm512_xor_si512(a, b)
#define ROL(v, c) _mm512_rol_epi32(v, c)
#define INTEGERIFY(j, v, mask) _mm512_store_si512((void *)(j), \
	_mm512_and_si512((v), _mm512_set1_epi32((int)(mask))))

/* m = the chunk at row[l] + off of every lane, interleaved. */
TARGET static inline void
chunk_load(vec *m, uint8_t *const *row, size_t off)
{
	for (int l = 0; l < LANES; l++)
		m[l] = _mm512_loadu_si512((const void *)(row[l] + off));
	transpose16(m);
}

/* Interleaved in -> the chunk at row[l] + off of lanes < count. */
TARGET static inline void
chunk_store(const vec *in, uint8_t *const *row, unsigned count, size_t off,
    enum simd_store how)
{
	vec m[16];

	for (int k = 0; k < 16; k++)
		m[k] = in[k];
	transpose16(m);
	if (how == SIMD_STORE_STREAM)
		for (unsigned l = 0; l < count; l++)
			_mm512_stream_si512((void *)(row[l] + off), m[l]);
	else if (how == SIMD_STORE_ALIGNED)
		for (unsigned l = 0; l < count; l++)
			_mm512_store_si512((void *)(row[l] + off), m[l]);
	else
		for (unsigned l = 0; l < count; l++)
			_mm512_storeu_si512((void *)(row[l] + off), m[l]);
}

#endif

#include "scrypt_romix.h"
