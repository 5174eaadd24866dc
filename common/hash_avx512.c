/*
 * hash_avx512.c: the AVX-512 blocks of hash.c (compiled with
 * function-level targets; hash.c calls them only where hash_simd() said
 * yes).
 *
 * hash_fast64's blocks (hash.c has the definition): the 8 lanes of a
 * stripe in one 512-bit vector.  lo32 × hi32 of each lane is
 * _mm512_mul_epu32 of the word and the word shifted right by 32; the
 * scramble's 64-bit multiply by a 32-bit prime is lo32 × P plus
 * (hi32 × P) << 32, which is that product modulo 2^64.
 *
 * SHA-256's compression function (FIPS 180-4, §6.2.2) for 16 messages at
 * once, one per 32-bit lane: every step of a round is the same for all
 * messages, so one instruction does it for 16.  OpenSSL hashes one
 * message at a time with the SHA extensions, whose rounds form one chain
 * of dependent instructions; 16 independent messages keep the vector
 * units full instead (2.0-2.3x OpenSSL's rate for 16 pieces of 64 KiB
 * on a Zen 5 core: scripts/bench kernel, sha256_lanes_vs_openssl).  A block is loaded as
 * 16 rows (one per message) and transposed so that vector i holds word i
 * of every message (transpose_avx512.h).
 */
#include <immintrin.h>

#include "hash_int.h"
#include "transpose_avx512.h"

/* The blocks of src into acc; with dst, each stripe is also stored there
 * once loaded (the copy form: one pass over src, and what is hashed is
 * the register that reached dst).  Inlined into both forms, so the
 * NULL test goes away. */
static inline __attribute__((always_inline, target("avx512f"))) void
fast64_blocks(uint64_t acc[FAST64_LANES], uint8_t *dst, const uint8_t *src, size_t nblocks)
{
	__m512i a = _mm512_loadu_si512(acc), key[FAST64_BLOCK_STRIPES];
	const __m512i base = _mm512_loadu_si512(fast64_key);
	const __m512i prime = _mm512_set1_epi64(FAST64_PRIME32);

	for (unsigned s = 0; s < FAST64_BLOCK_STRIPES; s++)
		key[s] = _mm512_xor_si512(base, _mm512_set1_epi64((long long)(s * FAST64_K)));
	for (size_t b = 0; b < nblocks; b++) {
		for (unsigned s = 0; s < FAST64_BLOCK_STRIPES; s++, src += FAST64_STRIPE) {
			__m512i w = _mm512_loadu_si512(src);
			__m512i k = _mm512_xor_si512(w, key[s]);

			if (dst != NULL) {
				_mm512_storeu_si512(dst, w);
				dst += FAST64_STRIPE;
			}
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

__attribute__((target("avx512f"))) void
hash_fast64_blocks_avx512(uint64_t acc[FAST64_LANES], const uint8_t *p, size_t nblocks)
{
	fast64_blocks(acc, NULL, p, nblocks);
}

__attribute__((target("avx512f"))) void
hash_fast64_copy_blocks_avx512(uint64_t acc[FAST64_LANES], uint8_t *dst, const uint8_t *src,
    size_t nblocks)
{
	fast64_blocks(acc, dst, src, nblocks);
}

static const uint32_t sha256_k[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
	0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
	0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
	0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
	0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
	0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
	0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
	0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
	0xc67178f2,
};

#define TARGET __attribute__((target("avx512f,avx512bw")))
/* a ^ b ^ c in one instruction (truth table 0x96). */
#define XOR3(a, b, c) _mm512_ternarylogic_epi32((a), (b), (c), 0x96)
#define ROR(x, n) _mm512_ror_epi32((x), (n))

TARGET void
hash_sha256_blocks_avx512(uint32_t state[8][SHA256_LANES],
    const uint8_t *const p[SHA256_LANES], size_t nblocks)
{
	/* The message is big-endian words: byte-swap each 32-bit word. */
	const __m512i bswap = _mm512_broadcast_i32x4(_mm_set_epi64x(0x0c0d0e0f08090a0bLL,
	    0x0405060700010203LL));
	__m512i s[8];

	for (int k = 0; k < 8; k++)
		s[k] = _mm512_loadu_si512(state[k]);
	for (size_t b = 0; b < nblocks; b++) {
		__m512i w[16];
		__m512i a = s[0], bb = s[1], c = s[2], d = s[3];
		__m512i e = s[4], f = s[5], g = s[6], h = s[7];

		/* Row l is message l's block; transposed, w[i] is word i of
		 * every message. */
		_Pragma("GCC unroll 16")
		for (int l = 0; l < 16; l++)
			w[l] = _mm512_shuffle_epi8(_mm512_loadu_si512(p[l] + 64 * b), bswap);
		transpose16(w);
		_Pragma("GCC unroll 64")
		for (int i = 0; i < 64; i++) {
			__m512i wi, s0, s1, t1;

			if (i < 16) {
				wi = w[i];
			} else {
				/* The schedule in a ring of 16: w[i & 15] held W[i - 16]. */
				__m512i w15 = w[(i - 15) & 15], w2 = w[(i - 2) & 15];

				s0 = XOR3(ROR(w15, 7), ROR(w15, 18), _mm512_srli_epi32(w15, 3));
				s1 = XOR3(ROR(w2, 17), ROR(w2, 19), _mm512_srli_epi32(w2, 10));
				wi = w[i & 15] = _mm512_add_epi32(_mm512_add_epi32(w[i & 15], s0),
				    _mm512_add_epi32(w[(i - 7) & 15], s1));
			}
			/* T1 = h + Σ1(e) + Ch(e, f, g) + K[i] + W[i]; Ch is
			 * table 0xca (e ? f : g), Maj table 0xe8. */
			t1 = _mm512_add_epi32(_mm512_add_epi32(h, XOR3(ROR(e, 6), ROR(e, 11),
			    ROR(e, 25))), _mm512_add_epi32(_mm512_ternarylogic_epi32(e, f, g, 0xca),
			    _mm512_add_epi32(wi, _mm512_set1_epi32((int)sha256_k[i]))));
			h = g;
			g = f;
			f = e;
			e = _mm512_add_epi32(d, t1);
			d = c;
			c = bb;
			bb = a;
			a = _mm512_add_epi32(t1, _mm512_add_epi32(XOR3(ROR(a, 2), ROR(a, 13),
			    ROR(a, 22)), _mm512_ternarylogic_epi32(a, c, d, 0xe8)));
		}
		s[0] = _mm512_add_epi32(s[0], a);
		s[1] = _mm512_add_epi32(s[1], bb);
		s[2] = _mm512_add_epi32(s[2], c);
		s[3] = _mm512_add_epi32(s[3], d);
		s[4] = _mm512_add_epi32(s[4], e);
		s[5] = _mm512_add_epi32(s[5], f);
		s[6] = _mm512_add_epi32(s[6], g);
		s[7] = _mm512_add_epi32(s[7], h);
	}
	for (int k = 0; k < 8; k++)
		_mm512_storeu_si512(state[k], s[k]);
}
