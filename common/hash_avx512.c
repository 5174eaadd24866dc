/*
 * hash_avx512.c: hash_fast64's blocks (hash.c has the definition), the 8
 * lanes of a stripe in one 512-bit vector.  lo32 × hi32 of each lane is
 * _mm512_mul_epu32 of the word and the word shifted right by 32; the
 * scramble's 64-bit multiply by a 32-bit prime is lo32 × P plus
 * (hi32 × P) << 32, which is that product modulo 2^64.  Compiled with a
 * function-level target; hash_fast64 calls it only after
 * __builtin_cpu_supports("avx512f") said yes.
 */
#include <immintrin.h>

#include "hash_fast64.h"

__attribute__((target("avx512f"))) void
hash_fast64_blocks_avx512(uint64_t acc[FAST64_LANES], const uint8_t *p, size_t nblocks)
{
	__m512i a = _mm512_loadu_si512(acc), key[FAST64_BLOCK_STRIPES];
	const __m512i base = _mm512_loadu_si512(fast64_key);
	const __m512i prime = _mm512_set1_epi64(FAST64_PRIME32);

	for (unsigned s = 0; s < FAST64_BLOCK_STRIPES; s++)
		key[s] = _mm512_xor_si512(base, _mm512_set1_epi64((long long)(s * FAST64_K)));
	for (size_t b = 0; b < nblocks; b++) {
		for (unsigned s = 0; s < FAST64_BLOCK_STRIPES; s++, p += FAST64_STRIPE) {
			__m512i w = _mm512_loadu_si512(p);
			__m512i k = _mm512_xor_si512(w, key[s]);

			a = _mm512_add_epi64(a, _mm512_add_epi64(w,
			    _mm512_mul_epu32(k, _mm512_srli_epi64(k, 32))));
		}
		a = _mm512_xor_si512(a, _mm512_srli_epi64(a, 47));
		a = _mm512_xor_si512(a, base);
		a = _mm512_add_epi64(_mm512_mul_epu32(a, prime),
		    _mm512_slli_epi64(_mm512_mul_epu32(_mm512_srli_epi64(a, 32), prime), 32));
	}
	_mm512_storeu_si512(acc, a);
}
