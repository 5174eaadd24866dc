/*
 * scrypt_romix.h: ROMix (RFC 7914 §5) on LANES instances at once, one per
 * 32-bit lane, written once for every vector width.  Included only by the
 * kernel files (scrypt_avx512.c, scrypt_avx2.c) after they define:
 *
 *   ROMIX        the entry point's name (scrypt_simd.h declares it);
 *   TARGET       the function-level target attribute of the width;
 *   LANES        lanes per vector; vec, the vector type;
 *   ADD XOR ROL  32-bit lane add, xor, rotate left;
 *   INTEGERIFY(j, v, mask)  store v & mask, lane l into j[l];
 *   chunk_load(m, row, off) m[0..15] = the 64-byte chunk at row[l] + off
 *                of every lane, lane-interleaved (vector k = word k);
 *   chunk_store(m, row, count, off, how)  the reverse, into the rows of
 *                lanes < count only, with a store of kind `how`.
 *
 * Invariants (the design is scrypt_avx512.c's opening comment):
 *  - The working block of all instances is lane-interleaved, so one
 *    Salsa20/8 step is 16 vectors and no shuffles; V holds one instance's
 *    block as one contiguous row (scrypt_simd.h), moved in and out of the
 *    interleaved form by chunk_load/chunk_store.
 *  - The rows of padding lanes (lane >= count) are never written; their
 *    reads are pointed at lane 0's row, so every address stays inside V.
 * Off x86-64 the entry point only traps: scrypt.c never dispatches it.
 */
#if defined(__x86_64__)

#define QR(a, b, c, d) do {				\
	b = XOR(b, ROL(ADD(a, d), 7));			\
	c = XOR(c, ROL(ADD(b, a), 9));			\
	d = XOR(d, ROL(ADD(c, b), 13));			\
	a = XOR(a, ROL(ADD(d, c), 18));			\
} while (0)

/* The rows of one step: lane l's block at row[l] (padding lanes: lane
 * 0's), and how many lanes are real. */
struct rows {
	uint8_t *row[LANES];
	unsigned count;
	int nt;
};

/* t = x ^ (chunk c of the rows, interleaved). */
TARGET static inline void
rows_load_xor(vec *restrict t, const vec *restrict x, const struct rows *rw,
    size_t c)
{
	vec m[16];

	chunk_load(m, rw->row, c * 64);
	for (int k = 0; k < 16; k++)
		t[k] = XOR(x[k], m[k]);
}

/* Interleaved chunk -> chunk c of the rows of the real lanes. */
TARGET static inline void
rows_store(const vec *in, const struct rows *rw, size_t c)
{
	chunk_store(in, rw->row, rw->count, c * 64,
	    rw->nt ? SIMD_STORE_STREAM : SIMD_STORE_ALIGNED);
}

/* Salsa20/8 (RFC 7914 §3) on x, feed-forward included: x = S(x ^ b). */
#define SALSA_STEP(b) do {							\
	const vec *b_ = (b);							\
	vec t[16];								\
	IN(0); IN(1); IN(2); IN(3); IN(4); IN(5); IN(6); IN(7);			\
	IN(8); IN(9); IN(10); IN(11); IN(12); IN(13); IN(14); IN(15);		\
	for (int round = 0; round < 8; round += 2) {				\
		QR(x0, x4, x8, x12);						\
		QR(x5, x9, x13, x1);						\
		QR(x10, x14, x2, x6);						\
		QR(x15, x3, x7, x11);						\
		QR(x0, x1, x2, x3);						\
		QR(x5, x6, x7, x4);						\
		QR(x10, x11, x8, x9);						\
		QR(x15, x12, x13, x14);						\
	}									\
	OUT(0); OUT(1); OUT(2); OUT(3); OUT(4); OUT(5); OUT(6); OUT(7);		\
	OUT(8); OUT(9); OUT(10); OUT(11); OUT(12); OUT(13); OUT(14); OUT(15);	\
} while (0)
#define IN(k) t[k] = XOR(x##k, b_[k]); x##k = t[k]
#define OUT(k) x##k = ADD(x##k, t[k]); o[k] = x##k

/*
 * One BlockMix (RFC 7914 §4) on interleaved blocks, with the step's V
 * traffic woven in so that the transposes fill the issue slots that the
 * Salsa20/8 dependency chain leaves free:
 *  - first loop (!second): out = BlockMix(in); chunk i of `in` is
 *    transposed into the rows rw while Salsa20/8 number i runs;
 *  - second loop: out = BlockMix(in ^ V[j]) with V[j] the rows rw; chunk
 *    i+1 of in ^ V[j] is formed in tv while Salsa20/8 number i runs.
 * in, tv and out are 2r chunks of 16 vectors and must not overlap.
 */
TARGET static void
blockmix(const vec *restrict in, vec *restrict tv, vec *restrict out,
    const struct rows *rw, int second, uint32_t r)
{
	const size_t n = 2 * (size_t)r, last = n - 1;
	const vec *src = second ? tv : in;
	vec x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15;

	if (second) {
		rows_load_xor(tv + last * 16, in + last * 16, rw, last);
		rows_load_xor(tv, in, rw, 0);
	}
	x0 = src[last * 16 + 0]; x1 = src[last * 16 + 1];
	x2 = src[last * 16 + 2]; x3 = src[last * 16 + 3];
	x4 = src[last * 16 + 4]; x5 = src[last * 16 + 5];
	x6 = src[last * 16 + 6]; x7 = src[last * 16 + 7];
	x8 = src[last * 16 + 8]; x9 = src[last * 16 + 9];
	x10 = src[last * 16 + 10]; x11 = src[last * 16 + 11];
	x12 = src[last * 16 + 12]; x13 = src[last * 16 + 13];
	x14 = src[last * 16 + 14]; x15 = src[last * 16 + 15];
	for (size_t i = 0; i < n; i++) {
		vec *o = out + ((i & 1) ? r + i / 2 : i / 2) * 16;

		if (!second)
			rows_store(in + i * 16, rw, i);
		else if (i + 1 < last)
			rows_load_xor(tv + (i + 1) * 16, in + (i + 1) * 16, rw, i + 1);
		SALSA_STEP(src + i * 16);
	}
}
#undef IN
#undef OUT

/* Row pointers of block j[l] for every lane (padding lanes: lane 0's). */
static inline void
rows_at(struct rows *rw, uint8_t *V, const uint32_t *j, size_t blk)
{
	for (unsigned l = 0; l < LANES; l++) {
		unsigned s = l < rw->count ? l : 0;

		rw->row[l] = V + ((size_t)j[s] * rw->count + s) * blk;
	}
}

/* Between the caller's rows B and the interleaved x (to_rows: back). */
TARGET static void
convert(uint8_t *B, size_t stride, vec *x, unsigned count, uint32_t r,
    int to_rows)
{
	uint8_t *row[LANES];

	for (unsigned l = 0; l < LANES; l++)
		row[l] = B + (l < count ? l : 0) * stride;
	for (size_t c = 0; c < 2 * (size_t)r; c++) {
		if (to_rows)
			chunk_store(x + c * 16, row, count, c * 64, SIMD_STORE_UNALIGNED);
		else
			chunk_load(x + c * 16, row, c * 64);
	}
}

TARGET void
ROMIX(uint8_t *B, size_t stride, unsigned count, uint32_t N, uint32_t r,
    uint8_t *V, uint8_t *X, int nt)
{
	const size_t blk = (size_t)128 * r, chunks = 2 * (size_t)r;
	vec *xa = (vec *)X, *xb = xa + chunks * 16, *tv = xb + chunks * 16, *sw;
	struct rows rw = { .count = count, .nt = nt };
	uint32_t j[LANES] __attribute__((aligned(sizeof(vec))));

	convert(B, stride, xa, count, r, 0);
	for (uint32_t i = 0; i < N; i++) {
		for (unsigned l = 0; l < LANES; l++)
			j[l] = i;
		rows_at(&rw, V, j, blk);
		blockmix(xa, tv, xb, &rw, 0, r);
		sw = xa;
		xa = xb;
		xb = sw;
	}
	if (nt)
		_mm_sfence();
	for (uint32_t i = 0; i < N; i++) {
		/* Integerify: word 0 of the last 64-byte chunk, mod N. */
		INTEGERIFY(j, xa[(chunks - 1) * 16], N - 1);
		rows_at(&rw, V, j, blk);
		blockmix(xa, tv, xb, &rw, 1, r);
		sw = xa;
		xa = xb;
		xb = sw;
	}
	convert(B, stride, xa, count, r, 1);
}

#else

void
ROMIX(uint8_t *B, size_t stride, unsigned count, uint32_t N, uint32_t r,
    uint8_t *V, uint8_t *X, int nt)
{
	(void)B; (void)stride; (void)count; (void)N; (void)r; (void)V; (void)X; (void)nt;
	__builtin_trap();	/* never dispatched off x86-64 */
}

#endif
